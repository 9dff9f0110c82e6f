"""Measuring a model on a split: loss, accuracy, per-class accuracy, confusion matrix.

Predictions are the argmax of the scores; ``np.argmax`` returns the first maximum, so
ties go to the lowest class index, everywhere in nntrain.
"""

import json
import math

import numpy as np

from nntrain.nn.model import LOSSES


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int):
    """(C, C) counts: row = true class, column = predicted class."""
    flat = y_true * num_classes + y_pred
    return np.bincount(flat, minlength=num_classes**2).reshape(num_classes, num_classes)


def measure(scores: np.ndarray, y: np.ndarray, loss_name: str = "softmax") -> dict:
    """Metrics of scores (N, C) against labels y (N,): the data loss (no weight
    decay), accuracy, per-class accuracy (None for a class with no samples) and the
    confusion matrix as nested lists."""
    num_classes = scores.shape[1]
    predictions = scores.argmax(axis=1)
    confusion = confusion_matrix(y, predictions, num_classes)
    per_class_total = confusion.sum(axis=1)
    per_class = [
        float(confusion[c, c] / per_class_total[c]) if per_class_total[c] else None
        for c in range(num_classes)
    ]
    loss, _ = LOSSES[loss_name](scores, y) if len(y) else (float("nan"), None)
    return {
        "loss": float(loss),
        "accuracy": float((predictions == y).mean()) if len(y) else float("nan"),
        "samples": int(len(y)),
        "per_class_accuracy": per_class,
        "confusion_matrix": confusion.tolist(),
    }


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
