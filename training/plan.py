"""The run plan: how much and how fast a run trains, decided once before the Trainer starts.

`plan_run()` turns the parsed options, the task's default rule (training/schedule.py), the data and a
step-time probe into a frozen `RunPlan`; the Trainer's arguments are made from it and the report
records it. Nothing writes back into the parsed options. While training, the time cap may re-plan the
steps from the real speed (training/callbacks.py TimeCap); those re-plans are recorded beside the plan
in the report's "schedule", not written into it.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass

from training.callbacks import TimeCap
from training.cli import process_count, say
from training.schedule import Rule, amount, describe, measure_step


@dataclass(frozen=True)
class RunPlan:
    steps_per_epoch: int
    epochs: float  # the Trainer's num_train_epochs: the planned steps over the steps per pass
    lr: float  # peak learning rate (--lr, else the task's default for this base)
    patience: int  # evaluations without a better score before the run stops (0: never)
    max_minutes: float | None  # the time this run was given (--max-minutes, or a stage's share of it)
    cap_s: float | None = None  # the time cap's hard stop (None: nothing caps the run)
    budget_s: float | None = None  # the time the steps are fitted to while training (None: no re-plans)
    most_steps: int | None = None  # re-plans never go above it (what the rule or --epochs asked for)
    schedule: dict | None = None  # how the amount was chosen: the report's "schedule", before the run

    @property
    def steps(self) -> int:
        return math.ceil(self.epochs * self.steps_per_epoch)

    def time_cap(self) -> TimeCap | None:
        return TimeCap(self.cap_s, self.budget_s, self.most_steps) if self.cap_s else None


def plan_run(
    options,
    *,
    lr: float,
    patience: int,
    max_minutes: float | None,
    rule: Rule | None,
    model,
    collator,
    train_ds,
    steps_per_epoch: int,
    resume_from: str | None,
    items: int | None,
) -> RunPlan:
    """The amount of training from --epochs, --max-steps, the resumed run's plan, or the task's rule, and the
    time cap that enforces `max_minutes` (None when nothing caps the run); says the plan once."""
    epochs, max_steps = options.epochs, options.max_steps
    if resume_from and epochs is None and max_steps is None:  # a resume keeps the plan it started with
        with open(os.path.join(resume_from, "trainer_state.json")) as f:
            planned = json.load(f).get("max_steps") or 0
        if planned and rule is not None and rule.ceiling and not max_minutes:
            # ... all of it: a ceiling (a busy machine) may have cut the plan short, --resume trains the rest
            planned = max(planned, rule.wanted_steps(steps_per_epoch))
        if planned:
            epochs = planned / steps_per_epoch
    common = dict(steps_per_epoch=steps_per_epoch, lr=lr, patience=patience, max_minutes=max_minutes)
    if rule is None:
        epochs = epochs or (max_steps / steps_per_epoch if max_steps else 3.0)
        return RunPlan(epochs=epochs, cap_s=max_minutes * 60 if max_minutes else None, **common)
    explicit = epochs is not None or max_steps is not None
    per = (
        None
        if explicit and not max_minutes
        else measure_step(model, collator, train_ds, options.batch_size, options.grad_accum, options.bf16)
    )
    p = amount(rule, items or len(train_ds), steps_per_epoch, per, max_minutes, epochs, max_steps)
    epochs = p.epochs
    ceiling = None if explicit else rule.ceiling_minutes(max_minutes)
    budget = (max_minutes or (None if explicit else ceiling or rule.max_minutes)) if per and not resume_from else None
    most = None
    if budget:
        # The run is fitted to the cap by its real step time once it trains (TimeCap); it can only end
        # earlier than it starts planned, so a capped plan starts at up to 3x the probe's steps (a probe
        # taken while another program held the CPU said 0.5 s per step; they took 0.15).
        most = p.wanted if not p.capped else min(p.wanted or p.steps, 3 * p.steps)
        epochs = most / steps_per_epoch
    if process_count() > 1:  # each process timed its own steps: all follow the main one's plan
        from accelerate.utils import broadcast_object_list

        epochs = broadcast_object_list([epochs])[0]
    if not resume_from:
        world = process_count()
        say(describe(p, items or len(train_ds), rule.unit, world, options.batch_size * options.grad_accum))
    budget_s = budget * 60 if budget else None
    record = {
        "reason": p.reason,
        "probed_seconds_per_step": None if per is None else round(per, 4),
        "planned_steps": p.steps,
        "wanted_steps": p.wanted,
        "budget_s": budget_s,
    }
    if max_minutes:
        cap_s = max_minutes * 60
    elif explicit:
        cap_s = None
    elif ceiling:  # sized by the rule, not the clock: the ceiling is the stop (a busy machine gets that long)
        record["ceiling_s"] = ceiling * 60
        cap_s = ceiling * 60
    else:  # the plan fits the cap; the 1.2 stops a run that overruns it
        cap_s = rule.max_minutes * 60 * 1.2 + 15
    if cap_s is None:
        budget_s = most = None  # nothing caps the run: no re-plans
    return RunPlan(epochs=epochs, cap_s=cap_s, budget_s=budget_s, most_steps=most, schedule=record, **common)
