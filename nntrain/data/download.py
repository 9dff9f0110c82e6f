"""Fetching known datasets into a local folder, for `nntrain data download NAME`.

Every file is streamed into a temporary file beside its final name, checked against
its known hash, then renamed into place, so a failed or interrupted download never
leaves a partial file under the final name. Ctrl-C and SIGTERM delete the temporary
file; one a killed process left behind is deleted by the next download.
"""

from __future__ import annotations

import difflib
import errno
import gzip
import hashlib
import http.client
import os
import re
import signal
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import SplitResult, urlsplit

from nntrain.data.idx import is_gzip
from nntrain.errors import DataError, DownloadError, StopRequested
from nntrain.fileio import publish
from nntrain.train.signals import CommandLineHandler

try:
    import fcntl
except ImportError:  # Windows: no locks, so abandoned temporary files stay
    fcntl = None

# What a checksum is computed over. CONTENT_SHA256 hashes the decompressed IDX bytes,
# so a copy that was gzipped again (Debian ships such copies) still verifies; we use
# it wherever we could compute it ourselves. GZ_MD5 hashes the .gz file as served;
# it is only used where the content hash is unknown to us and the md5 of the
# official archive is what the data's publishers give.
CONTENT_SHA256 = "content-sha256"
GZ_MD5 = "gz-md5"

_HASHERS = {
    CONTENT_SHA256: hashlib.sha256,
    GZ_MD5: lambda: hashlib.md5(usedforsecurity=False),
}

_CHUNK_BYTES = 1 << 16

# The read timeout alone never ends a transfer that a server drips out a byte at a
# time, each within the timeout. So a transfer that brings fewer than _SLOW_BYTES in
# _SLOW_SECONDS (1 KiB/s, far below any working link: the largest file would take
# hours) times out too. A window, not a deadline for the whole file, so that a slow
# but steady link still gets there, and a server that sends no length is judged too.
_SLOW_SECONDS = 60
_SLOW_BYTES = 60 * 1024

_SCHEMES = ("http", "https", "file")

# A temporary file is ".NAME.XXXXXXXX.part" (mkstemp's 8 random characters). Its
# writer holds a lock on it; an unlocked one older than this many seconds was left by
# a killed process. The age spares a new file in the instant before it is locked.
_ABANDONED_SECONDS = 60


@dataclass(frozen=True)
class Checksum:
    """The expected hex digest of one file and what it is computed over."""

    kind: str
    digest: str

    def __post_init__(self):
        if self.kind not in _HASHERS:
            raise ValueError(f"unknown checksum kind {self.kind!r}")


@dataclass(frozen=True)
class Dataset:
    """Where a dataset is published and the checksum of each of its files."""

    base_url: str
    files: Mapping[str, Checksum]


