"""The errors nntrain raises for the user, each with the exit status the CLI returns.

User errors are not bugs: a bad config, a missing file or a corrupt checkpoint raises
one of these with a full sentence that names the value and says how to fix it. The CLI
prints the message on one line and exits with ``exit_code``. Faults inside nntrain
raise the built-in ``ValueError`` / ``RuntimeError`` instead.
"""


def one_line(text: str) -> str:
    """``text`` with each character that str.isprintable refuses written as repr
    writes it: a newline as \\n, ESC as \\x1b. A message may quote what a user or a
    server gave (a URL, an HTTP status line); escaped, it stays on one line and
    cannot move the cursor or recolour the terminal. Backslashes already there are
    left alone, so applying this twice changes nothing."""
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


# How a message about a checkpoint array or meta value that cannot be right ends.
EDITED_CHECKPOINT_FIX = "the file is damaged or was edited: use another checkpoint"


class NNTrainError(Exception):
    """Base of every error meant for the user; ``exit_code`` is the CLI's status.
    Its text is always one line (see one_line), whatever its parts held."""

    exit_code = 1

    def __str__(self) -> str:
        return one_line(super().__str__())


class BadInputError(NNTrainError):
    """Something the user gave us is wrong (exit status 2)."""

    exit_code = 2


class ConfigError(BadInputError):
    """The YAML config or a ``--set`` override is malformed or out of range.
    ``key``: the dotted config key at fault (a tuple when several are), when
    there is one, so that the message can name the ``--set`` override that gave
    it."""

    def __init__(self, message: str, key: str | tuple[str, ...] | None = None):
        super().__init__(message)
        self.key = key


class DataError(BadInputError):
    """A dataset is missing, truncated, inconsistent or otherwise unreadable."""


class DataLocationError(DataError):
    """The data is not where the run looks for it (``missing``), or what is there
    is other data than a checkpoint was trained on. ``problem`` and ``fix`` are kept
    apart so that a caller that knows how the place was given (a resumed run's
    ``--set data.path``, eval's ``--data``) can say how to give another."""

    def __init__(self, problem: str, fix: str, missing: bool = True,
                 also: str | None = None):
        super().__init__(f"{problem}; {fix}")
        self.problem, self.fix, self.missing, self.also = problem, fix, missing, also

    def __reduce__(self):
        # Pickle (a search worker's error on its way back) rebuilds an exception
        # from its args, which hold only the message.
        return (type(self), (self.problem, self.fix, self.missing, self.also),
                self.__dict__)

    def with_fix(self, if_missing: str, if_other: str) -> "DataLocationError":
        """The same problem, with the fix for how the caller's place was given;
        ``also``, a remedy that holds whatever the place (a download), is kept."""
        fix = if_missing if self.missing else if_other
        if self.also:
            fix = f"{fix}, or {self.also}"
        return DataLocationError(self.problem, fix, self.missing, self.also)


class CheckpointError(BadInputError):
    """A checkpoint file is missing, corrupt, foreign or of an unknown format."""


class RunDirectoryError(BadInputError):
    """The run directory cannot be used (not empty without --force, not writable)."""


class FolderLockedError(RunDirectoryError):
    """Another process holds the lock on a folder this one would write to: the
    folder is fine, and usable once that process ends (a search tells such a
    trial from one that failed)."""


class TrainingError(NNTrainError):
    """Training failed at run time, for instance a non-finite loss (exit status 1)."""

    exit_code = 1


class NonFiniteScoresError(NNTrainError):
    """The network's class scores came out NaN or infinite for some of the samples
    that eval or predict measures (exit status 1): finite values too large for the
    model's arithmetic, which the checkpoint's weights cannot help."""

    exit_code = 1


class DownloadError(NNTrainError):
    """A dataset's server could not be reached, answered an error or stopped in the
    middle of a file (exit status 1). The URL was well formed, so nothing the user
    typed is at fault; the same command may work later, or with another --mirror."""

    exit_code = 1


class ClusterError(NNTrainError):
    """The Dask scheduler that --scheduler names could not be reached (exit status
    1). The address was well formed, so, as with a dataset's server, the cluster's
    state, not the command, decides whether the same command works later."""

    exit_code = 1


class GradientCheckError(NNTrainError):
    """Analytic and numeric gradients disagree beyond the thresholds (exit status 1)."""

    exit_code = 1


class StopRequested(NNTrainError):
    """SIGINT or SIGTERM arrived; the run saved its state and stops."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code

    def __reduce__(self):
        return type(self), (self.args[0], self.exit_code), self.__dict__


class NNTrainWarning(UserWarning):
    """A non-fatal problem the user should hear about (printed as one line)."""


class DataWarning(NNTrainWarning):
    """The data was found or read in a way the user may not expect."""


class CheckpointWarning(NNTrainWarning):
    """A checkpoint was read, but lacks something a newer one keeps."""
