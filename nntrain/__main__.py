"""The ``nntrain`` command, as ``python -m nntrain`` and as the console script."""

import sys


def main() -> None:
    # Importing the commands (click, NumPy) takes a moment: a Ctrl-C or SIGTERM
    # meanwhile ends the process as one during a command does, in one line with
    # its status, not a traceback or a silent death. The first signal decides how
    # the command ends; later ones are ignored (train/signals.py).
    try:
        from nntrain.train.signals import stop_on_signals

        stop_on_signals()
        from nntrain.cli import main as run

        run()
    except KeyboardInterrupt as error:
        _ignore_signals()
        print(str(error) or "interrupted", file=sys.stderr)
        sys.exit(getattr(error, "exit_code", 130))
    finally:
        # The command has ended: a signal while the interpreter shuts down would
        # print a traceback and change nothing else.
        _ignore_signals()


def _ignore_signals() -> None:
    import signal

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)


if __name__ == "__main__":
    main()
