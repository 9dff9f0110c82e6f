"""The maths of each layer and loss as pure functions, forward and backward.

Shape letters: N samples in the batch, D input width, H output width, C classes,
k pieces of a maxout unit. ``dout`` is always the gradient of the loss with respect
to a function's output. These functions never change their inputs; the layer objects
in ``layers.py`` call them, and so does the gradient checker.

Every function is finite for finite inputs of any size: sigmoid and ELU never
exponentiate a positive number, and the softmax subtracts the row maximum first.
"""

import numpy as np


def affine_forward(x: np.ndarray, W: np.ndarray, b: np.ndarray) -> np.ndarray:
    """out = x W + b.  x: (N, D), W: (D, H), b: (H,) -> out: (N, H)."""
    out = x @ W
    out += b
    return out


def affine_backward(dout, x, W, need_dx=True, dW=None, db=None):
    """Gradients (dx, dW, db) of out = x W + b.  dout: (N, H), x: (N, D), W: (D, H).

    With ``need_dx=False`` dx is None: a network's first layer never uses its input
    gradient, and skipping it saves a matrix product as large as the forward one.
    ``dW``: (D, H) and ``db``: (H,), when given, receive the results (like NumPy's
    ``out=``), which saves allocating them at every step.
    """
    dW = np.matmul(x.T, dout, out=dW)
    # db sums dout over the batch; as a product with a vector of ones it runs in
    # BLAS, about twice as fast as dout.sum(axis=0) for a batch of 128.
    db = np.matmul(np.ones(len(dout), dtype=dout.dtype), dout, out=db)
    dx = dout @ W.T if need_dx else None
    return dx, dW, db


# Activations work elementwise; x, out and dout are (N, H).


def relu_forward(x: np.ndarray) -> np.ndarray:
    """max(x, 0)."""
    return np.maximum(x, 0)


def relu_backward(dout: np.ndarray, out: np.ndarray) -> np.ndarray:
    """The gradient passes where the output was positive (the subgradient 0 at 0)."""
    return dout * (out > 0)


