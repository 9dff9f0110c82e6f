"""The ``nntrain`` command, as ``python -m nntrain`` and as the console script."""

import atexit
import os
import signal
import sys


def main() -> None:
    # Importing the commands (click, NumPy) takes a moment: a Ctrl-C or SIGTERM
    # meanwhile ends the process as one during a command does, in one line with
    # its status, not a traceback or a silent death. The first signal decides how
    # the command ends; later ones are ignored while it says so (train/signals.py).
    status = 1  # an uncaught exception's
    # A signal ignored from the start (a background job's SIGINT) stays ignored.
    handled = [signum for signum in (signal.SIGINT, signal.SIGTERM)
               if signal.getsignal(signum) != signal.SIG_IGN]
    # Registered first, so run last (atexit runs its functions in reverse).
    atexit.register(_ignore_signals)
    try:
        from nntrain.train.signals import stop_on_signals

        stop_on_signals()
        from nntrain.cli import main as run

        run()
    except SystemExit as end:
        status = end.code
        raise
    except KeyboardInterrupt as error:
        # Only a signal before any command began gets here: commands report their
        # own (cli.Group). Ignored, not left to the handler: it may not be
        # installed yet.
        _ignore_signals()
        stopped = str(error) or "stopped by SIGINT"
        print(f"{stopped} before the command started: nothing was written",
              file=sys.stderr)
        status = getattr(error, "exit_code", 130)
        sys.exit(status)
    finally:
        # The command has ended with ``status``. The interpreter's shutdown can
        # still wait, on a worker pool's threads or Dask's client: a signal then
        # cuts it short, with that status, instead of raising a traceback there.
        # Past the last atexit function the shutdown waits on nothing, but Python
        # then puts back the default handlers, which a signal would die of: it is
        # ignored there (_ignore_signals above).
        _exit_on_signals(status, handled)


def _ignore_signals() -> None:
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)


def _exit_on_signals(code, signums) -> None:
    """Make the signals ``signums`` end the process at once with the status that
    ``sys.exit(code)`` gives, leaving the rest of the shutdown undone."""
    status = code if isinstance(code, int) else int(code is not None)

    def exit_now(signum, frame):
        for stream in (sys.stdout, sys.stderr):
            try:
                if stream is not None:
                    stream.flush()
            except (OSError, ValueError, RuntimeError):  # closed, or mid-write
                pass
        os._exit(status)

    for signum in signums:
        signal.signal(signum, exit_now)


if __name__ == "__main__":
    main()
