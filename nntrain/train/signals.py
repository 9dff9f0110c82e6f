"""Stopping cleanly on SIGINT (Ctrl-C) or SIGTERM.

A long loop (the Solver's updates, a search's trials) runs inside ``StopFlag``. The
signal handlers only record which signal came; the loop looks at ``stop.signum``
where stopping is safe, saves what it has, and raises StopRequested with the exit
status of SIGNAL_EXIT_CODES (128 + the signal's number, as shells report it).
"""

import signal

SIGNAL_EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}


class StopFlag:
    """A context in which SIGINT and SIGTERM set ``signum`` instead of stopping.

    A second signal stops at once (KeyboardInterrupt), without waiting for the
    loop, unless ``repeats_abort`` is off: a search's worker process turns it off,
    because its parent forwards the user's signal, so the worker may receive the
    same Ctrl-C twice (once from the terminal, once from the parent).
    """

    repeats_abort = True

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
        elif self.repeats_abort:
            raise KeyboardInterrupt

    def __exit__(self, *exc):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    @property
    def exit_code(self) -> int:
        return SIGNAL_EXIT_CODES[self.signum]

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name
