"""The run directory (DESIGN.md's contract):

  runs/NAME/
    config.yaml      the resolved config, every default filled in
    metrics.jsonl    one JSON record per line
    train.log        what the terminal showed, without the progress bar
    checkpoints/     last.npz, best.npz
    plots/           PNG figures
"""

import json
import os
import shutil
import tempfile
from pathlib import Path

from nntrain.config import config_to_yaml
from nntrain.errors import RunDirectoryError

# What nntrain itself writes; --force removes these and nothing else.
OWN_ENTRIES = ("config.yaml", "metrics.jsonl", "train.log", "checkpoints", "plots")


def write_text_atomically(path: Path, text: str) -> None:
    """Write ``text`` through a temporary file in the same folder and a rename."""
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


class RunDirectory:
    """Creates the folder layout and appends to the run's log files."""

    def __init__(self, path, force: bool = False):
        self.path = Path(path)
        self._prepare(force)
        self.checkpoints = self.path / "checkpoints"
        self.plots = self.path / "plots"
        self.checkpoints.mkdir(exist_ok=True)
        self._metrics = open(self.path / "metrics.jsonl", "a", encoding="utf-8")
        self._log = open(self.path / "train.log", "a", encoding="utf-8")

    def _prepare(self, force: bool) -> None:
        if self.path.exists() and not self.path.is_dir():
            raise RunDirectoryError(f"--out {self.path} is a file; give a folder path")
        if self.path.is_dir() and any(self.path.iterdir()):
            if not force:
                raise RunDirectoryError(
                    f"run directory {self.path} is not empty; pass --force to start"
                    " over, --out to use another folder"
                )
            for name in OWN_ENTRIES:
                entry = self.path / name
                if entry.is_dir():
                    shutil.rmtree(entry)
                elif entry.exists():
                    entry.unlink()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            probe = tempfile.TemporaryFile(dir=self.path)
            probe.close()
        except OSError as error:
            raise RunDirectoryError(
                f"cannot write to run directory {self.path} ({error.strerror});"
                " choose another folder with --out"
            ) from None

    def write_config(self, config: dict) -> None:
        write_text_atomically(self.path / "config.yaml", config_to_yaml(config))

    def record(self, record: dict) -> None:
        """Append one metrics record (a flat dict) to metrics.jsonl."""
        self._metrics.write(json.dumps(record) + "\n")
        self._metrics.flush()

    def log(self, line: str) -> None:
        self._log.write(line + "\n")
        self._log.flush()

    def close(self) -> None:
        self._metrics.close()
        self._log.close()
