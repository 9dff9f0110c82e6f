"""Stopping cleanly on SIGINT (Ctrl-C) or SIGTERM.

A long loop (the Solver's updates, a search's trials) runs inside ``StopFlag``. The
signal handlers only record which signal came; the loop looks at ``stop.signum``
where stopping is safe, saves what it has, and raises StopRequested with the exit
status of SIGNAL_EXIT_CODES (128 + the signal's number, as shells report it).
"""

import signal

SIGNAL_EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}


class Interrupted(KeyboardInterrupt):
    """A second signal: stop at once, leaving the files as the last save left them.
    A KeyboardInterrupt, so that no ``except Exception`` on the way swallows it;
    ``exit_code`` is the signal's (130 for SIGINT, 143 for SIGTERM)."""

    def __init__(self, signum: int):
        super().__init__(f"stopped at once by a second {signal.Signals(signum).name}")
        self.exit_code = SIGNAL_EXIT_CODES[signum]


class Terminated(KeyboardInterrupt):
    """SIGTERM outside a StopFlag (while the command starts): raised where the
    program is, as Python raises KeyboardInterrupt for SIGINT, so that it ends
    with one line and status 143 rather than dying silently."""

    exit_code = SIGNAL_EXIT_CODES[signal.SIGTERM]

    def __init__(self):
        super().__init__("stopped by SIGTERM")


def _terminate(signum, frame):
    raise Terminated()


def stop_on_sigterm() -> None:
    """Make SIGTERM raise Terminated, until a StopFlag takes it over."""
    signal.signal(signal.SIGTERM, _terminate)


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
        for signum in SIGNAL_EXIT_CODES:
            try:
                self._previous[signum] = signal.signal(signum, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def _handle(self, signum, frame):
        if self.signum is None:
            self.signum = signum
        elif signum not in self.ignored_repeats:
            raise Interrupted(signum)

    def __exit__(self, *exc):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    @property
    def exit_code(self) -> int:
        return SIGNAL_EXIT_CODES[self.signum]

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name
