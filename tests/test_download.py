"""Tests of dataset downloads against servers and folders made in each test.

Nothing here reaches another host: HTTP tests use a server on 127.0.0.1 started and
stopped by the test, the rest use file:// URLs into tmp_path.
"""

import errno
import gzip
import hashlib
import io
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import types
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import hang_ends_after

from nntrain.cli import cli
from nntrain.data import download as dl
from nntrain.data.download import (
    CONTENT_SHA256,
    DATASETS,
    GZ_MD5,
    Checksum,
    default_cache_dir,
    download,
)
from nntrain.errors import DataError, DownloadError, StopRequested

FASHION = Path("/usr/share/datasets/fashion-mnist")


def label_file(values: list[int]) -> bytes:
    """A gzipped 1-d uint8 IDX file holding ``values``."""
    header = bytes([0, 0, 0x08, 1]) + len(values).to_bytes(4, "big")
    return gzip.compress(header + bytes(values))


def regzip(gz: bytes) -> bytes:
    """The same content gzipped again, as other bytes (other level and mtime)."""
    return gzip.compress(gzip.decompress(gz), compresslevel=1, mtime=0)


def content_sha256(gz: bytes) -> Checksum:
    return Checksum(CONTENT_SHA256, hashlib.sha256(gzip.decompress(gz)).hexdigest())


