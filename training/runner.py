"""The Trainer run shared by every task: arguments, callbacks (Ctrl-C, progress, per-epoch
lines), resume, and the per-epoch metrics table. The output folder it trains into is
training/output.py's OutputPlan.

Output layout while training: `<output>.partial/states/checkpoint-N` (Trainer states,
optimizer included). When training ends, the model files are written into
`<output>.partial/`, the last state is kept as `resume_state/`, and the folder is renamed
to `<output>`, so a half-written checkpoint is never mistaken for a finished one.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import threading
import time
from dataclasses import dataclass

import torch
from transformers import EarlyStoppingCallback, Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_callback import ProgressCallback

from data.errors import InputError
from training.cli import from_the_app, process_count, say
from training.output import PROGRESS_FILE, STATE_DIR, OutputPlan
from training.schedule import convergence_note
from training.threads import BUSY_ABOVE, settle, thread_keeper


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
        tmp = f"{self.path}.{os.getpid()}.tmp"
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(value, f)
            os.replace(tmp, self.path)
        except OSError:  # progress is a courtesy: a full disk must not stop training here
            with contextlib.suppress(OSError):
                os.remove(tmp)
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
                "" if extra else f", perplexity {_ppl(metrics['eval_loss']):.2f}"
            )  # perplexity means something for LMs only
            say(f"{_where(state)}: {tl}valid loss {metrics['eval_loss']:.4f}{ppl}{extra}")


def _where(state) -> str:
    """ "epoch 1.50" for a run of a few passes; "step 5,200 (pass 2,600)" for a tiny corpus read thousands of
    times, where fractional epochs are noise (issue #38)."""
    if state.epoch is None or state.epoch < 100:
        return f"epoch {state.epoch or 0:.2f}"
    return f"step {state.global_step:,} (pass {state.epoch:,.0f})"


def _ppl(loss: float) -> float:
    return math.exp(min(loss, 50.0))


def epoch_table(log_history: list[dict]) -> list[dict]:
    """Per-epoch train loss (mean of logged losses in the epoch) and validation loss/perplexity; "epoch" is the
    ordinal, or the fractional epoch at which a partial last epoch was evaluated."""
    rows: dict[int, dict] = {}
    for e in log_history:
        if "epoch" not in e:
            continue
        n = max(1, math.ceil(e["epoch"] - 1e-6))
        row = rows.setdefault(n, {"epoch": n, "_train": []})
        if "loss" in e:
            row["_train"].append(e["loss"])
        if "eval_loss" in e:
            if (
                abs(e["epoch"] - n) > 1e-6
            ):  # a run stopped part-way through its last epoch (--epochs 2.6): say 2.6, not 3
                row["epoch"] = round(e["epoch"], 2)
            row["valid_loss"] = round(e["eval_loss"], 5)
            row["valid_perplexity"] = round(_ppl(e["eval_loss"]), 3)
            row.update(
                {
                    k[5:]: v
                    for k, v in e.items()
                    if k.startswith("eval_") and k not in ("eval_loss",) and not k.endswith(("runtime", "per_second"))
                }
            )
    out = []
    for n in sorted(rows):
        row = rows[n]
        train = row.pop("_train")
        if train:
            row["train_loss"] = round(sum(train) / len(train), 5)
            row["train_perplexity"] = round(_ppl(row["train_loss"]), 3)
        if len(row) > 1:
            out.append(row)
    return out


@dataclass
class RunResult:
    trainer: Trainer
    interrupted: bool
    epochs: list[dict]
    best: dict | None
    train_runtime_s: float
    wall_time_s: float
    global_step: int
    start_epoch: float = 0.0
    before_train: object = None
    convergence: str | None = None  # a warning when the loss never fell or was still falling steeply
    time_capped: bool = False
    schedule: dict | None = None  # how the amount of training was chosen (training_report.json "schedule")


MAX_EVALS = 20  # long runs (many short epochs on a small corpus) evaluate and save ~20 times, not every epoch


def training_arguments(
    run,
    plan: OutputPlan,
    has_eval: bool,
    steps_per_epoch: int,
    metric: str = "loss",
    greater_is_better: bool = False,
    keep_best: bool = True,
) -> TrainingArguments:
    total_steps = math.ceil(steps_per_epoch * run.epochs)
    per_epoch = run.epochs <= MAX_EVALS
    strategy = "epoch" if per_epoch else "steps"
    every = max(1, math.ceil(total_steps / MAX_EVALS))
    logging_steps = run.logging_steps or max(1, (steps_per_epoch if per_epoch else every) // 10)
    use_cuda = torch.cuda.is_available()
    return TrainingArguments(
        output_dir=plan.states,
        num_train_epochs=run.epochs,
        learning_rate=run.lr,
        per_device_train_batch_size=run.batch_size,
        per_device_eval_batch_size=run.batch_size,
        gradient_accumulation_steps=run.grad_accum,
        warmup_steps=run.warmup_ratio,  # a float < 1 is a ratio of the total steps (transformers 5)
        weight_decay=run.weight_decay,
        lr_scheduler_type="linear",
        bf16=run.bf16,
        use_cpu=not use_cuda,
        seed=run.seed,
        data_seed=run.seed,
        eval_strategy=strategy if has_eval else "no",
        save_strategy=strategy,
        eval_steps=None if per_epoch else every,
        save_steps=500 if per_epoch else every,
        save_total_limit=1,  # the best checkpoint is kept as well when load_best_model_at_end is on
        load_best_model_at_end=has_eval and keep_best,
        metric_for_best_model=metric if has_eval and keep_best else None,
        greater_is_better=greater_is_better if has_eval and keep_best else None,
        logging_strategy="steps",
        logging_steps=logging_steps,
        logging_first_step=True,
        train_sampling_strategy="group_by_length",  # similar lengths per batch: little padding
        report_to=[],
        log_level="error",
        log_level_replica="error",  # the default ("warning") made the other processes print load reports
        disable_tqdm=False,
        dataloader_num_workers=0,
        # several processes: every parameter gets a gradient in these models, so DDP skips the search for
        # unused ones (transformers' default ran it, with a warning per process, on every step)
        ddp_find_unused_parameters=False,
        # Our datasets hold exactly what each collator reads; the default would drop keys the
        # model's forward does not take (the cloze collator's offset_mapping for whole-word masks).
        remove_unused_columns=False,
    )


def run_training(
    model,
    tokenizer,
    train_ds,
    eval_ds,
    collator,
    run,
    plan: OutputPlan,
    resume_from: str | None,
    metric: str = "loss",
    greater_is_better: bool = False,
    compute_metrics=None,
    callbacks=(),
    preprocess_logits=None,
    before_train=None,
    keep_best: bool = True,
    trainer_class=Trainer,
    rule=None,
    items: int | None = None,
) -> RunResult:
    """Wire the datasets into a Trainer, train (resuming if asked), and report per-epoch figures.

    keep_best: end with the best evaluation's weights (else the last ones, and best = last).
    rule: the task's default schedule (training.schedule.Rule), used when --epochs and
    --max-steps are not given; `items` is the count the start line names (lines, pairs, ...)."""
    has_eval = eval_ds is not None and len(eval_ds) > 0
    world = process_count()
    if os.environ.get("ACCELERATE_USE_CPU") == "True" and "MASTER_ADDR" in os.environ and world == 1:
        # what `accelerate launch --cpu --num_processes 2` leaves (accelerate 1.x): one process on one thread,
        # since its several-CPU-process mode needs mpirun
        say(
            "note: `accelerate launch --cpu` runs one process here, on "
            f"{os.environ.get('OMP_NUM_THREADS', '?')} thread(s); for several processes on CPU use "
            "`accelerate launch --multi_gpu --num_processes 2 ...` (gloo) or `torchrun --nproc_per_node 2 ...`"
        )
    steps_per_epoch = max(1, math.ceil(len(train_ds) / (run.batch_size * world * run.grad_accum)))
    keeper = None
    on_cpu = next(model.parameters()).device.type == "cpu"
    if on_cpu:  # the free cores only: another busy program makes spinning threads 3x slower (training/threads.py)
        threads, others = settle()
        if others is not None and others >= BUSY_ABOVE:
            say(f"another program uses {others:.1f} of {os.cpu_count()} cores: training on {threads} thread(s)")
        keeper = thread_keeper(say)
    cap, schedule = schedule_run(run, rule, model, collator, train_ds, steps_per_epoch, resume_from, items)
    if schedule is not None and on_cpu:
        schedule["threads_at_start"] = threads
    args = training_arguments(run, plan, has_eval, steps_per_epoch, metric, greater_is_better, keep_best)
    stopper = StopOnInterrupt()
    cbs = [stopper, EpochPrinter(), ProgressFile(plan.work), *callbacks, *([cap] if cap else [])]
    cbs += [keeper] if keeper else []
    if run.patience and has_eval and keep_best:
        cbs.append(EarlyStoppingCallback(early_stopping_patience=run.patience))
    trainer = trainer_class(
        model=model,
        args=args,
        data_collator=collator,
        train_dataset=train_ds,
        eval_dataset=eval_ds if has_eval else None,
        processing_class=tokenizer,
        compute_metrics=compute_metrics,
        preprocess_logits_for_metrics=preprocess_logits,
        callbacks=cbs,
    )
    if trainer.pop_callback(ProgressCallback):
        trainer.add_callback(QuietProgress)
    start_epoch = 0.0
    if resume_from:
        with open(os.path.join(resume_from, "trainer_state.json")) as f:
            done = json.load(f)
        finished = done.get("epoch", 0) >= run.epochs - 1e-6
        if finished and plan.resumed_from and os.path.basename(plan.resumed_from) == STATE_DIR:
            raise InputError(
                f"the run in {plan.final} already trained {done.get('epoch', 0):g} epochs; pass a larger --epochs "
                "to continue it"
            )
        start_epoch = float(done.get("epoch", 0.0))
        if finished:  # killed or stopped while its model was being written: write it now
            plan.finished_state = True
            say(f"the interrupted run had finished training (step {done['global_step']}); writing its model")
        else:
            say(f"resuming from step {done['global_step']} (epoch {done.get('epoch', 0):.2f})")
    measured_before = before_train(trainer) if before_train else None  # e.g. accuracy of the untouched model
    start = time.time()
    stopper.install()
    plan.started = True
    try:
        output = trainer.train(resume_from_checkpoint=resume_from)
    except OSError as e:  # disk full while the Trainer saved a state: one line; the previous model is untouched
        raise InputError(
            f"could not save a training state in {plan.work}: {e.strerror or e}; "
            f"the previous model in {plan.final} is untouched"
        )
    finally:
        stopper.uninstall()
    wall = time.time() - start
    epochs = epoch_table(trainer.state.log_history)
    best = None
    key = "valid_loss" if metric == "loss" else metric
    scored = [e for e in epochs if key in e]
    if scored:
        pick = max if greater_is_better else min
        best = dict(pick(scored, key=lambda e: e[key]) if keep_best else scored[-1])
    improving = None if not scored or not keep_best else scored[-1][key] == best[key]
    note = convergence_note(
        trainer.state.log_history, math.ceil(run.epochs * steps_per_epoch), bool(cap and cap.limited), improving
    )
    return RunResult(
        trainer,
        stopper.requested,
        epochs,
        best,
        float(output.metrics.get("train_runtime", wall)),
        wall,
        trainer.state.global_step,
        start_epoch,
        measured_before,
        note,
        bool(cap and cap.limited),
        _schedule_record(schedule, cap, trainer.state.global_step, keeper),
    )


def _schedule_record(schedule: dict | None, cap, steps: int, keeper=None) -> dict | None:
    """The start plan, the re-plans the time cap made from the real step time, and how the run ended."""
    if schedule is None and cap is None:
        return None
    record = dict(schedule or {})
    if cap is not None:
        record["replanned"] = cap.replanned
        record["time_cap_s"] = round(cap.seconds, 1)
        record["ended_by_time_cap"] = cap.hit
    record["steps_trained"] = steps
    if keeper is not None and keeper.changes:
        record["thread_changes"] = keeper.changes
    return record


def schedule_run(
    run, rule, model, collator, train_ds, steps_per_epoch: int, resume_from: str | None, items: int | None
):
    """Set `run.epochs` from --epochs, --max-steps, the resumed run's plan, or the task's rule;
    return the TimeCap callback that enforces --max-minutes (None when nothing caps the run) and the plan
    for the report (None without a rule)."""
    from training.schedule import describe, measure_step, time_cap
    from training.schedule import plan as plan_steps

    if resume_from and run.epochs is None and run.max_steps is None:  # a resume keeps the plan it started with
        with open(os.path.join(resume_from, "trainer_state.json")) as f:
            planned = json.load(f).get("max_steps") or 0
        if planned and rule is not None and rule.ceiling and not run.max_minutes:
            # ... all of it: a ceiling (a busy machine) may have cut the plan short, --resume trains the rest
            planned = max(planned, rule.wanted_steps(steps_per_epoch))
        if planned:
            run.epochs = planned / steps_per_epoch
    if rule is None:
        run.epochs = run.epochs or (run.max_steps / steps_per_epoch if run.max_steps else 3.0)
        return (time_cap(run.max_minutes * 60) if run.max_minutes else None), None
    explicit = run.epochs is not None or run.max_steps is not None
    per = (
        None
        if explicit and not run.max_minutes
        else measure_step(model, collator, train_ds, run.batch_size, run.grad_accum, run.bf16)
    )
    p = plan_steps(rule, items or len(train_ds), steps_per_epoch, per, run.max_minutes, run.epochs, run.max_steps)
    run.epochs = p.epochs
    ceiling = None if explicit else rule.ceiling_minutes(run.max_minutes)
    budget = (
        (run.max_minutes or (None if explicit else ceiling or rule.max_minutes)) if per and not resume_from else None
    )
    most = None
    if budget:
        # The run is fitted to the cap by its real step time once it trains (schedule.time_cap); it can only
        # end earlier than it starts planned, so a capped plan starts at up to 3x the probe's steps (a probe
        # taken while another program held the CPU said 0.5 s per step; they took 0.15).
        most = p.wanted if not p.capped else min(p.wanted or p.steps, 3 * p.steps)
        run.epochs = most / steps_per_epoch
    if process_count() > 1:  # each process timed its own steps: all follow the main one's plan
        from accelerate.utils import broadcast_object_list

        run.epochs = broadcast_object_list([run.epochs])[0]
    if not resume_from:
        world = process_count()
        say(describe(p, items or len(train_ds), rule.unit, world, run.batch_size * run.grad_accum))
    budget_s = budget * 60 if budget else None
    record = {
        "reason": p.reason,
        "probed_seconds_per_step": None if per is None else round(per, 4),
        "planned_steps": p.steps,
        "wanted_steps": p.wanted,
        "budget_s": budget_s,
    }
    if run.max_minutes:
        return time_cap(run.max_minutes * 60, budget_s, most), record
    if explicit:
        return None, record
    if ceiling:  # sized by the rule, not the clock: the ceiling is the stop (a busy machine gets that long)
        record["ceiling_s"] = ceiling * 60
        return time_cap(ceiling * 60, budget_s, most), record
    # the plan fits the cap; the 1.2 stops a run that overruns it
    return time_cap(rule.max_minutes * 60 * 1.2 + 15, budget_s, most), record


def predict_in_order(trainer, dataset):
    """`trainer.predict(dataset).predictions` in the dataset's order.

    transformers 5 gives evaluation the training sampler's length grouping: with
    `train_sampling_strategy="group_by_length"` (set above for less padding) predictions come
    back sorted by length. Metrics do not care (labels travel with their predictions), but
    anything zipped with the input rows does, so evaluation is made sequential for this call.
    """
    strategy = trainer.args.train_sampling_strategy
    trainer.args.train_sampling_strategy = "random"  # the eval sampler is then SequentialSampler
    try:
        return trainer.predict(dataset).predictions
    finally:
        trainer.args.train_sampling_strategy = strategy
