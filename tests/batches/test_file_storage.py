"""The files storage backends: a local directory and an S3-compatible bucket (a moto server
started as a process on a free loopback port), each round-tripping bytes in chunks."""

from __future__ import annotations

import asyncio
import importlib.util
import io
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from openai import OpenAI

from sluice.files.storage import CHUNK_BYTES, FileStorage, LocalStorage, build_storage
from sluice.settings import FilesConfig
from tests.batches.conftest import chat_line, claude_channel, fast_batches, jsonl, wait_for_status
from tests.conftest import GatewayFactory, service_reachable, skip_unless_ci
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.support import free_port

BUCKET = "sluice-test"


async def _read_all(storage: FileStorage, name: str) -> tuple[bytes, int]:
    chunks = [chunk async for chunk in storage.read(name)]
    return b"".join(chunks), len(chunks)


async def _round_trip(storage: FileStorage) -> None:
    payload = os.urandom(CHUNK_BYTES * 2 + 123)  # more than one chunk each way
    await storage.put("file-roundtrip", io.BytesIO(payload))
    data, chunks = await _read_all(storage, "file-roundtrip")
    assert data == payload and chunks >= 3
    await storage.put("file-roundtrip", io.BytesIO(b"replaced"))
    assert (await _read_all(storage, "file-roundtrip"))[0] == b"replaced"
    await storage.delete("file-roundtrip")
    await storage.delete("file-roundtrip")  # already gone: no error
    with pytest.raises(FileNotFoundError):
        await _read_all(storage, "file-roundtrip")


def test_local_storage_round_trip_and_names_stay_inside(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "files")
    asyncio.run(_round_trip(storage))
    assert not any((tmp_path / "files").iterdir())  # no partial files left behind
    for bad in ("../escape", ".hidden", "a/b"):
        with pytest.raises(ValueError):
            asyncio.run(storage.put(bad, io.BytesIO(b"x")))


def test_the_default_directory_is_beside_the_sqlite_database(tmp_path: Path) -> None:
    storage = build_storage(FilesConfig(), f"sqlite:///{tmp_path / 'db' / 'sluice.db'}")
    assert isinstance(storage, LocalStorage) and storage.directory == tmp_path / "db" / "files"


@pytest.fixture
def s3_endpoint(tmp_path: Path) -> Iterator[str]:
    if importlib.util.find_spec("moto") is None or importlib.util.find_spec("boto3") is None:
        skip_unless_ci("moto[server] and boto3 are not installed (the dev extra has them)")
    port = free_port()
    log = (tmp_path / "moto.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not service_reachable("127.0.0.1", port):
            assert process.poll() is None, (tmp_path / "moto.log").read_text()
            assert time.monotonic() < deadline, "the moto server did not start"
            time.sleep(0.1)
        endpoint = f"http://127.0.0.1:{port}"
        import boto3

        boto3.session.Session().client(
            "s3", endpoint_url=endpoint, region_name="us-east-1",
            aws_access_key_id="test", aws_secret_access_key="test",
        ).create_bucket(Bucket=BUCKET)  # fmt: skip
        yield endpoint
    finally:
        process.terminate()
        process.wait(10)
        log.close()


def _s3_config(endpoint: str) -> dict[str, Any]:
    return {
        "bucket": BUCKET,
        "prefix": "files/",
        "endpoint_url": endpoint,
        "region": "us-east-1",
        "access_key_id": "test",
        "secret_access_key": "test",
    }


@pytest.mark.slow  # starts a server process
def test_s3_storage_round_trip(s3_endpoint: str) -> None:
    import msgspec

    config = msgspec.convert(
        {"backend": "s3", "s3": _s3_config(s3_endpoint)}, FilesConfig, dec_hook=_secret
    )
    storage = build_storage(config, "postgresql://unused/db")
    asyncio.run(_round_trip(storage))


def _secret(kind: type, value: Any) -> Any:
    from sluice.config_base import Secret

    if kind is Secret:
        return Secret(value)
    raise TypeError(kind)


def test_a_batch_with_its_files_in_s3(
    s3_endpoint: str, gateway_factory: GatewayFactory, fake_anthropic: FakeAnthropic, sdk: Any
) -> None:
    gateway = gateway_factory(
        [claude_channel(fake_anthropic)],
        files={"backend": "s3", "s3": _s3_config(s3_endpoint)},
        batches=fast_batches(),
    )
    key = gateway.create_key("s3")
    client: OpenAI = sdk(gateway, key)
    data = jsonl([chat_line(i) for i in range(20)])
    uploaded = client.files.create(file=("in.jsonl", data), purpose="batch")
    assert client.files.content(uploaded.id).content == data
    batch = client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    done = wait_for_status(client, batch.id, ("completed",), timeout_s=60)
    assert done.output_file_id is not None
    assert len(client.files.content(done.output_file_id).content.splitlines()) == 20
    # The bytes are in the bucket, under the configured prefix, and go with the file.
    import boto3

    s3 = boto3.session.Session().client(
        "s3", endpoint_url=s3_endpoint, region_name="us-east-1",
        aws_access_key_id="test", aws_secret_access_key="test",
    )  # fmt: skip
    stored = {o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])}
    assert {f"files/{uploaded.id}", f"files/{done.output_file_id}"} <= stored
    client.files.delete(uploaded.id)
    stored = {o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])}
    assert f"files/{uploaded.id}" not in stored
