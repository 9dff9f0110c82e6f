"""Ensembles: average the class probabilities of several checkpoints on one split.

Each member is rebuilt from its checkpoint alone and applies its own saved
preprocessing to the raw split, so members may differ in architecture, preprocessing,
update rule or seed. They must have been trained on the same data: the same dataset,
class names and number of features, and the split measured must hold the same
samples for every member (the test split does when the data is the same; the
validation split is drawn with each member's seed and data.validation). Where the
data was found is not compared: one copy reached through data.path, another through
NNTRAIN_DATA, or byte-identical copies, are the same data, which the comparison of
the samples proves. A mismatch is refused, naming the two members, before anything
is averaged.

Shapes: M members, N samples, C classes.
"""

import math
import os
import warnings
from dataclasses import dataclass

import numpy as np

from nntrain.arguments import path_argument
from nntrain.errors import BadInputError, DataError, NNTrainWarning, one_line
from nntrain.nn.functional import log_softmax
from nntrain.train.report import counted, short_number

SPEC_FIELDS = ("name", "class_names", "num_features")


@dataclass
class MemberResult:
    checkpoint: str
    accuracy: float
    loss: float  # mean -log p(true class) of the member's softmax probabilities


@dataclass
class EnsembleResult:
    split: str
    samples: int
    members: list  # MemberResult, in the order given
    accuracy: float
    loss: float  # mean -log of the averaged probability of the true class
    probabilities: np.ndarray  # (N, C) the members' mean softmax probabilities
    predictions: np.ndarray  # (N,) argmax of probabilities (ties: the lower class)

    def to_json(self) -> dict:
        return {
            "split": self.split,
            "samples": self.samples,
            "members": [{"checkpoint": m.checkpoint, "accuracy": m.accuracy,
                         "loss": m.loss} for m in self.members],
            "ensemble": {"accuracy": self.accuracy, "loss": self.loss},
        }


@dataclass
class _Member:
    path: str
    spec: dict  # the checkpoint's data spec
    X: np.ndarray  # (N, D) the raw split, before preprocessing
    y: np.ndarray  # (N,)
    log_probabilities: np.ndarray  # (N, C) float64


def _load_member(path, split: str, data_path=None) -> _Member:
    from nntrain.restore import evaluate_checkpoint

    restored, prepared, scores, _ = evaluate_checkpoint(path, split, data_path)
    y = prepared.splits[split][1]
    scores = scores.astype(np.float64)
    raw_X = prepared.dataset.split(split)[0]
    return _Member(str(path), restored.data, raw_X, y, log_softmax(scores))


def _difference(field: str, mine, theirs) -> str:
    """How two values of the data spec's ``field`` differ, short enough for one
    line: a long list of class names is reduced to its first difference, worded
    as eval and resume word data with other class names."""
    from nntrain.prepare import class_names_difference

    if field != "class_names" or not (isinstance(mine, list)
                                      and isinstance(theirs, list)):
        return f"data {field}: {mine!r} and {theirs!r}"
    return class_names_difference(mine, theirs, ("in the first", "in the second"))


def _check_same_data(first: _Member, other: _Member, split: str) -> None:
    """Refuse ``other`` unless it was trained on ``first``'s data and its ``split``
    holds the same samples."""
    pair = f"{first.path} and {other.path}"
    different = f"{pair} were trained on different data"
    for field in SPEC_FIELDS:
        mine, theirs = first.spec.get(field), other.spec.get(field)
        if mine != theirs:
            raise DataError(f"{different} ({_difference(field, mine, theirs)}); an"
                            " ensemble needs members of the same dataset")
    if len(first.y) != len(other.y):
        raise DataError(f"{pair} have {split} splits of {len(first.y)} and"
                        f" {len(other.y)} samples; an ensemble needs the same samples")
    if np.array_equal(first.y, other.y) and np.array_equal(first.X, other.X):
        return
    if split == "test":  # no seed or setting draws it: the data itself differs
        raise DataError(f"{different} (their test splits hold other samples); an"
                        " ensemble needs members of the same dataset")
    raise DataError(f"{pair} hold different {split} splits (another seed,"
                    " data.validation or other data); ensemble them on --split test")


def _log_mean_exp(stacked: np.ndarray) -> np.ndarray:
    """log(mean(exp(stacked), axis=0)) without underflow: (M, ...) -> (...)."""
    top = stacked.max(axis=0)
    return top + np.log(np.exp(stacked - top).mean(axis=0))


