"""StopFlag: the first SIGINT or SIGTERM is recorded, a second stops at once with
that signal's status; and the CLI's exit status for each."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import click
import numpy as np
import pytest
from click.testing import CliRunner

from nntrain.cli import Group, cli
from nntrain.train.signals import Interrupted, StopFlag


@pytest.mark.parametrize("first, second, code, message", [
    (signal.SIGTERM, signal.SIGTERM, 143, "stopped at once by a second SIGTERM"),
    (signal.SIGINT, signal.SIGINT, 130, "stopped at once by a second SIGINT"),
    # The first signal decides the status, whichever comes second.
    (signal.SIGINT, signal.SIGTERM, 130, "stopped by SIGINT, then at once by"
     " SIGTERM"),
    (signal.SIGTERM, signal.SIGINT, 143, "stopped by SIGTERM, then at once by"
     " SIGINT"),
])
def test_a_second_signal_stops_at_once_with_the_first_ones_status(first, second,
                                                                  code, message):
    with pytest.raises(Interrupted) as caught:
        with StopFlag() as stop:
            os.kill(os.getpid(), first)
            assert stop.signum == first
            os.kill(os.getpid(), second)

    assert caught.value.exit_code == code
    assert str(caught.value) == message


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
    (KeyboardInterrupt(), 130, "stopped by SIGINT"),
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


def test_a_signal_while_the_arguments_are_read_says_nothing_was_written():
    def interrupting(ctx, param, value):
        if value:
            raise KeyboardInterrupt

    group = Group(name="nntrain", params=[click.Option(
        ["--slow"], is_flag=True, callback=interrupting, expose_value=False)])

    result = CliRunner().invoke(group, ["--slow"])

    assert result.exit_code == 130
    # Click's own empty line, then the report.
    assert result.stderr == ("\nstopped by SIGINT before the command started:"
                             " nothing was written\n")


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

    monkeypatch.setattr(plots, "require_matplotlib", lambda: None)
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


@pytest.fixture
def command_line_signals():
    """The command line's handlers (as __main__ installs them) for one test."""
    from nntrain.train import signals

    before = {signum: signal.getsignal(signum)
              for signum in (signal.SIGINT, signal.SIGTERM)}
    hook = sys.unraisablehook
    signals.stop_on_signals()
    yield
    for signum, handler in before.items():
        signal.signal(signum, handler)
    sys.unraisablehook = hook


def _finalized_by_del(send):
    class Finalized:
        def __del__(self):
            send()

    Finalized()  # collected at once


def _finalized_by_weakref(send):
    import weakref

    class Owner:
        pass

    owner = Owner()
    weakref.finalize(owner, send)
    del owner


def _finalized_by_generator_close(send):
    def generator():
        try:
            yield
        finally:
            send()

    running = generator()
    next(running)
    del running  # closed by the collector


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.parametrize("finalize", [_finalized_by_del, _finalized_by_weakref,
                                      _finalized_by_generator_close])
def test_a_signal_during_a_finalizer_is_raised_once_the_finalizer_returns(
        command_line_signals, signum, finalize):
    # An exception raised in a finalizer is printed as "ignored" and lost: the
    # command would run on to exit 0, deaf to the signals that follow.
    def send():
        os.kill(os.getpid(), signum)
        sum(range(100_000))  # the handler runs in here

    finalized = []
    with pytest.raises(KeyboardInterrupt) as info:  # Terminated is one too
        finalize(send)
        finalized.append(True)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            time.sleep(0.001)

    assert finalized == [True]
    assert getattr(info.value, "exit_code", 130) == 128 + signum


@pytest.mark.parametrize("writer", ["checkpoint", "file"])
def test_a_signal_as_a_temporary_file_is_made_leaves_no_such_file(
        command_line_signals, tmp_path, monkeypatch, writer):
    # The signal lands just after mkstemp made the file, before its name is known
    # to the code that deletes it on the way out.
    from nntrain import fileio
    from nntrain.checkpoint import save_checkpoint

    made = fileio.temporary_file

    def made_then_signalled(path):
        made_file = made(path)
        signal.raise_signal(signal.SIGINT)
        return made_file

    monkeypatch.setattr(fileio, "temporary_file", made_then_signalled)
    target = tmp_path / "target.npz"

    with pytest.raises(KeyboardInterrupt):
        if writer == "checkpoint":
            save_checkpoint(target, {}, {"param": {"w": np.zeros(3)}})
        else:
            fileio.write_bytes_atomically(target, b"data")

    assert list(tmp_path.iterdir()) == []


