"""Uploads are spooled, never held: twenty concurrent 25 MB transcription uploads to a
`sluice serve` process raise its resident memory by less than 40 MB in total (the figure is
recorded in bench/README.md, "Audio uploads")."""

from __future__ import annotations

import asyncio
import io
import subprocess
import sys
import threading
import wave
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
import yaml

from tests.fakes.audio_upstream import FakeAudio
from tests.support import ADMIN_KEY, LoopThread, free_port, wait_until_ready

SLUICE = str(Path(sys.executable).parent / "sluice")
MB = 1_000_000
UPLOADS = 20
UPLOAD_BYTES = 25 * 1024 * 1024 - 4096  # just under OpenAI's 25 MB limit for the file part
RSS_BUDGET = 40 * MB


def _big_wav(size: int) -> bytes:
    """A 16 kHz mono WAV of ``size`` bytes (silence: the content does not matter, the header
    must be real for the duration to be measured)."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16_000)
        out.writeframes(bytes(size - 44))
    return buffer.getvalue()


class _PeakRss:
    """Resident memory of a process and its children, sampled every few milliseconds."""

    def __init__(self, pid: int) -> None:
        self._process = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def now(self) -> int:
        processes = [self._process, *self._process.children(recursive=True)]
        return sum(p.memory_info().rss for p in processes)

    def _watch(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self.now())

    def __enter__(self) -> _PeakRss:
        self.peak = self.now()
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture
def fake(loop_thread: LoopThread) -> Iterator[FakeAudio]:
    started = loop_thread.run(FakeAudio().start())
    yield started
    loop_thread.run(started.stop())


async def _upload_all(url: str, key: str, audio: bytes) -> list[int]:
    async with httpx.AsyncClient(timeout=300, headers={"authorization": f"Bearer {key}"}) as client:

        async def one(index: int) -> int:
            response = await client.post(
                f"{url}/v1/audio/transcriptions",
                data={"model": "whisper-1", "response_format": "text"},
                files={"file": (f"clip-{index}.wav", audio, "audio/wav")},
            )
            return response.status_code

        return list(await asyncio.gather(*(one(i) for i in range(UPLOADS))))


@pytest.mark.slow
def test_twenty_concurrent_25_mb_uploads_stay_out_of_memory(
    tmp_path: Path, fake: FakeAudio
) -> None:
    config = tmp_path / "serve.yaml"
    channel = {"name": "audio", "type": "openai", "base_url": fake.base_url,
               "api_key": "sk-upstream", "models": ["whisper-1"]}  # fmt: skip
    config.write_text(yaml.safe_dump({
        "database_url": f"sqlite:///{tmp_path / 'sluice.db'}",
        "admin_key": ADMIN_KEY,
        "channels": [channel],
    }))  # fmt: skip
    port = free_port()
    process = subprocess.Popen(
        [SLUICE, "serve", "--port", str(port), "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(url, process, 60)
        admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
        created = httpx.post(f"{url}/admin/keys", json={"name": "k"}, headers=admin)
        key = created.json()["key"]
        # Warm up: imports (mutagen), connections, the first spool: not what is measured.
        assert asyncio.run(_upload_all(url, key, _big_wav(2 * 1024 * 1024)))[0] == 200
        audio = _big_wav(UPLOAD_BYTES)
        with _PeakRss(process.pid) as rss:
            before = rss.now()
            statuses = asyncio.run(_upload_all(url, key, audio))
            after = rss.now()
        assert statuses == [200] * UPLOADS
        assert len(fake.forms) == UPLOADS + UPLOADS  # the warm-up's twenty and these
        assert {f.file_size for f in fake.forms[UPLOADS:]} == {UPLOAD_BYTES}
        rise, peak = after - before, rss.peak - before
        print(f"\nRSS before {before / MB:.1f} MB, after {after / MB:.1f} MB (+{rise / MB:.1f}),"
              f" peak +{peak / MB:.1f} MB for {UPLOADS} x {UPLOAD_BYTES / MB:.1f} MB")  # fmt: skip
        assert rise < RSS_BUDGET, f"RSS rose {rise / MB:.1f} MB"
        assert peak < RSS_BUDGET, f"RSS peaked {peak / MB:.1f} MB above where it started"
    finally:
        process.terminate()
        process.wait(timeout=30)