FILES = {"a-labels.gz": label_file([1, 2, 3]), "b-labels.gz": label_file([9, 8])}
CHECKSUMS = {name: content_sha256(data) for name, data in FILES.items()}


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    """Keep urllib from sending the tests' requests through a configured proxy."""
    for var in ("http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
        monkeypatch.delenv(var.upper(), raising=False)
    monkeypatch.setenv("no_proxy", "*")


@contextmanager
def serve(routes: dict[str, bytes], short: frozenset = frozenset(), stall=None,
          status: int = 200, pause: float = 0):
    """Serve ``routes`` on 127.0.0.1; yield (base URL, list of requested paths).

    Names in ``short`` announce 1000 more bytes than they send. With ``stall`` (an
    Event), every handler waits on it and then closes without an answer. Another
    ``status`` answers every request with that error. A ``pause`` (seconds) sends
    bodies a byte at a time, that long apart, until the client hangs up.
    """
    requested = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            name = self.path.lstrip("/")
            requested.append(name)
            if stall is not None:
                stall.wait(5)
                return  # the client gave up long ago: answer nothing
            if status != 200 or name not in routes:
                self.send_error(404 if status == 200 else status)
                return

            body = routes[name]
            self.send_response(200)
            extra = 1000 if name in short else 0
            self.send_header("Content-Length", str(len(body) + extra))
            self.end_headers()
            if not pause:
                self.wfile.write(body)
                return
            try:
                for byte in body:
                    self.wfile.write(bytes([byte]))
                    time.sleep(pause)
            except OSError:
                pass  # the client gave up on the drip

        def log_message(self, *args):
            pass  # keep pytest's output free of access logs

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    # A short poll interval lets shutdown() return at once instead of after 0.5 s.
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/", requested
    finally:
        if stall is not None:
            stall.set()
        server.shutdown()
        server.server_close()
        thread.join()


@contextmanager
def serve_raw(answer: bytes):
    """Answer every connection to 127.0.0.1 with ``answer`` as it is, HTTP or not;
    yield the base URL."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.05)
    done = threading.Event()

    def answer_all():
        while not done.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            with connection:
                connection.recv(4096)
                connection.sendall(answer)

    thread = threading.Thread(target=answer_all, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/"
    finally:
        done.set()
        thread.join()
        listener.close()


def folder_of(parent: Path, files: dict[str, bytes]) -> Path:
    """A new folder ``parent/source`` holding ``files``."""
    source = parent / "source"
    source.mkdir(parents=True)
    for name, data in files.items():
        (source / name).write_bytes(data)
    return source


def listing(folder: Path) -> list[str]:
    """Every entry of ``folder``, hidden temporary files included."""
    return sorted(p.name for p in folder.iterdir())


def test_download_over_http_writes_verified_files(tmp_path):
    dest = tmp_path / "data" / "mnist"

    with serve(FILES) as (url, requested):
        paths = download("mnist", dest, base_url=url, files=CHECKSUMS, progress=False)

    assert paths == [dest / "a-labels.gz", dest / "b-labels.gz"]
    assert [p.read_bytes() for p in paths] == list(FILES.values())
    assert listing(dest) == ["a-labels.gz", "b-labels.gz"]
    assert requested == ["a-labels.gz", "b-labels.gz"]


def test_download_from_file_url(tmp_path):
    source = folder_of(tmp_path, FILES)
    dest = tmp_path / "dest"

    paths = download("mnist", dest, base_url=source.as_uri(), files=CHECKSUMS)

    assert [p.read_bytes() for p in paths] == list(FILES.values())


def test_rerun_skips_verified_files_and_refetches_damaged_ones(tmp_path):
    dest = tmp_path / "dest"

    with serve(FILES) as (url, requested):
        download("mnist", dest, base_url=url, files=CHECKSUMS)
        download("mnist", dest, base_url=url, files=CHECKSUMS)
        assert requested == ["a-labels.gz", "b-labels.gz"]

        (dest / "b-labels.gz").write_bytes(b"damaged")
        download("mnist", dest, base_url=url, files=CHECKSUMS)

    assert requested == ["a-labels.gz", "b-labels.gz", "b-labels.gz"]
    assert (dest / "b-labels.gz").read_bytes() == FILES["b-labels.gz"]


def test_content_hash_accepts_a_copy_gzipped_again(tmp_path):
    regzipped = regzip(FILES["a-labels.gz"])
    source = folder_of(tmp_path, {"a-labels.gz": regzipped})
    checks = {"a-labels.gz": CHECKSUMS["a-labels.gz"]}
    dest = tmp_path / "dest"

    [path] = download("mnist", dest, base_url=source.as_uri(), files=checks)

    assert path.read_bytes() == regzipped != FILES["a-labels.gz"]


def test_gz_md5_hash_checks_the_archive_itself(tmp_path):
    data = FILES["a-labels.gz"]
    checks = {"a-labels.gz": Checksum(GZ_MD5, hashlib.md5(data).hexdigest())}
    original = folder_of(tmp_path / "original", {"a-labels.gz": data})
    regzipped = folder_of(tmp_path / "regzipped", {"a-labels.gz": regzip(data)})

    [path] = download("mnist", tmp_path, base_url=original.as_uri(), files=checks)
    path.unlink()
    with pytest.raises(DataError, match="wrong gz-md5 hash"):
        download("mnist", tmp_path, base_url=regzipped.as_uri(), files=checks)


LABELS = "t10k-labels-idx1-ubyte.gz"  # a real name: its copies' size is known


@pytest.mark.parametrize("announced", [True, False])
def test_a_body_longer_than_any_copy_of_its_file_is_cut_off(tmp_path, monkeypatch,
                                                            announced):
    # 10,008 bytes of IDX content: no copy takes more than 10,008 + 100 + 65,536.
    # Announced so, it is refused before a byte is read; else once it runs past.
    body = os.urandom(80_000)  # cannot be compressed: it stays 80,000 bytes long
    checks = {LABELS: Checksum(CONTENT_SHA256, "0" * 64)}
    dest = tmp_path / "dest"
    written = []
    real_write = dl._write
    monkeypatch.setattr(dl, "_write", lambda out, chunk, *args: written.append(
        len(chunk)) or real_write(out, chunk, *args))
    if not announced:  # as a server that sends no Content-Length
        monkeypatch.setattr(dl, "_content_length", lambda response: None)

    with serve({LABELS: body}) as (url, _), pytest.raises(DataError) as caught:
        download("mnist", dest, base_url=url, files=checks, progress=False)

    size = "announces 80,000 bytes" if announced else "runs past 75,644 bytes"
    assert str(caught.value) == (
        f"The file at {url}{LABELS} {size}, more than any copy of {LABELS} holds"
        f" (75,644 bytes at most); nothing was kept. Pass another source with"
        f" --mirror URL, or copy {LABELS} by hand into {dest}.")
    assert listing(dest) == []
    if announced:
        assert written == []
    else:  # cut before a chunk would take it past the bound
        assert 0 < sum(written) <= 75_644


def test_a_gzip_bomb_is_refused_once_its_content_outgrows_any_copy(tmp_path):
    bomb = gzip.compress(bytes(10_000_000))  # 10 MB of zeros in about 10 KB
    checks = {LABELS: Checksum(CONTENT_SHA256, "0" * 64)}
    dest = tmp_path / "dest"

    with pytest.raises(DataError, match=re.escape(
            f"holds more than the 75,644 bytes any copy of {LABELS} holds; it was"
            " deleted")):
        download("mnist", dest, base_url=folder_of(tmp_path, {LABELS: bomb}).as_uri(),
                 files=checks)
    assert listing(dest) == []


@pytest.mark.parametrize("kind", ["pipe", "device"])
def test_a_mirror_file_that_is_no_regular_file_is_refused_unread(tmp_path, kind):
    source = folder_of(tmp_path, {})
    if kind == "pipe":
        os.mkfifo(source / LABELS)  # a read would block for good
    else:
        (source / LABELS).symlink_to("/dev/zero")  # a read would never end
    dest = tmp_path / "dest"

    with hang_ends_after(60), pytest.raises(DataError, match="^" + re.escape(
            f"{source / LABELS} in the --mirror folder is not a regular file (a folder,"
            f" pipe or device); put the file itself there, or copy {LABELS} by hand"
            f" into {dest}.") + "$"):
        download("mnist", dest, base_url=source.as_uri(),
                 files={LABELS: Checksum(CONTENT_SHA256, "0" * 64)})


def test_interrupted_download_leaves_no_partial_file(tmp_path, monkeypatch):
    def copy_then_interrupt(response, out, *args):
        out.write(response.read(5))
        raise KeyboardInterrupt

    monkeypatch.setattr(dl, "_copy", copy_then_interrupt)
    source = folder_of(tmp_path, FILES)
    dest = tmp_path / "dest"

    with pytest.raises(KeyboardInterrupt):
        download("mnist", dest, base_url=source.as_uri(), files=CHECKSUMS)

    assert listing(dest) == []


def test_sigterm_during_download_stops_and_leaves_no_partial_file(tmp_path,
                                                                   monkeypatch):
    def copy_then_terminate(response, out, *args):
        out.write(response.read(5))
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises before this ends
        pytest.fail("SIGTERM did not stop the download")

    def unhandled(signum, frame):
        pytest.fail("download did not handle SIGTERM")

    monkeypatch.setattr(dl, "_copy", copy_then_terminate)
    source = folder_of(tmp_path, FILES)
    dest = tmp_path / "dest"
    # Stands for the default action, which would end pytest itself.
    previous = signal.signal(signal.SIGTERM, unhandled)
    try:
        with pytest.raises(StopRequested, match="^stopped by SIGTERM; the files"
                                                " already verified were kept") as info:
            download("mnist", dest, base_url=source.as_uri(), files=CHECKSUMS)
        assert signal.getsignal(signal.SIGTERM) is unhandled
    finally:
        signal.signal(signal.SIGTERM, previous)

    assert info.value.exit_code == 143
    assert listing(dest) == []


@pytest.mark.parametrize("first, second", [
    (signal.SIGINT, signal.SIGTERM), (signal.SIGTERM, signal.SIGINT),
    (signal.SIGTERM, signal.SIGTERM)])
def test_a_second_signal_during_the_cleanup_is_ignored_and_the_first_decides(
        tmp_path, monkeypatch, first, second):
    # The command line's handlers, as __main__ installs them; the second signal
    # arrives as the temporary file is being deleted, and must not cut that short.
    from nntrain.train.signals import stop_on_signals

    def copy_then_signal(response, out, *args):
        out.write(response.read(5))
        os.kill(os.getpid(), first)
        time.sleep(5)
        pytest.fail(f"{first!r} did not stop the download")

    unlink = Path.unlink

    def unlink_after_a_signal(path, *args, **kwargs):
        os.kill(os.getpid(), second)
        return unlink(path, *args, **kwargs)

    monkeypatch.setattr(dl, "_copy", copy_then_signal)
    monkeypatch.setattr(Path, "unlink", unlink_after_a_signal)
    source = folder_of(tmp_path, FILES)
    dest = tmp_path / "dest"
    previous = {signum: signal.getsignal(signum)
                for signum in (signal.SIGINT, signal.SIGTERM)}
    hook = sys.unraisablehook
    try:
        stop_on_signals()
        with pytest.raises(KeyboardInterrupt if first == signal.SIGINT
                           else StopRequested) as info:
            download("mnist", dest, base_url=source.as_uri(), files=CHECKSUMS)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        sys.unraisablehook = hook

    assert getattr(info.value, "exit_code", 130) == 128 + first
    assert listing(dest) == []


def test_a_sigterm_ignored_since_the_start_stays_ignored_during_a_download(
        tmp_path, monkeypatch):
    copy = dl._copy

    def copy_after_a_sigterm(response, out, *args):
        os.kill(os.getpid(), signal.SIGTERM)
        return copy(response, out, *args)

    monkeypatch.setattr(dl, "_copy", copy_after_a_sigterm)
    source = folder_of(tmp_path, FILES)
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        paths = download("mnist", tmp_path / "dest", base_url=source.as_uri(),
                         files=CHECKSUMS)
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, previous)

    assert sorted(path.name for path in paths) == sorted(CHECKSUMS)


def test_download_command_exits_143_on_sigterm_in_one_line(tmp_path):
    dest = tmp_path / "dest"
    stall = threading.Event()

    with serve(FILES, stall=stall) as (url, requested):
        process = subprocess.Popen(
            [sys.executable, "-m", "nntrain", "data", "download", "mnist", "--dir",
             str(dest), "--mirror", url],
            cwd=Path(__file__).parents[1], stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        while not requested:  # the temporary file exists before the request
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)

    assert process.returncode == 143
    assert stderr.splitlines() == [
        "stopped by SIGTERM; the files already verified were kept and no partial"
        " file was left: rerun the command to fetch the rest"
    ]
    assert not dest.exists()  # the folder it made, empty, is removed too


def part_file(folder: Path, name: str, age: float) -> Path:
    """A temporary file as _fetch names it, last written ``age`` seconds ago."""
    folder.mkdir(exist_ok=True)
    path = folder / f".{name}.k3x_9q0z.part"
    path.write_bytes(b"partial")
    then = time.time() - age
    os.utime(path, (then, then))
    return path


@pytest.mark.skipif(dl.fcntl is None, reason="no file locks on this system")
def test_download_removes_temporary_files_a_killed_run_left(tmp_path):
    source = folder_of(tmp_path, FILES)
    dest = tmp_path / "dest"
    part_file(dest, "a-labels.gz", age=3600)
    part_file(dest, "b-labels.gz", age=3600)
    kept = [part_file(dest, "other.gz", age=3600), dest / ".a-labels.gz.part",
            dest / ".a-labels.gz.k3x_9q0z.part.keep"]
    for path in kept[1:]:
        path.write_bytes(b"not ours")

    download("mnist", dest, base_url=source.as_uri(), files=CHECKSUMS)

    assert listing(dest) == sorted(["a-labels.gz", "b-labels.gz",
                                    *(path.name for path in kept)])


@pytest.mark.skipif(dl.fcntl is None, reason="no file locks on this system")
def test_download_keeps_temporary_files_that_are_new_or_in_use(tmp_path):
    source = folder_of(tmp_path, FILES)
    dest = tmp_path / "dest"
    new = part_file(dest, "a-labels.gz", age=1)
    in_use = part_file(dest, "b-labels.gz", age=3600)

    with open(in_use, "rb") as held:
        # flock locks belong to an open file, so this one stands for another process
        dl.fcntl.flock(held, dl.fcntl.LOCK_EX)
        download("mnist", dest, base_url=source.as_uri(), files=CHECKSUMS)

    assert new.exists() and in_use.exists()


def test_truncated_body_is_refused_and_leaves_no_file(tmp_path):
    dest = tmp_path / "dest"

    with serve(FILES, short=frozenset({"b-labels.gz"})) as (url, _):
        with pytest.raises(DownloadError,
                           match="b-labels.gz: the body stopped") as info:
            download("mnist", dest, base_url=url, files=CHECKSUMS)

    size = len(FILES["b-labels.gz"])
    assert f"after {size} of {size + 1000} bytes. Check the connection and try" \
        " again, pass another source" in str(info.value)
    assert listing(dest) == ["a-labels.gz"]


def test_wrong_hash_names_file_and_both_hashes_and_deletes_it(tmp_path):
    dest = tmp_path / "dest"
    wrong = {"a-labels.gz": Checksum(CONTENT_SHA256, "0" * 64)}
    actual = CHECKSUMS["a-labels.gz"].digest

    with serve(FILES) as (url, _):
        with pytest.raises(DataError, match="a-labels.gz has the wrong") as info:
            download("mnist", dest, base_url=url, files=wrong)

    assert "0" * 64 in str(info.value) and actual in str(info.value)
    assert listing(dest) == []


def test_http_404_suggests_mirror_and_copying_by_hand(tmp_path):
    dest = tmp_path / "dest"
    checks = {"missing.gz": CHECKSUMS["a-labels.gz"]}

    with serve(FILES) as (url, _):
        with pytest.raises(DownloadError, match="HTTP 404") as info:
            download("mnist", dest, base_url=url, files=checks)

    message = str(info.value)
    assert f"{url}missing.gz: the server answered HTTP 404. Pass another" in message
    assert f"copy missing.gz by hand into {dest}" in message
    assert listing(dest) == []


def test_missing_file_url_is_a_data_error(tmp_path):
    base_url = (tmp_path / "no-such-folder").as_uri()

    with pytest.raises(DataError, match="Could not download file://.*a-labels.gz:"
                                        " No such file or directory. Pass another"):
        download("mnist", tmp_path / "dest", base_url=base_url, files=CHECKSUMS)

    assert listing(tmp_path / "dest") == []


def test_mirror_that_is_not_a_url_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="give --mirror as an http://"):
        download("mnist", tmp_path, base_url="mirror-folder", files=CHECKSUMS)

    assert listing(tmp_path) == []


@pytest.fixture
def no_fetch(monkeypatch):
    """Fail the test if anything is fetched: a refused mirror must not connect."""
    monkeypatch.setattr(dl, "_fetch", lambda url, *args: pytest.fail(f"fetched {url}"))


@pytest.mark.parametrize("mirror", ["", "  "])
def test_empty_mirror_is_refused_not_replaced_by_the_official_server(
        tmp_path, no_fetch, mirror):
    with pytest.raises(DataError, match="^--mirror is empty; give the http://"):
        download("fashion-mnist", tmp_path, base_url=mirror)


def test_download_command_refuses_an_empty_mirror_in_one_line(tmp_path, no_fetch):
    result = CliRunner().invoke(cli, ["data", "download", "fashion-mnist", "--dir",
                                      str(tmp_path), "--mirror", ""])

    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "error: --mirror is empty; give the http://, https:// or file:// URL of the"
        " folder holding the files, or leave --mirror out to use the official server"
    ]


def test_no_mirror_fetches_from_the_official_server(tmp_path, monkeypatch):
    urls = []
    monkeypatch.setattr(dl, "_fetch", lambda url, *args: urls.append(url))

    download("mnist", tmp_path, base_url=None, files=CHECKSUMS)

    assert urls == [DATASETS["mnist"].base_url + name for name in CHECKSUMS]


@pytest.mark.parametrize("mirror, fault", [
    ("http://127.0.0.1:9/good?x=1", r"has a query or fragment \('\?' or '#'\)"),
    ("http://127.0.0.1:9/good#frag", "has a query or fragment"),
    ("http://127.0.0.1:9/good?", "has a query or fragment"),
    ("http://", "names no host: write http://HOST"),
    ("https:///folder", "names no host: write https://HOST"),
    ("http://127.0.0.1:port/", "has a bad port"),
    ("file://tmp/x", "names the host 'tmp'.*did you mean file:///tmp/x\\?$"),
    ("file:relative/x", "holds no absolute path: write file:///ABSOLUTE/PATH"),
    ("http://[::1/", r"is not a valid URL \(Invalid IPv6 URL\): give the http://"),
    ("file://[::1/x", r"is not a valid URL \(Invalid IPv6 URL\)"),
])
def test_malformed_mirror_is_refused_before_any_connection(
        tmp_path, no_fetch, mirror, fault):
    with pytest.raises(DataError, match=f"^--mirror {re.escape(mirror)} {fault}"):
        download("mnist", tmp_path, base_url=mirror, files=CHECKSUMS)


@pytest.mark.parametrize("mirror, fault", [
    ("http://127.0.0.1:9/e404/ ", "ends with a space (character 25): remove it"),
    ("http://127.0.0.1:9/e404/  ", "ends with a space (character 25): remove it"),
    (" http://127.0.0.1:9/e404/", "starts with a space: remove it"),
    ("http://127.0.0.1:9/my folder/",
     "holds a space at character 22: write a space in a folder name as %20"),
    ("https://127.0.0.1:9/e404/ x", "holds a space at character 26"),
    ("http://127.0.0.1:9/e4\t04/", "holds an unprintable character, '\\t', at"
                                   " character 22: type or paste the URL again"),
    ("http://127.0.0.1:9/e4\n04/", "holds an unprintable character, '\\n', at"
                                   " character 22"),
    ("http://127.0.0.1\n:9/e404/", "holds an unprintable character, '\\n', at"
                                   " character 17"),
    ("http://[::1\n/x", "holds an unprintable character, '\\n', at character 12"),
    ("file:///tmp/my\nfolder/", "holds an unprintable character, '\\n'"),
    ("http://127.0.0.1:9/e404/\x1b[2J", "holds an unprintable character, '\\x1b'"),
    ("http://127.0.0.1:9/e404/\u00a0", "holds an unprintable character, '\\xa0', at"
                                       " character 25"),
])
def test_mirror_with_a_space_or_control_character_is_refused_before_any_connection(
        tmp_path, no_fetch, mirror, fault):
    with pytest.raises(DataError) as info:
        download("mnist", tmp_path, base_url=mirror, files=CHECKSUMS)

    assert str(info.value).startswith(f"--mirror {mirror!r} {fault}")


def test_file_url_may_name_a_folder_with_a_space(tmp_path):
    source = folder_of(tmp_path / "my data", FILES)

    paths = download("mnist", tmp_path / "dest", base_url=f"file://{source}",
                     files=CHECKSUMS)

    assert [p.read_bytes() for p in paths] == list(FILES.values())


def test_an_unparsable_mirror_is_shown_without_its_password(tmp_path, no_fetch):
    with pytest.raises(DataError, match=re.escape("--mirror http://***@[::1/data is"
                                                  " not a valid URL")):
        download("mnist", tmp_path, base_url="http://me:secret@[::1/data",
                 files=CHECKSUMS)


def test_mirror_with_credentials_is_refused_without_showing_them(tmp_path, no_fetch):
    with pytest.raises(DataError, match="holds a user name or password") as info:
        download("mnist", tmp_path, base_url="http://user:pw@127.0.0.1:9/good")

    assert str(info.value).startswith("--mirror http://***@127.0.0.1:9/good ")
    assert "pw" not in str(info.value)


def test_unsupported_scheme_is_refused_naming_the_supported_ones(tmp_path, no_fetch):
    with pytest.raises(DataError, match=(
            r"ftp://127.0.0.1/x \(scheme 'ftp' is not supported\): give --mirror as"
            r" an http://, https:// or file:// URL")):
        download("mnist", tmp_path, base_url="ftp://127.0.0.1/x")


def test_mirror_that_is_a_folder_path_suggests_its_file_url(tmp_path, no_fetch):
    with pytest.raises(DataError, match=re.escape(f"write {tmp_path.as_uri()}")):
        download("mnist", tmp_path / "dest", base_url=str(tmp_path))


def test_file_url_on_localhost_is_accepted(tmp_path):
    source = folder_of(tmp_path, FILES)

    paths = download("mnist", tmp_path / "dest", base_url=f"file://localhost{source}",
                     files=CHECKSUMS)

    assert [p.read_bytes() for p in paths] == list(FILES.values())


def test_destination_that_is_a_file_is_a_data_error(tmp_path):
    dest = tmp_path / "taken"
    dest.write_bytes(b"")

    with pytest.raises(DataError, match="Cannot create the data folder .*taken"):
        download("mnist", dest, base_url=tmp_path.as_uri(), files=CHECKSUMS)


def test_folder_given_is_blamed_on_dir_not_on_nntrain_data(tmp_path, monkeypatch):
    monkeypatch.setenv("NNTRAIN_DATA", str(tmp_path))
    dest = tmp_path / "taken"
    dest.write_bytes(b"")

    with pytest.raises(DataError, match=r"\); choose another folder with --dir\.$"):
        download("mnist", dest, base_url=tmp_path.as_uri(), files=CHECKSUMS)


def test_folder_from_nntrain_data_is_blamed_on_it(tmp_path, monkeypatch):
    (tmp_path / "mnist").write_bytes(b"")
    monkeypatch.setenv("NNTRAIN_DATA", str(tmp_path))

    with pytest.raises(DataError, match=(
            f"folder {re.escape(str(tmp_path / 'mnist'))} .*; point NNTRAIN_DATA at"
            " another folder, or pass --dir")):
        download("mnist", base_url=tmp_path.as_uri(), files=CHECKSUMS)


def test_default_folder_offers_dir_and_nntrain_data(tmp_path, monkeypatch):
    monkeypatch.delenv("NNTRAIN_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".cache").write_bytes(b"")

    with pytest.raises(DataError, match="; choose another folder with --dir or"
                                        " NNTRAIN_DATA"):
        download("mnist", base_url=tmp_path.as_uri(), files=CHECKSUMS)


def test_empty_folder_is_refused_not_replaced_by_the_default(tmp_path, no_fetch):
    with pytest.raises(DataError, match="^--dir is empty; give a folder path"):
        download("mnist", "", base_url=tmp_path.as_uri(), files=CHECKSUMS)


def test_full_disk_suggests_space_or_another_folder(tmp_path, monkeypatch):
    def full(**kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(dl.tempfile, "mkstemp", full)

    with pytest.raises(DataError, match=(
            r"Cannot write a-labels.gz into .*dest \(No space left on device\); free"
            r" some space or choose another folder with --dir\.$")):
        download("mnist", tmp_path / "dest", base_url=tmp_path.as_uri(),
                 files=CHECKSUMS)


def test_server_error_suggests_trying_again(tmp_path):
    with serve(FILES, status=503) as (url, _):
        with pytest.raises(DownloadError, match="HTTP 503. Check the connection and"
                                                " try again, pass another source"):
            download("mnist", tmp_path, base_url=url, files=CHECKSUMS)


def unused_port() -> int:
    """A loopback port that nothing listens on once the probe that found it closes."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_refused_connection_says_so_and_suggests_trying_again(tmp_path):
    port = unused_port()

    with pytest.raises(DownloadError, match=(
            f"^Could not download http://127.0.0.1:{port}/a-labels.gz: Connection"
            " refused. Check the connection and try again, pass another source")):
        download("mnist", tmp_path, base_url=f"http://127.0.0.1:{port}/",
                 files=CHECKSUMS)


def test_slow_server_times_out(tmp_path):
    stall = threading.Event()

    with serve(FILES, stall=stall) as (url, _):
        with pytest.raises(DownloadError, match="timed out. Check the connection"
                                                " and try again"):
            download("mnist", tmp_path, base_url=url, files=CHECKSUMS, timeout=0.2)

    assert listing(tmp_path) == []


def test_server_that_drips_bytes_times_out(tmp_path, monkeypatch):
    monkeypatch.setattr(dl, "_SLOW_SECONDS", 0.3)
    monkeypatch.setattr(dl, "_SLOW_BYTES", 1000)  # 3333 bytes/s at least
    start = time.monotonic()

    # 40 bytes 0.05 s apart, 1040 announced: each read gets a byte well within the
    # read timeout, so only the pace can stop it before the 2 s the drip lasts.
    with serve({"a-labels.gz": bytes(40)}, short=frozenset({"a-labels.gz"}),
               pause=0.05) as (url, _):
        with pytest.raises(DownloadError, match=(
                r"a-labels.gz: timed out: only \d+ bytes arrived in [\d.]+ s \(nntrain"
                r" gives up below 3333 bytes per second\). Check the connection and"
                r" try again")):
            download("mnist", tmp_path, base_url=url, files=CHECKSUMS, timeout=5,
                     progress=False)

    assert time.monotonic() - start < 1.5
    assert listing(tmp_path) == []


def test_slow_but_steady_server_is_waited_for(tmp_path, monkeypatch):
    monkeypatch.setattr(dl, "_SLOW_SECONDS", 0.1)
    monkeypatch.setattr(dl, "_SLOW_BYTES", 2)  # 20 bytes/s; the server sends ~200

    with serve(FILES, pause=0.005) as (url, _):
        paths = download("mnist", tmp_path, base_url=url, files=CHECKSUMS,
                         progress=False)

    assert [p.read_bytes() for p in paths] == list(FILES.values())


# The exit status of `nntrain data download`: 1 when a well-formed mirror fails at
# run time, 2 when what the user pointed at is wrong.

MNIST_FIRST = next(iter(DATASETS["mnist"].files))  # the file fetched first


def download_command(dest: Path, mirror: str):
    return CliRunner().invoke(cli, ["data", "download", "mnist", "--dir", str(dest),
                                    "--mirror", mirror])


def test_a_refused_download_removes_the_folders_it_made(tmp_path, monkeypatch):
    monkeypatch.setitem(DATASETS, "mnist", dl.Dataset("unused", CHECKSUMS))
    source = folder_of(tmp_path, {"a-labels.gz": FILES["a-labels.gz"]})  # b missing
    dest = tmp_path / "new" / "nested" / "mnist"

    result = download_command(dest, source.as_uri())

    assert result.exit_code == 2, result.output
    # a-labels.gz was verified and kept, so its folder stays; with no file
    # verified, nothing of the new folders would stay.
    assert listing(dest) == ["a-labels.gz"]
    (dest / "a-labels.gz").unlink()
    dest.rmdir()
    (tmp_path / "new" / "nested").rmdir()
    (tmp_path / "new").rmdir()
    (source / "a-labels.gz").unlink()

    again = download_command(dest, source.as_uri())

    assert again.exit_code == 2, again.output
    assert not (tmp_path / "new").exists()


def test_download_command_exits_1_when_nothing_listens_at_the_mirror(tmp_path):
    port = unused_port()

    result = download_command(tmp_path, f"http://127.0.0.1:{port}/")

    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"error: Could not download http://127.0.0.1:{port}/{MNIST_FIRST}: Connection"
        " refused. Check the connection and try again, pass another source with"
        f" --mirror URL, or copy {MNIST_FIRST} by hand into {tmp_path}."
    ]


