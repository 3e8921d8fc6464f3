"""How long to train by default: sized by the data and this machine's speed, not a fixed epoch count.

The rule: at least `min_steps` optimizer steps and at least `min_passes` passes over the
training examples, whichever is more, capped by `--max-minutes` using the time per step
measured on this machine before training starts. `--epochs` or `--max-steps` replace the
rule (and a `--max-minutes` given with them caps them the same way). A `TimeCap` callback also
stops a run that overruns the cap (a slower second half, another program taking the CPU) and keeps what it learned.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from training.cli import say


@dataclass
class Rule:
    """A task's default amount of training."""

    min_steps: int
    min_passes: float
    max_minutes: float
    unit: str = "examples"  # what the data is counted in, for the start line
    max_passes: float | None = None  # never more than this many passes (a pretrained base overfits)
    # A rule with a ceiling is sized by learning, not by the clock: its steps are the rule's on any machine,
    # max_minutes is what they take on a quiet one, and a slow or busy machine gets up to `ceiling` times
    # that before the run stops (saving a state that --resume continues). Without one, max_minutes caps the
    # plan itself (the similarity stages, whose every extra minute still helps, and chat).
    ceiling: float | None = None

    def wanted_steps(self, steps_per_epoch: int) -> int:
        wanted = max(self.min_steps, math.ceil(self.min_passes * steps_per_epoch))
        if self.max_passes is not None:
            wanted = min(wanted, max(1, math.ceil(self.max_passes * steps_per_epoch)))
        return wanted

    def ceiling_minutes(self, max_minutes: float | None) -> float | None:
        """The hard stop of a default run: the rule's ceiling, unless --max-minutes set a cap of its own."""
        return self.max_minutes * self.ceiling if self.ceiling and max_minutes is None else None


@dataclass
class Plan:
    steps: int
    epochs: float
    seconds_per_step: float | None
    reason: str
    capped: bool = False
    wanted: int | None = None  # what the rule or --epochs/--max-steps asked for, before the time cap


