"""Stopping cleanly on SIGINT (Ctrl-C) or SIGTERM.

A long loop (the Solver's updates, a search's trials) runs inside ``StopFlag``. The
signal handlers only record which signal came; the loop looks at ``stop.signum``
where stopping is safe, saves what it has, and raises StopRequested with the exit
status of SIGNAL_EXIT_CODES (128 + the signal's number, as shells report it).

Outside those loops the command line (__main__.py) makes the first signal raise
where the program is (``stop_on_signals``); once a signal has stopped the command,
later ones are ignored: the command is only saying how it stopped, and an
exception raised meanwhile would end it with a traceback instead. Once the command
has returned (``command_ended``) signals are ignored too, and then, as the command
line exits, they end the process at once with its status (__main__._exit_on_signals).
"""

import os
import signal
import sys
import threading
from contextlib import contextmanager

from nntrain.errors import StopRequested

SIGNAL_EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}

# The signals that the command line found ignored (SIG_IGN) as it started, as a
# background job of a non-interactive shell finds SIGINT: they stay ignored, as
# Python itself leaves them, so no handler here takes them.
ignored_at_start: set = set()


class Interrupted(KeyboardInterrupt):
    """A second signal ``signum`` after the first, ``first``: stop at once, leaving
    the files as the last save left them. A KeyboardInterrupt, so that no ``except
    Exception`` on the way swallows it; ``exit_code`` is the first signal's (130
    for SIGINT, 143 for SIGTERM), which decides how the command ends."""

    def __init__(self, signum: int, first: int | None = None):
        first = signum if first is None else first
        name, first_name = signal.Signals(signum).name, signal.Signals(first).name
        super().__init__(f"stopped at once by a second {name}" if first == signum
                         else f"stopped by {first_name}, then at once by {name}")
        self.exit_code = SIGNAL_EXIT_CODES[first]


class Terminated(KeyboardInterrupt):
    """SIGTERM outside a StopFlag, under the command line's handlers: raised where
    the program is, as Python raises KeyboardInterrupt for SIGINT, so that it ends
    with one line and status 143 rather than dying silently."""

    exit_code = SIGNAL_EXIT_CODES[signal.SIGTERM]

    def __init__(self):
        super().__init__("stopped by SIGTERM")


class CommandLineHandler:
    """The command line's handler of SIGINT and SIGTERM outside a StopFlag: the
    first signal raises KeyboardInterrupt or Terminated; once one has stopped the
    command (``stopping``: here, or recorded by a StopFlag), later ones are
    ignored."""

    def __init__(self):
        self.stopping = False

    def __call__(self, signum, frame):
        if self.stopping:
            return
        self.stopping = True
        raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()

    def resend_lost(self, unraisable) -> bool:
        """sys.unraisablehook's part: a stop raised where Python can only print
        it as "Exception ignored" and run on (an object's __del__, a weakref
        callback, a generator closed by the collector) is not lost. The signal
        comes again shortly, to be raised where the program is then. Returns
        whether ``unraisable`` was such a stop."""
        error = unraisable.exc_value
        if not isinstance(error, KeyboardInterrupt):
            return False
        self.stopping = False
        signum = (signal.SIGTERM if stop_exit_code(error) == SIGNAL_EXIT_CODES[
            signal.SIGTERM] else signal.SIGINT)
        threading.Timer(LOST_SIGNAL_RETRY_SECONDS, os.kill,
                        (os.getpid(), signum)).start()
        return True


# How long after a stop raised in a finalizer (and lost) its signal comes again.
LOST_SIGNAL_RETRY_SECONDS = 0.01


def stop_on_signals() -> CommandLineHandler:
    """Install a new CommandLineHandler for SIGINT and SIGTERM, except one found
    ignored (``ignored_at_start``), and return it."""
    handler = CommandLineHandler()
    for signum in SIGNAL_EXIT_CODES:
        if signal.getsignal(signum) == signal.SIG_IGN:
            ignored_at_start.add(signum)
        if signum not in ignored_at_start:
            signal.signal(signum, handler)
    print_unraisable = sys.unraisablehook

    def unraisable_hook(unraisable):
        if not handler.resend_lost(unraisable):
            print_unraisable(unraisable)

    sys.unraisablehook = unraisable_hook
    return handler