def test_a_signal_in_a_deferred_block_is_delivered_at_its_end():
    from nntrain.train.signals import signals_deferred

    before = signal.getsignal(signal.SIGINT)
    done = []
    with pytest.raises(KeyboardInterrupt):
        with signals_deferred():
            signal.raise_signal(signal.SIGINT)
            done.append("the rest of the block")

    assert done == ["the rest of the block"]
    assert signal.getsignal(signal.SIGINT) is before


@pytest.mark.parametrize("first, code", [(signal.SIGINT, 130),
                                         (signal.SIGTERM, 143)])
def test_the_command_lines_first_signal_raises_and_later_ones_are_ignored(
        command_line_signals, first, code):
    with pytest.raises(KeyboardInterrupt) as caught:
        signal.raise_signal(first)
    signal.raise_signal(signal.SIGINT)
    signal.raise_signal(signal.SIGTERM)

    assert getattr(caught.value, "exit_code", 130) == code


def test_after_a_stop_flags_signal_the_command_lines_handlers_ignore_more(
        command_line_signals):
    with StopFlag() as stop:
        signal.raise_signal(signal.SIGINT)
    signal.raise_signal(signal.SIGTERM)  # as the stop is being reported

    assert stop.signum == signal.SIGINT


def test_a_second_signal_while_a_checkpoint_is_zipped_stops_after_the_zip(
        tmp_path, monkeypatch):
    # Raised inside np.savez, the Interrupted became the ValueError of a zip file
    # closed while written: an internal error instead of a stop.
    from nntrain.checkpoint import load_checkpoint, save_checkpoint

    savez = np.savez

    def interrupted_savez(file, **arrays):
        try:
            signal.raise_signal(signal.SIGTERM)
        except KeyboardInterrupt:
            raise ValueError("Can't close the ZIP file while there is an open"
                             " writing handle on it") from None
        savez(file, **arrays)

    monkeypatch.setattr(np, "savez", interrupted_savez)
    path = tmp_path / "last.npz"
    with pytest.raises(Interrupted) as caught:
        with StopFlag():
            signal.raise_signal(signal.SIGINT)
            save_checkpoint(path, {}, {"param": {"W": np.ones(2)}})

    assert caught.value.exit_code == 130  # the first signal's
    assert not path.exists() and list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    save_checkpoint(path, {}, {"param": {"W": np.ones(2)}})
    assert load_checkpoint(path).group("param")["W"].tolist() == [1.0, 1.0]


@pytest.mark.plots
@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130),
                                          (signal.SIGTERM, 143)])
def test_a_signal_inside_matplotlibs_drawing_finishes_that_figure_then_stops(
        tmp_path, tiny_npz, write_config, monkeypatch, command_line_signals,
        signum, code):
    # Raised inside matplotlib's compiled drawing, the KeyboardInterrupt became a
    # ValueError ("Invalid bounding box"): an internal error instead of a stop.
    pytest.importorskip("matplotlib")
    from conftest import tiny_config_dict

    from nntrain import plots
    from nntrain.cli import cli

    save_figure = plots.save_figure

    def interrupted_drawing(figure, path, dpi):
        try:
            signal.raise_signal(signum)
        except KeyboardInterrupt:
            raise ValueError("Invalid bounding box") from None
        save_figure(figure, path, dpi)

    monkeypatch.setattr(plots, "save_figure", interrupted_drawing)
    config = write_config(tiny_config_dict(tiny_npz))
    run = tmp_path / "run"

    result = CliRunner().invoke(cli, ["fit", str(config), "--out", str(run)])

    assert result.exit_code == code, result.output
    name = signal.Signals(signum).name
    assert result.stderr.strip().splitlines()[-1] == (
        f"stopped by {name} while drawing the plots: the run is complete, its"
        f" checkpoints saved; draw them with: nntrain plot {run}")
    assert len(list((run / "plots").glob("*.png"))) == 1


