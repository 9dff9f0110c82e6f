"""What a run tells the person watching it: lines, a progress bar, the log file.

Lines go to stdout (unless quiet) and always to the run's train.log, notes and
warnings likewise but to stderr; the progress bar goes to stderr, and only when
stderr is a terminal, so logs and pipes stay clean.
"""

import os
import sys

import click
from tqdm import tqdm

from nntrain.errors import one_line


def counted(count: int, noun: str) -> str:
    """"1 sample", "2 samples": a count with its noun in the right number."""
    return f"{count} {noun}" + ("" if count == 1 else "s")


# From this magnitude on a loss is shown in scientific notation: with 4 decimals,
# a loss of 1e300 (model.l2 = 1e300) would print all its 301 integer digits.
SCIENTIFIC_FROM = 1e6


def short_number(value: float) -> str:
    """``value`` with 4 decimals ("0.6931"), or with 4 significant digits in
    scientific notation ("1.235e+300") from SCIENTIFIC_FROM on."""
    return f"{value:.4g}" if abs(value) >= SCIENTIFIC_FROM else f"{value:.4f}"


class Reporter:
    def __init__(self, quiet: bool = False, log=None):
        self.quiet = quiet
        self.log = log  # a callable taking one line, or None
        self.bar = None

    def line(self, text: str) -> None:
        # A path in it may hold a newline or a terminal escape: written as \n, \x1b.
        text = one_line(text)
        if self.log is not None:
            self.log(text)
        if self.quiet:
            return
        try:
            if self.bar is not None:
                self.bar.write(text, file=sys.stdout)
            else:
                click.echo(text)
        except BrokenPipeError:
            # The terminal's reader went away (`nntrain fit ... | head`): keep
            # training and logging to train.log, stop printing.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            self.quiet = True

    def note(self, text: str) -> None:
        """Something the user may not expect, but no problem: stderr (unless
        quiet) and the log."""
        self._aside(f"note: {text}")

    def warn(self, text: str) -> None:
        """A non-fatal problem: stderr (unless quiet) and the log."""
        self._aside(f"warning: {text}")

    def _aside(self, text: str) -> None:
        """A note or warning: to stderr, beside the results on stdout."""
        text = one_line(text)  # as in line()
        if self.log is not None:
            self.log(text)
        if self.quiet:
            return
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            click.echo(text, err=True)

    def start_bar(self, total: int, initial: int = 0) -> None:
        if self.quiet or not sys.stderr.isatty():
            return
        self.bar = tqdm(total=total, initial=initial, unit="it", file=sys.stderr,
                        dynamic_ncols=True, leave=False)

    def advance(self, steps: int, **postfix) -> None:
        if self.bar is not None:
            self.bar.update(steps)
            if postfix:
                self.bar.set_postfix(postfix, refresh=False)

    def close_bar(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
