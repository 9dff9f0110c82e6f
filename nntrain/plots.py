"""Figures of a training run and of an evaluation, written as PNG files.

matplotlib is the optional extra ``nntrain[plot]``. It is imported inside the
functions, never when this module is, and figures are drawn on matplotlib's Agg
canvas through ``matplotlib.figure.Figure`` rather than ``pyplot``: plotting needs
no display, switches no global backend and leaves a notebook's own figures alone.
Each figure is drawn whole, and matplotlib imported whole, before a Ctrl-C or
SIGTERM takes effect (``signals_deferred``): raised inside matplotlib's compiled
drawing, or inside a class's creation, the KeyboardInterrupt would turn into an
unrelated error.

Shapes: N samples, D input features, C classes, H hidden units; an image sample has
``input_shape`` (height, width) with height * width = D.
"""

import contextlib
import importlib.util
import json
import math
import textwrap
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nntrain.arguments import path_argument
from nntrain.errors import (
    BadInputError,
    CheckpointError,
    ConfigError,
    DataError,
    NNTrainError,
)
from nntrain.fileio import (
    folders_removed_on_error,
    make_output_folder,
    read_fix,
    save_figure,
    too_long_paths_refused,
    written_by_nntrain_png,
)
from nntrain.train.report import counted, short_number
from nntrain.train.signals import signals_deferred

UPDATE_RATIO_REFERENCE = 1e-3  # the rule of thumb for update norm / weight norm
ACTIVATION_SAMPLES = 1000  # training samples pushed through for the histograms
MAX_WEIGHT_IMAGES = 64  # first-layer units shown, at most
SAMPLE_SEED = 0  # picks the histogram samples, so a run's figure never changes
# Past these, a value has no place on an axis: matplotlib's margins and ticks
# beyond them overflow float64 (a count above 2^53 is not even exact). Runs log far
# less: at most 10^9 updates, and a float64 loss that blows up reaches 1e304 or so.
MAX_COUNT = 10**15
MAX_DRAWN = 1e306
LOG10_LARGEST = np.log10(np.finfo(np.float64).max)
LOG10_SMALLEST = np.log10(np.finfo(np.float64).smallest_normal)
DPI = 110

# Layers whose output is not worth a histogram of its own: an affine layer's output
# is the pre-activation the next layer shows transformed, and dropout is the
# identity in evaluation mode.
SKIPPED_ACTIVATION_KINDS = ("affine", "dropout")


class PlotsUnavailable(NNTrainError):
    """matplotlib, which the figures need, is not installed or fails to import
    (exit status 2). ``problem`` says which ("is not installed"), ``command`` is
    the one that mends it."""

    exit_code = 2

    def __init__(self, problem: str, remedy: str, command: str):
        super().__init__(f"plots need matplotlib, which {problem}; {remedy}:"
                         f" {command}")
        self.problem, self.command = problem, command


class PlotWarning(UserWarning):
    """A figure, or some of its values, was left out (no checkpoint to draw it
    from, the data moved, nothing finite to draw), or the run's files were read
    in part (a last line cut short, a config.yaml that does not say the monitor)."""


def require_matplotlib() -> None:
    """Import matplotlib's figure tools, or raise PlotsUnavailable saying why it
    cannot and what mends it."""
    _figure_tools()


@signals_deferred()  # the import too (see the docstring at the top)
def _figure_tools():
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ModuleNotFoundError as error:
        if importlib.util.find_spec("matplotlib") is not None:
            # A dependency gone, or a part of matplotlib (a half-done uninstall):
            # installing would answer "already satisfied".
            raise PlotsUnavailable(*_broken(error)) from None
        raise PlotsUnavailable("is not installed", "install it with",
                               "pip install 'nntrain[plot]'") from None
    except Exception as error:
        # A broken install (a compiled part built for another NumPy, a damaged
        # matplotlibrc) raises anything at all while it imports.
        raise PlotsUnavailable(*_broken(error)) from None
    return Figure, FigureCanvasAgg


def _broken(error: Exception) -> tuple[str, str, str]:
    """PlotsUnavailable's parts for a matplotlib that is there but fails to import
    with ``error``."""
    lines = str(error).strip().splitlines()
    said = f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
    if len(said) > 200:  # a whole traceback's worth would drown the fix
        said = said[:197] + "..."
    return (f"fails to import, raising {said}", "reinstall it with",
            "pip install --force-reinstall matplotlib")


def _new_figure(width: float, height: float):
    """A figure of ``width`` x ``height`` inches on its own Agg canvas."""
    Figure, FigureCanvasAgg = _figure_tools()
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


# The lists that ``recording`` hands out: each gets the path of every PNG written
# while it is open.
_recorders: list[list[Path]] = []


@contextlib.contextmanager
def recording():
    """A list that receives the path of each PNG written within the block, so that
    a command a signal stops can say which it wrote."""
    written: list[Path] = []
    _recorders.append(written)
    try:
        yield written
    finally:
        _recorders.remove(written)


def _save(figure, path: Path) -> Path:
    try:
        save_figure(figure, path, DPI)
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise BadInputError(f"cannot write {path} ({reason}); choose a folder that"
                            " can be written") from None
    for written in _recorders:
        written.append(path)
    return path


