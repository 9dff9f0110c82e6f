"""The Solver: the mini-batch loop, evaluation, metrics and checkpoints.

Counting (the same in epochs and iterations mode):
- an epoch is one pass over a fresh shuffle of the training split in which every
  sample is seen once; the last, partial batch is kept, so an epoch has
  ceil(N / batch_size) iterations (N=10, batch 4: 3 per epoch, 15 in 5 epochs);
- ``iteration`` counts updates done so far; ``epoch`` counts epochs begun (1-based);
- evaluation runs every ``eval_every`` iterations, by default at the end of every
  epoch (iterations mode: every ceil(N / batch_size) iterations), and once more after
  the last update if that was not an evaluation point (the final evaluation, which
  a run extended later drops: see ``Solver._final_evaluation``);
- in iterations mode a per-epoch schedule's epoch is the ``eval_every`` period in
  progress, not the pass over the data (the same with the default ``eval_every``).
At each evaluation the Solver writes an "epoch" record, saves the snapshot due at
an epoch's end (``train.snapshot_every``), ``best.npz`` when ``train.monitor``
improved, and then ``last.npz``, the run's commit point.
"""

import copy
import math
import shlex
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from nntrain.checkpoint import save_checkpoint
from nntrain.errors import StopRequested, TrainingError
from nntrain.evaluate import measure
from nntrain.fileio import write_fix
from nntrain.nn import functional as F
from nntrain.optim.clipping import clip_gradients
from nntrain.random import SHUFFLE_STREAM, generator
from nntrain.train.averaging import WeightAverage
from nntrain.train.checks import expected_first_loss, huge_penalty
from nntrain.train.diagnostics import (
    MIN_BATCH,
    Watcher,
    gradient_norms,
    layer_statistics,
    update_ratios,
    weight_decay_cause,
    weight_snapshot,
)
from nntrain.train.report import counted, short_number
from nntrain.train.rundir import NEW_RUN_ELSEWHERE
from nntrain.train.signals import SIGNAL_EXIT_CODES, Interrupted, StopFlag

# A first loss this many times the one small weights give (ln C for softmax) says
# the scores started huge: the data's scale, not the learning rate, is at fault.
HUGE_FIRST_LOSS_FACTOR = 1e6
# A rate below this fraction of the schedule's starting one was lowered on purpose:
# the update ratios it gives are not blamed on optimizer.lr.
LOWERED_RATE = 0.1
# Validation samples this many times beyond the training split's largest value
# that overflow the network are blamed for a non-finite validation loss.
VALIDATION_SCALE_FACTOR = 10
# A loss above this multiple of its first value for this many updates is diverging.
DIVERGENCE_FACTOR = 3
DIVERGENCE_ITERATIONS = 100


# The parts of the solver state (keys of Solver.state_meta) that an evaluation
# changes, besides the history it adds its record to.
EVALUATED_STATE = ("progress", "running_means", "schedule", "warned", "curve")


def drops_final_evaluation(solver_meta: dict, total_iterations: int) -> bool:
    """Whether a run resumed from ``solver_meta`` (a checkpoint's solver state) with
    a budget of ``total_iterations`` updates drops the final evaluation that the
    checkpoint's run made when its shorter budget ran out between evaluation points.
    """
    return (solver_meta.get("before_final_evaluation") is not None
            and total_iterations > solver_meta["progress"]["iteration"])


def iterations_per_epoch(num_samples: int, batch_size: int) -> int:
    return math.ceil(num_samples / batch_size)


def count_iterations(train_config: dict, num_samples: int, full_batch=False):
    """(updates per epoch, updates in the whole run). A full-batch rule (L-BFGS)
    makes one update per pass over the data."""
    per_epoch = 1 if full_batch else iterations_per_epoch(num_samples,
                                                          train_config["batch_size"])
    if train_config["iterations"] is not None:
        return per_epoch, train_config["iterations"]
    return per_epoch, train_config["epochs"] * per_epoch


def _finiteness(array: np.ndarray) -> float:
    """0.0 when every entry of ``array`` is finite, else NaN or inf (NaN first)."""
    if np.isfinite(array).all():
        return 0.0
    return float("nan") if np.isnan(array).any() else float("inf")


def _overflowing_penalty(model) -> tuple | None:
    """(kind, strength, weight name) of the first L2 or L1 penalty that overflows
    on weights that are themselves sane: its value (as a float) or its gradient
    (l2 * W, l1 * sign(W), in the weights' dtype) is not finite. None if none."""
    for penalty in model.penalties:
        W = model.params[penalty.name]
        largest = float(np.abs(W).max(initial=0.0))
        limit = float(np.finfo(W.dtype).max)
        for kind, strength, term, scale in (
                ("l2", penalty.l2, F.l2_penalty, largest),
                ("l1", penalty.l1, F.l1_penalty, 1.0)):
            # At strength 1 the penalty is finite: the weights are not to blame.
            if not strength or not math.isfinite(term(W, 1.0)):
                continue
            if not math.isfinite(term(W, strength)) or strength * scale > limit:
                return kind, strength, penalty.name
    return None


def monitor_improved(monitor: str, value: float, best: float | None) -> bool:
    """True when ``value`` beats ``best``: lower for losses, higher for accuracies."""
    if best is None:
        return True
    return value < best if monitor.endswith("loss") else value > best