def ensemble(paths, split: str = "test", data_path=None) -> EnsembleResult:
    """Average the softmax probabilities of the checkpoints ``paths`` on ``split``.

    Each member's probabilities are the softmax of its class scores. For a member
    trained with the SVM loss the scores are margins, not log-probabilities; their
    softmax is used all the same, so that every member contributes a distribution
    that sums to 1, but its confidence is not calibrated (its scale is arbitrary).
    ``data_path``: where the data lies now, if not where the members found it.
    """
    if isinstance(paths, (str, bytes, os.PathLike)) or not hasattr(paths, "__iter__"):
        raise TypeError(f"paths is {type(paths).__name__}; give a list of checkpoint"
                        " paths")
    # A generator or dict keys too, read once; each ~ expanded before the paths
    # are compared, so that ~/a.npz and its full path are one file.
    paths = [path_argument(f"paths[{index}]", path, "a checkpoint's path, a str or"
                           " pathlib.Path") for index, path in enumerate(paths)]
    if not paths:
        raise ValueError("an ensemble needs at least one checkpoint")
    _check_distinct(paths)
    members = []
    for path in paths:
        member = _load_member(path, split, data_path)
        if members:
            _check_same_data(members[0], member, split)
            member.X = None  # only the first member's raw split is kept to compare
        members.append(member)
    _warn_identical(members)

    y = members[0].y
    rows = np.arange(len(y))
    results = [MemberResult(m.path, _accuracy(m.log_probabilities, y),
                            float(-m.log_probabilities[rows, y].mean()))
               for m in members]
    stacked = np.stack([m.log_probabilities for m in members])
    probabilities = np.exp(stacked).mean(axis=0)
    predictions = probabilities.argmax(axis=1)
    # The averaged log-probability of the true class, taken in log space so that a
    # class every member finds unlikely gives a large finite loss, not log(0).
    log_mean = _log_mean_exp(stacked[:, rows, y])  # (N,)
    return EnsembleResult(split, len(y), results,
                          float((predictions == y).mean()) if len(y) else math.nan,
                          float(-log_mean.mean()), probabilities, predictions)


def _check_distinct(paths) -> None:
    """Refuse a file given twice, by the same path or another (``./a.npz``, a
    link): it would count twice in the average, a weighting nobody asks for by
    repeating a name. Copies at other paths are other files, and pass: trials of
    a search may save identical checkpoints."""
    for index, path in enumerate(paths):
        for earlier in paths[:index]:
            if str(earlier) == str(path):
                problem = f"{path} is given twice"
            elif _same_file(earlier, path):
                problem = f"{earlier} and {path} are the same file"
            else:
                continue
            raise BadInputError(f"{problem}; give each checkpoint once (a repeated"
                                " one would count twice in the average)")


def _warn_identical(members: list) -> None:
    """Warn of members whose probabilities are the same on every sample: most
    likely copies of one checkpoint (or best.npz and last.npz of a run whose best
    was its last), which the average counts twice, as _check_distinct refuses for
    a file given twice. A warning only: trials of a search may end alike."""
    for index, member in enumerate(members):
        for earlier in members[:index]:
            if np.array_equal(earlier.log_probabilities, member.log_probabilities):
                warnings.warn(NNTrainWarning(
                    f"{earlier.path} and {member.path} give the same probabilities"
                    " on every sample (the same weights?), so the average counts"
                    " them twice"), stacklevel=3)
                break


def _same_file(first, second) -> bool:
    try:
        return os.path.samefile(first, second)
    except OSError:  # one is missing: loading it says so
        return False


def _accuracy(log_probabilities: np.ndarray, y: np.ndarray) -> float:
    if not len(y):
        return math.nan
    return float((log_probabilities.argmax(axis=1) == y).mean())


# The loss column's width: short_number's widest, a loss just below
# SCIENTIFIC_FROM ("999999.9999"); from there on it is at most "1.235e+300".
LOSS_WIDTH = 11


def format_report(result: EnsembleResult) -> list[str]:
    """Each member's accuracy and loss, then the ensemble's, as text lines."""
    count = len(result.members)
    title = (f"ensemble of {count} checkpoint{'s' if count > 1 else ''} on the"
             f" {result.split} split ({counted(result.samples, 'sample')}); loss:"
             " mean -log"
             " p(true class)")
    lines = [title, f"  accuracy  {'loss':<{LOSS_WIDTH}}  model"]
    for member in result.members:
        loss = short_number(member.loss)
        lines.append(f"  {member.accuracy:.4f}    {loss:<{LOSS_WIDTH}}"
                     f"  {one_line(str(member.checkpoint))}")
    loss = short_number(result.loss)
    lines.append(f"  {result.accuracy:.4f}    {loss:<{LOSS_WIDTH}}  ensemble (mean of"
                 " the members' softmax probabilities)")
    return lines
