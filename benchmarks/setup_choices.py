"""Measure the one-time setup choices on Fashion-MNIST and print a Markdown table.

Each row trains configs/activations.yaml (784-512-256-10, Adam 1e-3, 10 epochs,
batch 128, seed 0) with one change, keeps the best epoch by validation accuracy, and
evaluates that checkpoint on the test split:

    python benchmarks/setup_choices.py [--epochs N] [--only NAME ...] [--out DIR]

Needs Fashion-MNIST (apt-get install dataset-fashion-mnist, or nntrain data
download fashion-mnist). About 30 s per row on 2 cores.
"""

import argparse
import time
from pathlib import Path

from nntrain.config import load_config
from nntrain.pipeline import fit
from nntrain.restore import evaluate_checkpoint

ROWS = {
    "relu": ["model.activation=relu", "model.init=he"],
    "leaky_relu": ["model.activation=leaky_relu", "model.init=he"],
    "elu": ["model.activation=elu", "model.init=he"],
    "maxout (2 pieces)": ["model.activation=maxout", "model.init=he"],
    "tanh": ["model.activation=tanh", "model.init=xavier"],
    "sigmoid": ["model.activation=sigmoid", "model.init=xavier"],
    "relu + batch norm": ["model.batchnorm=true"],
    "relu + layer norm": ["model.layernorm=true"],
    "relu + dropout 0.2 (no L2)": ["model.drop_probability=0.2", "model.l2=0.0"],
    "relu + dropout 0.5 (no L2)": ["model.drop_probability=0.5", "model.l2=0.0"],
    "relu, no L2, no dropout": ["model.l2=0.0"],
    "relu + PCA whitening (99%)": [
        "data.preprocess=[center, {whiten: {components: 0.99, epsilon: 0.01}}]"],
}


def run_row(name, overrides, epochs, out_root: Path) -> dict:
    config = load_config("configs/activations.yaml",
                         [*overrides, f"train.epochs={epochs}"])
    run_dir = out_root / name.replace(" ", "_").replace("/", "-")
    started = time.perf_counter()
    result = fit(config, run_dir, force=True, quiet=True)
    seconds = time.perf_counter() - started

    test = evaluate_checkpoint(run_dir / "checkpoints" / "best.npz")[3]
    best = max(record["val_accuracy"] for record in result.history)
    last = result.history[-1]
    return {"name": name, "best_val": best, "test": test["accuracy"],
            "final_train": last["train_accuracy"], "seconds": seconds,
            "best_epoch": result.progress.best_epoch}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--only", nargs="*", help="row names to run")
    parser.add_argument("--out", type=Path, default=Path("runs/setup-choices"))
    args = parser.parse_args()

    print("| choice | best val acc | test acc (best epoch) | train acc, last epoch |"
          " best epoch | seconds |")
    print("|---|---|---|---|---|---|")
    for name, overrides in ROWS.items():
        if args.only and name not in args.only:
            continue
        row = run_row(name, overrides, args.epochs, args.out)
        print(f"| {row['name']} | {row['best_val']:.4f} | {row['test']:.4f} |"
              f" {row['final_train']:.4f} | {row['best_epoch']} |"
              f" {row['seconds']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
