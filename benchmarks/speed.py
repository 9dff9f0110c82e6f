"""Speed: nntrain against PyTorch and scikit-learn, and against the BLAS floor.

The task: Fashion-MNIST, a 784-512-256-10 ReLU MLP, He-normal weights and zero biases,
Adam (lr 1e-3, betas 0.9/0.999, eps 1e-8), batch 128, float32, no weight decay,
seed 0. Every measurement runs in its own process (several repeats; medians), at
1 and at 2 BLAS threads:

- **epoch time** counts the training iterations only (shuffling, batching, forward,
  backward, update): not data loading, not the evaluation pass; nntrain runs its
  real Solver with diagnostics off;
- **peak memory** is the process's peak resident set (ru_maxrss), data included;
- **test accuracy** after the timed epochs;
- **the floor** is one training step's matrix products (forward, weight gradients,
  and input gradients of every layer but the first), each timed at its best
  measured speed for its shape and dtype, times the iterations in an epoch: no
  implementation of this network can beat it with this BLAS (NumPy's). With
  torch installed, the same products through torch's BLAS (MKL on x86) are timed
  too, as "torch's matmuls": where that BLAS is faster, so is torch's floor;
- **GFLOP/s** = the floor's floating-point operations per epoch / epoch time;
- **steady s / epoch** (nntrain and torch) = the median training step's time times
  the steps of an epoch. On a shared machine a few steps are slowed by other work,
  which moves the total; the floor, a best-of-many time, is barely moved. This
  column compares like with like; the main column is what the run took.

    python benchmarks/speed.py                 # 3 repeats of 2 epochs, 1 and 2 threads
    python benchmarks/speed.py --quick         # one repeat of one epoch: ~1 minute
    python benchmarks/speed.py --libraries nntrain torch

PyTorch: pip install torch==2.13.0 (CPU); its Adam runs with fused=True, its fastest
CPU Adam. scikit-learn: pip install scikit-learn (its MLPClassifier, solver adam).
"""

import argparse
import importlib.util
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time

BATCH = 128
WIDTHS = (784, 512, 256, 10)
LR, BETAS, EPS = 1e-3, (0.9, 0.999), 1e-8


def load_data():
    """Standardized float32 Fashion-MNIST, the same arrays for every library."""
    from nntrain.config import load_config
    from nntrain.prepare import prepare_data

    config = load_config("configs/fashion-mnist.yaml", ["data.validation=5000"])
    prepared = prepare_data(config, splits=("train", "test"), keep_raw=False)
    return (*prepared.splits["train"], *prepared.splits["test"])


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def blas_info() -> list:
    import numpy  # noqa: F401  (threadpoolctl only sees libraries already loaded)
    from threadpoolctl import threadpool_info

    return [{key: info.get(key) for key in
             ("internal_api", "version", "architecture", "num_threads")}
            for info in threadpool_info()]


def run_nntrain(epochs: int, threads: int) -> dict:
    from threadpoolctl import threadpool_limits

    from nntrain.config import load_config
    from nntrain.evaluate import measure
    from nntrain.nn.model import build_model
    from nntrain.optim.rules import build_rule
    from nntrain.optim.schedules import build_schedule
    from nntrain.train.solver import Solver

    config = load_config("configs/fashion-mnist.yaml", [
        f"train.epochs={epochs}", "model.l2=0.0", f"train.threads={threads}",
        "schedule={name: constant}",
        "train.diagnostics=false", "train.plots=false", "train.log_every=1000000",
    ])
    from nntrain.prepare import prepare_data

    prepared = prepare_data(config, splits=("train", "val", "test"), keep_raw=False)
    X, y = prepared.splits["train"]
    model = build_model(config, X.shape[1], 10)
    rule = build_rule(config["optimizer"])
    solver = Solver(model, rule, build_schedule(config["schedule"], rule.lr),
                    (X, y, *prepared.splits["val"]), config["train"], config["seed"])
    step_seconds = []
    take_step = solver._step

    def timed_step(rows):
        started = time.perf_counter()
        take_step(rows)
        step_seconds.append(time.perf_counter() - started)

    solver._step = timed_step
    solver.train()
    X_test, y_test = prepared.splits["test"]
    with threadpool_limits(threads):
        started = time.perf_counter()
        scores = model.predict(X_test)
        eval_seconds = time.perf_counter() - started
    accuracy = measure(scores, y_test)["accuracy"]
    return {"epoch_seconds": solver.train_seconds / epochs, "accuracy": accuracy,
            "steady_epoch_seconds": steady(step_seconds, len(y)),
            "peak_rss_mb": peak_rss_mb(), "blas": blas_info(),
            "images_per_second": len(y_test) / eval_seconds}