@dataclass
class Progress:
    """Counters a checkpoint must hold to say where the run is."""

    epoch: int = 0  # epochs begun
    iteration: int = 0  # updates done
    batch_in_epoch: int = 0  # updates done in the current epoch
    best_value: float | None = None
    best_epoch: int | None = None
    best_iteration: int | None = None
    last_eval_iteration: int = 0
    early_stopping_best: float | None = None
    bad_evaluations: int = 0  # evaluations in a row without a min_delta gain


class _EarlyStop(Exception):
    """Raised inside the loop to end a run that early stopping ended."""


class _RunningMeans:
    """Mean training loss and accuracy over the batches since the last evaluation,
    weighted by batch size, measured in training mode on the fly (no extra pass)."""

    def __init__(self):
        self.samples = 0
        self.sums = {"loss": 0.0, "data_loss": 0.0, "reg_loss": 0.0, "correct": 0.0}

    def add(self, result, y):
        count = len(y)
        self.samples += count
        self.sums["loss"] += result.loss * count
        self.sums["data_loss"] += result.data_loss * count
        self.sums["reg_loss"] += result.reg_loss * count
        self.sums["correct"] += float((result.scores.argmax(axis=1) == y).sum())

    def means(self) -> dict:
        if not self.samples:
            return {}
        means = {key: value / self.samples for key, value in self.sums.items()}
        means["train_accuracy"] = means.pop("correct")
        return means


