"""Writing files so that a crash never leaves half of one: a temporary file in the
same folder, flushed, fsynced, then renamed over the target."""

import os
import tempfile
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def publish(temporary, path) -> None:
    """Give a finished temporary file the usual permissions and rename it into place
    (mkstemp creates files readable by their owner only)."""
    os.chmod(temporary, 0o666 & ~_umask())
    os.replace(temporary, path)


def write_text_atomically(path: Path, text: str) -> None:
    """Write ``text`` through a temporary file in the same folder and a rename."""
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        publish(Path(temporary), path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
