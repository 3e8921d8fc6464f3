"""One training pipeline for every task: read data -> build the model -> plan -> train -> evaluate -> publish.

A task declares what is its own in a package (training/tasks/<task>/): its training facts once
(`Training`: script, options, reader, sample, demo), its options and a `Recipe`: how its data is
read, how a scratch or pretrained model is built, how examples are encoded and scored, what the report
and the model card add. Everything else is here, once: the output folder and resume checks, the base
model (and the fallback to scratch), the learning rate, LoRA, the Trainer run (training/runner.py,
planned once by training/plan.py), Ctrl-C, the report and publishing. A training script is then

    main = TRAINING.main  # training/tasks/__init__.py: options parsed before the recipe (torch) is imported

A fourth task is one package (tests/test_fourth_task.py trains one, declared in one file, from the
command line and from the app's Train tab).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field

from data import InputError, build_char_vocab, make_tokenizer
from training import history
from training.args import LoraArguments, RunArguments
from training.check import data_check
from training.cli import EXIT_INTERRUPTED, is_main_process, say
from training.models import SCRATCH, wrap_lora
from training.runner import RunResult, TrainingSetup, plan_only, run_training
from training.schedule import Rule
from training.steps import (
    base_report,
    extend_vocab,
    open_output,
    pick_base,
    publish,
    refuse_non_finite,
    refuse_oversized_batch,
    resumed_tokenizer,
    run_command,
    scratch_recipe,
    split_holdout,
    stop_if_interrupted,
)
from training.tasks import Training

STOP_REASON = "Ctrl-C / 停止 Stop"


@dataclass
class Data:
    """What a recipe read: the examples to train and validate on and what the report says of them."""

    train: list
    valid: list
    items: int  # the count the start line names (lines, dialogues, pairs)
    texts: list = field(default_factory=list)  # the text a scratch vocab is built from (and a base extended with)
    report: dict = field(default_factory=dict)  # training_report.json "data"


@dataclass
class NoCarry:
    """What a recipe keeps between its steps (`Recipe.carry`, a dataclass of the recipe's own): here, nothing."""


@dataclass
class Run:
    """One run's working state as the pipeline goes; the parsed options in it are never written to."""

    recipe: Recipe
    args: object  # the recipe's own options
    lora: LoraArguments
    options: RunArguments
    argv: list | None
    data: Data | None = None
    output: object = None  # training.output.OutputFolder
    resume_from: str | None = None
    choice: object = None  # training.models.BaseChoice: which base, from where
    model: object = None
    tokenizer: object = None
    max_len: int | None = None  # --max-len, or less where the base reads fewer positions
    small: bool = False  # trained with the from-scratch recipe (a scratch model or one as small)
    lr: float | None = None
    patience: int = 0
    setup: TrainingSetup | None = None
    train_tokens: int = 0
    carry: object = None  # an instance of the recipe's `carry` dataclass: its own values between its steps
    started_at: str | None = None  # local time, ISO 8601

    @property
    def scratch(self) -> bool:
        return self.choice.source == SCRATCH


class Recipe:
    """A task's training declaration. Subclasses set the class attributes and override the steps marked
    "override"; the others have defaults that fit most tasks."""

    training: Training = None  # the task's facts (training/tasks/<task>/__init__.py): its name, script, options
    what: str = "model"  # what the base must be, for messages ("masked-LM", "GPT-2 chat model")
    lora_targets: tuple = ("query", "value")
    lora_task_type: str | None = None  # peft's task type
    lora_fan_in_fan_out: bool = False  # GPT-2's Conv1D layers
    scratch_lr: float = 1e-3
    scratch_rule: Rule | None = None  # the default amount of training, from scratch ...
    pretrained_rule: Rule | None = None  # ... and on a pretrained base
    report_model_fields: tuple = ()  # config fields copied into the report's "model"
    carry: type = NoCarry  # what the recipe keeps between its steps (a dataclass; every field has a default)
    cuts_at_max_len: bool = True  # examples longer than --max-len are cut (not packed into windows): the check counts

    @property
    def task(self) -> str:
        return self.training.task

    @property
    def script(self) -> str:
        return self.training.script

    def train(self, args, lora, options, *, argv=None, callbacks=(), resumable: bool = True) -> int:
        """The pipeline on parsed options (or options built by another recipe for a stage of its own run,
        `resumable=False`: a stopped stage is resumed by its run, not by a command of its own)."""
        run = Run(self, args, lora, options, argv, carry=self.carry(), started_at=history.now_iso())
        run.data = self.read(run)
        if options.check:
            return self.check(run)
        run.output, run.resume_from = open_output(options, self.task, (args, lora))
        if not resumable:  # a stage of another run: that run's record is the one that counts
            return self.trained(run, callbacks, resumable)
        main = is_main_process()
        if main:
            words = [w for w in (sys.argv[1:] if argv is None else argv) if w != "--resume"]
            command, data = run_command(self.script, words), getattr(args, self.data_option)
            history.started(run.output.work, self.task, command, data, run.started_at)
        try:
            code = self.trained(run, callbacks, resumable)
        except BaseException as e:  # a refusal before training removes the folder, and the status with it
            if main:
                stopped = isinstance(e, KeyboardInterrupt)
                reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
                history.write_status(
                    run.output.work,
                    status=history.STOPPED if stopped else history.FAILED,
                    reason=STOP_REASON if stopped else reason,
                    ended_at=history.now_iso(),
                    trained=bool(run.output.started),
                )
            raise
        if main and code == EXIT_INTERRUPTED:
            history.write_status(
                run.output.work, status=history.STOPPED, reason=STOP_REASON, ended_at=history.now_iso()
            )
        return code

    @property
    def data_option(self) -> str:
        return self.training.data_option

    def check(self, run: Run) -> int:
        """--check: build the model and encode the data as the run would, say what it would meet and its plan (a
        step is timed), then stop: no output folder is made and nothing is trained."""
        self.prepare(run)
        plan_only(
            run.model,
            run.setup,
            run.options,
            lr=run.lr,
            patience=run.patience,
            max_minutes=self.max_minutes(run),
            rule=self.rule(run),
            items=run.data.items,
        )
        say("check only: nothing was trained and no output folder made (without --check it trains)")
        return 0

    def prepare(self, run: Run) -> None:
        """The base model, the from-scratch recipe's choice, learning rate and patience, the encoded examples, and
        the data check's lines: what a run and --check share."""
        self.build(run)
        run.small = scratch_recipe(run.choice, run.model)
        run.lr = run.options.lr or self.default_lr(run)
        run.patience = self.default_patience(run)
        run.setup = self.encode(run)
        for line in data_check(run):
            say(line)

    def trained(self, run: Run, callbacks, resumable: bool) -> int:
        """The pipeline after the output folder is open: build, plan, train, evaluate, publish."""
        lora, options, argv = run.lora, run.options, run.argv
        self.prepare(run)
        if resumable and is_main_process():
            history.write_status(run.output.work, base=run.choice.name)
        refuse_oversized_batch(run)
        run.setup.callbacks = [*callbacks, *run.setup.callbacks]
        if lora.lora:
            if run.scratch:
                say("warning: --lora on a scratch model trains small adapters over random weights; expect poor results")
            run.model = wrap_lora(
                run.model,
                lora.lora_r,
                lora.lora_alpha,
                lora.lora_dropout,
                list(self.lora_targets),
                self.lora_task_type,
                fan_in_fan_out=self.lora_fan_in_fan_out,
            )
        total, trainable = run.model.num_parameters(), run.model.num_parameters(only_trainable=True)
        say(f"parameters: {total / 1e6:.2f} M, trainable {trainable / 1e6:.2f} M")
        result = run_training(
            run.model,
            run.tokenizer,
            run.setup,
            options,
            run.output,
            run.resume_from,
            lr=run.lr,
            patience=run.patience,
            max_minutes=self.max_minutes(run),
            rule=self.rule(run),
            items=run.data.items,
        )
        if result.interrupted and not resumable:
            return EXIT_INTERRUPTED
        code = stop_if_interrupted(result, run.output, self.script, argv)
        if code is not None:
            return code
        refuse_non_finite(result, run.output)
        run.output.trained()
        report = base_report(self.task, run, result, total, trainable)
        report["data"] = run.data.report
        config = run.model.config
        report["model"].update({k: getattr(config, k) for k in self.report_model_fields if hasattr(config, k)})
        card, summary, generation_config = self.evaluate(run, result, report)
        report["verdict"] = self.training.verdict(report)
        publish(run.output, result, run.tokenizer, report, card, summary, generation_config)
        if report["verdict"]:
            say(f"usual range: {report['verdict']}")
        self.after_publish(run, result, report)  # the recipe's closing line is the last one said
        return 0

    # -- the steps ---------------------------------------------------------------------------------------

    def read(self, run: Run) -> Data:
        """Override: read the data files (say what was read and skipped); split off validation data."""
        raise NotImplementedError

    def holdout(self, run: Run, items: list, groups: list | None = None) -> tuple[list, list]:
        """A seeded --valid-ratio split (whole groups to one side when `groups` is given)."""
        return split_holdout(items, run.options.valid_ratio, run.options.seed, groups=groups)

    def load_pretrained(self, name: str, **kw):
        """Override: (model, tokenizer) of a Hub id or folder, or data.InputError with the reason."""
        raise InputError(f"{self.task} has no pretrained base: use --model scratch")

    def scratch_tokenizer(self, run: Run):
        """A character vocab of the text (characters seen at least --min-freq times), BERT's special tokens."""
        return make_tokenizer(build_char_vocab(run.data.texts, min_freq=run.args.min_freq))

    def scratch_model(self, run: Run, tokenizer):
        """Override: a small model from scratch over `tokenizer`."""
        raise NotImplementedError

    def positions(self, model) -> int:
        """How many positions a base reads: --max-len is cut to it."""
        return getattr(model.config, "max_position_embeddings", None) or getattr(model.config, "n_positions", 0)

    def build(self, run: Run) -> None:
        """The base model and tokenizer: the pretrained one (its vocab given the characters of the text it
        lacks, --max-len cut to its positions) or, when it cannot load, a scratch one with a character vocab."""
        loaded, run.choice = pick_base(run.args.model, self.loader(run), run.options, self.what)
        run.max_len = getattr(run.args, "max_len", None)  # a task's options may have no --max-len
        if not run.options.check:  # a stage before training (similarity's masked-LM) is training
            loaded = self.prepare_base(run, loaded)
        if loaded is None:
            tokenizer = resumed_tokenizer(run.resume_from) or self.scratch_tokenizer(run)
            run.model, run.tokenizer = self.scratch_model(run, tokenizer), tokenizer
            return
        self.use_base(run, *loaded)

    def loader(self, run: Run):
        """load_pretrained, or a function like it that gives the base what this run needs (a head's labels)."""
        return self.load_pretrained

    def prepare_base(self, run: Run, loaded):
        """(model, tokenizer) to build on, or None for a scratch model: `loaded` (the base, None when it cannot
        load), or what a stage trained first (similarity: a masked-LM on the pair text)."""
        return loaded

    def use_base(self, run: Run, model, tokenizer) -> None:
        """A loaded base: --max-len cut to the positions it reads, its vocab given the text's missing characters."""
        limit = self.positions(model)
        if limit and run.max_len and run.max_len > limit:
            say(f"warning: --max-len {run.max_len} is more than {run.choice.name} allows; using {limit}")
            run.max_len = limit
        run.tokenizer = extend_vocab(model, tokenizer, run.data.texts, run.choice, run.lora.lora, run.args.min_freq)
        run.model = model

    def label_counts(self, run: Run) -> dict[str, int] | None:
        """Override where examples have labels: training examples per label name (the check's balance line)."""
        return None

    def default_lr(self, run: Run) -> float:
        """The learning rate when --lr is not given."""
        return self.scratch_lr if run.small else 2e-4 if run.lora.lora else 5e-5

    def rule(self, run: Run) -> Rule | None:
        """The default amount of training (training/schedule.py) when --epochs and --max-steps are not given."""
        return self.scratch_rule if run.small else self.pretrained_rule

    def default_patience(self, run: Run) -> int:
        """Evaluations without a better score before the run stops, when --patience is not given."""
        return run.options.patience

    def max_minutes(self, run: Run) -> float | None:
        """The time this run's training is given: --max-minutes (a recipe with stages gives each its share)."""
        return run.options.max_minutes

    def encode(self, run: Run) -> TrainingSetup:
        """Override: the datasets, collator, metrics and callbacks of the Trainer run (run.train_tokens too)."""
        raise NotImplementedError

    def evaluate(self, run: Run, result: RunResult, report: dict) -> tuple[dict, str, object]:
        """After training: add the task's figures to `report`; return (model card fields: training.checkpoint's
        write_model_card, the closing summary's start, a GenerationConfig or None)."""
        best = result.best or {}
        name = os.path.basename(run.output.final)
        card = dict(
            title=f"{self.task} ({name})",
            pipeline_tag=None,
            tags=["chinese", self.task] + (["lora"] if run.lora.lora else []),
            metrics={k: v for k, v in best.items() if k != "epoch" and isinstance(v, (int, float))},
            summary_zh=self.training.description,
            summary_en=self.training.description,
            usage=f'from transformers import AutoModel\nmodel = AutoModel.from_pretrained("{run.output.final}")',
        )
        metric = run.setup.metric
        key = "valid_loss" if metric == "loss" else metric
        summary = f"best epoch {best['epoch']}: {metric} {best[key]:.4f}; " if key in best else ""
        return card, summary, None

    def after_publish(self, run: Run, result: RunResult, report: dict) -> None:
        """Lines said after the model is saved (what was learned, what to do next)."""
        if result.convergence:
            say(result.convergence)
