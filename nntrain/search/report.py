"""A study's rows as a text table and as search.png."""

from pathlib import Path

from nntrain.errors import RunDirectoryError
from nntrain.fileio import save_figure
from nntrain.search.space import Param, SearchSpec
from nntrain.yamlio import one_line_yaml

PLOT_FILE = "search.png"


def short_value(value) -> str:
    """A value as the table and the round notes show it: floats to 3 digits."""
    if isinstance(value, bool):
        return "true" if value else "false"  # as the config writes it
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, list):
        return "[" + ", ".join(short_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return one_line_yaml(value)  # {patience: 2}, as the config writes it
    return "" if value is None else str(value)


def short_seconds(seconds: float) -> str:
    """A trial's time as a plain decimal: tenths of a second from one second up
    (0.9996 is 1.0), two significant digits below it (0.023, not 0.0), and
    "<0.001" below a millisecond (not 5e-05)."""
    rounded = float(f"{seconds:.2g}")
    if rounded >= 1 or seconds == 0:
        return f"{seconds:.1f}"
    return "<0.001" if rounded < 0.001 else str(rounded)


def format_table(rows: list[dict], spec: SearchSpec,
                 reason_width: int = 60) -> list[str]:
    """The rows (already ranked) as an aligned text table, one line per trial."""
    keys = [param.key for param in spec.params]
    header = ["trial", "status", *keys, spec.metric, "best epoch", "epochs", "seconds",
              "reason"]
    lines = [header]
    for row in rows:
        metric = "" if row["metric"] is None else f"{row['metric']:.4f}"
        seconds = "" if row["seconds"] is None else short_seconds(row["seconds"])
        reason = row["reason"]
        if len(reason) > reason_width:
            reason = reason[:reason_width - 3] + "..."
        lines.append([str(row["trial"]), row["status"],
                      *(short_value(row["values"][key]) for key in keys), metric,
                      short_value(row["best_epoch"]), short_value(row["epochs"]),
                      seconds, reason])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip()
            for line in lines]


def plot_study(rows: list[dict], spec: SearchSpec, path) -> Path | None:
    """search.png from ranked ``rows``: the metric of each finished trial against
    each hyperparameter, one colour per round, the best circled, log x axis for
    loguniform. None when matplotlib (the extra nntrain[plot]) is missing or
    fails to import."""
    from nntrain.plots import PlotsUnavailable, require_matplotlib

    try:
        require_matplotlib()
    except PlotsUnavailable:
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    finished = [row for row in rows if row["status"] == "ok"]
    figure = Figure(figsize=(4.0 * len(spec.params), 3.5), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, len(spec.params), squeeze=False)[0]
    for ax, param in zip(axes, spec.params):
        _scatter(ax, param, finished, spec)
    figure.suptitle(f"{len(finished)} of {len(rows)} trials finished; the best"
                    " circled")
    try:
        save_figure(figure, path, dpi=110)
    except OSError as error:
        raise RunDirectoryError(f"cannot write {path} ({error.strerror or error});"
                                " make room for the file or give --out another"
                                " folder") from None
    return Path(path)


def _scatter(ax, param: Param, rows: list[dict], spec: SearchSpec) -> None:
    def x_of(row):
        value = row["values"][param.key]
        return param.bounds.index(value) if param.kind == "choice" else value

    for number in range(1, spec.rounds + 1):
        chosen = [row for row in rows if row["round"] == number]
        ax.scatter([x_of(row) for row in chosen], [row["metric"] for row in chosen],
                   s=24, label=f"round {number}")
    if rows:
        ax.scatter([x_of(rows[0])], [rows[0]["metric"]], s=120, facecolors="none",
                   edgecolors="red")
    if param.kind == "choice":
        ax.set_xticks(range(len(param.bounds)), [short_value(o) for o in param.bounds])
    if param.kind == "loguniform":
        ax.set_xlim(*param.bounds)  # also when no trial finished: log needs limits
        ax.set_xscale("log")
    if spec.rounds > 1:
        ax.legend(fontsize="small")
    ax.set_xlabel(param.key)
    ax.set_ylabel(spec.metric)
    ax.grid(alpha=0.3)
