"""The Trainer run shared by every task: the run plan (training/plan.py), the Trainer's arguments, its
callbacks (training/callbacks.py), resume, and the per-epoch metrics table. The output folder it trains
into is training/output.py's OutputFolder.

Output layout while training: `<output>.partial/states/checkpoint-N` (Trainer states,
optimizer included). When training ends, the model files are written into
`<output>.partial/`, the last state is kept as `resume_state/`, and the folder is renamed
to `<output>`, so a half-written checkpoint is never mistaken for a finished one.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from transformers import EarlyStoppingCallback, Trainer, TrainingArguments
from transformers.trainer_callback import ProgressCallback

from data.errors import InputError
from training.callbacks import EpochPrinter, ProgressFile, QuietProgress, StopOnInterrupt, ThreadKeeper, perplexity
from training.cli import process_count, say
from training.output import STATE_DIR, OutputFolder
from training.plan import RunPlan, plan_run
from training.sampling import GroupedTrainer
from training.schedule import convergence_note
from training.threads import BUSY_ABOVE, settle


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
            row["valid_perplexity"] = round(perplexity(e["eval_loss"]), 3)
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
            row["train_perplexity"] = round(perplexity(row["train_loss"]), 3)
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
    plan: RunPlan | None = None  # what the run was planned to train, decided once before it started


ONE_CPU_PROCESS = (
    "note: `accelerate launch --cpu` runs one process here, on {threads} thread(s); for several processes on CPU use "
    "`accelerate launch --multi_gpu --num_processes 2 ...` (gloo) or `torchrun --nproc_per_node 2 ...`"
)
MAX_EVALS = 20  # long runs (many short epochs on a small corpus) evaluate and save ~20 times, not every epoch


def training_arguments(
    options,
    plan: RunPlan,
    output: OutputFolder,
    has_eval: bool,
    metric: str = "loss",
    greater_is_better: bool = False,
    keep_best: bool = True,
) -> TrainingArguments:
    """The Trainer's arguments: the amount and learning rate from the plan, the rest from the options (RunArguments)."""
    per_epoch = plan.epochs <= MAX_EVALS
    strategy = "epoch" if per_epoch else "steps"
    every = max(1, math.ceil(plan.steps / MAX_EVALS))
    logging_steps = options.logging_steps or max(1, (plan.steps_per_epoch if per_epoch else every) // 10)
    use_cuda = torch.cuda.is_available()
    return TrainingArguments(
        output_dir=output.states,
        num_train_epochs=plan.epochs,
        learning_rate=plan.lr,
        per_device_train_batch_size=options.batch_size,
        per_device_eval_batch_size=options.batch_size,
        gradient_accumulation_steps=options.grad_accum,
        gradient_checkpointing=options.gradient_checkpointing,
        warmup_steps=options.warmup_ratio,  # a float < 1 is a ratio of the total steps (transformers 5)
        weight_decay=options.weight_decay,
        lr_scheduler_type="linear",
        bf16=options.bf16,
        use_cpu=not use_cuda,
        seed=options.seed,
        data_seed=options.seed,
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
        report_to=[options.report_to] if options.report_to not in ("none", "tensorboard") else [],
        log_level="error",
        log_level_replica="error",  # the default ("warning") made the other processes print load reports
        disable_tqdm=False,
        # 0: the batches are built in the training process; a worker process would also serve a cloze pass's views
        # from its own copy of the dataset, not those its lengths were grouped by (training/sampling.py)
        dataloader_num_workers=0,
        # several processes: every parameter gets a gradient in these models, so DDP skips the search for
        # unused ones (transformers' default ran it, with a warning per process, on every step)
        ddp_find_unused_parameters=False,
        # Our datasets hold exactly what each collator reads; the default would drop keys the
        # model's forward does not take (the cloze collator's offset_mapping for whole-word masks).
        remove_unused_columns=False,
    )


TENSORBOARD_DIR = "tensorboard"  # in the run's folder: `tensorboard --logdir checkpoints` finds every run's


def tracker_callbacks(options, output: OutputFolder) -> list:
    """--report-to tensorboard: the Trainer's own TensorBoard callback, writing into the run's folder (its working
    folder, which the publish renames into place) instead of the Trainer's states folder, which is removed."""
    if options.report_to != "tensorboard":
        return []
    from transformers.integrations import TensorBoardCallback

    callback = TensorBoardCallback()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    callback.logging_dir = os.path.join(output.work, TENSORBOARD_DIR, stamp)  # a resumed run: a second stamp
    return [callback]


@dataclass
class TrainingSetup:
    """What a task hands the shared Trainer run (training/pipeline.py builds it from the task's recipe)."""

    train_ds: object
    eval_ds: object
    collator: object
    metric: str = "loss"  # what picks the best evaluation
    greater_is_better: bool = False
    compute_metrics: Callable | None = None
    preprocess_logits: Callable | None = None
    callbacks: list = field(default_factory=list)
    before_train: Callable | None = None  # trainer -> a figure of the untouched model (e.g. general accuracy)
    keep_best: bool = True  # end with the best evaluation's weights (else the last ones, and best = last)
    trainer_class: type = GroupedTrainer


def _steps_per_epoch(setup: TrainingSetup, options, world: int) -> int:
    return max(1, math.ceil(len(setup.train_ds) / (options.batch_size * world * options.grad_accum)))


def plan_only(
    model, setup: TrainingSetup, options, *, lr, patience, max_minutes, rule, items, resume_from=None
) -> RunPlan:
    """The run's plan (training/plan.py, a training step timed on this machine), said; nothing trained (--check
    stops after it, run_training goes on)."""
    return plan_run(
        options,
        lr=lr,
        patience=patience,
        max_minutes=max_minutes,
        rule=rule,
        model=model,
        collator=setup.collator,
        train_ds=setup.train_ds,
        steps_per_epoch=_steps_per_epoch(setup, options, process_count()),
        resume_from=resume_from,
        items=items,
    )


def run_training(
    model,
    tokenizer,
    setup: TrainingSetup,
    options,
    output: OutputFolder,
    resume_from: str | None,
    *,
    lr: float,
    patience: int,
    max_minutes: float | None,
    rule=None,
    items: int | None = None,
) -> RunResult:
    """Plan the run once (training/plan.py), wire the datasets into a Trainer, train (resuming if asked), and
    report per-epoch figures. `options`: the parsed RunArguments, read and never written. rule: the task's
    default schedule (training.schedule.Rule), used when --epochs and --max-steps are not given; `items`
    is the count the start line names (lines, pairs, ...)."""
    world = process_count()
    if os.environ.get("ACCELERATE_USE_CPU") == "True" and "MASTER_ADDR" in os.environ and world == 1:
        # what `accelerate launch --cpu --num_processes 2` leaves (accelerate 1.x): one process on one thread,
        # since its several-CPU-process mode needs mpirun
        say(ONE_CPU_PROCESS.format(threads=os.environ.get("OMP_NUM_THREADS", "?")))
    keeper, threads = _free_cores(model)
    plan = plan_only(
        model,
        setup,
        options,
        lr=lr,
        patience=patience,
        max_minutes=max_minutes,
        rule=rule,
        items=items,
        resume_from=resume_from,
    )
    cap, stopper = plan.time_cap(), StopOnInterrupt()
    extra = [stopper, EpochPrinter(), ProgressFile(output.work), *setup.callbacks, *([cap] if cap else [])]
    extra += [keeper] if keeper else []
    extra += tracker_callbacks(options, output)
    trainer = _trainer(model, tokenizer, setup, options, plan, output, extra)
    start_epoch = _resume_point(resume_from, plan, output) if resume_from else 0.0
    # e.g. the general cloze accuracy of the untouched model
    measured_before = setup.before_train(trainer) if setup.before_train else None
    start = time.time()
    stopper.install()
    output.started = True
    try:
        result = trainer.train(resume_from_checkpoint=resume_from)
    except OSError as e:  # disk full while the Trainer saved a state: one line; the previous model is untouched
        raise InputError(
            f"could not save a training state in {output.work}: {e.strerror or e}; "
            f"the previous model in {output.final} is untouched"
        )
    finally:
        stopper.uninstall()
    wall = time.time() - start
    epochs = epoch_table(trainer.state.log_history)
    best, improving = _best_epoch(epochs, setup)
    note = convergence_note(trainer.state.log_history, plan.steps, bool(cap and cap.limited), improving)
    return RunResult(
        trainer,
        stopper.requested,
        epochs,
        best,
        float(result.metrics.get("train_runtime", wall)),
        wall,
        trainer.state.global_step,
        start_epoch,
        measured_before,
        note,
        bool(cap and cap.limited),
        _schedule_record(plan.schedule, cap, trainer.state.global_step, keeper, threads),
        plan,
    )


def _free_cores(model) -> tuple[ThreadKeeper | None, int | None]:
    """On CPU, train on the free cores only (another busy program makes spinning threads 3x slower,
    training/threads.py) and keep following them; (the keeper, the threads at the start)."""
    if next(model.parameters()).device.type != "cpu":
        return None, None
    threads, others = settle()
    if others is not None and others >= BUSY_ABOVE:
        say(f"another program uses {others:.1f} of {os.cpu_count()} cores: training on {threads} thread(s)")
    return ThreadKeeper(say), threads


def _trainer(model, tokenizer, setup: TrainingSetup, options, plan: RunPlan, output: OutputFolder, callbacks: list):
    """The task's Trainer class over the datasets, with the run's callbacks (early stopping when it keeps its best
    epoch and has something to score it on) and a quiet progress bar."""
    has_eval = setup.eval_ds is not None and len(setup.eval_ds) > 0
    args = training_arguments(options, plan, output, has_eval, setup.metric, setup.greater_is_better, setup.keep_best)
    if plan.patience and has_eval and setup.keep_best:
        callbacks = [*callbacks, EarlyStoppingCallback(early_stopping_patience=plan.patience)]
    trainer = setup.trainer_class(
        model=model,
        args=args,
        data_collator=setup.collator,
        train_dataset=setup.train_ds,
        eval_dataset=setup.eval_ds if has_eval else None,
        processing_class=tokenizer,
        compute_metrics=setup.compute_metrics,
        preprocess_logits_for_metrics=setup.preprocess_logits,
        callbacks=callbacks,
    )
    if trainer.pop_callback(ProgressCallback):
        trainer.add_callback(QuietProgress)
    return trainer


def _resume_point(resume_from: str, plan: RunPlan, output: OutputFolder) -> float:
    """The epoch a resumed run starts from (said); a run that had finished training is marked to be written."""
    with open(os.path.join(resume_from, "trainer_state.json")) as f:
        done = json.load(f)
    finished = done.get("epoch", 0) >= plan.epochs - 1e-6
    if finished and output.resumed_from and os.path.basename(output.resumed_from) == STATE_DIR:
        raise InputError(
            f"the run in {output.final} already trained {done.get('epoch', 0):g} epochs; pass a larger --epochs "
            "to continue it"
        )
    if finished:  # killed or stopped while its model was being written: write it now
        output.finished_state = True
        say(f"the interrupted run had finished training (step {done['global_step']}); writing its model")
    else:
        say(f"resuming from step {done['global_step']} (epoch {done.get('epoch', 0):.2f})")
    return float(done.get("epoch", 0.0))


def _best_epoch(epochs: list[dict], setup: TrainingSetup) -> tuple[dict | None, bool | None]:
    """The epoch kept (the best by the task's metric, or the last when the task keeps the last) and whether the
    last epoch was the best (None when nothing was scored)."""
    key = "valid_loss" if setup.metric == "loss" else setup.metric
    scored = [e for e in epochs if key in e]
    if not scored:
        return None, None
    pick = max if setup.greater_is_better else min
    best = dict(pick(scored, key=lambda e: e[key]) if setup.keep_best else scored[-1])
    return best, (scored[-1][key] == best[key] if setup.keep_best else None)


def _schedule_record(schedule: dict | None, cap, steps: int, keeper=None, threads=None) -> dict | None:
    """The start plan, the re-plans the time cap made from the real step time, and how the run ended."""
    if schedule is None and cap is None:
        return None
    record = dict(schedule or {})
    if schedule is not None and threads is not None:
        record["threads_at_start"] = threads
    if cap is not None:
        record["replanned"] = cap.replanned
        record["time_cap_s"] = round(cap.seconds, 1)
        record["ended_by_time_cap"] = cap.hit
    record["steps_trained"] = steps
    if keeper is not None and keeper.changes:
        record["thread_changes"] = keeper.changes
    return record


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