def hung_up() -> threading.Event:
    """For serve's ``stall``: already set, so every request is closed unanswered."""
    event = threading.Event()
    event.set()
    return event


@pytest.mark.parametrize("routes, failure, reason", [
    ({}, {"status": 500}, "the server answered HTTP 500. Check the connection"),
    ({}, {}, "the server answered HTTP 404. Pass another source"),
    ({MNIST_FIRST: b"0123456789"}, {"short": frozenset({MNIST_FIRST})},
     "the body stopped after 10 of 1010 bytes. Check the connection"),
    ({}, {"stall": hung_up()}, "Remote end closed connection without response."),
], ids=["http-500", "http-404", "truncated", "no-answer"])
def test_download_command_exits_1_when_the_mirror_server_fails(tmp_path, routes,
                                                               failure, reason):
    with serve(routes, **failure) as (url, _):
        result = download_command(tmp_path, url)

    assert result.exit_code == 1
    [line] = result.stderr.splitlines()
    assert line.startswith(f"error: Could not download {url}{MNIST_FIRST}: {reason}")
    assert line.endswith(f"copy {MNIST_FIRST} by hand into {tmp_path}.")
    assert listing(tmp_path) == []


def test_download_command_exits_2_on_a_trailing_space_without_connecting(
        tmp_path):
    with serve(FILES) as (url, requested):
        result = download_command(tmp_path, f"{url}e404/ ")

    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"error: --mirror '{url}e404/ ' ends with a space (character {len(url) + 6}):"
        " remove it"
    ]
    assert requested == []