def _log_y(ax, values: np.ndarray) -> None:
    """A log y axis labelled with plain numbers (0.2, 0.001) instead of 2x10^-1.
    values: (T,) > 0, all that the axis shows."""
    from matplotlib.ticker import LogFormatter, LogLocator

    class PlainLogFormatter(LogFormatter):
        def __call__(self, x, pos=None):
            # The parent decides which ticks get a label; only the wording changes.
            return f"{x:g}" if super().__call__(x, pos) else ""

    class FiniteLogLocator(LogLocator):
        def tick_values(self, vmin, vmax):
            # The parent adds a tick a stride of decades past each limit; over
            # hundreds of decades that one overflows to inf (or underflows to 0),
            # which has no place on the axis and no label.
            with np.errstate(over="ignore"):
                ticks = super().tick_values(vmin, vmax)
            return ticks[np.isfinite(ticks) & (ticks > 0)]

    # matplotlib pads the data by a share of its span in decades; over hundreds of
    # decades (a float64 loss that blew up to 1e304) the padded limit overflows, and
    # matplotlib then shows 1 to 10 (with a NumPy warning). Such an axis gets its
    # padding cut a decade inside float64's range; so does a single value, which
    # matplotlib widens to a decade either side with a warning when many points
    # hold it. The limits are set before the scale, which would autoscale.
    low, high = np.log10(values.min()), np.log10(values.max())
    pad = ax.margins()[1] * (high - low)
    if low == high or high + pad > LOG10_LARGEST or low - pad < LOG10_SMALLEST:
        pad = pad or 1.0
        ax.set_ylim(min(values.min(), 10 ** max(low - pad, LOG10_SMALLEST + 1)),
                    max(values.max(), 10 ** min(high + pad, LOG10_LARGEST - 1)))
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(FiniteLogLocator())
    ax.yaxis.set_minor_locator(FiniteLogLocator(subs=None))
    ax.yaxis.set_major_formatter(PlainLogFormatter(labelOnlyBase=False))
    ax.yaxis.set_minor_formatter(PlainLogFormatter(labelOnlyBase=False,
                                                   minor_thresholds=(2, 0.5)))


def _count_x_axis(ax) -> None:
    """Whole-number ticks on an x axis that counts epochs or updates (matplotlib
    would put ticks at 1.25 and 1.5 on a short run)."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _fitted_suptitle(figure, text: str, **kwargs):
    """``figure.suptitle(text)``, wrapped at spaces onto more lines until it is as
    narrow as the figure (a figure of one histogram is 4 inches wide)."""
    title = figure.suptitle(text, **kwargs)
    renderer = figure.canvas.get_renderer()
    room = 0.95 * figure.bbox.width  # the extent is measured, the margin a guess
    columns = len(text)
    while columns > 10 and title.get_window_extent(renderer).width > room:
        columns -= 2
        title.set_text(textwrap.fill(text, columns))
    return title


def read_metrics(path) -> list[dict]:
    """The records of a ``metrics.jsonl``, in order.

    A last line that is not valid JSON was cut short by a run killed while writing
    it, and is left out with a PlotWarning; any other unreadable line, or an
    ``iter`` or ``epoch`` record whose ``iteration`` or ``epoch`` is no count from
    1 (the x axes), means the file is damaged.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise BadInputError(f"{path} not found; give the run directory that"
                            " nntrain fit wrote") from None
    except OSError as error:
        fix = ("give the run directory that nntrain fit wrote" if path.is_dir()
               else read_fix(error))
        raise BadInputError(f"cannot read {path}: {error.strerror}; {fix}") from None
    try:
        text, not_utf8 = data.decode("utf-8"), ""
    except UnicodeDecodeError:
        # Read on, so that the message names the line that is damaged.
        text, not_utf8 = data.decode("utf-8", errors="replace"), " (not UTF-8 text)"

    lines = [(number, line) for number, line in enumerate(text.splitlines(), 1)
             if line.strip()]
    records = []
    for position, (number, line) in enumerate(lines):
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):
            # Besides bad JSON: an integer of over 4300 digits, or lists nested
            # thousands deep.
            record = None
        if isinstance(record, dict):
            _check_counts(record, f"{path}, line {number}")
            records.append(record)
        elif position < len(lines) - 1:
            raise BadInputError(f"{path}, line {number}: not a JSON record{not_utf8};"
                                " the file is damaged")
        else:
            cause = not_utf8 or "; a run killed while writing leaves it cut short"
            warnings.warn(f"{path}: skipped 1 line, the last (line {number}): not a"
                          f" JSON record{cause}", PlotWarning, stacklevel=3)
    return records


def _check_counts(record: dict, where: str) -> None:
    """Bad input unless a record drawn (an ``iter`` or ``epoch`` one) has an
    ``iteration``, and an ``epoch`` if any, that the x axes can place: whole
    numbers from 1 to MAX_COUNT."""
    if record.get("kind") not in ("iter", "epoch"):
        return
    if "iteration" not in record:
        raise BadInputError(f"{where}: an {record['kind']} record without an"
                            " iteration; the file is damaged")
    for key in ("iteration", "epoch"):
        value = record.get(key, 1)
        if type(value) is not int or not 1 <= value <= MAX_COUNT:
            shown = json.dumps(value)
            shown = shown if len(shown) <= 40 else shown[:37] + "..."
            raise BadInputError(f"{where}: {key} {shown} is not a whole number from 1"
                                f" to {MAX_COUNT:g}; the file is damaged")