class Solver:
    """Trains ``model`` with ``rule`` and ``schedule`` on (X_train, y_train).

    X_train: (N, D) and X_val: (M, D) preprocessed float arrays; y_*: int labels.
    ``checkpoint_meta`` and ``checkpoint_arrays`` are stored in every checkpoint
    beside the solver's own state (the config, the data spec, the preprocessing).
    """

    def __init__(self, model, rule, schedule, data, train_config, seed, run=None,
                 reporter=None, checkpoint_meta=None, checkpoint_arrays=None):
        self.model, self.rule, self.schedule = model, rule, schedule
        self.X_train, self.y_train, self.X_val, self.y_val = data
        self.config = train_config
        self.run, self.reporter = run, reporter
        self.checkpoint_meta = checkpoint_meta or {}
        self.checkpoint_arrays = checkpoint_arrays or {}
        self.shuffle_rng = generator(seed, SHUFFLE_STREAM)
        self.progress = Progress()
        self.history = []  # the "epoch" records, in order
        self.stop_reason = None
        self.watcher = Watcher(reporter.warn) if reporter else None
        self._diagnostics = {}
        self._first_loss = None
        self._first_data_loss = None  # without the penalties: the scores' own
        self._high_streak = 0
        self._running = _RunningMeans()
        self.train_seconds = 0.0  # time spent in updates alone (no evaluation)
        average = train_config["average"]
        self.average = WeightAverage(**average) if average else None
        self.elapsed_before = 0.0  # seconds of the run before a resume
        self._resume_epoch_state = None  # the shuffle state to redraw on resume
        # EVALUATED_STATE as it was before the final evaluation, once it has begun.
        self._before_final_evaluation = None

        self.full_batch = rule.name == "lbfgs"
        self.per_epoch, self.total_iterations = count_iterations(
            train_config, len(self.X_train), self.full_batch)
        self.eval_every = train_config["eval_every"] or self.per_epoch

    def train(self) -> Progress:
        """Run until the iteration budget is spent; return the final counters."""
        self._start_time = time.perf_counter() - self.elapsed_before
        if self.reporter:
            self.reporter.start_bar(self.total_iterations, self.progress.iteration)
        # Overflow and NaN are caught by the non-finite check after each update, with
        # a message that says what to do; numpy's own warnings would only add noise.
        try:
            with StopFlag() as stop, threadpool_limits(self.config["threads"]), \
                    np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                try:
                    self._train_to_the_end(stop)
                except _EarlyStop:
                    pass
                if stop.signum is not None:
                    # Asked to stop during the last update or evaluation (the
                    # final one, or the one early stopping ended the run at): the
                    # loops leave that stop to here, so that the run ends
                    # complete, as an uninterrupted one does, and then stops.
                    self._stop(stop.signum)
        except Interrupted as error:
            raise self._stopped_at_once(error) from None
        finally:
            if self.reporter:
                self.reporter.close_bar()
        return self.progress

    def _train_to_the_end(self, stop) -> None:
        """Update until the budget is spent, then make the final evaluation if
        the last update was no evaluation point; _EarlyStop ends it sooner."""
        if self.full_batch:
            self._train_full_batch(stop)
        while self.progress.iteration < self.total_iterations:
            self._train_epoch(stop)
        if self.progress.iteration == 0 and self.progress.best_iteration is None:
            # No update at all: L-BFGS stops before its first iteration when the
            # starting weights already meet its tolerances. Those weights are the
            # run's result, evaluated as at an evaluation point, which a resumed or
            # longer run keeps (it would stop there again).
            self._evaluate()
        elif self.progress.last_eval_iteration != self.progress.iteration:
            self._final_evaluation()

    def _train_epoch(self, stop) -> None:
        progress = self.progress
        batch_size = self.config["batch_size"]
        if self._resume_epoch_state is not None:
            # Resuming: redraw the interrupted epoch's order and skip its done part.
            self.shuffle_rng.bit_generator.state = self._resume_epoch_state
            self._resume_epoch_state = None
            skip = progress.batch_in_epoch * batch_size
        else:
            progress.epoch += 1
            progress.batch_in_epoch = 0
            skip = 0
        self._epoch_start_state = self.shuffle_rng.bit_generator.state
        order = self.shuffle_rng.permutation(len(self.X_train))

        for start in range(skip, len(order), batch_size):
            started = time.perf_counter()
            self._step(order[start:start + batch_size])
            self.train_seconds += time.perf_counter() - started
            epoch_end = progress.batch_in_epoch == self.per_epoch
            if progress.iteration % self.eval_every == 0:
                self._evaluate(epoch_end)
            elif epoch_end:
                self._snapshot()
            if progress.iteration >= self.total_iterations:
                break  # a stop asked for now waits for the final evaluation
            if stop.signum is not None:
                self._stop(stop.signum)

    def _schedule_epoch(self) -> int:
        """The epoch a per-epoch schedule is in: the true one in epochs mode; in
        iterations mode the eval_every period in progress (1-based), so that the
        rate steps with the evaluations, as early stopping does. With the default
        eval_every (an epoch's updates) the two are the same."""
        if self.config["iterations"] is None:
            return self.progress.epoch
        return self.progress.iteration // self.eval_every + 1

    def _step(self, rows: np.ndarray) -> None:
        progress = self.progress
        X, y = self.X_train[rows], self.y_train[rows]
        lr = self.schedule.rate(self._schedule_epoch(), progress.iteration)
        self.rule.lr = lr
        if self.watcher:
            self.watcher.check_weight_decay(lr, self._weight_decay())
        diagnose = self._diagnoses()
        self.model.capture_outputs = diagnose

        result = self.model.forward_backward(X, y)
        self.model.capture_outputs = False
        if not math.isfinite(result.loss):
            # Weights that the last update made NaN or infinite make the loss so;
            # name them if that is what happened.
            self._check_parameters()
            self._check_finite(result.loss, "the loss")
        if progress.iteration == 0:
            # Once, before the first update: a gradient that overflows here (an L1
            # strength beyond the dtype, say) would turn the weights into NaN and
            # be blamed on the learning rate.
            for name, grad in result.grads.items():
                self._check_finite(_finiteness(grad), f"the gradient of {name}")
        logged = (progress.iteration + 1) % self.config["log_every"] == 0
        # Taken before clipping changes the gradients in place, like grad_norm:
        # clipped norms would always add up to the threshold and hide a blow-up.
        norms = gradient_norms(result.grads) if diagnose else None
        grad_norm = None
        if self.config["clip"] or logged:
            # The global norm costs a pass over the gradients, so it is taken only
            # when clipping needs it or an "iter" record logs it. A non-finite
            # gradient it misses makes the weights non-finite, which the next
            # loss shows (and no checkpoint is written with them).
            grad_norm = clip_gradients(result.grads, self.config["clip"])
            self._check_finite(grad_norm, "the gradient norm")
        before = weight_snapshot(self.model) if diagnose else None
        self.rule.step(self.model.params, result.grads)
        self.model.apply_constraints()
        if self.average:
            self.average.update(self.model.params)
        progress.iteration += 1
        progress.batch_in_epoch += 1
        self._running.add(result, y)
        if progress.iteration == 1:  # the run's first update, never a resumed one
            self._first_data_loss = result.data_loss
        self._watch_divergence(result.loss)
        if diagnose:
            self._diagnostics = {
                **update_ratios(self.model, before),
                **layer_statistics(self.model, self.model.outputs),
                **norms,
            }
            self.model.outputs = None

        if logged:
            self._record({
                "kind": "iter", "lr": lr, "loss": result.loss,
                "data_loss": result.data_loss, "reg_loss": result.reg_loss,
                "grad_norm": grad_norm,
            })
        if self.reporter:
            postfix = {"epoch": progress.epoch, "loss": short_number(result.loss)}
            self.reporter.advance(1, **postfix)

    def _evaluation_follows(self, ahead: int = 1) -> bool:
        """True when the update ``ahead`` updates from now (1: the one about to
        happen) is the last before an evaluation."""
        upcoming = self.progress.iteration + ahead
        return upcoming % self.eval_every == 0 or upcoming == self.total_iterations

    def _batch_size(self, index: int) -> int:
        """The size of an epoch's batch ``index`` (0-based; the last may be short)."""
        size = self.config["batch_size"]
        index %= self.per_epoch
        if index < self.per_epoch - 1:
            return size
        return len(self.X_train) - (self.per_epoch - 1) * size

    def _diagnoses(self) -> bool:
        """Whether the update about to happen gives the diagnostics of the next
        evaluation: the last update before it, unless the update before that
        already did (``_diagnosed_early``); they are kept in ``_diagnostics`` for
        the evaluation, checkpoints included."""
        if not self.config["diagnostics"]:
            return False
        if self._evaluation_follows():
            return not self._diagnostics
        return self._diagnosed_early(1, self.progress.batch_in_epoch)

    def _diagnosed_early(self, ahead: int, batch_index: int) -> bool:
        """Whether the update ``ahead`` updates from now (1: the one about to
        happen; 0: the one just done), on the epoch's batch ``batch_index``, gives
        the diagnostics of the evaluation after the update that follows it: that
        update has an epoch's short last batch, too small for the dead and
        saturated fractions (MIN_BATCH), and this one has not."""
        return (self.config["diagnostics"]
                and not self._evaluation_follows(ahead)
                and self._evaluation_follows(ahead + 1)
                and self._batch_size(batch_index) >= MIN_BATCH
                and self._batch_size(batch_index + 1) < MIN_BATCH)

    def _check_finite(self, value: float, quantity: str,
                      iteration: int | None = None,
                      updated: bool | None = None,
                      cause: str | None = None, when: str = "at",
                      epoch: int | None = None) -> None:
        """Stop the run when ``value`` is NaN or infinite. ``iteration``: the one
        that made it so (default: the one under way), or with ``when="by"`` the
        last one before it was found; ``updated``: whether any update has changed
        the weights yet (default: whether one has completed); ``cause``: the
        culprit and its fix, when the caller knows it (default: the likeliest
        one, see _cause); ``epoch``: that iteration's (default: the one under
        way)."""
        if math.isfinite(value):
            return
        progress = self.progress
        iteration = progress.iteration + 1 if iteration is None else iteration
        updated = progress.iteration > 0 if updated is None else updated
        epoch = progress.epoch if epoch is None else epoch
        raise TrainingError(
            f"{quantity} became {value} {when} iteration {iteration} (epoch"
            f" {epoch}); {cause or self._cause(updated)}. No checkpoint"
            " holds it; any earlier checkpoint is untouched."
        )

    def _cause(self, updated: bool) -> str:
        """The likeliest culprit of a non-finite value, with its fix."""
        if not updated:
            return self._cause_before_updates()
        # No learning rate steadies a huge penalty: its gradient alone swamps the
        # data's, and with plain SGD lr * l2 > 2 makes it diverge.
        penalty = huge_penalty(self.model)
        if penalty:
            return penalty
        expected, derivation = expected_first_loss(self.model.loss_name,
                                                   self.model.num_classes)
        first = self._first_data_loss
        if first is not None and first > HUGE_FIRST_LOSS_FACTOR * max(expected, 1.0):
            return (f"the first data loss was {first:.3g}, far above the"
                    f" {expected:.3g} ({derivation}) of small starting weights:"
                    " the data's scale"
                    f" (its values reach {self._largest_input():.3g}) or the"
                    " starting weights"
                    f" ({self._init_text()}) are at fault, not the learning rate;"
                    " preprocess the data (center, scale) or divide it by a power"
                    " of ten")
        largest = self._largest_input()
        if largest > math.sqrt(np.finfo(self.X_train.dtype).max):
            # Batch norm's variance squares its inputs: it overflows on the first
            # batch and the running variance keeps that, while the normalized
            # training loss looks sane (the first data loss above cannot tell).
            return (f"the data's values reach {largest:.3g}, whose squares"
                    f" overflow {self.X_train.dtype} arithmetic (in batch norm's"
                    " variance, say): the data's scale is at fault, not the"
                    " learning rate; preprocess the data (center, scale) or"
                    " divide it by a power of ten")
        decay = weight_decay_cause(self.rule.lr, self._weight_decay())
        if decay:
            return decay
        if self.rule.lr is not None:
            base = self.schedule.base_lr
            # Beyond rounding: a warmup's last step lands a hair above the rate.
            if base is not None and self.rule.lr > base * (1 + 1e-9):
                # The schedule raised the rate (exponential with gamma > 1, say).
                return (f"the learning rate {self.rule.lr:g}, which the schedule"
                        f" raised from optimizer.lr {base:g}, is likely too high:"
                        " change the schedule's settings, or lower optimizer.lr")
            return (f"the learning rate {self.rule.lr:g} is likely too high: lower"
                    " optimizer.lr")
        return "the data or the model is likely at fault"

    def _weight_decay(self) -> float | None:
        """adamw's decoupled weight decay; None for the rules without one."""
        return getattr(self.rule, "weight_decay", None)

    def _cause_before_updates(self) -> str:
        """No update has run, so the learning rate is blameless: either a penalty
        strength overflows on sane weights, or the starting weights (or the data)
        are too large for the scores and penalties to stay finite."""
        culprit = _overflowing_penalty(self.model)
        if culprit:
            kind, strength, name = culprit
            return (f"no update has run yet, but the {kind.upper()} penalty on"
                    f" {name} overflows: {kind} = {strength:g} is far too strong;"
                    f" lower model.{kind} (or that layer's {kind})")
        model = self.checkpoint_meta.get("config", {}).get("model")
        if model and model["init"] != "small":
            # he, xavier and glorot scale the weights to the layer's width: what
            # overflows then is the data.
            return (f"no update has run yet, and model.init {model['init']} scales"
                    " the starting weights to the inputs, so the data's scale is at"
                    f" fault: its values reach {self._largest_input():.3g}, too"
                    " large for"
                    f" {self.X_train.dtype} arithmetic; preprocess them (center,"
                    " scale) or divide them by a power of ten")
        return ("no update has run yet, so the starting weights are likely too"
                f" large ({self._init_text()}): lower model.init_std or use init he"
                " or xavier; if they are not, the data's scale is at fault:"
                " preprocess it (center, scale)")

    def _validation_scale(self, scores: np.ndarray) -> str | None:
        """What to say when the validation samples, not the weights, made the
        validation scores (M, C) non-finite: every sample whose scores are NaN or
        infinite reaches values far beyond the training split's (by
        VALIDATION_SCALE_FACTOR), and gives finite scores once scaled down to the
        training split's largest value. None otherwise: the weights the update
        made are then the likelier culprit, as for the training loss."""
        bad = ~np.isfinite(scores).all(axis=1)
        if not bad.any():
            return None
        rows = self.X_val[bad]
        reach = np.abs(rows).max(axis=1)
        largest = self._largest_input()
        if reach.min() <= VALIDATION_SCALE_FACTOR * largest:
            return None
        scaled = rows * (largest / reach)[:, None].astype(rows.dtype)
        if not np.isfinite(self.model.predict(scaled)).all():
            return None
        count = int(bad.sum())
        samples = f"{counted(count, 'validation sample')} of {len(bad)}"
        reach_verb = "reaches" if count == 1 else "reach"
        return (f"{samples} {reach_verb} values up to {reach.max():.3g}, far"
                f" beyond the training split's largest ({largest:.3g}), and"
                f" overflow {rows.dtype} arithmetic inside the network: the data's"
                " scale is at fault, not the learning rate; rescale the validation"
                " data as the training data, or leave those samples out")

    def _largest_input(self) -> float:
        """The largest magnitude among the training features, for messages that
        blame the data's scale."""
        return float(np.abs(self.X_train).max(initial=0.0))

    def _init_text(self) -> str:
        """The model's initializer as its config names it, when the config is known."""
        model = self.checkpoint_meta.get("config", {}).get("model")
        if not model:
            return "model.init, model.init_std"
        if model["init"] == "small":
            return f"model.init small, model.init_std {model['init_std']:g}"
        return f"model.init {model['init']}"

    def _check_parameters(self) -> None:
        """Stop the run if a parameter is NaN or infinite, naming it.

        Not run after every update: a non-finite weight makes the next loss
        non-finite (NaN and inf survive every layer, even times zero), which is
        checked at every step and calls this; and no checkpoint is written with a
        non-finite array (``save``).
        """
        for name, param in self.model.params.items():
            self._check_finite(_finiteness(param), f"parameter {name}",
                               self.progress.iteration)

    def _watch_divergence(self, loss: float) -> None:
        """Warn once when the loss stays far above where it started."""
        if self._first_loss is None:
            self._first_loss = loss
        high = loss > DIVERGENCE_FACTOR * max(self._first_loss, 1e-12)
        self._high_streak = self._high_streak + 1 if high else 0
        if self._high_streak == DIVERGENCE_ITERATIONS and self.watcher:
            fix = (weight_decay_cause(self.rule.lr, self._weight_decay())
                   or "lower optimizer.lr")
            self.watcher.warn(
                f"the loss has stayed above {DIVERGENCE_FACTOR}x its starting value"
                f" ({self._first_loss:.3g}) for {DIVERGENCE_ITERATIONS} iterations:"
                f" the run is diverging; {fix}"
            )

    def _train_full_batch(self, stop) -> None:
        """L-BFGS over the whole training split; each iteration counts as an epoch
        (one pass over the data, plus the line search's extra passes)."""
        from nntrain.optim import lbfgs

        params = self.model.params
        last = {}
        # Batch norm: with one batch, the running statistics should be that
        # batch's own at the accepted weights, the network L-BFGS minimized. With
        # momentum 0 each pass sets them so; a line search's trial point that
        # was not accepted gets them recomputed below.
        batch_norms = [layer for layer in self.model.layers
                       if layer.kind == "batchnorm"]
        momenta = [layer.momentum for layer in batch_norms]
        for layer in batch_norms:
            layer.momentum = 0.0

        def objective(vector):
            lbfgs.assign(params, vector)
            result = self.model.forward_backward(self.X_train, self.y_train)
            if not last and self.progress.iteration == 0:
                self._first_data_loss = result.data_loss
            # The first evaluation is at the starting weights, before any step.
            # Each L-BFGS iteration is an epoch, counted when it ends.
            self._check_finite(result.loss, "the loss",
                               updated=bool(last) or self.progress.iteration > 0,
                               epoch=self.progress.epoch + 1)
            last.update(vector=vector.copy(), result=result)
            return result.loss, lbfgs.flatten(result.grads)

        def after_iteration(vector, loss):
            lbfgs.assign(params, vector)
            self.progress.iteration += 1
            self.progress.epoch += 1
            self.rule.steps += 1
            result = last["result"]
            if np.array_equal(last["vector"], vector):
                self._running.add(result, self.y_train)
            elif batch_norms:
                self.model.scores(self.X_train, training=True)
            if self.progress.iteration % self.config["log_every"] == 0:
                self._record({"kind": "iter", "loss": loss,
                              "data_loss": result.data_loss,
                              "reg_loss": result.reg_loss})
            if self.reporter:
                self.reporter.advance(1, loss=short_number(loss))
            if self.progress.iteration % self.eval_every == 0:
                self._evaluate()
            # A stop asked for during the last update waits for the final evaluation.
            if (stop.signum is not None
                    and self.progress.iteration < self.total_iterations):
                self._stop(stop.signum)

        try:
            outcome = lbfgs.minimize(objective, lbfgs.flatten(params),
                                     self.total_iterations - self.progress.iteration,
                                     self.rule.history, after_iteration)
            lbfgs.assign(params, outcome.x)
            # A line search that found no better point ends the run on a trial.
            if batch_norms and not np.array_equal(last["vector"], outcome.x):
                self.model.scores(self.X_train, training=True)
        finally:
            for layer, momentum in zip(batch_norms, momenta):
                layer.momentum = momentum
        if self.reporter and self.progress.iteration < self.total_iterations:
            self.reporter.line(f"L-BFGS stopped after {self.progress.iteration}"
                               f" iterations: {outcome.message}")
        # Nothing is left to do in the budget: the loop in train() must not go on.
        self.total_iterations = self.progress.iteration

    def _record(self, fields: dict) -> dict:
        record = {
            "kind": fields.pop("kind"),
            "iteration": self.progress.iteration,
            "epoch": self.progress.epoch,
            # A key is absent when it was not measured (the rate of L-BFGS).
            **{key: value for key, value in fields.items() if value is not None},
            "seconds": round(time.perf_counter() - self._start_time, 4),
        }
        # A diagnostic can be NaN or infinite (the update ratio of weights clipped
        # to zero); JSON has no such numbers, so the record (kept in metrics.jsonl
        # and in checkpoints' history) holds null instead.
        record = {key: None if isinstance(value, float) and not math.isfinite(value)
                  else value for key, value in record.items()}
        if self.run:
            self.run.record(record)
        return record

    def _evaluate(self, epoch_end: bool = False) -> None:
        """Measure the weights on the validation split, record and report it, and
        save the checkpoints: the snapshot due at an epoch's end (``epoch_end``),
        best.npz when the monitor improved, and last.npz."""
        progress = self.progress
        scores = self.model.predict(self.X_val)
        val = measure(scores, self.y_val, self.model.loss_name)
        if not math.isfinite(val["loss"]):
            # Weights blown up past float32's range give a finite training loss
            # now and then but never a finite validation loss: stop before they
            # are recorded, marked best or saved.
            self._check_parameters()
            self._check_finite(val["loss"], "the validation loss", progress.iteration,
                               cause=self._validation_scale(scores))
        train = self._running.means()
        self._running = _RunningMeans()
        averaged = {}
        if self.average and self.average.count:
            self._measure_average_buffers()
            with self.average.swapped_in(self.model) as model:
                scores = model.predict(self.X_val)
            result = measure(scores, self.y_val, self.model.loss_name)
            averaged = {"avg_val_loss": result["loss"],
                        "avg_val_accuracy": result["accuracy"]}
        record = self._record({
            "kind": "epoch", "lr": self.rule.lr, **train,
            "val_loss": val["loss"], "val_accuracy": val["accuracy"], **averaged,
            **self._diagnostics,
        })
        if self.watcher:
            lr, base = self.rule.lr, self.schedule.base_lr
            self.watcher.check_diagnostics(
                self._diagnostics,
                rate_lowered=lr is not None and lr < LOWERED_RATE * base,
                clipping=bool(self.config["clip"]),
                decay=(lr or 0.0) * (self._weight_decay() or 0.0))
            self.watcher.check_curve(record.get("train_accuracy"),
                                     record["val_accuracy"])
        self._diagnostics = {}
        self.history.append(record)
        progress.last_eval_iteration = progress.iteration

        monitor = self.config["monitor"]
        improved = monitor_improved(monitor, record[monitor], progress.best_value)
        self.schedule.observe(record[monitor], improved)
        if improved:
            progress.best_value = record[monitor]
            progress.best_epoch = progress.epoch
            progress.best_iteration = progress.iteration
        self._report(record, improved)
        # Counted before the saves, so that the checkpoints of this evaluation hold
        # all it changed: a run resumed from them goes on as this one does.
        self._count_for_early_stopping(record[monitor])
        if self.run:
            # last.npz last, as the commit: a kill, a failed write or a second
            # signal before it leaves last.npz before this evaluation, and a resume
            # from it makes the evaluation again, with its snapshot and best.npz,
            # and ends as this run does. The other order would leave last.npz
            # counting this epoch as done without its snapshot, or these weights
            # as the best without them in best.npz. The epoch early stopping ends
            # gets no snapshot: last.npz and best.npz keep the run's end.
            if epoch_end and self.stop_reason is None:
                self._snapshot()
            if improved:
                self.save(self.run.checkpoints / "best.npz")
            self.save(self.run.checkpoints / "last.npz")
        if self.stop_reason is not None:
            if self.reporter:
                self.reporter.line(self.stop_reason)
            raise _EarlyStop

    def _final_evaluation(self) -> None:
        """Evaluate the weights the run ends with, which no evaluation point measured.

        The evaluation belongs to this run's length alone: a run extended later, like
        one that long from the start, trains on past this iteration without
        evaluating it. So the checkpoints saved from here on also keep the state that
        this evaluation changes as it was before it; an extension continues from that
        state and drops this evaluation's records (``restore_state``), so that its
        records, schedule, early stopping and training means are those of an
        uninterrupted run.
        """
        state = self.state_meta()
        # A deep copy: the watcher's curve is a list the evaluation appends to.
        self._before_final_evaluation = copy.deepcopy(
            {key: state[key] for key in EVALUATED_STATE})
        # The last update's diagnostics, which a longer run may measure for its
        # next evaluation (_diagnoses).
        self._before_final_evaluation["pending_diagnostics"] = dict(self._diagnostics)
        self._evaluate()

    def _snapshot(self) -> None:
        """Keep this epoch's weights apart every train.snapshot_every epochs."""
        every = self.config["snapshot_every"]
        if self.run and every and self.progress.epoch % every == 0:
            name = f"snapshot-epoch-{self.progress.epoch:04d}.npz"
            self.save(self.run.checkpoints / name)

    def _count_for_early_stopping(self, value: float) -> None:
        """Count evaluations without a gain of more than min_delta over the best
        value so far; after ``patience`` of them, set ``stop_reason`` (the run ends
        once this evaluation is saved, and its checkpoints say so)."""
        setting = self.config["early_stopping"]
        if not setting:
            return
        progress = self.progress
        reference = progress.early_stopping_best
        gain = None if reference is None else (
            reference - value if self.config["monitor"].endswith("loss")
            else value - reference)
        if gain is None or gain > setting["min_delta"]:
            progress.early_stopping_best = value
            progress.bad_evaluations = 0
            return
        progress.bad_evaluations += 1
        if progress.bad_evaluations >= setting["patience"]:
            self.stop_reason = (
                f"early stopping: {self.config['monitor']} has not improved by more"
                f" than {setting['min_delta']:g} for"
                f" {counted(setting['patience'], 'evaluation')}"
            )
            self._record({"kind": "event", "event": "early_stop",
                          "reason": self.stop_reason})

    def _report(self, record: dict, improved: bool) -> None:
        if not self.reporter:
            return
        seen = f"epoch {record['epoch']:>3}  iter {record['iteration']:>6}"
        train = ""
        if "loss" in record:
            train = (f"  loss {short_number(record['loss'])}  train_acc"
                     f" {record['train_accuracy']:.4f}")
        val = (f"  val_loss {short_number(record['val_loss'])}"
               f"  val_acc {record['val_accuracy']:.4f}")
        mark = "  *" if improved else ""
        self.reporter.line(f"{seen}{train}{val}  {record['seconds']:.1f}s{mark}")

    def _stop(self, signum: int) -> None:
        where = ""
        if self.run:
            last = self.run.checkpoints / "last.npz"
            self.save(last)
            where = f"; the state is saved in {last}. {self._resume_command()}"
        name = signal.Signals(signum).name
        raise StopRequested(
            f"stopped by {name} at iteration {self.progress.iteration}{where}",
            SIGNAL_EXIT_CODES[signum],
        )

    def _stopped_at_once(self, error: Interrupted) -> BaseException:
        """What a second signal (``error``) ends the run with: a StopRequested
        saying how to resume when the run has saved its last.npz, else ``error``
        itself (the command line says that no checkpoint holds the run)."""
        last = self.run.checkpoints / "last.npz" if self.run else None
        if not (last and self.run.saved and last.is_file()):
            return error
        return StopRequested(
            f"{error} after iteration {self.progress.iteration}; {last} holds"
            f" the run's last saved state. {self._resume_command()}",
            error.exit_code)

    def _resume_command(self) -> str:
        # A command to paste: a path with spaces or quotes must survive the shell.
        config, run = (shlex.quote(str(path)) for path in
                       (self.run.path / "config.yaml", self.run.path))
        return f"Resume with: nntrain fit {config} --resume {run}"

    def state_meta(self) -> dict:
        """Everything, besides the arrays, that a resumed run needs to continue
        exactly as if it had never stopped, as JSON-ready values."""
        return {
            "progress": vars(self.progress).copy(),
            "optimizer_steps": self.rule.steps,
            "lr": self.rule.lr,
            "schedule": self.schedule.state(),
            # The generator as it was when the current epoch's order was drawn, so a
            # resumed run can redraw that order and skip the batches already done.
            "shuffle_state_at_epoch_start": getattr(self, "_epoch_start_state", None),
            "dropout_state": self._dropout_state(),
            "running_means": {"samples": self._running.samples,
                              "sums": self._running.sums},
            "divergence": {"first_loss": self._first_loss,
                           "first_data_loss": self._first_data_loss,
                           "high_streak": self._high_streak},
            "warned": sorted(self.watcher.said) if self.watcher else [],
            "curve": self.watcher.history if self.watcher else [],
            "seconds": time.perf_counter() - self._start_time,
            "history": self.history,
            "stopped_early": self.stop_reason is not None,
            "average_count": self.average.count if self.average else 0,
            "before_final_evaluation": self._before_final_evaluation,
            # Diagnostics measured one update before the evaluation they belong to.
            "pending_diagnostics": self._diagnostics or None,
        }

    def _dropout_generator(self):
        return next((layer.rng for layer in self.model.layers
                     if layer.kind == "dropout"), None)

    def _dropout_state(self):
        rng = self._dropout_generator()
        return None if rng is None else rng.bit_generator.state

    def restore_state(self, meta: dict, optim_arrays: dict) -> None:
        """Continue from a checkpoint's solver state (its arrays are already in the
        model). L-BFGS keeps only its parameters: its history starts empty.

        A run extended past the final evaluation of a shorter one continues from the
        state before that evaluation, without its history record: the evaluation
        measured an iteration that is no evaluation point of the longer run.
        """
        pending = meta.get("pending_diagnostics")
        if drops_final_evaluation(meta, self.total_iterations):
            iteration = meta["progress"]["iteration"]
            history = [record for record in meta["history"]
                       if record.get("iteration") != iteration]
            meta = {**meta, **meta["before_final_evaluation"], "history": history}
            pending = meta.get("pending_diagnostics")
        self.progress = Progress(**meta["progress"])
        if pending and self._diagnosed_early(0, self.progress.batch_in_epoch - 1):
            self._diagnostics = dict(pending)
        if self.full_batch:
            self.rule.steps = meta["optimizer_steps"]
        else:
            self.rule.load_state_arrays(optim_arrays, meta["optimizer_steps"])
        self.schedule.load_state(meta["schedule"])
        if meta.get("lr") is not None:
            # The rate of the last update, which each update sets anew: the final
            # evaluation of a run resumed after its last update records it.
            self.rule.lr = meta["lr"]
        self.history = list(meta["history"])
        if meta["shuffle_state_at_epoch_start"] is not None:
            self._resume_epoch_state = meta["shuffle_state_at_epoch_start"]
        rng = self._dropout_generator()
        if rng is not None and meta["dropout_state"] is not None:
            rng.bit_generator.state = meta["dropout_state"]
        self._running.samples = meta["running_means"]["samples"]
        self._running.sums = dict(meta["running_means"]["sums"])
        self._first_loss = meta["divergence"]["first_loss"]
        # None in checkpoints written before it was kept, for the rest of the run:
        # the rule it feeds (_cause) then falls back on the learning rate.
        self._first_data_loss = meta["divergence"].get("first_data_loss")
        self._high_streak = meta["divergence"]["high_streak"]
        if self.watcher:
            self.watcher.said = set(meta["warned"])
            self.watcher.history = [tuple(pair) for pair in meta["curve"]]
        self.elapsed_before = meta["seconds"]

    def restore_average(self, arrays: dict, count: int,
                        buffers: dict | None = None) -> None:
        """Continue the average from a checkpoint's ``average/`` arrays: the
        weights, and the batch norm statistics saved with them (None or empty for
        a checkpoint older than them: they are measured again when needed)."""
        if self.average and count:
            self.average.load(arrays, count, buffers)

    def _measure_average_buffers(self) -> None:
        """Give the averaged weights batch norm statistics of their own, measured
        on the training split in the run's batches (one pass, only when batch norm
        is there and the averages moved since the last time). L-BFGS, whose one
        batch is the whole split, never averages (config.py refuses the pair)."""
        self.average.measure_buffers(self.model, self.X_train,
                                     self.config["batch_size"])

    def _average_arrays(self) -> dict:
        """What a checkpoint keeps under ``average/`` (nothing before the first
        update)."""
        if not (self.average and self.average.count):
            return {}
        self._measure_average_buffers()
        return self.average.state_arrays()

    def save(self, path) -> None:
        arrays = {
            "param": self.model.params,
            "buffer": self.model.buffers,
            "optim": self.rule.state_arrays(),
            "average": self._average_arrays(),
            **self.checkpoint_arrays,
        }
        for group in ("param", "buffer", "optim", "average"):
            # Never write a checkpoint that holds NaN or inf. The parameters are
            # checked whenever the loss goes non-finite, so they became so at the
            # last update; the other arrays are checked here only, so "by" it.
            when = "at" if group == "param" else "by"
            for name, value in arrays[group].items():
                self._check_finite(_finiteness(value), f"{group}/{name}",
                                   self.progress.iteration, when=when)
        meta = {**self.checkpoint_meta, "solver": self.state_meta()}
        if self.run:
            # A resumed run's first save: its dropped files go aside and its
            # records to metrics.jsonl first.
            self.run.checkpoint_saving()
        kept = _kept_checkpoints(Path(path))  # before the write, which may fail
        elsewhere = self.run.elsewhere if self.run else NEW_RUN_ELSEWHERE
        try:
            save_checkpoint(path, meta, arrays)
        except OSError as error:
            raise TrainingError(
                f"cannot write {path} ({error.strerror or error}): {write_fix(error)},"
                f" {elsewhere}; {kept}"
            ) from None
        if self.run:
            # The run's state is on disk: a resumed run's folder may now follow it.
            self.run.checkpoint_saved()


def _kept_checkpoints(path: Path) -> str:
    """What a failed write of the checkpoint ``path`` leaves the run to resume
    from, as its message says it: the file it was to replace, the checkpoints
    saved before, or none at all."""
    if path.is_file():
        return f"the previous {path.name} is intact"
    if any(path.parent.glob("*.npz")):
        return "the checkpoints saved before are intact"
    return "the run has no checkpoint yet to resume from"
