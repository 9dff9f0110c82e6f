"""Compare the update rules on Fashion-MNIST: same network, same data, 5 epochs.

Each rule trains configs/activations.yaml (784-512-256-10 ReLU, He init, L2 5e-4,
batch 128, seed 0) at a sensible default rate; L-BFGS runs full batch for
--lbfgs-iterations iterations instead. Prints a Markdown table (best and final
validation accuracy, test accuracy of the best checkpoint, seconds) and draws the
smoothed training loss of every rule against the epochs into one PNG:

    python benchmarks/compare_rules.py [--epochs 5] [--png docs/update-rules.png]

Needs Fashion-MNIST and matplotlib (pip install 'nntrain[plot,lbfgs]').
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np

from nntrain.config import load_config
from nntrain.pipeline import fit
from nntrain.restore import evaluate_checkpoint

RULES = {
    "sgd": ["optimizer.name=sgd", "optimizer.lr=0.05"],
    "momentum": ["optimizer.name=momentum", "optimizer.lr=0.01"],
    "nesterov": ["optimizer.name=nesterov", "optimizer.lr=0.01"],
    "adagrad": ["optimizer.name=adagrad", "optimizer.lr=0.01"],
    "rmsprop": ["optimizer.name=rmsprop", "optimizer.lr=1e-3"],
    "adam": ["optimizer.name=adam", "optimizer.lr=1e-3"],
    "adamw": ["optimizer.name=adamw", "optimizer.lr=1e-3",
              "optimizer.weight_decay=0.05", "model.l2=0.0"],
    "lbfgs": ["optimizer={name: lbfgs, history: 10}", "train.dtype=float64"],
}


def run_rule(name, overrides, epochs, lbfgs_iterations, out_root: Path) -> dict:
    length = ([f"train.epochs={epochs}"] if name != "lbfgs" else
              ["train.epochs=null", f"train.iterations={lbfgs_iterations}",
               "train.eval_every=5", "train.log_every=1"])
    config = load_config("configs/activations.yaml",
                         [*overrides, *length, "train.plots=false"])
    run_dir = out_root / name
    started = time.perf_counter()
    result = fit(config, run_dir, force=True, quiet=True)
    seconds = time.perf_counter() - started

    test = evaluate_checkpoint(run_dir / "checkpoints" / "best.npz")[3]
    return {"name": name, "best_val": max(r["val_accuracy"] for r in result.history),
            "final_val": result.history[-1]["val_accuracy"], "test": test["accuracy"],
            "seconds": seconds, "lr": config["optimizer"].get("lr")}


def loss_curve(run_dir: Path) -> list[tuple[float, float]]:
    """(epoch, data loss) of every 'iter' record (the data loss, since AdamW's
    decay is not in the loss); L-BFGS counts one epoch an iteration."""
    records = [json.loads(line) for line in
               (run_dir / "metrics.jsonl").read_text().splitlines()]
    iters = [r for r in records if r["kind"] == "iter"]
    epochs = [r for r in records if r["kind"] == "epoch"]
    per_epoch = epochs[0]["iteration"] / epochs[0]["epoch"]
    return [(r["iteration"] / per_epoch, r["data_loss"]) for r in iters]


def plot(out_root: Path, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (minibatch, full_batch) = plt.subplots(
        1, 2, figsize=(12, 5), gridspec_kw={"width_ratios": [2, 1]})
    for name in RULES:
        if not (out_root / name / "metrics.jsonl").exists():
            continue
        x, loss = np.array(loss_curve(out_root / name)).T
        smoothed = np.convolve(loss, np.ones(9) / 9, mode="valid") if len(loss) > 9 \
            else loss
        axis = full_batch if name == "lbfgs" else minibatch
        axis.plot(x[len(x) - len(smoothed):], smoothed, label=name)
    minibatch.set_xlabel("epoch")
    minibatch.set_title("Mini-batch rules (batch 128)")
    full_batch.set_xlabel("full-batch iteration (each one pass or more)")
    full_batch.set_title("L-BFGS")
    for axis in (minibatch, full_batch):
        axis.set_yscale("log")
        axis.set_ylabel("training data loss (moving average of 9 records)")
        axis.grid(True, which="both", alpha=0.3)
        axis.legend()
    figure.suptitle("Update rules on Fashion-MNIST, 784-512-256-10 ReLU")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    print(f"\nwrote {path}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--lbfgs-iterations", type=int, default=50)
    parser.add_argument("--only", nargs="*")
    parser.add_argument("--png", type=Path, default=Path("docs/update-rules.png"))
    parser.add_argument("--out", type=Path, default=Path("runs/compare-rules"))
    parser.add_argument("--plot-only", action="store_true",
                        help="only draw the PNG from the runs already in --out")
    args = parser.parse_args()
    if args.plot_only:
        plot(args.out, args.png)
        return

    print("| rule | lr | best val acc | final val acc | test acc (best) | seconds |")
    print("|---|---|---|---|---|---|")
    for name, overrides in RULES.items():
        if args.only and name not in args.only:
            continue
        row = run_rule(name, overrides, args.epochs, args.lbfgs_iterations, args.out)
        print(f"| {name} | {row['lr'] if row['lr'] else 'line search'} |"
              f" {row['best_val']:.4f} | {row['final_val']:.4f} | {row['test']:.4f} |"
              f" {row['seconds']:.0f} |", flush=True)
    plot(args.out, args.png)


if __name__ == "__main__":
    main()
