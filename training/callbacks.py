"""The Trainer callbacks of every run: Ctrl-C and SIGTERM, the progress file the app reads, the progress
bar, one line per evaluation, and the time cap that fits the plan to the real step time."""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import signal
import threading
import time

import torch
from transformers import TrainerCallback
from transformers.trainer_callback import ProgressCallback

from data.textio import write_atomic
from training.cli import from_the_app, say
from training.ownership import PROGRESS_FILE
from training.schedule import minutes_text
from training.threads import CHECK_EVERY_S, CpuShare, threads_for, user_fixed_threads


class StopOnInterrupt(TrainerCallback):
    """First Ctrl-C or SIGTERM (docker stop, systemd, Spaces): finish the current step, save a full
    resumable state, stop. A second one aborts."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.requested = False
        self._previous: dict = {}

    def install(self):
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)

    def uninstall(self):
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous = {}

    def _handle(self, signum, frame):
        if self.requested:
            self.uninstall()
            raise KeyboardInterrupt
        self.requested = True
        if from_the_app():  # the Stop button: no second Ctrl-C to press there
            say("\n停止中：这一步结束后保存可继续的状态 Stopping: saving a resumable state after this step...")
            return
        name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        say(f"\n{name}: saving a resumable state after this step (press Ctrl-C again to abort without saving)...")

    def on_step_end(self, args, state, control, **kwargs):
        requested = self.requested
        if args.world_size > 1:
            # every process must stop at the same step: one that stopped alone would wait forever in the
            # others' next gradient all-reduce (a signal reaches the processes at different moments)
            import torch.distributed as dist

            flag = torch.tensor([1 if requested else 0], device=args.device)  # NCCL needs it on the GPU
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            requested = bool(flag.item())
        if requested:
            self.requested = True
            control.should_save = True
            control.should_training_stop = True


class ProgressFile(TrainerCallback):
    """Writes step, planned steps, ETA, the latest loss and the loss curve (training and validation
    points) to `<output>.partial/progress.json` about once a second, so another process (the app's
    demo builds and Train tab) can show a run's progress without reading its terminal. Removed when
    the model is published."""

    MAX_POINTS = 400  # per curve; older points are thinned (every other one dropped) beyond it

    def __init__(self, folder: str, every_s: float = 1.0):
        self.path = os.path.join(folder, PROGRESS_FILE)
        self.every_s = every_s
        self.started = self.last = 0.0
        self.first_step = 0
        self.loss = None
        self.curve: dict[str, list] = {"train": [], "valid": []}

    def _add(self, name: str, step: int, value: float) -> None:
        points = self.curve[name]
        points.append([step, round(float(value), 4)])
        if len(points) > self.MAX_POINTS:
            self.curve[name] = points[::2]

    def write(self, state, phase: str) -> None:
        if not state.is_world_process_zero:
            return
        now = time.time()
        done = state.global_step - self.first_step
        left = max(0, state.max_steps - state.global_step)
        eta = (now - self.started) / done * left if done > 0 else None
        value = {
            "pid": os.getpid(),
            "phase": phase,
            "step": state.global_step,
            "max_steps": state.max_steps,
            "elapsed_s": round(now - self.started, 1),
            "eta_s": None if eta is None else round(eta, 1),
            "loss": self.loss,
            "curve": self.curve,
            "updated": now,
        }
        with contextlib.suppress(OSError):  # progress is a courtesy: a full disk must not stop training here
            write_atomic(self.path, json.dumps(value))
        self.last = now

    def on_train_begin(self, args, state, control, **kw):
        self.started, self.first_step = time.time(), state.global_step
        for entry in state.log_history:  # a resumed run: the curve so far, from the saved Trainer state
            if "loss" in entry:
                self._add("train", entry["step"], entry["loss"])
            if "eval_loss" in entry:
                self._add("valid", entry["step"], entry["eval_loss"])
        self.write(state, "training")

    def on_log(self, args, state, control, logs=None, **kw):
        if logs and "loss" in logs:
            self.loss = round(float(logs["loss"]), 4)
            self._add("train", state.global_step, logs["loss"])
        if logs and "eval_loss" in logs:
            self._add("valid", state.global_step, logs["eval_loss"])

    def on_step_end(self, args, state, control, **kw):
        if time.time() - self.last >= self.every_s:
            self.write(state, "training")

    def on_train_end(self, args, state, control, **kw):
        self.write(state, "saving")


class QuietProgress(ProgressCallback):
    """The Trainer's progress bar with the latest loss beside it, instead of a printed dict per log;
    no second bar for evaluation (it ran into the epoch lines), whose result is one line anyway."""

    def on_prediction_step(self, args, state, control, eval_dataloader=None, **kwargs):
        pass

    def on_step_end(self, args, state, control, **kwargs):
        # the time cap re-plans the run's length once it knows the real step time (schedule.time_cap): the
        # bar's total and ETA follow (the library's bar keeps the length it started with)
        if self.training_bar is not None and self.training_bar.total != state.max_steps:
            self.training_bar.total = state.max_steps
            self.training_bar.refresh()
        super().on_step_end(args, state, control, **kwargs)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and self.training_bar is not None and logs and "loss" in logs:
            self.training_bar.set_postfix(loss=f"{logs['loss']:.4f}", refresh=False)


class EpochPrinter(TrainerCallback):
    """One readable line per evaluation: epoch, train loss so far, valid loss, perplexity."""

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if state.is_world_process_zero and metrics and "eval_loss" in metrics:
            train = [
                e["loss"]
                for e in state.log_history
                if "loss" in e and e.get("epoch", 0) > (state.epoch or 0) - 1 + 1e-9
            ]
            tl = f"train loss {sum(train) / len(train):.4f}, " if train else ""
            extra = "".join(
                f", {k[5:].replace('_', ' ')} {v:.4f}"
                for k, v in metrics.items()
                if k.startswith("eval_")
                and k != "eval_loss"
                and isinstance(v, float)
                and not k.endswith(("runtime", "per_second"))
            )
            ppl = (
                "" if extra else f", perplexity {perplexity(metrics['eval_loss']):.2f}"
            )  # perplexity means something for LMs only
            say(f"{_where(state)}: {tl}valid loss {metrics['eval_loss']:.4f}{ppl}{extra}")


def _where(state) -> str:
    """ "epoch 1.50" for a run of a few passes; "step 5,200 (pass 2,600)" for a tiny corpus read thousands of
    times, where fractional epochs are noise (issue #38)."""
    if state.epoch is None or state.epoch < 100:
        return f"epoch {state.epoch or 0:.2f}"
    return f"step {state.global_step:,} (pass {state.epoch:,.0f})"


def perplexity(loss: float) -> float:
    return math.exp(min(loss, 50.0))


# Shares of the time budget at which the plan is checked against the real step time. Several, each from
# the steps since the one before: a run whose first minute was slowed by another program planned 1,522
# masked-LM steps at the 8% check, ran them at 3x the speed once the CPU was free, and ended at 229 s of
# its 630 (with one later check at 40%, never reached).
REPLAN_AT = (0.08, 0.25, 0.5, 0.75)
ENDING_EARLY = 0.85  # a plan that runs out before this share of the budget is re-planned then too
REPLAN_MIN_S = 5  # and not before this many seconds of training (the first steps pay one-off costs)


class TimeCap(TrainerCallback):
    """A callback that ends training (evaluating and saving first) once `seconds` have passed.

    With `budget_s` it also fits the plan to the real speed: the probe before training times three
    forward-backward passes, and a run's real steps differ (the masked-LM head runs only at masked
    positions, the optimizer, evaluation, another program on the CPU at the start). Measured on the
    default similarity run: probed 0.139 s per step, trained at 0.089, so its masked-LM stage planned
    4,530 steps for 10.5 minutes and ended in 6.7. At 8%, 25%, 50% and 75% of the budget the steps left
    are re-planned from the speed since the previous check (never more than `most_steps`, what the rule
    or --epochs asked for), and the linear learning-rate schedule is stretched to end with them: the
    decay ends when the time does, instead of early (time unused) or late (cut before it fell).
    """

    def __init__(self, seconds: float, budget_s: float | None = None, most_steps: int | None = None):
        self.seconds, self.budget_s, self.most_steps = seconds, budget_s, most_steps
        self.start = None
        self.start_step = 0
        self.hit = False
        self.checks = [budget_s * share for share in REPLAN_AT] if budget_s else []
        self.replanned: list[dict] = []
        self.since = (0.0, 0)  # (elapsed seconds, step) of the last check: the speed is measured from there
        self.evaluated_at = self.saved_at = None  # steps of the last evaluation and save

    @property
    def limited(self) -> bool:
        """The time, not the amount asked for, ended the run: the cap was hit or the plan cut to fit it."""
        return self.hit or bool(self.replanned and self.most_steps and self.replanned[-1]["steps"] < self.most_steps)

    def on_train_begin(self, args, state, control, **kw):
        self.start = time.perf_counter()
        self.start_step = state.global_step
        self.since = (0.0, state.global_step)

    def on_step_end(self, args, state, control, lr_scheduler=None, **kw):
        elapsed = time.perf_counter() - self.start if self.start is not None else 0.0
        due = bool(self.checks) and elapsed >= max(self.checks[0], REPLAN_MIN_S)
        # the plan is about to end with much of the time left (the steps got faster after a check): once more
        ending = bool(
            self.budget_s
            and self.most_steps
            and state.max_steps < self.most_steps
            and state.global_step >= state.max_steps - 1
            and REPLAN_MIN_S <= elapsed < ENDING_EARLY * self.budget_s
        )
        over = self.start is not None and elapsed > self.seconds
        if args.world_size > 1:  # the processes' clocks differ a little: all re-plan or stop when the first is due
            due, ending, over = (bool(x) for x in _all_max(args, [int(due), int(ending), int(over)]))
        if due:
            self.checks = [c for c in self.checks[1:] if c > elapsed]  # also when another process was due
        if due or ending:
            self._replan(args, state, lr_scheduler, elapsed)
        if over and not control.should_training_stop:
            self.hit = True
            control.should_training_stop = True
            control.should_evaluate = args.eval_strategy != "no"
            control.should_save = True
            say(f"\nthe time cap ({minutes_text(self.seconds)}) is reached at step {state.global_step}; finishing here")

    def on_evaluate(self, args, state, control, **kw):
        self.evaluated_at = state.global_step

    def on_save(self, args, state, control, **kw):
        self.saved_at = state.global_step

    def on_epoch_end(self, args, state, control, **kw):
        # The Trainer ends the epoch it broke out of, and with per-epoch evaluation the default flow asks
        # for a second evaluation and save of the step the cap has just evaluated and saved (seen: three
        # "epoch 3.00" lines and a run 4 s over its 15 minutes). Runs after DefaultFlowCallback.
        if self.hit and self.evaluated_at == state.global_step:
            control.should_evaluate = False
        if self.hit and self.saved_at == state.global_step:
            control.should_save = False

    def _replan(self, args, state, lr_scheduler, elapsed: float) -> None:
        since_s, since_step = self.since
        done = state.global_step - since_step
        if done < 1:
            return
        self.since = (elapsed, state.global_step)
        per = (elapsed - since_s) / done
        total = state.global_step + int(max(0.0, self.budget_s - elapsed) * 0.98 / per)
        total = max(state.global_step + 1, min(total, self.most_steps or total))
        if args.world_size > 1:  # every process must stop at the same step: the main one's plan
            (total,) = _all_max(args, [total if state.is_world_process_zero else 0])
        old = state.max_steps
        if abs(total - old) <= 0.02 * old or not _stretch(lr_scheduler, old, total):
            return
        state.max_steps = total
        self.replanned.append({"at_step": state.global_step, "seconds_per_step": round(per, 4), "steps": total})
        say(
            f"\nmeasured {per:.3f} s per step: {total:,} steps fit {minutes_text(self.budget_s)} "
            f"(was {old:,}); the learning-rate schedule now ends there"
        )


def _all_max(args, values: list[int]) -> list[int]:
    """The largest of each value over all processes (one all-reduce)."""
    import torch.distributed as dist

    flags = torch.tensor(values, device=args.device)
    dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    return [int(x) for x in flags.tolist()]


def _stretch(lr_scheduler, old: int, new: int) -> bool:
    """Make a linear warmup-decay schedule (transformers' get_linear_schedule_with_warmup: a LambdaLR over a
    functools.partial with num_warmup_steps / num_training_steps) end at step `new`, warmup scaled alike.
    False, changing nothing, for any other schedule."""
    sched = getattr(lr_scheduler, "scheduler", lr_scheduler)  # accelerate's wrapper, if any
    lambdas = getattr(sched, "lr_lambdas", None)
    if not lambdas or not all(
        isinstance(f, functools.partial) and f.keywords.get("num_training_steps") == old for f in lambdas
    ):
        return False
    sched.lr_lambdas = [
        functools.partial(
            f.func,
            *f.args,
            **{
                **f.keywords,
                "num_training_steps": new,
                "num_warmup_steps": round(f.keywords.get("num_warmup_steps", 0) * new / old),
            },
        )
        for f in lambdas
    ]
    return True


class ThreadKeeper(TrainerCallback):
    """Re-measures the other processes every CHECK_EVERY_S while training and moves the thread count to the
    free cores (training/threads.py); its `changes` list is kept in the report."""

    def __init__(self, say=None):
        self.say = say
        self.share = CpuShare()
        self.next_check = time.monotonic() + CHECK_EVERY_S
        self.changes: list[dict] = []

    def on_step_end(self, args, state, control, **kw):
        if time.monotonic() < self.next_check or user_fixed_threads():
            return
        self.next_check = time.monotonic() + CHECK_EVERY_S
        others = self.share.others()
        if others is None:
            return
        now = torch.get_num_threads()
        want = threads_for(others, self.share.cores, now)
        if want != now:
            torch.set_num_threads(want)
            self.changes.append({"at_step": state.global_step, "others_cores": round(others, 2), "threads": want})
            if self.say:
                busy = "another program uses" if want < now else "other programs now use"
                self.say(f"\n{busy} {others:.1f} of {self.share.cores} cores: training on {want} thread(s)")