@pytest.mark.plots
def test_a_signal_while_matplotlib_is_imported_stops_as_one_while_drawing(
        tmp_path, tiny_npz, write_config, monkeypatch, command_line_signals):
    # Python 3.11 turns a KeyboardInterrupt raised while an imported module creates
    # a class into "RuntimeError: Error calling __set_name__": an internal error.
    pytest.importorskip("matplotlib")
    import builtins

    from conftest import tiny_config_dict

    from nntrain.cli import cli

    real_import = builtins.__import__

    def interrupted_import(name, *args, **kwargs):
        if name == "matplotlib.backends.backend_agg":
            try:
                signal.raise_signal(signal.SIGINT)
            except KeyboardInterrupt as error:
                raise RuntimeError("Error calling __set_name__") from error
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", interrupted_import)
    config = write_config(tiny_config_dict(tiny_npz))
    run = tmp_path / "run"

    result = CliRunner().invoke(cli, ["fit", str(config), "--out", str(run)])

    assert result.exit_code == 130, result.output
    assert result.stderr.strip().splitlines()[-1] == (
        "stopped by SIGINT while drawing the plots: the run is complete, its"
        f" checkpoints saved; draw them with: nntrain plot {run}")
    assert list(run.glob("plots/*.png")) == []


# Runs ``python -m nntrain`` with argv[4:]. The signal argv[1] names ("-" for none)
# comes as the first epoch starts; the one argv[2] names, as the stop is logged
# ("log"), as the interpreter exits ("exit"), while its exit hangs ("hang": for
# 5 s, then exit status 99) or once Python has put back the default handlers, as
# it clears the modules ("late"); just after the command has returned
# ("returned") or as __main__ makes signals end the process ("finally"); or both
# signals, as the second epoch starts ("twice").
SIGNALLED_TWICE = """
import atexit, os, signal, sys, threading, time
from nntrain import __main__ as entry
from nntrain.train import rundir, solver

first, second, when = sys.argv[1:4]

def log(self, line, log=rundir.RunDirectory.log):
    if when == "log" and line.startswith("stopped by"):
        signal.raise_signal(getattr(signal, second))
    log(self, line)

rundir.RunDirectory.log = log

def hang():
    main = threading.main_thread().ident
    threading.Timer(0.2, signal.pthread_kill, (main, getattr(signal, second))).start()
    time.sleep(5)
    os._exit(99)

def train_epoch(self, stop, train_epoch=solver.Solver._train_epoch):
    if self.progress.iteration == 0:
        # Registered as a pool that the command starts registers its own.
        if when == "exit":
            atexit.register(signal.raise_signal, getattr(signal, second))
        if when == "hang":
            atexit.register(hang)
        if first != "-" and when != "twice":
            signal.raise_signal(getattr(signal, first))
    elif when == "twice" and stop.signum is None:  # both once a checkpoint is saved
        signal.raise_signal(getattr(signal, first))
        signal.raise_signal(getattr(signal, second))
    train_epoch(self, stop)

def exit_(code=None, exit_=sys.exit):
    if when == "returned":  # the command has returned; the CLI exits with its code
        signal.raise_signal(getattr(signal, second))
    exit_(code)

sys.exit = exit_

def exit_on_signals(*args, exit_on_signals=entry._exit_on_signals):
    if when == "finally":  # as __main__ sets the signals to end the process
        signal.raise_signal(getattr(signal, second))
    exit_on_signals(*args)

entry._exit_on_signals = exit_on_signals

class Late:
    def __del__(self):
        os.kill(os.getpid(), getattr(signal, second))

if when == "late":
    late = Late()
solver.Solver._train_epoch = train_epoch
sys.argv = ["nntrain", *sys.argv[4:]]
entry.main()
"""


