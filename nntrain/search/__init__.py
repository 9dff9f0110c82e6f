"""Random hyperparameter search over a config's keys, coarse to fine, in parallel.

A study is an ordinary config with a ``search:`` section::

    search:
      trials: 20                 # int >= 1
      seed: 0                    # default: the config's seed
      metric: val_accuracy       # a key of the 'epoch' records
      mode: max                  # max | min (default: max for accuracies, else min)
      rounds: 2                  # coarse-to-fine rounds (default 1)
      keep: 5                    # best trials that set the next round's ranges
      params:                    # dotted config key: one distribution
        optimizer.lr: {loguniform: [1.0e-4, 1.0e-1]}
        model.l2: {uniform: [0.0, 1.0e-2]}
        train.batch_size: {int: [16, 128]}
        model.activation: {choice: [relu, tanh]}

Before anything runs, every trial draws one number u in [0, 1) per parameter from the
search stream of ``seed``, so a study is reproducible. Its round's range maps u to a
value: ``exp(log low + u (log high - log low))`` for loguniform, ``low + u (high -
low)`` for uniform, ``low + floor(u (high - low + 1))`` for int, option
``floor(u K)`` of K for choice. The trials are split evenly over the rounds. Round 1
uses the ranges given; each later round narrows every numeric range to the span of
the ``keep`` best trials finished so far, widened by ``WIDEN`` of the original range
on each side (in log space for loguniform) and clipped to it; a choice keeps all its
options. The metric of a trial is the best value of ``metric`` over its evaluations.
Where ``metric`` is a train.monitor option in its own mode and the config does not set
train.monitor, every trial monitors ``metric``, so its best.npz holds that evaluation;
otherwise ``--ensemble`` notes which epochs the best.npz it averages hold.

Before anything runs, too, every option of a choice and both ends of a range are set
on the config and validated, alone and with the options and ends of the other
searched keys their error names; one that never gives a valid config refuses the
study. The config is validated as the trials see it: a searched key's own value,
which every trial replaces, need not be valid.

The study folder:

    DIR/study.json      the plan: config, search section, each round's ranges and
                        each trial's values (a later round's once it is planned)
    DIR/trial-0000/     an ordinary run directory, plus result.json
    DIR/results.csv     one row per planned trial, best first
    DIR/search.png      the metric against each hyperparameter

A trial writes its result.json (atomically) when its training ends, successfully or
with a failure of its own (an invalid config, a non-finite loss). Anything else that
ends a trial (its worker process dying, Ctrl-C, a lost Dask worker, a bug) is reported
as failed for this run but leaves no result.json, so the next run of the same study
retries it; the study then stops after that trial's round (exit status 1) rather than
plan the next round without it, so that an interrupted study plans as an
uninterrupted one. Trials with a result.json never run again. A trial whose folder
another nntrain process holds (an interrupted search's trial still running on a Dask
worker) did not run: it is "busy", and the study stops after its round, in the last
round too, until a rerun finds that process ended. A study holds a lock on its folder
while it is open (Study.close), so a second search of it is refused.

The package: space.py validates the search section and draws, narrows and applies
the values; trials.py runs one trial, and many on worker processes or Dask; study.py
keeps a study's folder, plan and rows; report.py prints and plots them.
"""

from nntrain.search.report import PLOT_FILE, format_table, plot_study
from nntrain.search.space import (
    SearchSpec,
    load_search_config,
    mode_warning,
    narrow_bounds,
    parse_search,
    rank,
    resolve_study_config,
    sample,
    searchable_keys,
    trial_config,
    unit_draws,
)
from nntrain.search.study import CSV_FILE, PLAN_FILE, Study
from nntrain.search.trials import RESULT_FILE, read_result, require_dask, run_trial

__all__ = [
    "CSV_FILE", "PLAN_FILE", "PLOT_FILE", "RESULT_FILE", "SearchSpec", "Study",
    "format_table", "load_search_config", "mode_warning", "narrow_bounds",
    "parse_search", "plot_study", "rank", "read_result", "require_dask",
    "resolve_study_config", "run_trial", "sample", "searchable_keys",
    "trial_config", "unit_draws",
]