def smooth(values, weight: float) -> np.ndarray:
    """Exponential moving average with bias correction.

    s_t = weight * s_{t-1} + (1 - weight) * v_t from s_0 = 0, divided by
    1 - weight^t, so the first point is v_1 itself rather than pulled towards 0.
    values: (T,) -> (T,).
    """
    values = np.asarray(values, dtype=np.float64)
    out = np.empty_like(values)
    average = 0.0
    for t, value in enumerate(values, 1):
        average = weight * average + (1.0 - weight) * value
        out[t - 1] = average / (1.0 - weight**t)
    return out


def _smoothing_weight(count: int) -> float:
    """A weight averaging over about count / 20 points; 0 (no smoothing) for 20
    or fewer."""
    span = max(1.0, count / 20)
    return 1.0 - 2.0 / (span + 1.0)


@dataclass
class Series:
    """One key of the records, as an axis can draw it.

    x, values: (T,) float64, ``record[axis]`` and ``record[key]`` of the records
    whose ``key`` holds a finite number within ±MAX_DRAWN; beyond: how many held
    a number past that (or an infinite one).
    """

    x: np.ndarray
    values: np.ndarray
    beyond: int


def _series(records: list[dict], key: str, axis: str = "iteration") -> Series:
    # NaN is no number to draw (the run writes it as null); an infinity counts
    # as beyond.
    pairs = [(record[axis], record[key]) for record in records
             if type(record.get(key)) in (int, float) and record[key] == record[key]]
    drawn = [(x, value) for x, value in pairs if abs(value) <= MAX_DRAWN]
    x, values = zip(*drawn) if drawn else ((), ())
    return Series(np.asarray(x, dtype=np.float64),
                  np.asarray(values, dtype=np.float64), len(pairs) - len(drawn))


def _finite(value) -> bool:
    """True for a JSON number that is neither NaN nor infinite (bool is none)."""
    return type(value) is int or type(value) is float and math.isfinite(value)


def _left_out(path: Path, why: str) -> None:
    warnings.warn(f"{path.name} is left out: {why}", PlotWarning, stacklevel=3)


def _no_finite(what: str, *series: Series) -> str:
    """Why a figure of ``series`` that hold no value to draw is left out."""
    beyond = f" within ±{MAX_DRAWN:g}" if any(one.beyond for one in series) else ""
    return f"no record holds a finite {what}{beyond}"


def _note_beyond(path: Path, what: str, *series: Series) -> None:
    """A PlotWarning naming how many values of ``series`` the figure at ``path``
    leaves out as too large to draw."""
    beyond = sum(one.beyond for one in series)
    if beyond:
        warnings.warn(f"{path.name} leaves out {counted(beyond, 'value')} of {what}"
                      f" beyond ±{MAX_DRAWN:g}, too large to draw", PlotWarning,
                      stacklevel=3)


def _evaluation_axis(evaluations: list[dict]) -> tuple[str, str]:
    """The x key and label of per-evaluation figures: the epoch when the run
    evaluated once per epoch, else the iteration."""
    epochs = [record.get("epoch") for record in evaluations]
    if None not in epochs and len(set(epochs)) == len(epochs):
        return "epoch", "epoch"
    return "iteration", "iteration (updates)"