def _signalled_twice(first, second, when, *args):
    return subprocess.run(
        [sys.executable, "-c", SIGNALLED_TWICE, first, second, when, *map(str, args)],
        cwd=Path(__file__).parents[1], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("when", ["log", "exit", "hang", "late"])
def test_a_signal_after_a_stop_leaves_the_stop_as_it_was(tmp_path, tiny_config,
                                                          when):
    run = tmp_path / "run"
    stopped = _signalled_twice("SIGINT", "SIGTERM", when, "fit", tiny_config,
                               "--out", run, "--quiet")

    assert stopped.returncode == 130, stopped.stderr
    assert stopped.stderr.splitlines() == [
        f"stopped by SIGINT at iteration 1; the state is saved in"
        f" {run / 'checkpoints' / 'last.npz'}. Resume with: nntrain fit"
        f" {run / 'config.yaml'} --resume {run}"]


@pytest.mark.parametrize("first, second, code, stopped_by", [
    ("SIGINT", "SIGTERM", 130, "stopped by SIGINT, then at once by SIGTERM"),
    ("SIGTERM", "SIGINT", 143, "stopped by SIGTERM, then at once by SIGINT"),
    ("SIGINT", "SIGINT", 130, "stopped at once by a second SIGINT"),
])
def test_a_stop_at_once_is_logged_with_the_first_signals_status_and_resume(
        tmp_path, tiny_config, first, second, code, stopped_by):
    run = tmp_path / "run"
    stopped = _signalled_twice(first, second, "twice", "fit", tiny_config,
                               "--out", run, "--quiet")

    assert stopped.returncode == code, stopped.stderr
    # 50 training samples in batches of 16: the second epoch starts after 4.
    line = (f"{stopped_by} after iteration 4; {run / 'checkpoints' / 'last.npz'}"
            " holds the run's last saved state. Resume with: nntrain fit"
            f" {run / 'config.yaml'} --resume {run}")
    assert stopped.stderr.splitlines() == [line]
    assert (run / "train.log").read_text().splitlines()[-1] == line


@pytest.mark.parametrize("when", ["returned", "finally", "exit", "hang", "late"])
def test_a_signal_as_a_finished_command_exits_changes_nothing(tmp_path,
                                                              tiny_config, when):
    # A shutdown that hangs (on a pool's threads, say) ends at once: a signal then
    # was once ignored, leaving the process to hang until killed.
    done = _signalled_twice("-", "SIGINT", when, "fit", tiny_config, "--out",
                            tmp_path / "run", "--quiet", "--set", "train.plots=false")

    assert done.returncode == 0, done.stderr
    assert done.stderr == ""


def test_a_ctrl_c_ignored_from_the_start_stays_ignored(tmp_path, tiny_config):
    # As a background job of a non-interactive shell starts: SIGINT ignored.
    code = SIGNALLED_TWICE.replace("first, second",
                                   "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
                                   "first, second", 1)
    done = subprocess.run(
        [sys.executable, "-c", code, "SIGINT", "SIGINT", "exit", "fit", tiny_config,
         "--out", tmp_path / "run", "--quiet", "--set", "train.plots=false"],
        cwd=Path(__file__).parents[1], capture_output=True, text=True, timeout=120)

    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert (tmp_path / "run" / "checkpoints" / "best.npz").exists()


def test_a_signal_while_a_ctrl_c_at_start_is_reported_is_ignored():
    # A Ctrl-C while the commands are imported, then SIGTERM as it is reported.
    code = ("import signal, sys\n"
            "class Interrupting:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name == 'nntrain.cli':\n"
            "            signal.raise_signal(signal.SIGINT)\n"
            "class Stderr:\n"
            "    def write(self, text):\n"
            "        signal.raise_signal(signal.SIGTERM)\n"
            "        sys.__stderr__.write(text)\n"
            "    def flush(self):\n"
            "        sys.__stderr__.flush()\n"
            "sys.meta_path.insert(0, Interrupting())\n"
            "sys.stderr = Stderr()\n"
            "from nntrain.__main__ import main\n"
            "main()\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True,
                            text=True, timeout=120)

    assert result.returncode == 130
    assert result.stderr == ("stopped by SIGINT before the command started: nothing"
                             " was written\n")


# Runs ``python -m nntrain`` with argv[3:], sending itself the signal argv[1]
# names while the run is prepared: as its config is read ("config") or its data
# loaded ("data"), before its run directory is opened.
SIGNALLED_WHILE_PREPARING = """
import os, signal, sys, time
import nntrain.config, nntrain.pipeline
from nntrain import __main__ as entry

signum, where = getattr(signal, sys.argv[1]), sys.argv[2]
module, name = {"config": (nntrain.config, "load_config"),
                "data": (nntrain.pipeline, "_prepare_run_data")}[where]

def signalled(*args, **kwargs):
    os.kill(os.getpid(), signum)
    time.sleep(60)

setattr(module, name, signalled)
sys.argv = ["nntrain", *sys.argv[3:]]
entry.main()
"""


def _signalled_while_preparing(name, where, *args):
    return subprocess.run(
        [sys.executable, "-c", SIGNALLED_WHILE_PREPARING, name, where,
         *map(str, args)],
        cwd=Path(__file__).parents[1], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("name, code, where", [("SIGINT", 130, "config"),
                                               ("SIGTERM", 143, "data")])
def test_a_run_stopped_while_it_starts_says_nothing_was_written(
        tmp_path, tiny_config, name, code, where):
    run = tmp_path / "run"

    stopped = _signalled_while_preparing(name, where, "fit", tiny_config, "--out",
                                         run)

    assert stopped.returncode == code, stopped.stderr
    assert stopped.stderr.splitlines() == [
        f"stopped by {name} before the run started: nothing was written"]
    assert not run.exists()


@pytest.mark.parametrize("where", ["config", "data"])
def test_a_resume_stopped_while_it_starts_leaves_its_run_as_it_was(
        tmp_path, tiny_config, where):
    run = tmp_path / "run"
    fitted = CliRunner().invoke(cli, ["fit", str(tiny_config), "--out", str(run),
                                      "--quiet"])
    assert fitted.exit_code == 0, fitted.output
    before = {path: path.read_bytes() for path in run.rglob("*") if path.is_file()}

    stopped = _signalled_while_preparing("SIGINT", where, "fit", tiny_config,
                                         "--resume", run, "--set", "train.epochs=4")

    # Its run directory is known once its checkpoint is read.
    shown = "its run directory" if where == "config" else run
    assert stopped.returncode == 130, stopped.stderr
    assert stopped.stderr.splitlines() == [
        f"stopped by SIGINT before the resumed run started: {shown} is as it was;"
        " resume it again with the same command"]
    assert before == {path: path.read_bytes() for path in run.rglob("*")
                      if path.is_file()}


@pytest.fixture
def finished_run(tmp_path, tiny_npz, write_config):
    """A finished run of the tiny config, without plots."""
    from conftest import tiny_config_dict

    raw = tiny_config_dict(tiny_npz)
    raw["train"]["plots"] = False
    run = tmp_path / "run"
    result = CliRunner().invoke(cli, ["fit", str(write_config(raw)), "--out",
                                      str(run), "--quiet"])
    assert result.exit_code == 0, result.output
    return run


def _signal_after_figures(monkeypatch, count, signum=signal.SIGINT):
    """plots.save_figure sends ``signum`` once it has written ``count`` figures
    (0: before the first); returns the list of the paths it writes."""
    from nntrain import plots

    save_figure, saved = plots.save_figure, []

    def signalling(figure, path, dpi):
        if len(saved) == count:
            signal.raise_signal(signum)
        save_figure(figure, path, dpi)
        saved.append(path)

    monkeypatch.setattr(plots, "save_figure", signalling)
    return saved


@pytest.mark.plots
@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130),
                                          (signal.SIGTERM, 143)])
