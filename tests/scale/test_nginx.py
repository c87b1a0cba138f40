"""deploy/nginx.conf in front of two replicas: plain and streaming requests (no buffering).

Installs nothing: skipped when /usr/sbin/nginx is absent (``apt-get install -y nginx``).
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import service_reachable, skip_unless_ci
from tests.fakes.openai_upstream import FakeOpenAI
from tests.scale.replicas import ReplicaSet, replica_config
from tests.support import free_port

NGINX = Path("/usr/sbin/nginx")
EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "nginx.conf"
CHUNK_DELAY_S = 0.2
METRICS_TOKEN = "nginx-test-metrics-token-0123"


def render_config(ports: list[int], listen: int) -> str:
    """The example with its listen port and upstream servers replaced (and nothing else)."""
    text = EXAMPLE.read_text()
    servers = "\n".join(
        f"        server 127.0.0.1:{p} max_fails=3 fail_timeout=10s;" for p in ports
    )
    text, upstreams = re.subn(r"(?m)^\s*server 127\.0\.0\.1:\d+ [^\n]*\n", "", text)
    assert upstreams == 2, "deploy/nginx.conf changed shape: update this test"
    text, found = re.subn(r"(?m)^(\s*keepalive 64;)", servers + "\n\\1", text)
    assert found == 1
    text, found = re.subn(r"listen 8080;", f"listen 127.0.0.1:{listen};", text)
    assert found == 1
    # Unprivileged-friendly scratch paths, relative to the -p prefix.
    temp = "".join(f"    {kind}_temp_path tmp/{kind};\n"
                   for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))  # fmt: skip
    return text.replace("http {\n", "http {\n" + temp, 1)


@pytest.fixture
def nginx_in_front(
    pg_url: str, redis_url: str, fake_openai: FakeOpenAI, tmp_path: Path
) -> Iterator[str]:
    if not NGINX.exists():
        skip_unless_ci("nginx is not installed (/usr/sbin/nginx); .ci/run installs it")
    channel = {
        "name": "fake-openai",
        "type": "openai-compatible",
        "base_url": fake_openai.base_url,
        "api_key": "sk-upstream-123456",
        "models": ["test-*"],
        "headers": {"x-fake-chunk-delay": str(CHUNK_DELAY_S)},
    }
    config = replica_config(
        tmp_path / "sluice.yaml", pg_url, redis_url, fake_openai.base_url, channels=[channel],
        metrics_token=METRICS_TOKEN,
    )  # fmt: skip
    group = ReplicaSet()
    prefix = tmp_path / "nginx"
    for sub in ("tmp", "logs"):
        (prefix / sub).mkdir(parents=True)
    nginx: subprocess.Popen[bytes] | None = None
    try:
        group.start(config, 2, tmp_path)
        listen = free_port()
        conf = prefix / "nginx.conf"
        conf.write_text(render_config([r.port for r in group.replicas], listen))
        directives = f"daemon off; pid {prefix}/nginx.pid; error_log {prefix}/logs/error.log;"
        if os.geteuid() == 0:
            directives += " user root;"
        stderr = prefix / "logs" / "stderr.log"
        with stderr.open("wb") as sink:
            nginx = subprocess.Popen(
                [str(NGINX), "-p", str(prefix), "-c", str(conf), "-g", directives],
                stdout=subprocess.DEVNULL, stderr=sink,
            )  # fmt: skip
        deadline = time.monotonic() + 10
        while not service_reachable("127.0.0.1", listen):
            if nginx.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"nginx did not start: {stderr.read_text()[-2000:]}")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{listen}"
    finally:
        if nginx is not None:
            nginx.terminate()
            try:
                nginx.wait(10)
            except subprocess.TimeoutExpired:
                nginx.kill()
                nginx.wait(5)
        group.stop()


def test_nginx_example_proxies_plain_and_streaming_requests(nginx_in_front: str) -> None:
    from tests.support import ADMIN_KEY

    admin = {"authorization": f"Bearer {ADMIN_KEY}"}
    created = httpx.post(f"{nginx_in_front}/admin/keys", json={"name": "n"}, headers=admin)
    assert created.status_code == 201, created.text
    auth = {"authorization": f"Bearer {created.json()['key']}"}
    body = {"model": "test-model", "messages": [{"role": "user", "content": "hi"}]}

    plain = httpx.post(f"{nginx_in_front}/v1/chat/completions", json=body, headers=auth, timeout=30)
    assert plain.status_code == 200, plain.text
    assert plain.json()["choices"][0]["message"]["content"]
    assert plain.headers["x-request-id"]

    arrivals: list[float] = []
    events: list[bytes] = []
    with httpx.stream(
        "POST", f"{nginx_in_front}/v1/chat/completions", json={**body, "stream": True},
        headers=auth, timeout=30,
    ) as response:  # fmt: skip
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data: "):
                arrivals.append(time.monotonic())
                events.append(line.encode())
    assert events[-1] == b"data: [DONE]"
    content_events = [e for e in events if b'"content":"' in e and b'"content":""' not in e]
    assert len(content_events) >= 5
    # Incremental: the chunks arrived spread over the upstream's pacing, not in one lump.
    assert arrivals[-1] - arrivals[0] >= 3 * CHUNK_DELAY_S
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:], strict=False)]
    assert sum(1 for gap in gaps if gap >= CHUNK_DELAY_S / 2) >= 3


def test_nginx_example_hides_metrics_and_readiness_details(nginx_in_front: str) -> None:
    """Channel names, models and costs never leave through the balancer, even with the token."""
    for headers in ({}, {"authorization": f"Bearer {METRICS_TOKEN}"}):
        metrics = httpx.get(f"{nginx_in_front}/metrics", headers=headers, timeout=10)
        assert metrics.status_code == 404
        assert metrics.json()["error"]["code"] == "unknown_route"
        assert "fake-openai" not in metrics.text
        ready = httpx.get(f"{nginx_in_front}/readyz", headers=headers, timeout=10)
        assert ready.status_code == 200 and ready.json() == {"status": "ready"}
