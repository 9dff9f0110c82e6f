"""StopFlag: the first SIGINT or SIGTERM is recorded, a second stops at once with
that signal's status; and the CLI's exit status for each."""

import os
import signal

import click
import pytest
from click.testing import CliRunner

from nntrain.cli import Group
from nntrain.train.signals import Interrupted, StopFlag


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130),
                                          (signal.SIGTERM, 143)])
def test_a_second_signal_stops_at_once_with_its_own_status(signum, code):
    with pytest.raises(Interrupted) as caught:
        with StopFlag() as stop:
            os.kill(os.getpid(), signal.SIGTERM)
            assert stop.signum == signal.SIGTERM and stop.exit_code == 143
            os.kill(os.getpid(), signum)

    assert caught.value.exit_code == code
    assert str(caught.value) == (f"stopped at once by a second"
                                 f" {signal.Signals(signum).name}")


def test_an_ignored_repeat_leaves_the_first_signal_standing(monkeypatch):
    monkeypatch.setattr(StopFlag, "ignored_repeats", frozenset({signal.SIGINT}))
    with StopFlag() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)
    assert stop.signum == signal.SIGTERM


def test_the_handlers_before_the_flag_are_restored():
    before = {signum: signal.getsignal(signum)
              for signum in (signal.SIGINT, signal.SIGTERM)}
    with StopFlag():
        pass
    assert {signum: signal.getsignal(signum) for signum in before} == before


@pytest.mark.parametrize("raised, code, message", [
    (KeyboardInterrupt(), 130, "interrupted"),
    (Interrupted(signal.SIGINT), 130, "stopped at once by a second SIGINT"),
    (Interrupted(signal.SIGTERM), 143, "stopped at once by a second SIGTERM"),
])
def test_the_cli_exits_with_the_interrupting_signals_status(raised, code, message):
    @click.command()
    def stops():
        raise raised

    result = CliRunner().invoke(Group(name="nntrain", commands=[stops]), ["stops"])

    assert result.exit_code == code
    assert result.stderr == message + "\n"


@pytest.mark.plots
def test_a_signal_while_the_plots_are_drawn_says_the_run_is_complete(
        tmp_path, tiny_npz, write_config, monkeypatch):
    # SIGTERM after the last checkpoint, while matplotlib draws: exit 143, and a
    # message (on the terminal and in train.log) that the run is whole.
    from conftest import tiny_config_dict

    from nntrain import plots
    from nntrain.cli import cli
    from nntrain.train.signals import Terminated

    def interrupted(path):
        raise Terminated()

    monkeypatch.setattr(plots, "plots_available", lambda: True)
    monkeypatch.setattr(plots, "plot_run", interrupted)
    config = write_config(tiny_config_dict(tiny_npz))
    run = tmp_path / "run"

    result = CliRunner().invoke(cli, ["fit", str(config), "--out", str(run)])

    assert result.exit_code == 143, result.output
    expected = ("stopped by SIGTERM while drawing the plots: the run is complete, its"
                f" checkpoints saved; draw them with: nntrain plot {run}")
    assert result.stderr.strip().splitlines()[-1] == expected
    assert (run / "train.log").read_text().strip().splitlines()[-1] == expected
    assert (run / "checkpoints" / "last.npz").is_file()
    resumed = CliRunner().invoke(cli, ["fit", str(config), "--resume", str(run)])
    assert resumed.exit_code == 0, resumed.output