@too_long_paths_refused()
def plot_run(run_dir, out_dir=None, *, data_path=None,
             out_option: str = "--out") -> list[Path]:
    """Write the figures of a run directory as PNGs; return the paths written.

    ``out_dir`` defaults to ``run_dir/plots``; ``out_option`` names what chose it
    in the error when it cannot be made. ``data_path`` says where the run's data
    lies now if it moved (as ``nntrain eval --data``); the activation histograms
    need it, and one given that does not exist, or holds other data, is an error.
    Figures whose inputs are absent are left out: the learning rate for L-BFGS,
    update ratios when the run logged none, and (with a ``PlotWarning``)
    activations and first-layer weights when there is no readable checkpoint or
    the run's data cannot be found, and the figures of metrics.jsonl when it
    holds no records, or no finite value of theirs; values beyond ±MAX_DRAWN are
    left out, with a PlotWarning. accuracy.png stars the evaluation that the
    ``train.monitor`` of the run's config.yaml chose for best.npz (with a
    PlotWarning, the best val_accuracy when config.yaml does not say or cannot
    be read).
    """
    # Each ~ expanded, as fit does for run_dir: a folder named ~ would be a trap
    # for rm -rf ~.
    run_dir = Path(path_argument("run_dir", run_dir, "the run directory's path, a"
                                 " str or pathlib.Path"))
    if out_dir is not None:
        out_dir = path_argument("out_dir", out_dir, "a folder path, a str or"
                                " pathlib.Path, or None for run_dir/plots")
    _figure_tools()
    _refuse_part_of_a_run(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise BadInputError(f"{run_dir} is a file, not a run directory; give the"
                            " folder that nntrain fit wrote")
    if not run_dir.is_dir():
        raise BadInputError(f"run directory {run_dir} not found; give the folder that"
                            " nntrain fit wrote")
    records = read_metrics(run_dir / "metrics.jsonl")
    out_dir = run_dir / "plots" if out_dir is None else Path(out_dir)
    with folders_removed_on_error(out_dir):
        make_output_folder(out_dir, out_option)
        refuse_to_replace_others(out_dir, RUN_FIGURES, out_option)

        steps = [record for record in records if record.get("kind") == "iter"]
        evaluations = [record for record in records if record.get("kind") == "epoch"]
        # The checkpoint's figures first: a --data that holds other data stops
        # the command before any figure is written.
        from_checkpoint = _plot_checkpoint(run_dir, out_dir, data_path)
    if not records:
        warnings.warn(f"{run_dir / 'metrics.jsonl'} holds no records (a run stopped"
                      " before its first one leaves none); loss.png, accuracy.png,"
                      " learning_rate.png and update_ratios.png are left out",
                      PlotWarning, stacklevel=2)
        return [path for path in from_checkpoint if path is not None]
    written = [
        _plot_loss(steps or evaluations, out_dir / "loss.png"),
        _plot_accuracy(evaluations, run_dir, out_dir / "accuracy.png"),
        _plot_learning_rate(steps or evaluations, out_dir / "learning_rate.png"),
        _plot_update_ratios(evaluations, out_dir / "update_ratios.png"),
        *from_checkpoint,
    ]
    return [path for path in written if path is not None]


class FigureInTheWay(BadInputError):
    """What stands at a figure's name is not a PNG that nntrain wrote: ``path``
    and ``problem`` ("is a folder, where loss.png would be written")."""

    def __init__(self, path: Path, problem: str, out_option: str):
        super().__init__(f"{path} {problem}; move it, or give {out_option} another"
                         " folder")
        self.path, self.problem = path, problem


def refuse_to_replace_others(out_dir: Path, names, out_option: str) -> None:
    """FigureInTheWay, before any figure is drawn, when a file that one of
    ``names`` would replace in ``out_dir`` is not a PNG that nntrain wrote (the
    user's own loss.png), or when something else stands at one of the names (a
    folder, a pipe): otherwise the file would be lost, or the figures half
    written. Every name is checked, also that of a figure this run will leave
    out. ``out_option`` names the option that chose the folder."""
    for name in names:
        path = Path(out_dir) / name
        if path.is_symlink() or not path.exists():
            continue  # a link is replaced, never written through
        if path.is_dir():
            problem = f"is a folder, where {name} would be written"
        elif not path.is_file():
            problem = (f"is not a regular file (a pipe or a device), where {name}"
                       " would be written")
        elif not _readable(path):
            problem = (f"cannot be read, so nntrain cannot tell whether it wrote it,"
                       f" and {name} would replace it")
        elif not written_by_nntrain_png(path):
            problem = f"is not a plot that nntrain wrote, and {name} would replace it"
        else:
            continue
        raise FigureInTheWay(path, problem, out_option)


def _readable(path: Path) -> bool:
    try:
        with open(path, "rb"):
            return True
    except OSError:
        return False


def _refuse_part_of_a_run(path: Path) -> None:
    """Bad input naming the run directory to give when ``path`` is a run's
    checkpoints folder, or a file in it (a checkpoint), rather than the run's."""
    folder = path if path.is_dir() else path.parent
    run_dir = folder.parent
    if folder.name != "checkpoints" or not (run_dir / "metrics.jsonl").is_file():
        return
    what = ("the checkpoints folder of a run" if path.is_dir()
            else "a file in a run's checkpoints folder")
    raise BadInputError(f"{path} is {what}, not its run directory; give the run"
                        f" directory {run_dir}")


def run_monitor(run_dir) -> tuple[str, bool]:
    """(monitor, known): the run's ``train.monitor``, read from its config.yaml,
    and True; the config's default and False, with a PlotWarning, when that file is
    missing, cannot be read or does not say."""
    from nntrain.config import MONITORS, SCHEMA
    from nntrain.yamlio import parse_yaml

    path = Path(run_dir) / "config.yaml"
    default = SCHEMA["train"]["monitor"].default
    unreadable = None
    try:
        config = parse_yaml(path.read_text(encoding="utf-8"), str(path))
        monitor = config["train"]["monitor"]
    except FileNotFoundError:
        monitor = None
    except OSError as error:
        monitor, unreadable = None, error.strerror or type(error).__name__
    except UnicodeDecodeError:
        monitor, unreadable = None, "not UTF-8 text"
    except ConfigError as error:
        # Its message names the file and a fix for a config the user wrote; this
        # one the run wrote, so only the problem is shown.
        problem = str(error).removeprefix(f"{path}: ").partition("; ")[0]
        monitor, unreadable = None, problem
    except (KeyError, TypeError):
        monitor = None
    if isinstance(monitor, str) and monitor in MONITORS:
        return monitor, True
    star = (f"the star on accuracy.png marks the best {default}, the default,"
            " which may not be the evaluation best.npz holds")
    if unreadable:
        warnings.warn(f"cannot read {path} ({unreadable}), so the run's"
                      f" train.monitor is unknown: {star}", PlotWarning, stacklevel=3)
    else:
        warnings.warn(f"{path} does not say train.monitor; {star}", PlotWarning,
                      stacklevel=3)
    return default, False


def best_evaluation(evaluations: list[dict], monitor: str) -> dict | None:
    """The evaluation record whose weights best.npz holds, found as the Solver
    picks it: the first that beats every earlier one in ``monitor`` (lower for a
    loss, higher for an accuracy), so a tie keeps the earlier evaluation;
    early stopping's min_delta plays no part. None when no record has the value."""
    from nntrain.train.solver import monitor_improved

    best, best_value = None, None
    for record in evaluations:
        value = record.get(monitor)
        if not _finite(value):
            continue
        if monitor_improved(monitor, value, best_value):
            best, best_value = record, value
    return best


@signals_deferred()
def _plot_loss(records: list[dict], path: Path) -> Path | None:
    series = _series(records, "loss")
    if not len(series.values):
        return _left_out(path, _no_finite("loss", series))
    _note_beyond(path, "loss", series)
    x, loss = series.x, series.values
    figure = _new_figure(7, 4.2)
    ax = figure.add_subplot()
    weight = _smoothing_weight(len(loss))
    if weight > 0:
        ax.plot(x, loss, ".", color="tab:blue", alpha=0.35, markersize=4,
                label="loss (logged iterations)")
        ax.plot(x, smooth(loss, weight), color="tab:blue", linewidth=2,
                label=f"smoothed: {1 - weight:.2f} x point + {weight:.2f} x the"
                      " average before it")
    else:
        # Too few points to smooth: each is shown as it was logged.
        ax.plot(x, loss, "o-", color="tab:blue", markersize=4,
                label="loss (logged iterations)")
    if (loss > 0).all():
        # The moving average lies between the smallest and largest loss.
        _log_y(ax, loss)
    ax.set(title="Training loss (data + regularization)", xlabel="iteration (updates)",
           ylabel="loss")
    _count_x_axis(ax)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    return _save(figure, path)


@signals_deferred()
def _plot_accuracy(evaluations: list[dict], run_dir: Path,
                   path: Path) -> Path | None:
    if not evaluations:
        return _left_out(path, "the run logged no evaluation (no epoch record)")
    axis, label = _evaluation_axis(evaluations)
    train = _series(evaluations, "train_accuracy", axis)
    val = _series(evaluations, "val_accuracy", axis)
    if not len(train.values) and not len(val.values):
        return _left_out(path, _no_finite("train_accuracy or val_accuracy", train,
                                          val))
    _note_beyond(path, "accuracy", train, val)
    figure = _new_figure(7, 4.2)
    ax = figure.add_subplot()
    if len(train.values):
        ax.plot(train.x, train.values, "o-", markersize=3,
                label="train (mean over the batches since the last evaluation)")
    if len(val.values):
        ax.plot(val.x, val.values, "o-", markersize=3, label="validation")
    _mark_best(ax, evaluations, *run_monitor(run_dir), axis)
    ax.set(title="Accuracy at each evaluation", xlabel=label, ylabel="accuracy")
    _count_x_axis(ax)
    if max(train.values.max(initial=0), val.values.max(initial=0)) <= 1:
        # Room for the star at 1.0; a larger value (no accuracy) keeps its place.
        ax.set_ylim(top=1.01)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right")
    return _save(figure, path)


def _mark_best(ax, evaluations: list[dict], monitor: str, known: bool,
               axis: str) -> None:
    """A star at the evaluation best.npz holds (``best_evaluation``): on the curve
    of the monitor when that is an accuracy, else on the accuracy curve of the
    monitor's split (val_loss: validation; loss: train), which its legend
    names. Not ``known`` to be the run's monitor, it claims no more than the
    best value."""
    best = best_evaluation(evaluations, monitor)
    split = "validation" if monitor.startswith("val_") else "train"
    curve = monitor if monitor.endswith("accuracy") else (
        "val_accuracy" if split == "validation" else "train_accuracy")
    if best is None or not _finite(best.get(curve)) or abs(best[curve]) > MAX_DRAWN:
        return
    x, y = best[axis], best[curve]
    label = f"best {monitor}" + (" (best.npz)" if known else "")
    if curve != monitor:
        label += f", marked on the {split} curve"
    ax.plot(x, y, "*", color="tab:orange", markersize=11, label=label)
    late = evaluations.index(best) > len(evaluations) / 2
    ax.annotate(f"{monitor} {short_number(best[monitor])}", (x, y), xytext=(0, -16),
                textcoords="offset points", fontsize="small",
                ha="right" if late else "left")


@signals_deferred()
def _plot_learning_rate(records: list[dict], path: Path) -> Path | None:
    if not any("lr" in record for record in records):
        return None  # L-BFGS has no rate to log: nothing is missing
    series = _series(records, "lr")
    if not len(series.values):
        return _left_out(path, _no_finite("lr", series))
    _note_beyond(path, "lr", series)
    lr = series.values
    figure = _new_figure(7, 3.5)
    ax = figure.add_subplot()
    ax.plot(series.x, lr, color="tab:green")
    if (lr > 0).all() and lr.max() > 10 * lr.min():
        _log_y(ax, lr)
    ax.set(title="Learning rate", xlabel="iteration (updates)", ylabel="learning rate")
    _count_x_axis(ax)
    ax.grid(True, which="both", alpha=0.3)
    return _save(figure, path)


@signals_deferred()
def _plot_update_ratios(evaluations: list[dict], path: Path) -> Path | None:
    names = sorted({key.partition("/")[2] for record in evaluations for key in record
                    if key.startswith("update_ratio/")})
    if not names:
        return None  # the run logged no diagnostics: nothing is missing
    axis, label = _evaluation_axis(evaluations)
    series = [_series(evaluations, f"update_ratio/{name}", axis) for name in names]
    # A zero ratio has no place on a log axis.
    drawn = {name: (one.x[one.values > 0], one.values[one.values > 0])
             for name, one in zip(names, series) if (one.values > 0).any()}
    if not drawn:
        return _left_out(path, _no_finite("update ratio above 0", *series))
    _note_beyond(path, "the update ratios", *series)
    figure = _new_figure(7, 4.2)
    ax = figure.add_subplot()
    for name, (x, ratio) in drawn.items():
        ax.plot(x, ratio, "o-", markersize=3, label=name)
    ax.axhline(UPDATE_RATIO_REFERENCE, color="gray", linestyle="--",
               label=f"{UPDATE_RATIO_REFERENCE:g} (rule of thumb)")
    _log_y(ax, np.concatenate([ratio for _, ratio in drawn.values()]
                              + [[UPDATE_RATIO_REFERENCE]]))
    ax.set(title="Update norm / weight norm per weight array", xlabel=label,
           ylabel="||update|| / ||W||")
    _count_x_axis(ax)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    return _save(figure, path)


# The PNGs that plot_run and plot_evaluation write into their folders.
RUN_FIGURES = ("loss.png", "accuracy.png", "learning_rate.png", "update_ratios.png",
               "activations.png", "first_layer_weights.png")
EVALUATION_FIGURES = ("confusion_matrix.png", "worst_examples.png")


def _run_checkpoints(run_dir: Path) -> list[Path]:
    """The run's last.npz and best.npz, those that are files, in that order."""
    paths = [run_dir / "checkpoints" / name for name in ("last.npz", "best.npz")]
    return [path for path in paths if path.is_file()]


def _plot_checkpoint(run_dir: Path, out_dir: Path, data_path) -> list:
    """activations.png and first_layer_weights.png, from the run's last.npz, or
    from its best.npz when last.npz is missing or cannot be loaded."""
    from nntrain.restore import restore

    checkpoints = _run_checkpoints(run_dir)
    if not checkpoints:
        warnings.warn(f"{run_dir / 'checkpoints'} holds no last.npz or best.npz;"
                      " activations.png and first_layer_weights.png are left out",
                      PlotWarning, stacklevel=3)
        return []
    problems = []
    for checkpoint in checkpoints:
        try:
            restored = restore(checkpoint)
            break
        except CheckpointError as error:
            problems.append(str(error))
    else:
        warnings.warn(f"{'; '.join(problems)}; activations.png and"
                      " first_layer_weights.png are left out", PlotWarning,
                      stacklevel=3)
        return []
    if problems:
        warnings.warn(f"{problems[0]}; activations.png and first_layer_weights.png"
                      f" show {checkpoint.name} instead", PlotWarning, stacklevel=3)

    # The data first: a --data the user pointed at that is wrong stops the command
    # before any figure is drawn.
    try:
        X = training_sample(restored, data_path)
    except DataError as error:
        if data_path is not None:
            raise
        warnings.warn(f"{error}; activations.png is left out (if the data moved,"
                      " give its new place with --data)", PlotWarning, stacklevel=3)
        X = None
    written = [_plot_first_layer_weights(restored, out_dir / "first_layer_weights.png")]
    if X is not None:
        written.append(_plot_activations(restored.model, X,
                                         out_dir / "activations.png"))
    return written


def training_sample(restored, data_path=None, count: int = ACTIVATION_SAMPLES):
    """Up to ``count`` training samples, preprocessed with the checkpoint's steps.
    ``restored``: what ``restore.restore`` returns. -> X: (n, D), n <= count."""
    from nntrain.prepare import prepare_data

    config = restored.config
    if data_path is not None:
        config = {**config, "data": {**config["data"], "path": str(data_path)}}
    prepared = prepare_data(config, restored.preprocessor, splits=("train",),
                            spec=restored.data,
                            given_as=None if data_path is None else "--data")
    X, _ = prepared.splits["train"]
    if len(X) > count:
        rows = np.random.default_rng(SAMPLE_SEED).choice(len(X), count, replace=False)
        X = X[np.sort(rows)]
    return X


def hidden_activations(model, X: np.ndarray) -> list[tuple[object, np.ndarray]]:
    """Each hidden layer's output in evaluation mode, as (layer, (N, H)) pairs.

    X: (N, D) preprocessed. Affine and dropout layers and the output layer are left
    out (see ``SKIPPED_ACTIVATION_KINDS``).
    """
    outputs = []
    out = X
    for layer in model.layers[:-1]:
        out = layer.forward(out, training=False)
        if layer.kind not in SKIPPED_ACTIVATION_KINDS:
            outputs.append((layer, out))
    return outputs


def _grid(count: int, max_columns: int) -> tuple[int, int]:
    columns = min(count, max_columns)
    return math.ceil(count / columns), columns


@signals_deferred()
def _plot_activations(model, X: np.ndarray, path: Path) -> Path | None:
    with np.errstate(over="ignore", invalid="ignore"):  # noted in the titles
        outputs = hidden_activations(model, X)
    if not outputs:
        return None
    rows, columns = _grid(len(outputs), 3)
    figure = _new_figure(4 * columns, 3.2 * rows + 0.5)
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for ax, (layer, out) in zip(axes, outputs):
        # In float64: the sums of float32 activations near 1e36 (weights blown up)
        # would overflow, with NumPy's warning on the console. Infinite or NaN
        # ones (weights at float32's limit) have no place on an axis.
        values = out.ravel().astype(np.float64)
        finite = values[np.isfinite(values)]
        if finite.size:
            ax.hist(finite, bins=50, color="tab:purple")
            note = f"mean {finite.mean():.3g}, std {finite.std():.3g}"
        else:
            note = "no finite value"
        if layer.kind == "relu":
            note += f", {np.mean(values == 0):.0%} at 0"
        if finite.size < values.size:
            note += f", {values.size - finite.size:,} not finite (not drawn)"
        ax.set_title(f"{layer.name}\n{note}", fontsize="medium")
        ax.set(xlabel="activation", ylabel="count")
    for ax in axes[len(outputs):]:
        ax.set_axis_off()
    _fitted_suptitle(figure, f"Hidden-layer activations on {len(X)} training"
                     " samples (evaluation mode)")
    return _save(figure, path)


@dataclass
class Tile:
    """One image of a grid drawn by ``_draw_tiles``, with its text above it."""

    row: int
    column: int
    image: np.ndarray  # (height, width)
    label: str = ""
    color: str = "black"


def _draw_tiles(figure, tiles: list[Tile], grid: tuple[int, int],
                row_names=(), label_lines: int = 0) -> None:
    """Draw images in a grid on one axes, each scaled to its own range.

    One axes with an image per tile renders many times faster than an axes per
    tile. ``grid``: (rows, columns); ``row_names`` go left of each row.
    """
    height, width = tiles[0].image.shape
    # Text of fontsize 7 takes about 0.14 of a tile's height per line, because the
    # figure below gives a tile about an inch.
    step_x = 1.12 * width
    step_y = (1.12 + 0.14 * label_lines) * height
    rows, columns = grid
    left = 0.9 if len(row_names) else 0.2
    # At least 6.5 inches wide, so that the figure's title fits above few tiles.
    figure.set_size_inches(max(6.5, 1.1 * columns * step_x / height + left + 0.2),
                           1.1 * rows * step_y / height + 0.8)
    ax = figure.add_subplot()
    for tile in tiles:
        x0 = tile.column * step_x
        y0 = tile.row * step_y + (step_y - height)
        ax.imshow(tile.image, cmap="gray", interpolation="nearest",
                  extent=(x0, x0 + width, y0 + height, y0))
        if tile.label:
            ax.text(x0 + width / 2, y0 - 0.04 * height, tile.label, ha="center",
                    va="bottom", fontsize=7, color=tile.color)
    for row, name in enumerate(row_names):
        ax.text(-0.08 * width, row * step_y + step_y - height / 2, name,
                ha="right", va="center", fontsize=9)
    ax.set_xlim(-0.06 * width, columns * step_x)
    ax.set_ylim(rows * step_y + 0.06 * height, 0)
    ax.set_aspect("equal")
    ax.set_axis_off()


@signals_deferred()
def _plot_first_layer_weights(restored, path: Path) -> Path | None:
    """The first layer's weight columns as images, for image data seen whole."""
    shape = tuple(restored.data.get("input_shape") or ())
    first = restored.model.layers[0]
    W = first.params.get("W")
    if len(shape) != 2 or W is None or W.shape[0] != shape[0] * shape[1]:
        return None
    # A model without hidden layers is a linear classifier: its columns are class
    # templates, named after the classes.
    is_output = len(restored.model.layers) == 1
    names = restored.data.get("class_names") or []
    count = min(W.shape[1], MAX_WEIGHT_IMAGES)
    columns = math.ceil(math.sqrt(count))
    tiles = [
        Tile(unit // columns, unit % columns, W[:, unit].reshape(shape),
             names[unit] if is_output and unit < len(names) else str(unit))
        for unit in range(count)
    ]
    figure = _new_figure(1, 1)
    _draw_tiles(figure, tiles, (math.ceil(count / columns), columns), label_lines=1)
    what = ("one template per class" if is_output
            else f"{count} of {W.shape[1]} units")
    _fitted_suptitle(figure, f"First-layer weights ({first.name}): {what}, each"
                     " scaled to its own range")
    return _save(figure, path)


@dataclass
class EvaluationPlots:
    """What ``plot_evaluation`` wrote and found.

    paths: the PNGs written (confusion_matrix.png, worst_examples.png).
    worst: class index c -> indices into ``y`` of the (at most ``per_class``)
        samples of true class c with the lowest p(true class), lowest first.
    true_probability: (N,) each sample's softmax probability of its true class.
    """

    paths: list[Path]
    worst: dict[int, np.ndarray]
    true_probability: np.ndarray


def probability_text(p: float) -> str:
    """``p`` with three significant digits of its distance to the nearer of 0
    and 1 (0.500, 0.9730, 0.999730, 0.00314), so that probabilities near 1 do
    not all read 1.00; under 1e-4 from either end, that distance in scientific
    notation (1-3.1e-08, 2.0e-09)."""
    distance = min(p, 1.0 - p)
    if distance <= 0:
        return f"{p:.0f}"
    decimals = 2 - math.floor(math.log10(distance))
    if decimals <= 6:
        return f"{p:.{decimals}f}"
    return f"{p:.1e}" if p < 0.5 else f"1-{distance:.1e}"


def true_class_probability(scores: np.ndarray, y: np.ndarray) -> np.ndarray:
    """softmax(scores)[n, y[n]].  scores: (N, C), y: (N,) -> (N,) float64.

    For the SVM loss the scores are not log-probabilities, but their softmax still
    ranks the samples from worst to best classified.
    """
    from nntrain.nn.functional import softmax

    probabilities = softmax(np.asarray(scores, dtype=np.float64))
    return probabilities[np.arange(len(y)), y]


def worst_examples(scores: np.ndarray, y: np.ndarray,
                   per_class: int = 5) -> dict[int, np.ndarray]:
    """Per true class, the indices of its ``per_class`` samples with the lowest
    p(true class), lowest first; ties go to the lower index.

    scores: (N, C), y: (N,) -> {c: (k,) int indices into y, k <= per_class}.
    """
    p_true = true_class_probability(scores, y)
    worst = {}
    for c in range(scores.shape[1]):
        members = np.flatnonzero(y == c)
        order = np.argsort(p_true[members], kind="stable")
        worst[c] = members[order[:per_class]]
    return worst


def plot_evaluation(scores: np.ndarray, y: np.ndarray, class_names, X_raw: np.ndarray,
                    input_shape, out_dir, per_class: int = 5,
                    out_option: str = "--plots") -> EvaluationPlots:
    """Write confusion_matrix.png and worst_examples.png into ``out_dir``
    (``out_option`` names what chose it in the error when it cannot be made).

    scores: (N, C) class scores; y: (N,) true labels; class_names: C names;
    X_raw: (N, D) or (N, *input_shape) samples before preprocessing, to show;
    input_shape: one sample's shape, (height, width) for images (drawn as such),
    else the worst examples are listed in a table.
    """
    _figure_tools()
    scores, y = np.asarray(scores), np.asarray(y)
    names = [str(name) for name in class_names]
    if scores.ndim != 2 or len(names) != scores.shape[1] or len(y) != len(scores):
        raise ValueError(f"scores {scores.shape}, y {y.shape} and {len(names)} class"
                         " names do not match: need (N, C), (N,) and C names")
    if per_class < 1:
        raise ValueError(f"per_class must be >= 1, not {per_class}")
    out_dir = make_output_folder(out_dir, out_option)
    refuse_to_replace_others(out_dir, EVALUATION_FIGURES, out_option)

    predictions = scores.argmax(axis=1)
    p_true = true_class_probability(scores, y)
    worst = worst_examples(scores, y, per_class)
    shape = tuple(input_shape)
    paths = [_plot_confusion(y, predictions, names, out_dir / "confusion_matrix.png")]
    if len(shape) == 2:
        images = np.asarray(X_raw).reshape(len(y), *shape)
        paths.append(_plot_worst_images(images, worst, predictions, p_true, names,
                                        per_class, out_dir / "worst_examples.png"))
    else:
        paths.append(_plot_worst_table(worst, predictions, p_true, names,
                                       out_dir / "worst_examples.png"))
    return EvaluationPlots(paths, worst, p_true)


@signals_deferred()
def _plot_confusion(y, predictions, names, path: Path) -> Path:
    from nntrain.evaluate import confusion_matrix

    C = len(names)
    counts = confusion_matrix(y, predictions, C)
    size = max(4.5, 0.55 * C + 2.5)
    figure = _new_figure(size + 1, size)
    ax = figure.add_subplot()
    image = ax.imshow(counts, cmap="Blues")
    figure.colorbar(image, ax=ax, label="samples", shrink=0.8)
    fontsize = 9 if C <= 12 else 6
    for true in range(C):
        for predicted in range(C):
            dark = counts[true, predicted] > counts.max() / 2
            ax.text(predicted, true, str(counts[true, predicted]), ha="center",
                    va="center", fontsize=fontsize, color="white" if dark else "black")
    ticks = np.arange(C)
    ax.set_xticks(ticks, names, rotation=45, ha="right", rotation_mode="anchor")
    ax.set_yticks(ticks, names)
    accuracy = float((predictions == y).mean()) if len(y) else float("nan")
    ax.set(title=f"Confusion matrix: {len(y)} samples, accuracy {accuracy:.2%}",
           xlabel="predicted class", ylabel="true class")
    return _save(figure, path)


@signals_deferred()
def _plot_worst_images(images, worst, predictions, p_true, names, per_class,
                       path: Path) -> Path:
    tiles = [
        Tile(c, slot, images[index],
             f"{names[predictions[index]]}\np={probability_text(p_true[index])}",
             "tab:red" if predictions[index] != c else "black")
        for c in range(len(names)) for slot, index in enumerate(worst[c])
    ]
    figure = _new_figure(1, 1)
    if tiles:
        _draw_tiles(figure, tiles, (len(names), per_class), names, label_lines=2)
    # The lowest p(true class) of a class with few errors can still be right:
    # those samples are shown too, as the least sure (in black).
    figure.suptitle("Lowest p(true class) per true class (row), lowest first\n"
                    "above each: predicted class (red when wrong), p = p(true class)",
                    fontsize=10)
    return _save(figure, path)


@signals_deferred()
def _plot_worst_table(worst, predictions, p_true, names, path: Path) -> Path:
    listed = [(c, index) for c in range(len(names)) for index in worst[c]]
    rows = [
        [names[c], str(index), names[predictions[index]],
         "yes" if predictions[index] == c else "no", probability_text(p_true[index])]
        for c, index in listed
    ]
    figure = _new_figure(7, 0.25 * (len(rows) + 1) + 0.6)
    ax = figure.add_subplot()
    ax.set_axis_off()
    if rows:
        table = ax.table(cellText=rows, bbox=(0, 0, 1, 1), cellLoc="left",
                         colLabels=["true class", "sample", "predicted", "right",
                                    "p(true class)"])
        table.auto_set_font_size(False)
        table.set_fontsize(9)
        for row, (c, index) in enumerate(listed, start=1):
            if predictions[index] != c:
                for column in (2, 3):
                    table[row, column].get_text().set_color("tab:red")
    ax.set_title("Lowest p(true class) per true class, lowest first (right ones"
                 " too)")
    return _save(figure, path)
