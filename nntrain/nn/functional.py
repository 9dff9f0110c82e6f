"""The maths of each layer and loss as pure functions, forward and backward.

Shape letters: N samples in the batch, D input width, H output width, C classes.
``dout`` is always the gradient of the loss with respect to a function's output.
These functions have no state and no side effects on their inputs unless a name says
``_inplace``; the layer objects in ``layers.py`` call them, and so does the gradient
checker.
"""

import numpy as np


def affine_forward(x: np.ndarray, W: np.ndarray, b: np.ndarray) -> np.ndarray:
    """out = x W + b.  x: (N, D), W: (D, H), b: (H,) -> out: (N, H)."""
    out = x @ W
    out += b
    return out


def affine_backward(dout, x, W, need_dx=True):
    """Gradients (dx, dW, db) of out = x W + b.  dout: (N, H), x: (N, D), W: (D, H).

    With ``need_dx=False`` dx is None: a network's first layer never uses its input
    gradient, and skipping it saves a matrix product as large as the forward one.
    """
    dW = x.T @ dout
    db = dout.sum(axis=0)
    dx = dout @ W.T if need_dx else None
    return dx, dW, db


def relu_forward(x: np.ndarray) -> np.ndarray:
    """max(x, 0), elementwise.  x: (N, H) -> (N, H)."""
    return np.maximum(x, 0)


def relu_backward(dout: np.ndarray, out: np.ndarray) -> np.ndarray:
    """The gradient passes where the output was positive (the subgradient 0 at 0)."""
    return dout * (out > 0)


def log_softmax(scores: np.ndarray) -> np.ndarray:
    """log p(class) per row, via log-sum-exp.  scores: (N, C) -> (N, C).

    Subtracting each row's maximum first keeps every exponent <= 0, so exp never
    overflows, and log never sees 0: for scores [800, 0] this gives [0, -800].
    """
    shifted = scores - scores.max(axis=1, keepdims=True)
    shifted -= np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return shifted


def softmax(scores: np.ndarray) -> np.ndarray:
    """Class probabilities per row.  scores: (N, C) -> (N, C), rows sum to 1."""
    return np.exp(log_softmax(scores))


def softmax_cross_entropy(scores: np.ndarray, y: np.ndarray):
    """Mean cross-entropy of softmax(scores) against labels, and its gradient.

    scores: (N, C) class scores; y: (N,) integer labels in [0, C).
    Returns (loss, dscores): loss = -mean(log p[n, y[n]]); dscores: (N, C) equals
    (p - onehot(y)) / N, the known closed form of this composite's gradient, computed
    from the stable log-probabilities so it is finite for any finite scores.
    """
    N = scores.shape[0]
    log_probs = log_softmax(scores)
    rows = np.arange(N)
    loss = -log_probs[rows, y].mean()

    dscores = np.exp(log_probs, out=log_probs)
    dscores[rows, y] -= 1
    dscores /= N
    return float(loss), dscores


def l2_penalty(weights: list[np.ndarray], strength: float) -> float:
    """0.5 * strength * sum of squared weights; its gradient is strength * W."""
    return 0.5 * strength * float(sum(np.vdot(W, W) for W in weights))