def test_plot_stopped_says_which_plots_it_wrote(
        tmp_path, finished_run, monkeypatch, command_line_signals, signum, code):
    pytest.importorskip("matplotlib")
    # The signal comes as the second figure is drawn, which is finished first.
    saved = _signal_after_figures(monkeypatch, 1, signum)
    out = tmp_path / "plots"

    result = CliRunner().invoke(cli, ["plot", str(finished_run), "--out", str(out)])

    assert result.exit_code == code, result.output
    assert len(saved) == 2 and sorted(out.iterdir()) == sorted(saved)
    name = signal.Signals(signum).name
    assert result.stderr == (f"stopped by {name}: {saved[0]} and {saved[1]} were"
                             " written, the others were not\n")


@pytest.mark.plots
def test_eval_stopped_while_drawing_says_which_plot_it_wrote(
        tmp_path, finished_run, monkeypatch, command_line_signals):
    pytest.importorskip("matplotlib")
    saved = _signal_after_figures(monkeypatch, 0)
    out = tmp_path / "plots"

    result = CliRunner().invoke(cli, ["eval", str(finished_run / "checkpoints"
                                                  / "best.npz"), "--plots", str(out)])

    assert result.exit_code == 130, result.output
    assert len(saved) == 1 and list(out.iterdir()) == saved
    assert result.stderr == (f"stopped by SIGINT: {saved[0]} was written, the"
                             " others were not\n")


