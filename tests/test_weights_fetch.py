"""`rat weights fetch` against an HTTP server on 127.0.0.1 started by the test."""

from __future__ import annotations

import hashlib
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from typer.testing import CliRunner

from ratcli.cli import app
from ratcli.weights import REPO_WEIGHTS_DIR

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB, more than one download chunk


class _Handler(BaseHTTPRequestHandler):
    """Serves PAYLOAD at /w.bin with Range support; `cut_after` drops the connection
    after that many body bytes (an interrupted download)."""

    server: _Server

    def do_GET(self):  # noqa: N802 (http.server API)
        srv = self.server
        srv.ranges.append(self.headers.get("Range"))
        if self.path != "/w.bin":
            self.send_error(404)
            return
        start = 0
        if (rng := self.headers.get("Range")) and srv.ranges_ok:
            start = int(rng.removeprefix("bytes=").split("-")[0])
        body = srv.payload[start:]
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range",
                             f"bytes {start}-{len(srv.payload) - 1}/{len(srv.payload)}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if srv.cut_after is not None:
            self.wfile.write(body[:srv.cut_after])
            self.wfile.flush()
            srv.cut_after = None
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class _Server(ThreadingHTTPServer):
    payload = PAYLOAD
    cut_after: int | None = None
    ranges_ok = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.ranges: list[str | None] = []


@pytest.fixture
def server():
    srv = _Server()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(5)


@pytest.fixture
def env(tmp_path, monkeypatch, server):
    """RAT_HOME + a manifest whose `tiny` entry is served by `server`."""
    manifest = json.loads((REPO_WEIGHTS_DIR / "manifest.json").read_text())
    manifest["weights"]["tiny"] = {
        "file": "tiny.pth", "kind": "sam",
        "url": f"http://127.0.0.1:{server.server_address[1]}/w.bin",
        "sha256": hashlib.sha256(PAYLOAD).hexdigest(),
    }
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    monkeypatch.setenv("RAT_MANIFEST", str(tmp_path / "manifest.json"))
    monkeypatch.setenv("RAT_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def fetch(*args):
    return CliRunner().invoke(app, ["weights", "fetch", "tiny", "--timeout", "5", *args])


def test_fetch_success(env, server):
    result = fetch()
    assert result.exit_code == 0, result.stderr
    assert (env / "tiny.pth").read_bytes() == PAYLOAD
    assert result.stdout.strip() == f"tiny: {env / 'tiny.pth'}"
    assert sorted(p.name for p in env.iterdir()) == ["tiny.pth"]  # no .part left
    assert server.ranges == [None]
    assert fetch().exit_code == 0 and server.ranges == [None]  # present: no download


def test_fetch_resumes_after_interrupted_download(env, server):
    server.cut_after = 300_000
    first = fetch()
    assert first.exit_code == 3
    assert "connection closed after 300000 of 1048576 bytes" in first.stderr
    assert "run again to resume" in first.stderr
    assert (env / "tiny.pth.part").stat().st_size == 300_000
    assert not (env / "tiny.pth").exists()
    second = fetch()
    assert second.exit_code == 0, second.stderr
    assert server.ranges == [None, "bytes=300000-"]
    assert (env / "tiny.pth").read_bytes() == PAYLOAD


def test_fetch_restarts_when_server_ignores_range(env, server):
    (env).mkdir()
    (env / "tiny.pth.part").write_bytes(b"stale bytes")
    server.ranges_ok = False
    assert fetch().exit_code == 0
    assert (env / "tiny.pth").read_bytes() == PAYLOAD


def test_fetch_checksum_mismatch_removes_file(env, server):
    server.payload = PAYLOAD[:-1] + b"X"
    result = fetch()
    assert result.exit_code == 1
    err = result.stderr.strip()
    assert err.count("\n") == 0
    assert "downloaded file has sha256" in err and "the partial file was removed" in err
    assert not env.exists() or not any(env.iterdir())


def test_fetch_server_down(env, server):
    port = server.server_address[1]
    server.shutdown()
    server.server_close()
    result = fetch()
    assert result.exit_code == 3
    assert f"http://127.0.0.1:{port}/w.bin: cannot connect" in result.stderr
    assert not (env / "tiny.pth").exists()


def test_fetch_http_error_and_unknown_name(env, server):
    result = fetch("--url", f"http://127.0.0.1:{server.server_address[1]}/nope")
    assert result.exit_code == 3 and "HTTP 404" in result.stderr
    unknown = CliRunner().invoke(app, ["weights", "fetch", "sam-vit-x"])
    assert unknown.exit_code == 1 and "not a known weights name" in unknown.stderr