def measure_step(
    model, collator, dataset, batch_size: int, grad_accum: int = 1, bf16: bool = False, trials: int = 3
) -> float:
    """Seconds per optimizer step: forward and backward on real batches, no weight update (the
    model is left as it was). The optimizer's own work is a small share and is added as 15%."""
    import random

    import torch

    # Training batches hold similar lengths (group_by_length), so time a batch of the middle length, not a
    # random one padded to its longest item: a random batch over-estimated 2,000 LCCC dialogues 3x.
    sample = sorted(
        random.Random(0).sample(range(len(dataset)), min(len(dataset), 16 * batch_size)),
        key=lambda i: len(dataset[i]["input_ids"]),
    )
    middle = max(0, len(sample) // 2 - batch_size // 2)
    items = [dataset[i] for i in sample[middle : middle + batch_size]]
    batch = {k: v for k, v in collator(items).items() if isinstance(v, torch.Tensor) and k != "offset_mapping"}
    device = next(model.parameters()).device
    batch = {k: v.to(device) for k, v in batch.items()}
    was_training = model.training
    model.train()
    times = []
    try:
        for _ in range(trials):
            t = time.perf_counter()
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                out = model(**batch)
            loss = out.loss if getattr(out, "loss", None) is not None else out.logits.float().mean()
            loss.backward()
            times.append(time.perf_counter() - t)
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    best = min(times[1:] or times)  # the first call pays one-off allocation costs
    return 1.15 * best * grad_accum


def plan(
    rule: Rule,
    items: int,
    steps_per_epoch: int,
    seconds_per_step: float | None,
    max_minutes: float | None,
    epochs: float | None,
    max_steps: int | None,
) -> Plan:
    """Steps and (fractional) epochs for a run; `reason` is the start line's explanation."""
    per = seconds_per_step
    if epochs is not None or max_steps is not None:  # the user's amount, capped only by a --max-minutes they also gave
        steps = math.ceil(epochs * steps_per_epoch) if epochs is not None else max_steps
        why = f"--epochs {epochs:g}" if epochs is not None else f"--max-steps {max_steps:,}"
        if max_minutes is not None and per and steps * per > max_minutes * 60:
            capped = max(1, int(max_minutes * 60 / per))
            reason = f"{why} capped by --max-minutes {max_minutes:g}"
            return Plan(capped, capped / steps_per_epoch, per, reason, True, steps)
        return Plan(steps, epochs if epochs is not None else steps / steps_per_epoch, per, why, wanted=steps)
    ceiling = rule.ceiling_minutes(max_minutes)
    cap = ceiling or (max_minutes if max_minutes is not None else rule.max_minutes)
    wanted = rule.wanted_steps(steps_per_epoch)
    steps, capped = wanted, False
    if per and wanted * per > cap * 60:
        steps, capped = max(1, int(cap * 60 / per)), True
    why = f"at least {rule.min_steps:,} steps and {rule.min_passes:g} passes over the data"
    if capped:
        limit = f"the {cap:g}-minute ceiling" if ceiling else f"--max-minutes {cap:g}"
        why = f"{why} would take ~{wanted * per / 60:.0f} min, so {limit} caps it"
    elif ceiling:
        why = f"{why}; stops at {ceiling:g} min at the latest"
    return Plan(steps, steps / steps_per_epoch, per, why, capped, wanted)


def describe(p: Plan, items: int, unit: str, processes: int = 1, batch: int | None = None) -> str:
    eta = f", ~{_minutes(p.steps * p.seconds_per_step)} on this machine" if p.seconds_per_step else ""
    per = f"; global batch {batch * processes:,} = {processes} processes x {batch:,}" if processes > 1 and batch else ""
    return (
        f"{items:,} {unit} -> {p.steps:,} steps ({p.epochs:.1f} passes{eta}{per}; {p.reason}); "
        f"--max-steps/--epochs/--max-minutes to change"
    )


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


# Shares of the time budget at which the plan is checked against the real step time. Several, each from
# the steps since the one before: a run whose first minute was slowed by another program planned 1,522
# masked-LM steps at the 8% check, ran them at 3x the speed once the CPU was free, and ended at 229 s of
# its 630 (with one later check at 40%, never reached).
REPLAN_AT = (0.08, 0.25, 0.5, 0.75)
ENDING_EARLY = 0.85  # a plan that runs out before this share of the budget is re-planned then too
REPLAN_MIN_S = 5  # and not before this many seconds of training (the first steps pay one-off costs)


def time_cap(seconds: float, budget_s: float | None = None, most_steps: int | None = None):
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
    from transformers import TrainerCallback

    class TimeCap(TrainerCallback):
        def __init__(self):
            self.seconds = seconds
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
            return self.hit or bool(self.replanned and most_steps and self.replanned[-1]["steps"] < most_steps)

        def on_train_begin(self, args, state, control, **kw):
            self.start = time.perf_counter()
            self.start_step = state.global_step
            self.since = (0.0, state.global_step)

        def on_step_end(self, args, state, control, lr_scheduler=None, **kw):
            elapsed = time.perf_counter() - self.start if self.start is not None else 0.0
            due = bool(self.checks) and elapsed >= max(self.checks[0], REPLAN_MIN_S)
            # the plan is about to end with much of the time left (the steps got faster after a check): once more
            ending = bool(
                budget_s
                and most_steps
                and state.max_steps < most_steps
                and state.global_step >= state.max_steps - 1
                and REPLAN_MIN_S <= elapsed < ENDING_EARLY * budget_s
            )
            over = self.start is not None and elapsed > seconds
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
                say(f"\nthe time cap ({_minutes(seconds)}) is reached at step {state.global_step}; finishing here")

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
            total = state.global_step + int(max(0.0, budget_s - elapsed) * 0.98 / per)
            total = max(state.global_step + 1, min(total, most_steps or total))
            if args.world_size > 1:  # every process must stop at the same step: the main one's plan
                (total,) = _all_max(args, [total if state.is_world_process_zero else 0])
            old = state.max_steps
            if abs(total - old) <= 0.02 * old or not _stretch(lr_scheduler, old, total):
                return
            state.max_steps = total
            self.replanned.append({"at_step": state.global_step, "seconds_per_step": round(per, 4), "steps": total})
            say(
                f"\nmeasured {per:.3f} s per step: {total:,} steps fit {_minutes(budget_s)} "
                f"(was {old:,}); the learning-rate schedule now ends there"
            )

    return TimeCap()


def _all_max(args, values: list[int]) -> list[int]:
    """The largest of each value over all processes (one all-reduce)."""
    import torch
    import torch.distributed as dist

    flags = torch.tensor(values, device=args.device)
    dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    return [int(x) for x in flags.tolist()]


def _stretch(lr_scheduler, old: int, new: int) -> bool:
    """Make a linear warmup-decay schedule (transformers' get_linear_schedule_with_warmup: a LambdaLR over a
    functools.partial with num_warmup_steps / num_training_steps) end at step `new`, warmup scaled alike.
    False, changing nothing, for any other schedule."""
    import functools

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


def convergence_note(
    log_history: list[dict], steps_planned: int, time_capped: bool, valid_improving: bool | None = None
) -> str | None:
    """One line when the training loss was still falling steeply at the end (more training would
    help), or never fell at all (nothing was learned); None when it levelled off. `valid_improving`
    False (the best validation score came before the end) means a falling training loss is
    overfitting, not unfinished training: no note then."""
    losses = [e["loss"] for e in log_history if "loss" in e and "step" in e]
    if len(losses) < 8:
        return None
    k = max(2, len(losses) // 5)
    first, before, last = sum(losses[:k]) / k, sum(losses[-2 * k : -k]) / k, sum(losses[-k:]) / k
    if first - last < 0.02 * first:
        return (
            f"warning: the training loss did not fall ({first:.3f} at the start, {last:.3f} at the end): the model "
            "learned "
            "nothing; try a lower --lr or more data"
        )
    if before - last > 0.05 * before and valid_improving is not False:
        from training.cli import from_the_app

        flag = "--max-minutes" if time_capped else "--epochs (or --max-minutes)"
        advice = f"raise {flag}"
        if from_the_app():  # the page's controls, not flags
            advice = "还可以多训练：选更大的 训练量 Amount，或按 继续 Resume choose a larger Amount, or Resume this run"
        return (
            f"note: the training loss was still falling at the end ({before:.3f} -> {last:.3f} over the last fifth "
            "of the run): "
            f"more training would help; {advice}"
        )
    return None