def steady(step_seconds: list, num_samples: int) -> float:
    """The median step's time times the steps of an epoch: an epoch time that a
    few steps slowed by other work on the machine do not move."""
    return statistics.median(step_seconds) * -(-num_samples // BATCH)


def run_torch(epochs: int, threads: int) -> dict:
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    X, y, X_test, y_test = load_data()
    X, y = torch.from_numpy(X), torch.from_numpy(y)
    layers = []
    for fan_in, fan_out in zip(WIDTHS[:-1], WIDTHS[1:]):
        linear = torch.nn.Linear(fan_in, fan_out)
        torch.nn.init.kaiming_normal_(linear.weight, nonlinearity="relu")
        torch.nn.init.zeros_(linear.bias)
        layers += [linear, torch.nn.ReLU()]
    model = torch.nn.Sequential(*layers[:-1])
    optimizer = torch.optim.Adam(model.parameters(), lr=LR, betas=BETAS, eps=EPS,
                                 fused=True)
    loss_function = torch.nn.CrossEntropyLoss()

    step_seconds = []
    started = time.perf_counter()
    for _ in range(epochs):
        order = torch.randperm(len(y))
        for start in range(0, len(y), BATCH):
            step_started = time.perf_counter()
            rows = order[start:start + BATCH]
            optimizer.zero_grad(set_to_none=True)
            loss = loss_function(model(X[rows]), y[rows])
            loss.backward()
            optimizer.step()
            step_seconds.append(time.perf_counter() - step_started)
    seconds = (time.perf_counter() - started) / epochs

    with torch.no_grad():
        predicted = model(torch.from_numpy(X_test)).argmax(dim=1).numpy()
    return {"epoch_seconds": seconds, "accuracy": float(np.mean(predicted == y_test)),
            "steady_epoch_seconds": steady(step_seconds, len(y)),
            "peak_rss_mb": peak_rss_mb(), "blas": torch.__config__.parallel_info()
            .splitlines()[4:6]}


def run_numpy(epochs: int, threads: int) -> dict:
    """A bare NumPy loop, written as a reader of the lecture notes would write it
    (textbook Adam per array, in place): what NumPy itself costs, without
    nntrain's checks, logging or generality."""
    import numpy as np
    from threadpoolctl import threadpool_limits

    X, y, X_test, y_test = load_data()
    rng = np.random.default_rng(0)
    params = []
    for fan_in, fan_out in zip(WIDTHS[:-1], WIDTHS[1:]):
        W = rng.standard_normal((fan_in, fan_out)) * np.sqrt(2 / fan_in)
        params += [W.astype(np.float32), np.zeros(fan_out, np.float32)]
    moments = [(np.zeros_like(p), np.zeros_like(p), np.empty_like(p)) for p in params]

    def forward(x):
        activations = [x]
        for layer in range(3):
            x = x @ params[2 * layer] + params[2 * layer + 1]
            if layer < 2:
                x = np.maximum(x, 0)
            activations.append(x)
        return activations

    step_seconds = []
    t = 0
    with threadpool_limits(threads):
        started = time.perf_counter()
        for _ in range(epochs):
            order = rng.permutation(len(y))
            for start in range(0, len(y), BATCH):
                step_started = time.perf_counter()
                rows = order[start:start + BATCH]
                activations = forward(X[rows])
                scores = activations[-1]
                probs = np.exp(scores - scores.max(axis=1, keepdims=True))
                probs /= probs.sum(axis=1, keepdims=True)
                probs[np.arange(len(rows)), y[rows]] -= 1
                dout = probs / len(rows)
                grads = [None] * 6
                for layer in (2, 1, 0):
                    grads[2 * layer] = activations[layer].T @ dout
                    grads[2 * layer + 1] = dout.sum(axis=0)
                    if layer:
                        dout = (dout @ params[2 * layer].T) * (activations[layer] > 0)
                t += 1
                step = LR * math.sqrt(1 - BETAS[1]**t) / (1 - BETAS[0]**t)
                for param, grad, (m, v, scratch) in zip(params, grads, moments):
                    m *= BETAS[0]
                    m += (1 - BETAS[0]) * grad
                    v *= BETAS[1]
                    v += (1 - BETAS[1]) * np.square(grad, out=scratch)
                    np.sqrt(v, out=scratch)
                    scratch += EPS * math.sqrt(1 - BETAS[1]**t)
                    param -= step * m / scratch
                step_seconds.append(time.perf_counter() - step_started)
        seconds = (time.perf_counter() - started) / epochs
        predicted = forward(X_test)[-1].argmax(axis=1)
    return {"epoch_seconds": seconds, "accuracy": float(np.mean(predicted == y_test)),
            "steady_epoch_seconds": steady(step_seconds, len(y)),
            "peak_rss_mb": peak_rss_mb(), "blas": blas_info()}


def run_sklearn(epochs: int, threads: int) -> dict:
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier
    from threadpoolctl import threadpool_limits

    X, y, X_test, y_test = load_data()
    model = MLPClassifier(hidden_layer_sizes=WIDTHS[1:-1], solver="adam",
                          batch_size=BATCH, learning_rate_init=LR, beta_1=BETAS[0],
                          beta_2=BETAS[1], epsilon=EPS, alpha=0.0, max_iter=epochs,
                          shuffle=True, random_state=0, tol=0.0)
    with threadpool_limits(threads), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        started = time.perf_counter()
        model.fit(X, y)
        seconds = (time.perf_counter() - started) / epochs
    return {"epoch_seconds": seconds, "accuracy": float(model.score(X_test, y_test)),
            "peak_rss_mb": peak_rss_mb(), "blas": blas_info()}


def matmul_shapes(batch: int) -> list[tuple[tuple, tuple, bool, bool]]:
    """One training step's products as (A shape, B shape, A transposed?, B
    transposed?), with nntrain's memory layouts: forward x W, weight gradient
    x^T dout, input gradient dout W^T (not for the first layer)."""
    shapes = []
    for layer, (fan_in, fan_out) in enumerate(zip(WIDTHS[:-1], WIDTHS[1:])):
        shapes.append(((batch, fan_in), (fan_in, fan_out), False, False))
        shapes.append(((batch, fan_in), (batch, fan_out), True, False))
        if layer > 0:
            shapes.append(((batch, fan_out), (fan_in, fan_out), False, True))
    return shapes


def run_floor(epochs: int, threads: int) -> dict:
    """The best time of each of a step's products, times an epoch's steps."""
    import numpy as np
    from threadpoolctl import threadpool_limits

    def product(left, right, out):
        np.matmul(left, right, out=out)

    with threadpool_limits(threads):
        return _floor(np, product)


def run_torch_floor(epochs: int, threads: int) -> dict:
    """The floor's products through torch's own BLAS."""
    import numpy as np
    import torch

    torch.set_num_threads(threads)

    def product(left, right, out):
        torch.mm(left, right, out=out)

    result = _floor(np, product, convert=torch.from_numpy)
    result["blas"] = torch.__config__.parallel_info().splitlines()[4:6]
    return result


def _floor(np, product, convert=lambda array: array) -> dict:
    rng = np.random.default_rng(0)
    steps = -(-55000 // BATCH)
    total, flops = 0.0, 0
    for shape_a, shape_b, transpose_a, transpose_b in matmul_shapes(BATCH):
        A = convert(rng.standard_normal(shape_a).astype(np.float32))
        B = convert(rng.standard_normal(shape_b).astype(np.float32))
        left, right = (A.T if transpose_a else A), (B.T if transpose_b else B)
        out = convert(np.empty((left.shape[0], right.shape[1]), np.float32))
        def one_product(left=left, right=right, out=out):
            product(left, right, out)

        best = min(_time(one_product) for _ in range(30))
        total += best
        flops += 2 * left.shape[0] * left.shape[1] * right.shape[1]
    return {"epoch_seconds": total * steps, "gflop_per_epoch": flops * steps / 1e9,
            "blas": blas_info()}


def _time(function, repeat: int = 20) -> float:
    started = time.perf_counter()
    for _ in range(repeat):
        function()
    return (time.perf_counter() - started) / repeat


WORKERS = {"nntrain": run_nntrain, "numpy": run_numpy, "torch": run_torch,
           "sklearn": run_sklearn,
           "floor": run_floor, "torch_floor": run_torch_floor}


def measure_in_process(library: str, epochs: int, threads: int) -> dict:
    """Run one worker in a fresh interpreter with ``threads`` BLAS threads."""
    environment = {**os.environ, "OMP_NUM_THREADS": str(threads),
                   "OPENBLAS_NUM_THREADS": str(threads),
                   "MKL_NUM_THREADS": str(threads)}
    output = subprocess.run(
        [sys.executable, __file__, "--worker", library, "--epochs", str(epochs),
         "--threads", str(threads)],
        capture_output=True, text=True, env=environment, check=False)
    if output.returncode != 0:
        raise RuntimeError(f"{library} worker failed:\n{output.stderr[-2000:]}")
    return json.loads(output.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", choices=list(WORKERS))
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, nargs="*", default=[1, 2])
    parser.add_argument("--libraries", nargs="*",
                        choices=[name for name in WORKERS
                                 if not name.endswith("floor")],
                        help="default: nntrain numpy torch sklearn (--quick: no"
                        " sklearn); one that is not installed is skipped")
    parser.add_argument("--quick", action="store_true",
                        help="one repeat of one epoch, without scikit-learn")
    args = parser.parse_args()

    if args.worker:
        print(json.dumps(WORKERS[args.worker](args.epochs, args.threads[0])))
        return
    if args.quick:
        args.epochs, args.repeats = 1, 1
    if args.libraries is None:
        args.libraries = ["nntrain", "numpy", "torch"] + ([] if args.quick
                                                          else ["sklearn"])
    args.libraries = [library for library in args.libraries if installed(library)]

    print("Fashion-MNIST, 784-512-256-10 ReLU, Adam, batch 128, float32; epoch time"
          " = training iterations only (no evaluation), diagnostics off;"
          f" medians of {args.repeats} processes x {args.epochs} epochs, run"
          " round-robin.\n")
    for threads in args.threads:
        # Round-robin: each repeat runs every library (and the floor) once, so
        # that a slow spell of a shared machine falls on all of them alike.
        floors = ["floor"] + (["torch_floor"] if "torch" in args.libraries else [])
        runs = {library: [] for library in [*floors, *args.libraries]}
        for _ in range(args.repeats):
            for library in runs:
                epochs = 1 if library in floors else args.epochs
                runs[library].append(measure_in_process(library, epochs, threads))
        floor = median_of(runs.pop("floor"))
        torch_floor = median_of(runs.pop("torch_floor")) if len(floors) > 1 else None
        print_table(threads, floor, {library: median_of(library_runs)
                                     for library, library_runs in runs.items()},
                    torch_floor)


def installed(library: str) -> bool:
    """PyTorch and scikit-learn are optional here: say so and skip them."""
    module = {"torch": "torch", "sklearn": "sklearn"}.get(library)
    if module is None or importlib.util.find_spec(module) is not None:
        return True
    hint = "pip install torch==2.13.0" if library == "torch" else (
        "pip install scikit-learn")
    print(f"skipping {library}: it is not installed ({hint})", file=sys.stderr)
    return False


def median_of(runs: list) -> dict:
    """The median of every number the runs report; the first run's BLAS info."""
    summary = {key: statistics.median(run[key] for run in runs)
               for key, value in runs[0].items() if isinstance(value, (int, float))}
    summary["blas"] = runs[0]["blas"]
    return summary


def print_table(threads: int, floor: dict, results: dict,
                torch_floor: dict | None) -> None:
    torch = results.get("torch")
    print(f"### {threads} thread{'s' if threads > 1 else ''}\n")
    print("| library | s / epoch | x floor | x torch | GFLOP/s | steady s / epoch |"
          " steady x floor | peak RSS MB | x torch RSS | test acc |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    print(f"| floor (matmuls) | {floor['epoch_seconds']:.3f} | 1.00 | | "
          f"{floor['gflop_per_epoch'] / floor['epoch_seconds']:.1f} | | | | | |")
    if torch_floor:
        seconds = torch_floor["epoch_seconds"]
        print(f"| torch's matmuls | {seconds:.3f} |"
              f" {seconds / floor['epoch_seconds']:.2f} | |"
              f" {torch_floor['gflop_per_epoch'] / seconds:.1f} | | | | | |")
    for library, row in results.items():
        seconds = row["epoch_seconds"]
        versus = f"{seconds / torch['epoch_seconds']:.2f}" if torch else ""
        memory = f"{row['peak_rss_mb'] / torch['peak_rss_mb']:.2f}" if torch else ""
        steady_seconds = row.get("steady_epoch_seconds")
        steady_cells = (f"{steady_seconds:.3f} | "
                        f"{steady_seconds / floor['epoch_seconds']:.2f}"
                        if steady_seconds else " | ")
        print(f"| {library} | {seconds:.3f} | {seconds / floor['epoch_seconds']:.2f} |"
              f" {versus} | {floor['gflop_per_epoch'] / seconds:.1f} |"
              f" {steady_cells} | {row['peak_rss_mb']:.0f} | {memory} |"
              f" {row['accuracy']:.4f} |")
    if "nntrain" in results and "images_per_second" in results["nntrain"]:
        print(f"\nnntrain evaluation: {results['nntrain']['images_per_second']:,.0f}"
              " test images per second (batches of 4,096)")
    print("\nBLAS: " + "; ".join(
        f"{library}: {row['blas']}" for library, row in results.items()))
    print(f"floor: {floor['blas']}"
          + (f"; torch's matmuls: {torch_floor['blas']}" if torch_floor else "")
          + "\n", flush=True)


if __name__ == "__main__":
    main()
