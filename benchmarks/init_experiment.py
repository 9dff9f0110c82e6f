"""The initialization experiment: activation statistics of a deep untrained network.

A 10-layer network (9 hidden layers of 500 units, as configs/init-deep.yaml) is
built with each initializer and fed 1,000 preprocessed Fashion-MNIST training
images; the script prints the mean and standard deviation of every hidden layer's
activations as Markdown tables, and draws them in one PNG:

    python benchmarks/init_experiment.py [--activation tanh|relu] [--png PATH]

With small weights (std 0.01) the activations shrink towards 0 layer after layer
(and so do the gradients); with xavier (var 1/fan_in) tanh activations hold their
spread; with he (var 2/fan_in) ReLU activations hold theirs. Needs matplotlib for
the PNG (pip install 'nntrain[plot]').
"""

import argparse
from pathlib import Path

import numpy as np

from nntrain.config import load_config
from nntrain.nn.model import build_model
from nntrain.prepare import prepare_data

INITS = ("small", "xavier", "he")


def layer_statistics(model, X) -> list[tuple[float, float]]:
    """(mean, std) of the output of every activation layer, in evaluation mode."""
    statistics = []
    out = X
    for layer in model.layers:
        out = layer.forward(out, training=False)
        if not layer.params and layer.kind not in ("dropout",):
            statistics.append((float(out.mean()), float(out.std())))
    return statistics


def run(activation: str, samples: int = 1000) -> dict:
    base = load_config("configs/init-deep.yaml", [f"model.activation={activation}"])
    prepared = prepare_data(base, splits=("train",))
    X = prepared.splits["train"][0][:samples]
    results = {}
    for init in INITS:
        config = load_config("configs/init-deep.yaml",
                             [f"model.activation={activation}", f"model.init={init}"])
        model = build_model(config, X.shape[1], prepared.dataset.num_classes)
        results[init] = layer_statistics(model, X)
    return results


def print_table(activation: str, results: dict) -> None:
    print(f"\n{activation} activations, mean / std per hidden layer:\n")
    print("| layer | " + " | ".join(f"{init} mean | {init} std" for init in INITS)
          + " |")
    print("|---" * (1 + 2 * len(INITS)) + "|")
    for depth in range(len(results[INITS[0]])):
        cells = []
        for init in INITS:
            mean, std = results[init][depth]
            cells += [f"{mean:.2e}", f"{std:.2e}"]
        print(f"| {depth + 1} | " + " | ".join(cells) + " |")


def plot(all_results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(all_results), figsize=(6 * len(all_results), 4))
    for axis, (activation, results) in zip(np.atleast_1d(axes), all_results.items()):
        for init in INITS:
            stds = [std for _, std in results[init]]
            axis.semilogy(range(1, len(stds) + 1), stds, marker="o", label=init)
        axis.set_title(f"{activation}: std of each hidden layer's activations")
        axis.set_xlabel("hidden layer")
        axis.set_ylabel("activation std (log scale)")
        axis.legend()
        axis.grid(True, which="both", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    print(f"\nwrote {path}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--activation", nargs="*", default=["tanh", "relu"])
    parser.add_argument("--png", type=Path, default=Path("docs/init-experiment.png"))
    args = parser.parse_args()

    all_results = {}
    for activation in args.activation:
        all_results[activation] = run(activation)
        print_table(activation, all_results[activation])
    plot(all_results, args.png)


if __name__ == "__main__":
    main()