@pytest.mark.parametrize("mirror", ["http://127.0.0.1:9/e4\n04/",
                                    "http://127.0.0.1\n:9/e404/",
                                    "http://[::1\n/x"])
def test_download_command_shows_a_newline_in_the_mirror_escaped_on_one_line(
        tmp_path, no_fetch, mirror):
    result = download_command(tmp_path, mirror)

    assert result.exit_code == 2
    [line] = result.stderr.splitlines()
    assert line.startswith(f"error: --mirror {mirror!r} holds an unprintable"
                           " character, '\\n', at character ")


def test_download_command_shows_a_malformed_status_line_escaped_on_one_line(
        tmp_path):
    with serve_raw(b"FOO\x1b[2J BAR\nHTTP/1.0 200 OK\r\n\r\n") as url:
        result = download_command(tmp_path, url)

    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"error: Could not download {url}{MNIST_FIRST}: the answer is not HTTP: it"
        " began 'FOO\\x1b[2J BAR\\n'. Check the connection and try again, pass"
        f" another source with --mirror URL, or copy {MNIST_FIRST} by hand into"
        f" {tmp_path}."
    ]


def test_download_command_exits_2_when_a_file_mirror_lacks_the_files(tmp_path):
    source = folder_of(tmp_path, {})

    result = download_command(tmp_path / "dest", source.as_uri())

    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"error: Could not download {source.as_uri()}/{MNIST_FIRST}: No such file or"
        f" directory. Pass another source with --mirror URL, or copy {MNIST_FIRST} by"
        f" hand into {tmp_path / 'dest'}."
    ]


