"""How long to train by default: sized by the data and this machine's speed, not a fixed epoch count.

The rule: at least `min_steps` optimizer steps and at least `min_passes` passes over the
training examples, whichever is more, capped by `--max-minutes` using the time per step
measured on this machine before training starts. `--epochs` or `--max-steps` replace the
rule (and a `--max-minutes` given with them caps them the same way). training/plan.py turns this into
the run's frozen RunPlan; training/callbacks.py's `TimeCap` stops a run that overruns the cap (a slower
second half, another program taking the CPU) and keeps what it learned.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass


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
class Amount:
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
    skip = ("offset_mapping", "text_positions")  # what the collator adds for the loss, not for the model
    batch = {k: v for k, v in collator(items).items() if isinstance(v, torch.Tensor) and k not in skip}
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


def amount(
    rule: Rule,
    items: int,
    steps_per_epoch: int,
    seconds_per_step: float | None,
    max_minutes: float | None,
    epochs: float | None,
    max_steps: int | None,
) -> Amount:
    """Steps and (fractional) epochs for a run; `reason` is the start line's explanation."""
    per = seconds_per_step
    if epochs is not None or max_steps is not None:  # the user's amount, capped only by a --max-minutes they also gave
        steps = math.ceil(epochs * steps_per_epoch) if epochs is not None else max_steps
        why = f"--epochs {epochs:g}" if epochs is not None else f"--max-steps {max_steps:,}"
        if max_minutes is not None and per and steps * per > max_minutes * 60:
            capped = max(1, int(max_minutes * 60 / per))
            reason = f"{why} capped by --max-minutes {max_minutes:g}"
            return Amount(capped, capped / steps_per_epoch, per, reason, True, steps)
        return Amount(steps, epochs if epochs is not None else steps / steps_per_epoch, per, why, wanted=steps)
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
    return Amount(steps, steps / steps_per_epoch, per, why, capped, wanted)


def describe(p: Amount, items: int, unit: str, processes: int = 1, batch: int | None = None) -> str:
    eta = f", ~{minutes_text(p.steps * p.seconds_per_step)} on this machine" if p.seconds_per_step else ""
    per = f"; global batch {batch * processes:,} = {processes} processes x {batch:,}" if processes > 1 and batch else ""
    return (
        f"{items:,} {unit} -> {p.steps:,} steps ({p.epochs:.1f} passes{eta}{per}; {p.reason}); "
        f"--max-steps/--epochs/--max-minutes to change"
    )


def minutes_text(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


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
