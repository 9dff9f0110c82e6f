"""The ``nntrain`` command, as ``python -m nntrain`` and as the console script."""

import sys


def main() -> None:
    # Importing the commands (click, NumPy) takes a moment: a Ctrl-C or SIGTERM
    # meanwhile ends the process as one during a command does, in one line with
    # its status, not a traceback or a silent death.
    try:
        from nntrain.train.signals import stop_on_sigterm

        stop_on_sigterm()
        from nntrain.cli import main as run
    except KeyboardInterrupt as error:
        print(str(error) or "interrupted", file=sys.stderr)
        sys.exit(getattr(error, "exit_code", 130))
    run()


if __name__ == "__main__":
    main()