def test_predict_stopped_says_no_predictions_were_written(
        tmp_path, finished_run, tiny_npz, monkeypatch, command_line_signals):
    from nntrain import predict

    read_samples = predict.read_samples

    def signalling(*args):
        signal.raise_signal(signal.SIGTERM)
        return read_samples(*args)

    monkeypatch.setattr(predict, "read_samples", signalling)
    samples = tmp_path / "samples.npy"
    np.save(samples, np.load(tiny_npz)["X_test"])
    out = tmp_path / "predictions.csv"

    result = CliRunner().invoke(cli, ["predict", str(finished_run / "checkpoints"
                                                     / "best.npz"), str(samples),
                                      "--out", str(out)])

    assert result.exit_code == 143, result.output
    assert result.stderr == "stopped by SIGTERM: no predictions were written\n"
    assert not out.exists()


# `nntrain predict` in a process of its own, a signal (argv[1]) sent to it as its
# --out file is written (argv[2] "write"), or as its scores are computed ("scores").
SIGNALLED_WHILE_PREDICTING = """
import os, signal, sys
from nntrain import __main__ as entry
from nntrain import cli, evaluate

signum, when = getattr(signal, sys.argv[1]), sys.argv[2]

def write(path, data, write=cli.write_bytes_atomically):
    write(path, data)
    if when == "write":
        signal.raise_signal(signum)

def scores(*args, checked_scores=evaluate.checked_scores):
    if when == "scores":
        signal.raise_signal(signum)
    return checked_scores(*args)

cli.write_bytes_atomically = write
evaluate.checked_scores = scores
sys.argv = ["nntrain", *sys.argv[3:]]
entry.main()
"""


@pytest.mark.parametrize("name, code", [("SIGINT", 130), ("SIGTERM", 143)])
def test_a_signal_as_predictions_are_written_is_taken_after_the_command(
        tmp_path, tiny_config, name, code):
    run = tmp_path / "run"
    assert CliRunner().invoke(cli, ["fit", str(tiny_config), "--out", str(run),
                                    "--quiet"]).exit_code == 0
    samples = tmp_path / "samples.npy"
    np.save(samples, np.zeros((3, 4)))
    out = tmp_path / "p.csv"

    def predict(when):
        return subprocess.run(
            [sys.executable, "-c", SIGNALLED_WHILE_PREDICTING, name, when, "predict",
             str(run / "checkpoints" / "best.npz"), str(samples), "--out", str(out)],
            cwd=Path(__file__).parents[1], capture_output=True, text=True,
            timeout=120)

    written = predict("write")
    assert written.returncode == 0, written.stderr
    assert written.stderr == f"wrote 3 predictions to {out}\n"
    assert len(out.read_text().splitlines()) == 4
    out.unlink()

    stopped = predict("scores")
    assert stopped.returncode == code, stopped.stderr
    assert stopped.stderr == f"stopped by {name}: no predictions were written\n"
    assert not out.exists()
