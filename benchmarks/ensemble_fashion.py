"""An ensemble of independently seeded Fashion-MNIST networks, and weight averaging.

Trains configs/fashion-mnist.yaml (784-512-256-10, Adam, L2 5e-4) with seeds 0..K-1
for --epochs epochs, each keeping an exponential average of its weights (decay
0.999); prints every member's test accuracy with its raw and its averaged weights,
then the ensemble's (the mean of the members' softmax probabilities):

    python benchmarks/ensemble_fashion.py [--members 5] [--epochs 10]
"""

import argparse
from pathlib import Path

from nntrain.config import load_config
from nntrain.ensemble import ensemble
from nntrain.pipeline import fit
from nntrain.restore import evaluate_checkpoint


def test_accuracy(checkpoint: Path, average: bool) -> float:
    return evaluate_checkpoint(checkpoint, average=average)[3]["accuracy"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path("runs/ensemble-fashion"))
    args = parser.parse_args()

    print("| member (seed) | test acc, raw weights | test acc, averaged weights |")
    print("|---|---|---|")
    checkpoints = []
    for seed in range(args.members):
        config = load_config("configs/fashion-mnist.yaml", [
            f"seed={seed}", f"train.epochs={args.epochs}", "train.plots=false",
            "train.average={kind: exponential, decay: 0.999}",
        ])
        run_dir = args.out / f"seed-{seed}"
        fit(config, run_dir, force=True, quiet=True)
        last = run_dir / "checkpoints" / "last.npz"
        checkpoints.append(last)
        print(f"| {seed} | {test_accuracy(last, False):.4f} |"
              f" {test_accuracy(last, True):.4f} |", flush=True)
    result = ensemble(checkpoints, split="test")
    print(f"| ensemble of {args.members} (raw weights, last epoch) |"
          f" {result.accuracy:.4f} | |")


if __name__ == "__main__":
    main()
