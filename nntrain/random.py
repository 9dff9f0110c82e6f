"""One seed, separate random streams: changing how one part draws numbers never moves
another. Each stream is a NumPy Generator seeded with (seed, stream id)."""

import numpy as np

INIT_STREAM = 0  # weight initialization
SPLIT_STREAM = 1  # the validation split
SHUFFLE_STREAM = 2  # the order of samples in each epoch
DROPOUT_STREAM = 3  # dropout masks
SEARCH_STREAM = 4  # hyperparameter search


def generator(seed: int, stream: int) -> np.random.Generator:
    """The generator of ``stream`` for the run seeded with ``seed``."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, stream])))
