"""nntrain: train neural networks written in pure NumPy from a YAML config.

The Python API behind the command line::

    cfg = nntrain.load_config("configs/digits.yaml")
    model = nntrain.build_model(cfg, input_shape, num_classes)
    loss, grads = model.loss(X, y)   # training mode
    scores = model.loss(X)           # evaluation mode
"""

__version__ = "0.1.0"

__all__ = ["__version__", "build_model", "load_config"]


def __getattr__(name: str):
    # The two functions are imported on first use, so that importing the package
    # itself is instant: the command line (__main__.py) can then catch a Ctrl-C
    # that lands while it imports NumPy and click.
    if name == "load_config":
        from nntrain.config import load_config
        return load_config
    if name == "build_model":
        from nntrain.nn.model import build_model
        return build_model
    raise AttributeError(f"module 'nntrain' has no attribute {name!r}")


def __dir__() -> list[str]:
    # The lazy functions too, so that tab completion offers them.
    return sorted({*globals(), *__all__})