def test_download_command_exits_2_when_the_mirror_holds_another_file(tmp_path):
    with serve({MNIST_FIRST: FILES["a-labels.gz"]}) as (url, _):
        result = download_command(tmp_path, url)

    assert result.exit_code == 2
    [line] = result.stderr.splitlines()
    assert line.startswith(f"error: The file downloaded from {url}{MNIST_FIRST} has"
                           " the wrong gz-md5 hash: expected ")
    assert line.endswith(f"; it was deleted. Pass another source with --mirror URL,"
                         f" or copy {MNIST_FIRST} by hand into {tmp_path}.")
    assert listing(tmp_path) == []


def test_a_folder_at_a_files_name_is_refused_before_anything_is_fetched(tmp_path):
    dest = tmp_path / "dest"
    (dest / "b-labels.gz").mkdir(parents=True)

    with serve(FILES) as (url, requested):
        with pytest.raises(DataError) as caught:
            download("mnist", dest, base_url=url, files=CHECKSUMS)

    assert str(caught.value) == (
        f"{dest / 'b-labels.gz'} is a folder, where the file b-labels.gz is to be"
        " written; remove or rename that folder and rerun the command")
    assert requested == []
    assert listing(dest) == ["b-labels.gz"] and (dest / "b-labels.gz").is_dir()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
