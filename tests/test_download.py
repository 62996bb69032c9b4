"""d2o.download: resumable, length- and SHA-256-verified, atomic downloads with a trust-on-first-use lock file."""

import hashlib
import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from d2o.download import VALIDATORS, ChecksumError, DownloadError, LockFileError, download, read_lock, sha256_file

DATA = os.urandom(300_000)
SHA = hashlib.sha256(DATA).hexdigest()


class _Handler(BaseHTTPRequestHandler):
    """Serves `server.data`; honours `Range: bytes=N-` unless `server.ignore_range`; `server.short` sends half."""

    def do_GET(self):
        srv, body, start = self.server, self.server.data, 0
        if srv.hang:  # accepts the connection and never answers
            time.sleep(30)
            return
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
        if srv.content_type:
            self.send_header("Content-Type", srv.content_type)
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
    srv.data, srv.ranges, srv.short, srv.ignore_range, srv.hang, srv.content_type = DATA, [], False, False, False, None
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
        download(server.url, dest, sha256=SHA, progress=False, lock_file=tmp_path / "lock.json")
    assert "got" in str(err.value) and "is kept; run again to resume" in str(err.value)
    assert not dest.exists() and not (tmp_path / "lock.json").exists()
    assert 0 < Path(str(dest) + ".part").stat().st_size < len(DATA)
    assert server.ranges[1].startswith("bytes=")  # with an expected hash, retries resume
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
    server.data = DATA[:-1] + bytes([DATA[-1] ^ 1])  # upstream file changed (a fixed "!" equalled a random last byte 1 time in 256)
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


def test_first_download_never_resumes_damaged_bytes(tmp_path, server):
    """No expected hash: an old .part (here with damaged bytes) is discarded, so its hash is never pinned."""
    lock, dest = tmp_path / "lock.yaml", tmp_path / "c.pkl"
    Path(str(dest) + ".part").write_bytes(b"X" * 1000 + DATA[1000:200_000])
    download(server.url, dest, lock_file=lock, key="k", progress=False)
    assert server.ranges == [None] and dest.read_bytes() == DATA and read_lock(lock)["k"]["sha256"] == SHA
    server.short = True  # a failed first download keeps nothing to resume
    with pytest.raises(DownloadError, match="failed after 3 tries") as err:
        download(server.url, tmp_path / "d.pkl", lock_file=lock, key="d", progress=False)
    assert "kept" not in str(err.value) and not list(tmp_path.glob("d.pkl*"))


def test_an_html_page_is_refused_and_never_pinned(tmp_path, server, capsys):
    server.content_type, server.data = "text/html; charset=utf-8", b"<html>please log in</html>"
    with pytest.raises(DownloadError, match=r"answered 200 with text/html.*not the file") as err:
        download(server.url, tmp_path / "c.pkl", lock_file=tmp_path / "lock.json", key="k", progress=False)
    assert len(server.ranges) == 1 and not (tmp_path / "lock.json").exists() and str(err.value).count("\n") == 0
    assert capsys.readouterr().err.count("try 1 of 3 failed") == 1


def test_content_is_checked_before_its_hash_is_pinned(tmp_path, server):
    """A complete download that is not the named file (here random bytes for a pickle) is moved aside, not pinned."""
    lock, dest = tmp_path / "lock.yaml", tmp_path / "c.pkl"
    with pytest.raises(DownloadError, match=r"c.pkl: the file is not what the registry names .* its hash not recorded"):
        download(server.url, dest, lock_file=lock, key="k", progress=False, validate=VALIDATORS["pickle"])
    assert not dest.exists() and not lock.exists() and list(tmp_path.glob("c.pkl.bad-*"))
    import numpy as np

    np.savez(tmp_path / "ref.npz", mu=np.zeros(3))
    server.data = (tmp_path / "ref.npz").read_bytes()
    download(server.url, tmp_path / "r.npz", lock_file=lock, key="r", progress=False, validate=VALIDATORS["npz"])
    assert "r" in read_lock(lock)


def test_a_server_that_never_answers_fails_in_seconds(tmp_path, server, capsys):
    server.hang = True
    start = time.time()
    with pytest.raises(DownloadError, match="failed after 2 tries.*Offline\\? Copy the file to"):
        download(server.url, tmp_path / "c.pkl", sha256=SHA, progress=False, retries=2, timeout=0.5)
    assert time.time() - start < 10 and capsys.readouterr().err.count("failed: timed out") == 2


def test_parallel_first_downloads_keep_every_entry(tmp_path):
    """12 concurrent first downloads into one lock file: 12 entries (the updates run under an OS lock), one line each."""
    lock = tmp_path / "lock.yaml"
    srcs = []
    for i in range(12):
        srcs.append(tmp_path / f"src{i}.bin")
        srcs[-1].write_bytes(os.urandom(1000))
    threads = [threading.Thread(target=download, args=(s.as_uri(), tmp_path / f"out{i}.bin"),
                                kwargs=dict(lock_file=lock, key=f"k{i}", progress=False)) for i, s in enumerate(srcs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    entries = read_lock(lock)
    assert sorted(entries) == sorted(f"k{i}" for i in range(12))
    assert all(entries[f"k{i}"]["sha256"] == sha256_file(s) for i, s in enumerate(srcs))
    body = [line for line in lock.read_text().splitlines() if not line.startswith("#")]
    keys = [line.split(":", 1)[0] for line in body]
    assert len(body) == 12 and keys == sorted(keys)


@pytest.mark.parametrize("text, message", [
    ("a: {sha256: x}\n<<<<<<< HEAD\nb: {sha256: y}\n=======\n", r"lock.yaml:2: a merge-conflict marker"),
    ("a: {sha256: x\nb: [\n", r"lock.yaml:\d+: not valid YAML"),
    ("- just a list\n", r"lock.yaml: a lock file maps each key to"),
])
def test_a_malformed_lock_file_names_the_line(tmp_path, text, message):
    (tmp_path / "lock.yaml").write_text(text)
    with pytest.raises(LockFileError, match=message):
        read_lock(tmp_path / "lock.yaml")
