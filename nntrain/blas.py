"""How nntrain asks the BLAS library to share the cores.

OpenBLAS's idle worker threads spin for about 2^28 cycles (~0.1 s) after each
matrix product before they sleep. In a training step, matrix products alternate with
NumPy's elementwise work, and the update rule splits its elementwise passes over
threads (optim/rules.py): while an OpenBLAS thread spins on a core, that core cannot
run its part, and a parallel update ends up slower than a serial one. Capping the
spin at 2^16 cycles (~20 microseconds) frees the cores between products at no
measurable cost to the products themselves.

OpenBLAS reads the setting once, when NumPy loads it, so nntrain's package
``__init__`` calls ``limit_spinning`` before anything imports NumPy. A value already
in the environment wins. When NumPy was imported first, the setting cannot take
effect, and ``update_threads`` keeps updates on one thread.
"""

import os
import sys

SPIN_VARIABLE = "OPENBLAS_THREAD_TIMEOUT"
SPIN_EXPONENT = "16"  # 2^16 cycles

spin_limited = False  # whether OpenBLAS was loaded with a spin limit


def limit_spinning() -> None:
    global spin_limited
    user_set = SPIN_VARIABLE in os.environ
    os.environ.setdefault(SPIN_VARIABLE, SPIN_EXPONENT)
    spin_limited = user_set or "numpy" not in sys.modules


def update_threads(threads: int | None) -> int:
    """How many threads an update rule may use when training with ``threads``
    (train.threads; None: as many as BLAS is using now, which a search worker
    has set to one)."""
    if not spin_limited:
        return 1
    if threads:
        return threads
    from threadpoolctl import threadpool_info

    counts = [info["num_threads"] for info in threadpool_info()
              if info.get("user_api") == "blas"]
    return max(counts) if counts else os.cpu_count() or 1