def test_a_pipe_at_a_files_name_is_refused_without_blocking_on_it(tmp_path):
    dest = tmp_path / "dest"
    dest.mkdir()
    pipe = dest / "a-labels.gz"
    os.mkfifo(pipe)
    done = threading.Event()

    def unblock_a_reader():
        # Should the pipe be opened for reading, end that read instead of hanging.
        while not done.wait(0.05):
            try:
                os.close(os.open(pipe, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:  # no reader yet
                continue

    thread = threading.Thread(target=unblock_a_reader, daemon=True)
    thread.start()
    source = folder_of(tmp_path, FILES)
    try:
        with pytest.raises(DataError) as caught:
            download("mnist", dest, base_url=source.as_uri(), files=CHECKSUMS)
    finally:
        done.set()
        thread.join()

    assert str(caught.value) == (
        f"{pipe} is not a regular file (a pipe, socket or device), where the file"
        " a-labels.gz is to be written; remove or rename it and rerun the command")
    assert listing(dest) == ["a-labels.gz"] and not pipe.is_file()


def test_download_command_exits_2_on_a_folder_at_a_files_name(tmp_path):
    dest = tmp_path / "dest"
    (dest / MNIST_FIRST).mkdir(parents=True)
    source = folder_of(tmp_path, {})

    result = download_command(dest, source.as_uri())

    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"error: {dest / MNIST_FIRST} is a folder, where the file {MNIST_FIRST} is"
        " to be written; remove or rename that folder and rerun the command"
    ]


def test_download_command_ctrl_c_says_what_was_kept_as_sigterm_does(tmp_path,
                                                                     monkeypatch):
    def copy_then_interrupt(response, out, *args):
        out.write(response.read(5))
        raise KeyboardInterrupt  # what the command line's SIGINT handler raises

    monkeypatch.setattr(dl, "_copy", copy_then_interrupt)
    source = folder_of(tmp_path, {MNIST_FIRST: FILES["a-labels.gz"]})
    dest = tmp_path / "dest"

    result = download_command(dest, source.as_uri())

    assert result.exit_code == 130
    assert result.stderr.splitlines() == [
        "stopped by SIGINT; the files already verified were kept and no partial"
        " file was left: rerun the command to fetch the rest"
    ]
    assert not dest.exists()  # the folder it made, empty, is removed too


def test_download_command_says_how_many_files_it_fetched_and_found(tmp_path,
                                                                   monkeypatch):
    monkeypatch.setitem(DATASETS, "mnist", dl.Dataset("unused", CHECKSUMS))
    source = folder_of(tmp_path, FILES)
    dest = tmp_path / "dest"

    first = download_command(dest, source.as_uri())
    rerun = download_command(dest, source.as_uri())
    (dest / "b-labels.gz").write_bytes(b"damaged")
    repaired = download_command(dest, source.as_uri())

    assert [result.exit_code for result in (first, rerun, repaired)] == [0, 0, 0]
    assert [result.stdout for result in (first, rerun, repaired)] == [
        f"mnist: 2 files verified in {dest} ({fetched} fetched, {there} already"
        " there)\n" for fetched, there in ((2, 0), (0, 2), (1, 1))]


def test_unknown_dataset_suggests_the_closest_name(tmp_path):
    with pytest.raises(DataError, match="Unknown dataset 'mnsit'.*mean 'mnist'"):
        download("mnsit", tmp_path)


def test_progress_bar_counts_every_byte_on_a_terminal(tmp_path, monkeypatch):
    bars = []

    class FakeBar:
        def __init__(self, total, **kwargs):
            self.total, self.count, self.closed = total, 0, False
            bars.append(self)

        def update(self, n):
            self.count += n

        def close(self):
            self.closed = True

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setitem(sys.modules, "tqdm", types.SimpleNamespace(tqdm=FakeBar))
    monkeypatch.setattr(sys, "stderr", Terminal())
    source = folder_of(tmp_path, FILES)

    download("mnist", tmp_path / "dest", base_url=source.as_uri(), files=CHECKSUMS)

    sizes = [len(data) for data in FILES.values()]
    assert [(bar.total, bar.count, bar.closed) for bar in bars] == [
        (size, size, True) for size in sizes
    ]


def test_no_progress_bar_when_disabled(tmp_path, monkeypatch):
    monkeypatch.setattr(dl, "_progress_bar", pytest.fail)
    source = folder_of(tmp_path, FILES)

    download(
        "mnist", tmp_path / "dest", base_url=source.as_uri(), files=CHECKSUMS,
        progress=False,
    )


def test_default_cache_dir_follows_nntrain_data(tmp_path, monkeypatch):
    monkeypatch.setenv("NNTRAIN_DATA", str(tmp_path))
    assert default_cache_dir("mnist") == tmp_path / "mnist"

    monkeypatch.delenv("NNTRAIN_DATA")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_cache_dir("mnist") == tmp_path / ".cache" / "nntrain" / "mnist"


def test_table_lists_the_four_files_of_each_dataset():
    names = {
        "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz",
    }
    for dataset in DATASETS.values():
        assert set(dataset.files) == names
        assert dataset.base_url.endswith("/")


@pytest.mark.skipif(not FASHION.is_dir(), reason="Debian's fashion-mnist not installed")
def test_fashion_mnist_hashes_verify_debians_copy(tmp_path):
    paths = download("fashion-mnist", tmp_path, base_url=FASHION.as_uri())

    assert [p.stat().st_size for p in paths] == [
        (FASHION / p.name).stat().st_size for p in paths
    ]
