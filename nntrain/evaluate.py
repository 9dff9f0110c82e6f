"""Measuring a model on a split: loss, accuracy, per-class accuracy, confusion matrix.

Predictions are the argmax of the scores; ``np.argmax`` returns the first maximum, so
ties go to the lowest class index, everywhere in nntrain.
"""

import json
import math

import numpy as np

from nntrain.data.preprocess import TransformOverflow
from nntrain.errors import (
    EDITED_CHECKPOINT_FIX,
    CheckpointError,
    NonFiniteScoresError,
)
from nntrain.nn.model import LOSSES

# How many rows with non-finite scores a message names; the rest are counted.
SHOWN_ROWS = 5


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int):
    """(C, C) counts: row = true class, column = predicted class."""
    flat = y_true * num_classes + y_pred
    return np.bincount(flat, minlength=num_classes**2).reshape(num_classes, num_classes)


def measure(scores: np.ndarray, y: np.ndarray, loss_name: str = "softmax",
            widen: bool = False) -> dict:
    """Metrics of scores (N, C) against labels y (N,): the data loss (no weight
    decay), accuracy, per-class accuracy (None for a class with no samples) and the
    confusion matrix as nested lists. ``widen``: a loss that overflows the scores'
    dtype is taken again in float64 (for eval's report; a training run's
    validation loss stays the one in its own dtype, which stops it when
    non-finite)."""
    num_classes = scores.shape[1]
    predictions = scores.argmax(axis=1)
    confusion = confusion_matrix(y, predictions, num_classes)
    per_class_total = confusion.sum(axis=1)
    per_class = [
        float(confusion[c, c] / per_class_total[c]) if per_class_total[c] else None
        for c in range(num_classes)
    ]
    # Scores too large for their dtype overflow in the loss; a caller that cares
    # checks the loss it gets, so NumPy's own warnings would only add noise.
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        loss, _ = LOSSES[loss_name](scores, y) if len(y) else (float("nan"), None)
        if widen and len(y) and not math.isfinite(loss) and np.isfinite(scores).all():
            # Finite float32 scores 3e38 apart overflow in their differences;
            # float64 holds them.
            loss, _ = LOSSES[loss_name](scores.astype(np.float64), y)
    return {
        "loss": float(loss),
        "accuracy": float((predictions == y).mean()) if len(y) else float("nan"),
        "samples": int(len(y)),
        "per_class_accuracy": per_class,
        "confusion_matrix": confusion.tolist(),
    }


def checked_scores(model, X: np.ndarray, source: str, checkpoint) -> np.ndarray:
    """``model.predict(X)``: class scores (N, C) for samples X (N, D), refused
    when a row of them is NaN or infinite: a NonFiniteScoresError when the
    samples' scale is at fault, a CheckpointError when the weights are (they
    overflow even on those samples scaled into [-1, 1]). ``source`` names the
    samples in the message ("the test split", a file's path), ``checkpoint``
    the file the model was restored from."""
    # Finite values too large for the model's dtype overflow in its products; the
    # checks below say so with the fix, so numpy's warnings would only add noise.
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        scores = model.predict(X)
        bad = ~np.isfinite(scores).all(axis=1)
        if bad.any() and _weights_overflow(model, X[bad]):
            raise CheckpointError(
                f"{checkpoint}: its weights give NaN or infinite class scores for"
                f" samples of {source} even scaled into [-1, 1];"
                f" {EDITED_CHECKPOINT_FIX}")
    check_finite_scores(scores, source)
    return scores


def _weights_overflow(model, rows: np.ndarray) -> bool:
    """Whether ``rows`` (M, D), each scaled so that its largest magnitude is at
    most 1, still give non-finite scores: then no rescaling of the samples
    helps, and the weights are what overflows."""
    reach = np.abs(rows).max(axis=1, keepdims=True)
    small = rows / np.maximum(reach, 1).astype(rows.dtype)
    return not np.isfinite(model.predict(small)).all()


def check_finite_scores(scores: np.ndarray, source: str) -> None:
    """Raise NonFiniteScoresError naming how many rows of scores (N, C), and which
    (the first SHOWN_ROWS, 0-based), hold NaN or infinite values. Checkpoints
    never hold such weights (the Solver refuses to save them), so the samples'
    own values are what overflowed."""
    bad = np.flatnonzero(~np.isfinite(scores).all(axis=1))
    if bad.size:
        raise _samples_overflow(
            bad, len(scores), source, ("gives", "give"), "NaN or infinite class"
            f" scores: {{values}} overflow {scores.dtype} arithmetic inside the"
            " network")


def preprocessing_overflow(error: TransformOverflow,
                           source: str) -> NonFiniteScoresError:
    """The error for samples that a checkpoint's preprocessing made NaN or
    infinite (``error``, from Preprocessor.transform), worded as for samples
    that overflow inside the network: the rows at fault, and rescaling them as
    the training data was, since the fitted steps cannot change."""
    return _samples_overflow(
        error.rows, error.total, source, ("becomes", "become"), "NaN or infinite"
        f" in {error.blamed}: {{values}} overflow {error.dtype} arithmetic")


def _samples_overflow(bad: np.ndarray, total: int, source: str, verbs: tuple,
                      what: str) -> NonFiniteScoresError:
    """NonFiniteScoresError naming rows ``bad`` (0-based) of the ``total``
    samples of ``source``; ``verbs``: (singular, plural), ``what`` follows the
    verb and holds ``{values}``."""
    rows = ", ".join(str(row) for row in bad[:SHOWN_ROWS])
    rows += ", ..." if bad.size > SHOWN_ROWS else ""
    if total == 1:
        which, verb, values = f"the only sample of {source}", verbs[0], "its values"
    elif bad.size == 1:
        which = f"1 of the {total} samples of {source} (row {rows})"
        verb, values = verbs[0], "its values"
    else:
        share = "all" if bad.size == total else f"{bad.size} of the"
        which = f"{share} {total} samples of {source} (rows {rows})"
        verb, values = verbs[1], "their values"
    return NonFiniteScoresError(
        f"{which} {verb} {what.format(values=values)}; rescale the samples as the"
        " training data was scaled, or leave those out"
    )


def json_text(value) -> str:
    """``value`` as one line of JSON, with null for every NaN or infinite float:
    JSON has no such numbers, and ``json.dumps`` would write ``NaN`` that strict
    readers refuse."""
    return json.dumps(_finite_or_none(value), allow_nan=False)


def _finite_or_none(value):
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite_or_none(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_none(item) for item in value]
    return value