DATASETS: dict[str, Dataset] = {
    # Content hashes computed from Debian's copy in /usr/share/datasets/fashion-mnist
    # with `gzip -dc FILE | sha256sum`.
    "fashion-mnist": Dataset(
        base_url="http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        files={
            "train-images-idx3-ubyte.gz": Checksum(
                CONTENT_SHA256,
                "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            ),
            "train-labels-idx1-ubyte.gz": Checksum(
                CONTENT_SHA256,
                "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            ),
            "t10k-images-idx3-ubyte.gz": Checksum(
                CONTENT_SHA256,
                "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            ),
            "t10k-labels-idx1-ubyte.gz": Checksum(
                CONTENT_SHA256,
                "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
            ),
        },
    ),
    # No copy of MNIST was at hand to hash its content, so these are the published
    # md5 digests of the official .gz files. A hand-copied file must therefore be
    # the original archive, not one gzipped again.
    "mnist": Dataset(
        base_url="https://ossci-datasets.s3.amazonaws.com/mnist/",
        files={
            "train-images-idx3-ubyte.gz": Checksum(
                GZ_MD5, "f68b3c2dcbeaaa9fbdd348bbdeb94873"
            ),
            "train-labels-idx1-ubyte.gz": Checksum(
                GZ_MD5, "d53e105ee54ea40749a09fcbcd1e9432"
            ),
            "t10k-images-idx3-ubyte.gz": Checksum(
                GZ_MD5, "9fb629c4189551a2d022fa330f9573f3"
            ),
            "t10k-labels-idx1-ubyte.gz": Checksum(
                GZ_MD5, "ec29112dd5afa0611ce80d1b7f02629c"
            ),
        },
    ),
}


# The IDX content of each file (header and values), the same in MNIST and in
# Fashion-MNIST. A file at the source that runs past what any copy of it could
# hold is wrong, and is cut off there: otherwise an endless body, or a huge file
# in a damaged mirror, would fill the disk before the hash could be checked. gzip
# adds a few bytes per stored block even to what it cannot compress (5 per 64 KiB
# as gzip writes it), so CONTENT_BYTES plus 1% and 64 KiB bounds every copy,
# gzipped again or not; only a stream flushed every few hundred bytes could pass.
CONTENT_BYTES = {
    "train-images-idx3-ubyte.gz": 16 + 60_000 * 28 * 28,
    "train-labels-idx1-ubyte.gz": 8 + 60_000,
    "t10k-images-idx3-ubyte.gz": 16 + 10_000 * 28 * 28,
    "t10k-labels-idx1-ubyte.gz": 8 + 10_000,
}


def largest_copy(name: str) -> int | None:
    """The most bytes a copy of the file ``name`` can take; None when unknown."""
    content = CONTENT_BYTES.get(name)
    return None if content is None else content + content // 100 + 65_536


def default_cache_dir(name: str) -> Path:
    """The folder for dataset ``name``: ``$NNTRAIN_DATA/<name>`` when NNTRAIN_DATA
    is set, else ``~/.cache/nntrain/<name>``."""
    root = os.environ.get("NNTRAIN_DATA")
    if root:
        return Path(root).expanduser() / name
    return Path.home() / ".cache" / "nntrain" / name


def download(
    name: str,
    dest_dir: str | os.PathLike | None = None,
    base_url: str | None = None,
    progress: bool = True,
    timeout: float = 30,
    files: Mapping[str, Checksum] | None = None,
    on_file: Callable[[Path, bool], None] | None = None,
) -> list[Path]:
    """Fetch the files of dataset ``name`` into ``dest_dir``, skipping verified ones.

    Parameters
    ----------
    name : a key of ``DATASETS``.
    dest_dir : folder the files land in; created if missing. None for
        ``default_cache_dir(name)``; an empty one is refused.
    base_url : where to fetch from instead of the dataset's own address (a mirror):
        http, https or file URL of the folder holding the files; None for the
        dataset's own address. An empty or malformed one is refused.
    progress : show a progress bar on stderr when stderr is a terminal.
    timeout : seconds any one connection or read may wait for the server. A file
        that comes slower than 1 KiB/s over a minute times out as well.
    files : file names and checksums to use instead of the dataset's own.
    on_file : called with each file's final path once it is verified, and whether
        it was fetched now (False: it was there already and passed the check).

    Returns
    -------
    paths : the final path of every file, in table order.

    Raises
    ------
    DataError : unknown name, malformed mirror URL, a file a file:// mirror lacks or
        cannot give, a file with the wrong hash, a folder that cannot be written,
        or a folder (anything but a file) at a file's name (exit status 2).
    DownloadError : a server that cannot be reached, times out, answers an HTTP
        error or stops in the middle of a file (exit status 1).
    """
    dataset = _lookup(name)
    base_url = dataset.base_url if base_url is None else _check_mirror(base_url)
    dest_dir, advice = _destination(name, dest_dir)
    _make_folder(dest_dir, advice)
    if files is None:
        files = dataset.files
    _remove_abandoned_parts(dest_dir, files)
    for filename in files:
        _check_final_name(dest_dir / filename)

    paths = []
    with _sigterm_stops():
        for filename, checksum in files.items():
            path = dest_dir / filename
            fetched = not _is_verified(path, checksum)
            if fetched:
                url = base_url.rstrip("/") + "/" + filename
                _fetch(url, path, checksum, progress, timeout, advice)
            if on_file is not None:
                on_file(path, fetched)
            paths.append(path)
    return paths


# What a download stopped by a signal leaves, and what to do next.
STOPPED_NOTE = ("the files already verified were kept and no partial file was"
                " left: rerun the command to fetch the rest")


@contextmanager
def _sigterm_stops():
    """Make SIGTERM raise StopRequested, so that _fetch deletes its temporary file
    as it does on Ctrl-C; SIGTERM's default action would end the process at once and
    leave the file behind."""

    stopped = []  # the first signal decides (train/signals.py): later ones wait
    previous = signal.getsignal(signal.SIGTERM)  # read by stop() from its install

    def stop(signum, frame):
        # A Ctrl-C that came first (the command line's handler raised it) or an
        # earlier SIGTERM is stopping the download: raised again, this one would
        # cut short the deletion of the temporary file.
        if stopped or getattr(previous, "stopping", False):
            return
        stopped.append(signum)
        if isinstance(previous, CommandLineHandler):
            previous.stopping = True
        raise StopRequested(
            f"stopped by SIGTERM; {STOPPED_NOTE}",
            128 + signal.SIGTERM,  # the shell's status for a process it ended
        )

    try:
        # One ignored since the start (a background job's) stays ignored.
        installed = previous != signal.SIG_IGN
        if installed:
            signal.signal(signal.SIGTERM, stop)
    except ValueError:  # not the main thread: leave signals alone
        installed = False
    try:
        yield
    finally:
        if installed:
            # None: a handler not set from Python, which cannot be put back.
            signal.signal(signal.SIGTERM,
                          signal.SIG_DFL if previous is None else previous)


def _remove_abandoned_parts(folder: Path, names) -> None:
    """Delete the temporary files of ``names`` that a killed run left in ``folder``
    (SIGKILL, a power cut), so that they do not pile up."""
    if fcntl is None:
        return
    pattern = re.compile(
        "|".join(rf"\.{re.escape(name)}\.[a-z0-9_]{{8}}\.part" for name in names)
    )
    for entry in folder.iterdir():
        if pattern.fullmatch(entry.name):
            _remove_if_abandoned(entry)


def _remove_if_abandoned(part: Path) -> None:
    """Delete ``part`` unless it is new or a live download holds its lock."""
    try:
        if time.time() - part.stat().st_mtime < _ABANDONED_SECONDS:
            return
        with open(part, "rb") as file:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            part.unlink()
    except OSError:  # locked (BlockingIOError), gone, or not ours to delete
        pass


def _lock(fd: int) -> None:
    """Mark the temporary file as in use for as long as this process lives."""
    if fcntl is None:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        # No locks here (some network file systems): a later run cannot take one
        # either, so it leaves the file alone.
        pass


def _lookup(name: str) -> Dataset:
    """The table entry for ``name``, or a DataError listing the known names."""
    if name in DATASETS:
        return DATASETS[name]

    known = ", ".join(DATASETS)
    close = difflib.get_close_matches(name, DATASETS, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else "."
    raise DataError(f"Unknown dataset {name!r} (choose one of: {known}){hint}")


def _check_mirror(url: str) -> str:
    """``url`` when it can be the folder the file names are appended to, else a
    DataError naming the fault. Checked before any connection: an empty or malformed
    mirror must never fall back to the official server or reach another host."""
    if not url.strip():
        raise DataError("--mirror is empty; give the http://, https:// or file:// URL"
                        " of the folder holding the files, or leave --mirror out to"
                        " use the official server")
    # Checked before urlsplit, which quietly drops tabs and newlines and strips
    # leading spaces, while urlopen would send the URL as given.
    fault = _character_fault(url)
    if fault:
        raise DataError(f"--mirror {_shown(url)} {fault}")
    try:
        parts = urlsplit(url)
    except ValueError as error:  # an unclosed or malformed [IPv6] host
        raise DataError(f"--mirror {_shown(url)} is not a valid URL ({error}): give"
                        " the http://, https:// or file:// URL of the folder holding"
                        " the files") from None
    if parts.scheme not in _SCHEMES:
        raise _bad_scheme(url, parts.scheme)

    fault = _mirror_fault(url, parts)
    if fault:
        raise DataError(f"--mirror {_shown(url)} {fault}")
    return url


def _character_fault(url: str) -> str | None:
    """What character makes ``url`` unusable in any scheme, as the end of a
    sentence, or None.

    An unprintable character (a tab, a newline, ESC, a no-break space) is never
    typed on purpose. A space at either end is a slip of copy and paste; it is
    refused, not stripped, as nntrain fetches from no URL other than the one given.
    Without this check urlopen would fail on them only once the download started,
    and the error would blame the network.
    """
    for index, char in enumerate(url):
        if not char.isprintable():
            return (f"holds an unprintable character, {char!r}, at character"
                    f" {index + 1}: type or paste the URL again without it")
    if url.startswith(" "):
        return "starts with a space: remove it"
    if url.endswith(" "):
        return (f"ends with a space (character {len(url.rstrip(' ')) + 1}):"
                " remove it")
    return None


def _bad_scheme(url: str, scheme: str) -> DataError:
    what = f"scheme {scheme!r} is not supported" if scheme else "it is not a URL"
    hint = ""
    folder = Path(url).expanduser()
    if not scheme and folder.is_dir():
        hint = f"; for this folder write {folder.resolve().as_uri()}"
    return DataError(f"cannot fetch from {url} ({what}): give --mirror as an http://,"
                     f" https:// or file:// URL of the folder holding the files{hint}")


def _mirror_fault(url: str, parts: SplitResult) -> str | None:
    """What makes ``url`` unusable as a mirror, as the end of a sentence, or None."""
    if "?" in url or "#" in url:
        # The file names are appended to the URL, so they would land in the query.
        return ("has a query or fragment ('?' or '#'): give the folder's URL alone,"
                " the file names are appended to it (write a '?' or '#' of a folder"
                " name as %3F or %23)")
    if "@" in parts.netloc:
        return ("holds a user name or password, which nntrain does not send: use a"
                " mirror that needs none, or fetch the files yourself and pass"
                " --mirror file:///FOLDER")
    if parts.scheme == "file":
        return _file_fault(parts)
    return _host_fault(url, parts)


def _host_fault(url: str, parts: SplitResult) -> str | None:
    # A space inside an http(s) URL is not allowed, and is refused rather than
    # encoded for the same reason as one at either end. Inside a file:// URL it
    # stays allowed: urllib reads the path as written, so it names a folder such as
    # "my data", as it always did.
    if " " in url:
        return (f"holds a space at character {url.index(' ') + 1}: write a space"
                " in a folder name as %20")
    form = f"write {parts.scheme}://HOST[:PORT]/FOLDER"
    if not parts.hostname:
        return f"names no host: {form}"
    try:
        parts.port  # noqa: B018 (reading it is what parses the port)
    except ValueError as err:
        return f"has a bad port ({err}): {form}"
    return None


def _file_fault(parts: SplitResult) -> str | None:
    # urllib would quietly drop the host of file://tmp/x and read /x.
    form = "write file:///ABSOLUTE/PATH (three slashes)"
    if parts.netloc not in ("", "localhost"):
        return (f"names the host {parts.netloc!r}, but a file URL reads this"
                f" machine's files: {form}; did you mean"
                f" file:///{parts.netloc}{parts.path}?")
    if not parts.path.startswith("/"):
        return f"holds no absolute path: {form}"
    return None


def _shown(url: str) -> str:
    """``url`` as an error may print it: without a user name or password, and, when
    it holds a space or an unprintable character, quoted and escaped as repr does,
    so that the reader sees them and where the URL ends. Split by hand, as a URL
    urlsplit refuses must be shown too."""
    head, sep, rest = url.partition("://")
    netloc, slash, path = rest.partition("/")
    if sep and "@" in netloc:
        url = f"{head}{sep}***@{netloc.rpartition('@')[2]}{slash}{path}"
    if " " in url or not url.isprintable():
        return repr(url)
    return url


def _destination(name: str, dest_dir) -> tuple[Path, str]:
    """The folder to fill, and how to choose another should it fail: the advice
    depends on what chose this one (--dir, NNTRAIN_DATA or neither)."""
    if dest_dir is None:
        folder = default_cache_dir(name)
        if os.environ.get("NNTRAIN_DATA"):
            return folder, "point NNTRAIN_DATA at another folder, or pass --dir"
        return folder, "choose another folder with --dir or NNTRAIN_DATA"
    if not str(dest_dir).strip():
        raise DataError("--dir is empty; give a folder path, or leave --dir out for"
                        " $NNTRAIN_DATA/NAME (else ~/.cache/nntrain/NAME)")
    return Path(dest_dir).expanduser(), "choose another folder with --dir"


def _make_folder(folder: Path, advice: str) -> None:
    """Create ``folder`` if needed; a DataError says when that is not possible."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataError(
            f"Cannot create the data folder {folder} ({err.strerror}); {advice}."
        ) from err


def _check_final_name(path: Path) -> None:
    """Refuse what stands at a file's final name and is no file: the rename into
    place would fail once the whole file was fetched, and a pipe there would
    block the check of the file already present."""
    if path.is_dir():
        raise DataError(f"{path} is a folder, where the file {path.name} is to be"
                        " written; remove or rename that folder and rerun the"
                        " command")
    if path.exists() and not path.is_file():
        raise DataError(f"{path} is not a regular file (a pipe, socket or device),"
                        f" where the file {path.name} is to be written; remove or"
                        " rename it and rerun the command")


def _digest(path: Path, kind: str, limit: int | None) -> str | None:
    """Hex digest of ``path`` as ``kind`` defines it (decompressed or as stored);
    None when that runs past ``limit`` bytes (a gzip bomb would otherwise be
    decompressed for minutes before its hash failed)."""
    hasher = _HASHERS[kind]()
    decompress = kind == CONTENT_SHA256 and is_gzip(path)
    hashed = 0

    with (gzip.open(path, "rb") if decompress else open(path, "rb")) as f:
        while chunk := f.read(_CHUNK_BYTES):
            hasher.update(chunk)
            hashed += len(chunk)
            if limit is not None and hashed > limit:
                return None
    return hasher.hexdigest()


def _is_verified(path: Path, checksum: Checksum) -> bool:
    """Whether ``path`` exists and matches ``checksum``; a corrupt file does not."""
    try:
        return _digest(path, checksum.kind, largest_copy(path.name)) == checksum.digest
    except (OSError, EOFError, zlib.error):
        return False


def _fetch(url: str, path: Path, checksum: Checksum, progress: bool, timeout: float,
           advice: str):
    """Download ``url`` to ``path`` through a verified temporary file. ``advice``:
    how to choose another folder, for when this one cannot be written."""
    try:
        fd, tmp_name = tempfile.mkstemp(
            dir=path.parent, prefix=f".{path.name}.", suffix=".part"
        )
    except OSError as err:
        raise _write_error(path, err, advice) from err
    tmp = Path(tmp_name)
    _lock(fd)

    # Any failure, Ctrl-C included, removes the temporary file and keeps the final
    # name free of partial data.
    try:
        with os.fdopen(fd, "wb") as out:
            _stream(url, out, path, progress, timeout, advice)
        _verify(tmp, url, path, checksum)
        publish(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _stream(url: str, out, path: Path, progress: bool, timeout: float,
            advice: str):
    """Copy the body at ``url`` into the open file ``out``; check its length."""
    _refuse_a_local_source_that_is_no_file(url, path)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            expected = _content_length(response)
            received = _copy(response, out, expected, path, progress, advice, url)
    except urllib.error.HTTPError as err:
        err.close()  # an HTTPError holds the server's open answer
        # A 4xx answer will not change on a retry; a 5xx one may.
        raise _network_error(url, path, f"the server answered HTTP {err.code}",
                             retry=err.code >= 500) from err
    except (OSError, http.client.HTTPException) as err:
        reason = _reason(getattr(err, "reason", None) or err)
        raise _network_error(url, path, reason, retry=not _is_local(url)) from err
    except ValueError as err:
        raise DataError(
            f"Cannot fetch {url} ({err}); give --mirror as an http://, https:// or "
            "file:// URL of the folder holding the files."
        ) from err

    if expected is not None and received != expected:
        raise _network_error(
            url, path, f"the body stopped after {received} of {expected} bytes",
            retry=True,
        )


def _refuse_a_local_source_that_is_no_file(url: str, path: Path) -> None:
    """A pipe in a file:// mirror would block the copy for good (the read timeout
    is the network's), and a device such as /dev/zero would never end."""
    if not _is_local(url):
        return
    source = Path(urllib.request.url2pathname(urlsplit(url).path))
    if source.exists() and not source.is_file():
        raise DataError(f"{source} in the --mirror folder is not a regular file (a"
                        " folder, pipe or device); put the file itself there, or"
                        f" copy {path.name} by hand into {path.parent}.")


def _reason(reason) -> str:
    """Why a connection failed, without Python's "[Errno 111]" prefix."""
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    if type(reason) is http.client.BadStatusLine:  # not its RemoteDisconnected
        # Alone, the line the server sent would read as nntrain's own words.
        return f"the answer is not HTTP: it began {reason.line[:80]!r}"
    return str(reason)


def _content_length(response) -> int | None:
    """The announced body size, or None when the server does not say."""
    try:
        return int(response.headers["Content-Length"])
    except (KeyError, TypeError, ValueError):
        return None


def _copy(response, out, total: int | None, path: Path, progress: bool,
          advice: str, url: str) -> int:
    """Copy ``response`` into ``out`` in chunks; return the number of bytes copied.
    A body longer than any copy of the file (largest_copy) is bad input."""
    bar = _progress_bar(total, path.name) if progress else None
    pace = _Pace()
    received = 0
    limit = largest_copy(path.name)
    if limit is not None and total is not None and total > limit:
        raise _too_long(url, path, limit, total)  # nothing need be fetched
    try:
        # read1 returns what has arrived; read would wait to fill the whole chunk,
        # and the pace could not be checked while a server drips.
        while chunk := response.read1(_CHUNK_BYTES):
            if limit is not None and received + len(chunk) > limit:
                raise _too_long(url, path, limit)
            _write(out, chunk, path, advice)
            received += len(chunk)
            pace.add(len(chunk))
            if bar is not None:
                bar.update(len(chunk))
    finally:
        if bar is not None:
            bar.close()
    return received


def _too_long(url: str, path: Path, limit: int,
              announced: int | None = None) -> DataError:
    """The error of a body longer than any copy of its file: one that announced
    its length (``announced`` bytes), or one that ran past ``limit``."""
    size = (f"announces {announced:,} bytes" if announced is not None
            else f"runs past {limit:,} bytes")
    return DataError(
        f"The file at {url} {size}, more than any copy of {path.name} holds"
        f" ({limit:,} bytes at most); nothing was kept. Pass another source with"
        f" --mirror URL, or copy {path.name} by hand into {path.parent}.")


class _Pace:
    """Counts the bytes of a transfer in windows of _SLOW_SECONDS and raises
    TimeoutError when a window ends with fewer than _SLOW_BYTES. It sees time pass
    only when bytes arrive; a silent server is the read timeout's to catch."""

    def __init__(self):
        self.start, self.count = time.monotonic(), 0

    def add(self, count: int) -> None:
        self.count += count
        elapsed = time.monotonic() - self.start
        if elapsed < _SLOW_SECONDS:
            return
        if self.count < _SLOW_BYTES:
            floor = _SLOW_BYTES / _SLOW_SECONDS
            raise TimeoutError(
                f"timed out: only {self.count} bytes arrived in {elapsed:.3g} s"
                f" (nntrain gives up below {floor:.0f} bytes per second)"
            )
        self.start, self.count = time.monotonic(), 0


def _write(out, chunk: bytes, path: Path, advice: str):
    """Write ``chunk`` to ``out``; a local failure must not read as a network one."""
    try:
        out.write(chunk)
    except OSError as err:
        raise _write_error(path, err, advice) from err


def _progress_bar(total: int | None, label: str):
    """A tqdm bar on stderr, or None when stderr is not a terminal or tqdm is absent."""
    if not sys.stderr.isatty():
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=label, unit="B", unit_scale=True, file=sys.stderr)


def _verify(tmp: Path, url: str, path: Path, checksum: Checksum):
    """Raise a DataError unless the downloaded ``tmp`` matches ``checksum``.

    Bad input (exit status 2), not a failure at run time: the body arrived whole
    (_stream checked its announced length), so these are the bytes the source
    holds, a wrong or damaged copy that fetching again from it would give again.
    A body cut short without a Content-Length to show it lands here too; that is
    rare, and another source is the fix either way.
    """
    fix = (f"it was deleted. Pass another source with --mirror URL, or copy"
           f" {path.name} by hand into {path.parent}.")
    limit = largest_copy(path.name)
    try:
        actual = _digest(tmp, checksum.kind, limit)
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(
            f"The file downloaded from {url} is not a valid gzip file ({err}); {fix}"
        ) from err

    if actual is None:
        raise DataError(
            f"The file downloaded from {url} holds more than the {limit:,} bytes"
            f" any copy of {path.name} holds; {fix}"
        )
    if actual != checksum.digest:
        raise DataError(
            f"The file downloaded from {url} has the wrong {checksum.kind} hash: "
            f"expected {checksum.digest}, got {actual}; {fix}"
        )


def _network_error(url: str, path: Path, reason: str,
                   retry: bool) -> DataError | DownloadError:
    """Why ``url`` could not be read, as the error of its exit status. ``retry``:
    whether the failure may pass (a timeout, a dropped connection).

    A file:// mirror is a folder on this machine that the user named, so a file
    missing or unreadable there is bad input, like any missing file (DataError,
    exit status 2). A server that cannot be reached, answers an error or stops
    mid-file is a failure at run time (DownloadError, exit status 1): its URL was
    checked before any connection, and only the server's state, not the command,
    decides whether the same command works later. An HTTP 404 counts as run time
    too: from here a mirror not yet filled, a moved official file and a mistyped
    folder look alike.
    """
    first = "Check the connection and try again, pass" if retry else "Pass"
    message = (f"Could not download {url}: {reason}. {first} another source with"
               f" --mirror URL, or copy {path.name} by hand into {path.parent}.")
    return DataError(message) if _is_local(url) else DownloadError(message)


def _is_local(url: str) -> bool:
    """Whether ``url`` is a file:// URL (the scheme may be written in capitals)."""
    return urlsplit(url).scheme == "file"


def _write_error(path: Path, err: OSError, advice: str) -> DataError:
    full = "free some space or " if err.errno == errno.ENOSPC else ""
    return DataError(
        f"Cannot write {path.name} into {path.parent} ({err.strerror}); {full}"
        f"{advice}."
    )