def command_ended() -> None:
    """Say that the command has ended (its output written, its status decided):
    from now on the command line's handler ignores signals, until __main__ makes
    them end the process with that status. Raised as the command's first signal
    instead, one would escape the exit in progress as a traceback, or be reported
    as the stop of a command that has finished."""
    for signum in handled_signals():
        handler = signal.getsignal(signum)
        if isinstance(handler, CommandLineHandler):
            handler.stopping = True


def handled_signals() -> list:
    """SIGINT and SIGTERM, less those ignored since the start (ignored_at_start)."""
    return [signum for signum in SIGNAL_EXIT_CODES if signum not in ignored_at_start]


def stopped_by(error: KeyboardInterrupt) -> str:
    """How the signal behind ``error`` stopped the command, as "stopped by
    SIGTERM": Python's own KeyboardInterrupt, which has no text, is a Ctrl-C."""
    return str(error) or "stopped by SIGINT"


def stop_exit_code(error: KeyboardInterrupt) -> int:
    """The exit status of the signal behind ``error``."""
    return getattr(error, "exit_code", SIGNAL_EXIT_CODES[signal.SIGINT])


def stopped_at_start(error: KeyboardInterrupt, what: str = "the command") -> str:
    """The line for a signal that stopped the command before ``what`` started:
    then nothing was written."""
    return f"{stopped_by(error)} before {what} started: nothing was written"


@contextmanager
def stopped_before_start(run_dir=None, resumed: bool = False):
    """A block that prepares a run (reads its config, checkpoint and data) before
    it opens its run directory: a signal in it stops the command with one line
    (StopRequested) saying that nothing was written, or for a resumed run that
    its run directory (``run_dir`` when known) is as it was."""
    try:
        yield
    except KeyboardInterrupt as error:
        code = stop_exit_code(error)
        if not resumed:
            raise StopRequested(stopped_at_start(error, "the run"), code) from None
        raise StopRequested(f"{stopped_by(error)} before the resumed run started:"
                            f" {run_dir or 'its run directory'} is as it was; resume"
                            " it again with the same command", code) from None


@contextmanager
def signals_deferred():
    """A block that SIGINT and SIGTERM do not interrupt: one that arrives in it is
    delivered at its end, to whatever handles it then.

    For code that an exception raised in its middle breaks instead of stopping:
    matplotlib's compiled drawing turns a KeyboardInterrupt into another error
    ("ValueError: Invalid bounding box"), and so does the closing of the zip file
    that np.savez was writing. Usable as a decorator."""
    pending, previous = [], {}

    def record(signum, frame):
        pending.append(signum)

    try:
        try:
            for signum in handled_signals():
                previous[signum] = signal.signal(signum, record)
        except ValueError:  # not the main thread, which alone receives signals
            pass
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for signum in pending:
            signal.raise_signal(signum)


class StopFlag:
    """A context in which SIGINT and SIGTERM set ``signum`` instead of stopping.

    A second signal stops at once (Interrupted), without waiting for the loop,
    unless it is one of ``ignored_repeats``: a search's worker process ignores
    repeats, because its parent forwards the user's signal to it, so the
    worker may receive one Ctrl-C twice (from the terminal and from the parent).
    """

    ignored_repeats: frozenset = frozenset()

    def __init__(self):
        self.signum = None
        self._previous = {}

    def __enter__(self):
        for signum in handled_signals():
            try:
                self._previous[signum] = signal.signal(signum, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def _handle(self, signum, frame):
        # Only the handler this StopFlag replaced is marked: a StopFlag inside
        # another would find the outer one's _handle there, and the command
        # line's handler would not learn that a signal has stopped the command.
        if self.signum is None:
            self.signum = signum
            outside = self._previous.get(signum)
            if isinstance(outside, CommandLineHandler):
                outside.stopping = True  # it ignores the signals after this one
        elif signum not in self.ignored_repeats:
            raise Interrupted(signum, self.signum)

    def __exit__(self, *exc):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    @property
    def exit_code(self) -> int:
        return SIGNAL_EXIT_CODES[self.signum]

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name
