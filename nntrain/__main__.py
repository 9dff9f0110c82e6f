"""The ``nntrain`` command, as ``python -m nntrain`` and as the console script."""

import sys


def main() -> None:
    # Importing the commands (click, NumPy) takes a moment: a Ctrl-C meanwhile ends
    # the process as one during a command does, in one line, not a traceback.
    try:
        from nntrain.cli import main as run
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    run()


if __name__ == "__main__":
    main()
