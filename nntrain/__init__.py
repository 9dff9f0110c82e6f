"""nntrain: train neural networks written in pure NumPy from a YAML config.

The Python API behind the command line::

    cfg = nntrain.load_config("configs/digits.yaml")
    model = nntrain.build_model(cfg, input_shape, num_classes)
    loss, grads = model.loss(X, y)   # training mode
    scores = model.loss(X)           # evaluation mode
"""

__version__ = "0.1.0"

from nntrain.config import load_config
from nntrain.nn.model import build_model

__all__ = ["__version__", "build_model", "load_config"]
