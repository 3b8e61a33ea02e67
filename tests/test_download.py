"""`speechcls download` against a real HTTP server on 127.0.0.1 serving archives built here."""

import hashlib
import io
import random
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from speechcls import config
from speechcls.data import download as dl


def make_tar(members: dict[str, bytes], links: dict[str, tuple[str, bytes]] = ()) -> bytes:
    """A .tar.gz of regular files, plus links {name: (target, tarfile type)}."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, (target, kind) in dict(links).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, target
            tar.addfile(info)
    return buf.getvalue()


GOOD = {
    "./yes/0a7c2a8d_nohash_0.wav": b"RIFF-not-really-audio",
    "./no/0a7c2a8d_nohash_0.wav": b"RIFF-also-not-audio",
    "./validation_list.txt": b"yes/0a7c2a8d_nohash_0.wav\n",
    "./testing_list.txt": b"",
}


class Server:
    """Serves one archive at /sc.tar.gz; honours `Range: bytes=N-` unless told not to; can cut the
    first transfer short after `cut_after` bytes, as a dropped connection does."""

    def __init__(self):
        self.payload = b""
        self.cut_after = None
        self.honour_range = True
        self.requests = []  # the Range header of every request (None without one)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                rng = self.headers.get("Range")
                outer.requests.append(rng)
                if self.path != "/sc.tar.gz":
                    self.send_error(404)
                    return
                start = 0
                if rng and outer.honour_range:
                    start = int(rng.removeprefix("bytes=").split("-")[0])
                    if start >= len(outer.payload):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(outer.payload)}")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(outer.payload) - 1}/{len(outer.payload)}")
                else:
                    self.send_response(200)
                body = outer.payload[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if outer.cut_after is not None:
                    body, outer.cut_after = body[: outer.cut_after], None
                    self.wfile.write(body)
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/sc.tar.gz"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def serve(self, payload: bytes) -> str:
        self.payload = payload
        return hashlib.sha256(payload).hexdigest()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


def test_good_archive_extracts_once(server, tmp_path):
    sha = server.serve(make_tar(GOOD))
    root = tmp_path / "data" / "speech_commands_v0.01"
    tree, what = dl.download_release("v0.01", root, server.url, sha)
    assert (tree, what) == (root, "extracted")
    assert (root / "yes" / "0a7c2a8d_nohash_0.wav").read_bytes() == GOOD["./yes/0a7c2a8d_nohash_0.wav"]
    assert (root / "validation_list.txt").is_file()
    assert dl.archive_path(root).is_file()
    # a finished tree is not fetched or extracted again, even with the archive gone
    dl.remove_archive(root)
    n = len(server.requests)
    assert dl.download_release("v0.01", root, server.url, sha) == (root, "present")
    assert len(server.requests) == n


def test_finished_archive_is_not_downloaded_again(server, tmp_path):
    sha = server.serve(make_tar(GOOD))
    root = tmp_path / "speech_commands_v0.01"
    dl.fetch(server.url, dl.archive_path(root))
    assert len(server.requests) == 1
    assert dl.download_release("v0.01", root, server.url, sha)[1] == "extracted"
    assert len(server.requests) == 1


def test_wrong_checksum_extracts_nothing(server, tmp_path):
    server.serve(make_tar(GOOD))
    root = tmp_path / "speech_commands_v0.01"
    with pytest.raises(ValueError, match="SHA-256") as e:
        dl.download_release("v0.01", root, server.url, "0" * 64)
    assert "nothing was extracted" in str(e.value)
    assert not root.exists()
    assert list(tmp_path.iterdir()) == []  # archive removed, no temporary folder left


def test_interrupted_transfer_resumes(server, tmp_path):
    payload = make_tar({**GOOD, "./big/x_nohash_0.wav": random.Random(0).randbytes(200_000)})  # incompressible
    sha = server.serve(payload)
    root = tmp_path / "speech_commands_v0.01"
    server.cut_after = 50_000
    with pytest.raises(dl.DownloadError, match="resume"):
        dl.download_release("v0.01", root, server.url, sha)
    part = tmp_path / "speech_commands_v0.01.tar.gz.part"
    assert part.stat().st_size == 50_000
    assert not root.exists()
    assert dl.download_release("v0.01", root, server.url, sha) == (root, "extracted")
    assert server.requests == [None, "bytes=50000-"]
    assert dl.sha256_file(dl.archive_path(root)) == sha
    assert (root / "big" / "x_nohash_0.wav").read_bytes() == random.Random(0).randbytes(200_000)


def test_server_ignoring_range_restarts_cleanly(server, tmp_path):
    sha = server.serve(make_tar(GOOD))
    root = tmp_path / "speech_commands_v0.01"
    server.cut_after = 100
    server.honour_range = False
    with pytest.raises(dl.DownloadError):
        dl.download_release("v0.01", root, server.url, sha)
    assert dl.download_release("v0.01", root, server.url, sha)[1] == "extracted"
    assert dl.sha256_file(dl.archive_path(root)) == sha


@pytest.mark.parametrize(
    "members, links, what",
    [
        ({"./yes/a_nohash_0.wav": b"x", "../escaped.txt": b"evil"}, {}, "outside"),
        ({"./yes/a_nohash_0.wav": b"x", "./yes/../../escaped.txt": b"evil"}, {}, "outside"),
        ({"./yes/a_nohash_0.wav": b"x", "/ESCAPE_ABS/escaped.txt": b"evil"}, {}, "absolute"),
        ({"./yes/a_nohash_0.wav": b"x"}, {"./yes/link": ("../../escaped.txt", tarfile.SYMTYPE)}, "outside"),
        ({"./yes/a_nohash_0.wav": b"x"}, {"./yes/link": ("/etc/passwd", tarfile.SYMTYPE)}, "absolute"),
        ({"./yes/a_nohash_0.wav": b"x"}, {"./hard": ("../escaped.txt", tarfile.LNKTYPE)}, "outside"),
        ({"./yes/a_nohash_0.wav": b"x"}, {"./dev": ("", tarfile.CHRTYPE)}, "device"),
    ],
)
def test_unsafe_members_are_refused_and_nothing_escapes(server, tmp_path, members, links, what):
    sha = server.serve(make_tar(members, links))
    base = tmp_path / "deep" / "er"
    root = base / "speech_commands_v0.01"
    with pytest.raises(dl.UnsafeArchiveError, match=what):
        dl.download_release("v0.01", root, server.url, sha)
    assert not root.exists()
    assert [p.name for p in base.iterdir()] == ["speech_commands_v0.01.tar.gz"]  # no half-extracted tree
    assert not list(tmp_path.rglob("escaped.txt"))
    assert not (tmp_path / "ESCAPE_ABS").exists()


def test_links_inside_the_tree_are_fine(tmp_path):
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(
        make_tar({"./yes/a_nohash_0.wav": b"x"}, {"./yes/b_nohash_0.wav": ("a_nohash_0.wav", tarfile.SYMTYPE)})
    )
    dl.extract(archive, tmp_path / "tree")
    assert (tmp_path / "tree" / "yes" / "b_nohash_0.wav").read_bytes() == b"x"


def test_offline_fails_fast_and_says_how_to_use_a_copy(tmp_path):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now: connection refused, as with no network
    with pytest.raises(dl.DownloadError) as e:
        dl.download_release("v0.01", tmp_path / "speech_commands_v0.01", f"http://127.0.0.1:{port}/x.tar.gz")
    assert "--root" in str(e.value) and "speechcls synth" in str(e.value)
    assert not (tmp_path / "speech_commands_v0.01").exists()


def test_foreign_folder_is_not_overwritten(server, tmp_path):
    sha = server.serve(make_tar(GOOD))
    root = tmp_path / "speech_commands_v0.01"
    (root / "mine").mkdir(parents=True)
    with pytest.raises(ValueError, match="not completed by speechcls"):
        dl.download_release("v0.01", root, server.url, sha)
    assert server.requests == []


def test_http_error_is_reported(server, tmp_path):
    server.serve(make_tar(GOOD))
    with pytest.raises(dl.DownloadError, match="404"):
        dl.download_release("v0.01", tmp_path / "t", server.url.replace("sc.tar", "nope.tar"), "0" * 64)


@pytest.mark.parametrize(
    "sha", ["abc123", "g" * 64, "0" * 63, "0" * 65, ""], ids=["short", "not-hex", "63", "65", "empty"]
)
def test_a_malformed_sha256_is_refused_before_any_download(server, tmp_path, sha):
    server.serve(make_tar(GOOD))
    with pytest.raises(ValueError, match="64 hexadecimal digits"):
        dl.download_release("v0.01", tmp_path / "speech_commands_v0.01", server.url, sha)
    assert server.requests == [] and list(tmp_path.iterdir()) == []


def test_the_caps_leave_room_for_each_release():
    # the largest possible clip: 1 s of 16 kHz 16-bit mono + a 44-byte header
    for rel in config.RELEASES.values():
        limits = dl.ExtractLimits.for_release(rel)
        assert limits.members >= 2 * rel.n_clips
        assert limits.bytes >= 2 * rel.n_clips * (16_000 * 2 + 44)
    assert dl.ExtractLimits.for_release(config.RELEASES["v0.01"]).bytes < 5e9  # but a bomb is still stopped


@pytest.mark.parametrize(
    "members, what",
    [
        ({f"./yes/a{i}_nohash_0.wav": b"x" for i in range(5)}, "more than 4 members"),  # cap: 2 x 2 clips
        ({"./yes/a_nohash_0.wav": bytes(70_000), "./no/a_nohash_0.wav": bytes(70_000)}, "more than 128,176 bytes"),
    ],
)
def test_an_archive_past_the_caps_is_refused_and_nothing_is_extracted(server, tmp_path, monkeypatch, members, what):
    from dataclasses import replace

    # a release of 2 clips: caps of 4 members and 2 x 2 x 32,044 = 128,176 bytes
    monkeypatch.setitem(config.RELEASES, "v0.01", replace(config.RELEASES["v0.01"], n_clips=2))
    sha = server.serve(make_tar(members))
    root = tmp_path / "speech_commands_v0.01"
    with pytest.raises(dl.UnsafeArchiveError, match=what) as e:
        dl.download_release("v0.01", root, server.url, sha)
    assert "nothing was extracted" in str(e.value) and "Speech Commands v0.01 (2 clips)" in str(e.value)
    assert not root.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["speech_commands_v0.01.tar.gz"]  # no half-extracted tree