def select(condition: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """np.where(condition, a, b), bit for bit, for arrays a and b of one dtype and
    the condition's shape (floats with their NaNs and signed zeros, or integers
    such as maxout's winners), without a branch per element.

    np.where branches on each element, and the signs of a layer's inputs are close
    to random, so the processor mispredicts about half of those branches: 0.23 ms
    for a (128, 512) float32 batch on an Intel Xeon, against 0.03 ms for these
    integer passes over the arrays' bits: out = b ^ ((a ^ b) & mask), with mask
    all ones where the condition holds and 0 elsewhere.
    """
    if a.dtype != b.dtype or a.shape != b.shape or condition.shape != a.shape:
        # Viewed as integers of different widths or broadcast, the bits would mix
        # into garbage, with no error from NumPy.
        raise ValueError(f"select needs a and b of one dtype and shape, and the"
                         f" condition of that shape; got {a.dtype} {a.shape},"
                         f" {b.dtype} {b.shape}, condition {condition.shape}")
    bits = np.dtype(f"i{a.dtype.itemsize}")
    mask = condition.astype(bits)
    np.negative(mask, out=mask)  # 1 -> -1, whose bits are all ones
    a_bits, b_bits = a.view(bits), b.view(bits)
    out = np.bitwise_xor(a_bits, b_bits)
    out &= mask
    out ^= b_bits
    return out.view(a.dtype)


def _floating(x) -> np.ndarray:
    """``x`` as a float array: integers become float64, the type np.where gave
    them with a float slope. The layers pass train.dtype arrays; this is for
    callers of these functions, on whatever they hold."""
    x = np.asarray(x)
    return x if x.dtype.kind == "f" else x.astype(np.float64)


# The slopes and alphas below are cast to x's type before they multiply it, as
# a Python float is: a NumPy float64 one would otherwise make the product
# float64 beside a float32 x (and select refuse the pair).


def leaky_relu_forward(x: np.ndarray, slope: float) -> np.ndarray:
    """x where x > 0, slope * x elsewhere."""
    x = _floating(x)
    return select(x > 0, x, x * x.dtype.type(slope))


def leaky_relu_backward(dout, x, slope: float) -> np.ndarray:
    dout = _floating(dout)
    return select(np.asarray(x) > 0, dout, dout * dout.dtype.type(slope))


def sigmoid_forward(x: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-x)), computed from exp(-|x|) <= 1 so nothing overflows:
    for x >= 0 it is 1 / (1 + e), for x < 0 it is e / (1 + e), with e = exp(-|x|)."""
    e = np.exp(-np.abs(x))
    numerator = select(x >= 0, np.ones_like(e), e)
    numerator /= 1 + e
    return numerator


def sigmoid_backward(dout, out) -> np.ndarray:
    """d sigmoid / dx = s (1 - s), from the output s."""
    return dout * out * (1 - out)


def tanh_forward(x: np.ndarray) -> np.ndarray:
    return np.tanh(x)


def tanh_backward(dout, out) -> np.ndarray:
    """d tanh / dx = 1 - tanh^2, from the output."""
    return dout * (1 - out * out)


def elu_forward(x: np.ndarray, alpha: float) -> np.ndarray:
    """x where x > 0, alpha (exp(x) - 1) elsewhere. expm1 only ever sees min(x, 0),
    so large positive inputs cannot overflow, and it is exact near 0."""
    x = _floating(x)
    return select(x > 0, x, x.dtype.type(alpha) * np.expm1(np.minimum(x, 0)))


def elu_backward(dout, x, out, alpha: float) -> np.ndarray:
    """1 where x > 0; alpha exp(x) = out + alpha elsewhere."""
    dout = _floating(dout)
    slope = np.asarray(out, dout.dtype) + dout.dtype.type(alpha)
    return select(np.asarray(x) > 0, dout, dout * slope)


def maxout_forward(x, W, b, pieces: int):
    """Maxout units (Goodfellow et al., 2013, https://arxiv.org/abs/1302.4389).

    x: (N, D), W: (D, H * k), b: (H * k,), k = ``pieces``; unit h takes the maximum
    of the k affine pieces in columns h*k .. h*k + k - 1.
    Returns (out: (N, H), winner: (N, H) index in 0..k-1 of the piece that won; ties
    go to the lowest index, and a NaN piece wins, the first one, as in argmax).
    """
    z = affine_forward(x, W, b)
    z = z.reshape(len(x), -1, pieces)
    # A few passes per piece, on a contiguous copy of it, instead of argmax and
    # take_along_axis over the last axis: their loops of k steps per unit took
    # 0.8 ms on a (128, 512, 2) batch, against 0.15 ms here (Intel Xeon, one
    # thread); passes over the strided piece itself would take twice as long.
    out = z[..., 0].copy()
    winner = np.zeros(out.shape, np.intp)
    for piece in range(1, pieces):
        candidate = z[..., piece].copy()
        # Strictly larger wins (ties keep the lower index); "not <=" is also true
        # for a NaN candidate, which wins unless the best is NaN already. The NaN
        # test is out == out, false only at a NaN (one pass, where ~isnan takes two).
        wins = ~(candidate <= out)
        wins &= out == out
        out = select(wins, candidate, out)
        winner = select(wins, np.full_like(winner, piece), winner)
    return out, winner


def maxout_backward(dout, x, W, winner, pieces: int, need_dx=True, dW=None,
                    db=None):
    """Gradients (dx, dW, db): each unit's gradient flows to its winning piece.
    ``dW`` and ``db``, when given, receive the results, as in affine_backward."""
    N, H = dout.shape
    dz = np.empty((N, H, pieces), dtype=dout.dtype)
    zeros = np.zeros_like(dout)
    # Per piece, as in maxout_forward: faster than put_along_axis (0.2 ms).
    for piece in range(pieces):
        dz[..., piece] = select(winner == piece, dout, zeros)
    return affine_backward(dz.reshape(N, H * pieces), x, W, need_dx, dW, db)


def batchnorm_forward_train(x, gamma, beta, epsilon: float):
    """Batch normalization with the batch's own statistics (Ioffe and Szegedy, 2015,
    https://arxiv.org/abs/1502.03167).  x: (N, H); gamma, beta: (H,).

    Uses the biased variance, mean((x - mean)^2), the one the normalization itself
    needs. Returns (out: (N, H), x_hat: (N, H), inv_std: (H,), mean: (H,), var: (H,)).
    """
    mean = x.mean(axis=0)
    x_hat = x - mean
    var, inv_std = _centered_statistics(x_hat, axis=0, epsilon=epsilon)
    x_hat *= inv_std
    return _scale_shift(x_hat, gamma, beta), x_hat, inv_std, mean, var


def _centered_statistics(centered, axis: int, epsilon: float):
    """(var, 1 / sqrt(var + epsilon)) of centered values along ``axis``, keeping
    the reduced axis (layer norm's (N, 1)) only when ``axis`` is 1."""
    var = np.square(centered).mean(axis=axis, keepdims=axis == 1)
    return var, 1 / np.sqrt(var + epsilon)


def _scale_shift(x_hat, gamma, beta):
    """x_hat * gamma + beta, in one new array rather than two."""
    out = np.multiply(x_hat, gamma)
    out += beta
    return out


def batchnorm_forward_eval(x, gamma, beta, running_mean, running_var, epsilon):
    """Batch normalization with fixed statistics: an affine map per feature."""
    scale = gamma / np.sqrt(running_var + epsilon)
    out = np.subtract(x, running_mean)
    out *= scale
    out += beta
    return out


def batchnorm_backward(dout, x_hat, inv_std, gamma):
    """Gradients (dx, dgamma, dbeta) of training-mode batch norm.

    With x_hat = (x - mean) * inv_std over a batch of N, the chain rule through the
    mean and the variance collapses to
        dx = inv_std / N * (N * dx_hat - sum(dx_hat) - x_hat * sum(dx_hat * x_hat)),
    with dx_hat = dout * gamma and sums over the batch axis.
    """
    return _normalization_backward(dout, x_hat, inv_std, gamma, axis=0)


def _normalization_backward(dout, x_hat, inv_std, gamma, axis: int):
    """batchnorm_backward's formula with the statistics along ``axis`` (layer
    norm's: 1), computed in two arrays of x_hat's size where the plain expression
    makes seven: each is a pass out to memory and back. Every operation is the
    one the formula names, in its order, so the result is the same to the bit."""
    count = dout.shape[axis]
    keep = axis == 1
    scratch = np.multiply(dout, x_hat)
    dgamma = scratch.sum(axis=0)
    dbeta = dout.sum(axis=0)

    dx = np.multiply(dout, gamma)  # dx_hat until its two sums are taken
    projection = np.multiply(dx, x_hat, out=scratch).sum(axis=axis, keepdims=keep)
    dx_hat_sum = dx.sum(axis=axis, keepdims=keep)
    dx *= count
    dx -= dx_hat_sum
    dx -= np.multiply(x_hat, projection, out=scratch)
    dx *= inv_std / count
    return dx, dgamma, dbeta


def layernorm_forward(x, gamma, beta, epsilon: float):
    """Layer normalization (Ba et al., 2016, https://arxiv.org/abs/1607.06450):
    each sample is normalized over its own H features, the same in training and
    evaluation.  x: (N, H). Returns (out, x_hat: (N, H), inv_std: (N, 1))."""
    mean = x.mean(axis=1, keepdims=True)
    x_hat = x - mean
    _, inv_std = _centered_statistics(x_hat, axis=1, epsilon=epsilon)
    x_hat *= inv_std
    return _scale_shift(x_hat, gamma, beta), x_hat, inv_std


def layernorm_backward(dout, x_hat, inv_std, gamma):
    """Gradients (dx, dgamma, dbeta): batch norm's formula with the roles of the
    axes swapped (statistics over the H features of each sample)."""
    return _normalization_backward(dout, x_hat, inv_std, gamma, axis=1)


def dropout_mask(shape, drop_probability: float, rng, dtype) -> np.ndarray:
    """Inverted dropout's mask: 0 with probability p, 1 / (1 - p) otherwise, so the
    expected value of x * mask is x and evaluation needs no rescaling."""
    keep = rng.random(shape, dtype=np.float64) >= drop_probability
    return keep.astype(dtype) / dtype.type(1 - drop_probability)


# Losses take scores (N, C) and labels y (N,) and return (loss, dscores).


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

    loss = -mean(log p[n, y[n]]); dscores = (p - onehot(y)) / N, the known closed
    form of this composite's gradient, computed from the stable log-probabilities so
    it is finite for any finite scores.
    """
    N = scores.shape[0]
    log_probs = log_softmax(scores)
    rows = np.arange(N)
    loss = -log_probs[rows, y].mean()

    dscores = np.exp(log_probs, out=log_probs)
    dscores[rows, y] -= 1
    dscores /= N
    # Every log p = 0 (a perfect fit) gives -0.0: adding 0.0 makes it 0.0.
    return float(loss) + 0.0, dscores


def svm_margins(scores: np.ndarray, y: np.ndarray) -> np.ndarray:
    """s_j - s_y + 1 for every class j, with 0 at j = y.  (N, C)."""
    rows = np.arange(len(y))
    margins = scores - scores[rows, y][:, None] + 1
    margins[rows, y] = 0
    return margins


def multiclass_hinge(scores: np.ndarray, y: np.ndarray):
    """Multiclass SVM loss (Weston and Watkins, 1999), margin 1:

        loss = mean over n of sum over j != y[n] of max(0, s_j - s_y + 1).

    dscores: 1/N on every class with a positive margin, and minus their count / N on
    the true class. At a margin of exactly 0 the subgradient 0 is used.
    """
    N = scores.shape[0]
    margins = svm_margins(scores, y)
    positive = margins > 0
    loss = np.sum(margins * positive) / N

    dscores = positive.astype(scores.dtype)
    dscores[np.arange(N), y] = -positive.sum(axis=1)
    dscores /= N
    return float(loss), dscores


def l2_penalty(W: np.ndarray, strength: float) -> float:
    """0.5 * strength * sum(W^2); its gradient is strength * W."""
    return 0.5 * strength * float(np.vdot(W, W))


# add_l2_gradient's block: with its scratch of the same size (64 KiB in float32),
# the block's three arrays stay in the L1 and L2 caches between the two passes.
L2_BLOCK = 16384


def add_l2_gradient(grad: np.ndarray, W: np.ndarray, strength: float) -> None:
    """grad += strength * W, in place; grad and W of one shape.

    Block by block: the plain expression streams a temporary the size of W (1.6 MB
    for a 784 x 512 layer) out to the L3 cache and back, which took 0.21 ms a step
    on Fashion-MNIST's first layer against 0.12 ms in blocks (Intel Xeon, one
    thread): 2% to 3% of a step of configs/fashion-mnist.yaml. The arithmetic, and
    so every bit of the result, is the same."""
    _add_scaled_in_blocks(grad, W, strength)


def l1_penalty(W: np.ndarray, strength: float) -> float:
    """strength * sum(|W|); its gradient is strength * sign(W) (0 at 0)."""
    return strength * float(np.abs(W).sum())


def add_l1_gradient(grad: np.ndarray, W: np.ndarray, strength: float) -> None:
    """grad += strength * sign(W), in place, in blocks as add_l2_gradient: the plain
    expression makes two temporaries the size of W (0.52 ms a step for the
    784-512-256-10 network, against 0.2 ms in blocks)."""
    _add_scaled_in_blocks(grad, W, strength, np.sign)


def _add_scaled_in_blocks(grad, W, strength: float, transform=None) -> None:
    """grad += strength * transform(W) (transform: an elementwise ufunc, or None
    for W itself), block by block through one scratch block."""
    if not (grad.flags.c_contiguous and W.flags.c_contiguous):
        # reshape(-1) would copy: blocks of a copy are lost
        grad += strength * (W if transform is None else transform(W))
        return
    grad_flat, W_flat = grad.reshape(-1), W.reshape(-1)
    scratch = np.empty(min(L2_BLOCK, W_flat.size), W.dtype)
    for start in range(0, W_flat.size, L2_BLOCK):
        block = slice(start, start + L2_BLOCK)
        room = scratch[:len(W_flat[block])]
        if transform is None:
            np.multiply(W_flat[block], strength, out=room)
        else:
            transform(W_flat[block], out=room)
            room *= strength
        grad_flat[block] += room


def max_norm_inplace(W: np.ndarray, max_norm: float) -> None:
    """Rescale each column of W: (D, H) (one unit's incoming weights) whose L2 norm
    exceeds ``max_norm`` back onto the ball of that radius."""
    norms = _column_norms(W)
    too_long = norms > max_norm
    if too_long.any():
        W[:, too_long] *= (max_norm / norms[too_long]).astype(W.dtype)


def _column_norms(W: np.ndarray) -> np.ndarray:
    """The L2 norm of each column of W: (D, H), as (H,) float64.

    The squares are summed in W's dtype, which is fast; a column whose squares
    overflow it (entries past 1.8e19 in float32) is measured again in float64,
    divided by its largest entry, as its norm taken as inf would scale the whole
    column to 0. A column holding inf or NaN gets NaN, and is left as it is.
    """
    with np.errstate(over="ignore"):
        norms = np.sqrt(np.sum(W * W, axis=0)).astype(np.float64)
    overflowed = np.flatnonzero(np.isinf(norms))
    if overflowed.size:
        norms[overflowed] = rescaled_norm(W[:, overflowed], axis=0)
    return norms


def rescaled_norm(array: np.ndarray, axis=None):
    """The L2 norm of ``array`` (along ``axis``), in float64, each slice divided
    by its largest entry before squaring: squares past the dtype's range (entries
    beyond 1.8e19 in float32) still add up. A slice holding inf or NaN gives NaN.
    For the rare array whose fast norm overflowed (max-norm, clipping)."""
    values = array.astype(np.float64)
    largest = np.abs(values).max(axis=axis, keepdims=True)
    with np.errstate(invalid="ignore"):  # inf / inf: a non-finite slice
        values /= largest
    squares = np.sum(values * values, axis=axis, keepdims=True)
    norm = largest * np.sqrt(squares)
    return norm.item() if axis is None else norm.squeeze(axis)
