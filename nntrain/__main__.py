"""The ``nntrain`` command, as ``python -m nntrain`` and as the console script."""

import os
import signal
import sys


def main() -> None:
    # Importing the commands (click, NumPy) takes a moment: a Ctrl-C or SIGTERM
    # meanwhile ends the process as one during a command does, in one line with
    # its status, not a traceback or a silent death. The first signal decides how
    # the command ends; later ones are ignored while it says so (train/signals.py).
    status = 1  # an uncaught exception's
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
        _exit_on_signals(status)


def _ignore_signals() -> None:
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)


def _exit_on_signals(code) -> None:
    """Make SIGINT and SIGTERM end the process at once with the status that
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

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, exit_now)


if __name__ == "__main__":
    main()
