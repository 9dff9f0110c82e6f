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
        # Only a signal before any command began gets here: commands report their
        # own (cli.Group).
        _ignore_signals()
        stopped = str(error) or "stopped by SIGINT"
        print(f"{stopped} before the command started: nothing was written",
              file=sys.stderr)
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
