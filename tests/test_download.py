"""d2o.download: resumable, length- and SHA-256-verified, atomic downloads with a trust-on-first-use lock file."""

import hashlib
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from d2o.download import ChecksumError, DownloadError, download, sha256_file

DATA = os.urandom(300_000)
SHA = hashlib.sha256(DATA).hexdigest()


class _Handler(BaseHTTPRequestHandler):
    """Serves `server.data`; honours `Range: bytes=N-` unless `server.ignore_range`; `server.short` sends half."""

    def do_GET(self):
        srv, body, start = self.server, self.server.data, 0
        rng = self.headers.get("Range")
        srv.ranges.append(rng)
        if rng and not srv.ignore_range:
            start = int(rng.removeprefix("bytes=").split("-")[0])
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        part = body[start:]
        self.send_header("Content-Length", str(len(part)))
        self.end_headers()
        self.wfile.write(part[:len(part) // 2] if srv.short else part)
        self.close_connection = True

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.data, srv.ranges, srv.short, srv.ignore_range = DATA, [], False, False
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}/ckpt.pkl"
    yield srv
    srv.shutdown()
    srv.server_close()


def test_sha256_file(tmp_path):
    (tmp_path / "f").write_bytes(DATA)
    assert sha256_file(tmp_path / "f", chunk=4096) == SHA


def test_full_download_verified(tmp_path, server, capsys):
    dest = download(server.url, tmp_path / "sub" / "c.pkl", sha256=SHA.upper(), chunk=65536)
    assert dest.read_bytes() == DATA and not Path(str(dest) + ".part").exists()
    assert server.ranges == [None]
    assert "c.pkl" in capsys.readouterr().err  # tqdm progress on stderr
    download(server.url, dest, sha256=SHA)  # already there and verified: no new request
    assert server.ranges == [None]


def test_resume_partial_file(tmp_path, server):
    dest = tmp_path / "c.pkl"
    Path(str(dest) + ".part").write_bytes(DATA[:123_456])
    download(server.url, dest, sha256=SHA, progress=False)
    assert dest.read_bytes() == DATA and server.ranges == ["bytes=123456-"]


def test_resume_when_server_ignores_range(tmp_path, server):
    server.ignore_range = True
    dest = tmp_path / "c.pkl"
    Path(str(dest) + ".part").write_bytes(b"garbage" * 100)
    download(server.url, dest, sha256=SHA, progress=False)
    assert dest.read_bytes() == DATA


def test_short_transfer_is_an_error(tmp_path, server):
    server.short = True
    dest = tmp_path / "c.pkl"
    with pytest.raises(DownloadError, match="after 3 tries") as err:
        download(server.url, dest, progress=False, lock_file=tmp_path / "lock.json")
    assert "got" in str(err.value.__cause__) or "Incomplete" in repr(err.value.__cause__)
    assert not dest.exists() and not (tmp_path / "lock.json").exists()
    assert 0 < Path(str(dest) + ".part").stat().st_size < len(DATA)
    assert server.ranges[1].startswith("bytes=")  # retries resume
    server.short = False  # a later run completes the same .part
    download(server.url, dest, sha256=SHA, progress=False)
    assert dest.read_bytes() == DATA


def test_mismatch_moves_file_aside(tmp_path, server):
    dest, wrong = tmp_path / "c.pkl", "0" * 64
    with pytest.raises(ChecksumError) as err:
        download(server.url, dest, sha256=wrong, progress=False)
    msg = str(err.value)
    assert wrong in msg and SHA in msg and str(dest) in msg and "sha256" in msg
    assert not dest.exists()
    assert (tmp_path / f"c.pkl.bad-{SHA[:8]}").read_bytes() == DATA


def test_existing_user_file_with_wrong_hash_is_kept_aside(tmp_path, server):
    dest = tmp_path / "c.pkl"
    dest.write_bytes(b"user data")
    with pytest.raises(ChecksumError):
        download(server.url, dest, sha256=SHA, progress=False)
    bad = tmp_path / f"c.pkl.bad-{hashlib.sha256(b'user data').hexdigest()[:8]}"
    assert bad.read_bytes() == b"user data" and server.ranges == []


@pytest.mark.parametrize("lock_name", ["checksums.lock.json", "checksums.lock.yaml"])
def test_lock_file_records_then_enforces(tmp_path, server, lock_name):
    lock, dest = tmp_path / lock_name, tmp_path / "c.pkl"
    download(server.url, dest, lock_file=lock, key="edm-cifar10", progress=False)
    entry = (yaml.safe_load if lock.suffix == ".yaml" else json.loads)(lock.read_text())["edm-cifar10"]
    assert entry["sha256"] == SHA and entry["size"] == len(DATA) and entry["url"] == server.url and entry["date"]
    dest.unlink()
    server.data = DATA[:-1] + b"!"  # upstream file changed
    with pytest.raises(ChecksumError) as err:
        download(server.url, dest, lock_file=lock, key="edm-cifar10", progress=False)
    assert str(lock) in str(err.value) and "edm-cifar10" in str(err.value) and SHA in str(err.value)
    assert not dest.exists() and list(tmp_path.glob("c.pkl.bad-*"))
    server.data = DATA
    download(server.url, dest, lock_file=lock, key="edm-cifar10", progress=False)  # the recorded file passes again
    assert dest.read_bytes() == DATA


def test_file_url_and_resume(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(DATA)
    dest = tmp_path / "out" / "dst.bin"
    dest.parent.mkdir()
    Path(str(dest) + ".part").write_bytes(DATA[:1000])
    download(src.as_uri(), dest, sha256=SHA, progress=False, chunk=4096)
    assert dest.read_bytes() == DATA
    with pytest.raises(DownloadError, match="failed"):
        download((tmp_path / "missing.bin").as_uri(), tmp_path / "m.bin", progress=False, retries=1)
