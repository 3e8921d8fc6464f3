"""One package per task: `training/tasks/<task>/` holds everything that is the task's own.

    training/tasks/chat/__init__.py    TRAINING: the task's training facts, stated once (below)
    training/tasks/chat/options.py     its options (a dataclass: flags, --help, the Train tab's command)
    training/tasks/chat/recipe.py      its recipe (training.pipeline.Recipe: data, model, encoding, report)
    training/tasks/chat/demo.yaml      the demo model's options (read with --config)
    training/tasks/cloze/masking.py    helpers only that task uses sit beside its recipe

The shared machinery (pipeline, plan, output, runner, callbacks) stays in `training/`. A `Training`
declaration is light (no torch): the script, the app's Train tab, its demo builds and the serving
registry (chat/tasks.py) all read it, and it names the heavy modules by dotted path.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, fields

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# The roles a task's options give their fields (`metadata={"role": ...}`), read by training/steps.py and the Train tab:
TRAIN_FILE = "train"  # the training file: the Train tab's upload; its contents are part of the run's identity
DATA_FILE = "data"  # another file that shapes the model (dev pairs, a user dictionary): part of the identity
SIDE_FILE = "side"  # a file the run reads that does not change what is trained (quiz prompts, pairs to score)
OUTPUT_FILE = "output"  # a file the run writes besides its folder (not part of the identity)
INPUT_ROLES = (TRAIN_FILE, DATA_FILE, SIDE_FILE)


def _load(dotted: str):
    module, _, name = dotted.partition(":")
    return getattr(importlib.import_module(module), name)


def _dig(report: dict, path: str):
    """The value at a dotted path of a training report ("best.valid_perplexity"), or None."""
    value = report
    for key in path.split("."):
        value = value.get(key) if isinstance(value, dict) else None
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


@dataclass(frozen=True)
class Usual:
    """Where a task's figure usually lands (the benches, docs/benchmarks.md), so "is 3.2 good?" has an answer."""

    path: str  # dotted path in training_report.json
    name: str  # "困惑度 perplexity"
    low: float
    high: float
    on: str  # what the benches trained, on what data
    lower_is_better: bool = False
    percent: bool = False

    def show(self, value: float) -> str:
        return f"{value:.1%}" if self.percent else f"{value:.4g}"

    def verdict(self, report: dict) -> str | None:
        """One line: the run's figure against the usual range (the benches trained from scratch: a run from a
        pretrained base has no range yet), or None."""
        if report.get("base_model_source") not in (None, "scratch"):
            return None
        value = _dig(report, self.path)
        if value is None:
            return None
        span = f"{self.show(self.low)}–{self.show(self.high)}"
        better = value < self.low if self.lower_is_better else value > self.high
        worse = value > self.high if self.lower_is_better else value < self.low
        where = (
            "好于常见范围 better than usual"
            if better
            else "差于常见范围 worse than usual"
            if worse
            else ("在常见范围内 within the usual range")
        )
        return f"{self.name} {self.show(value)}: {where} ({span}, {self.on}; docs/benchmarks.md)"


@dataclass(frozen=True)
class Training:
    """A task's training facts: where its script is, which options and recipe it has, how its data is read
    (the Train tab's preview), its sample data and its demo model."""

    task: str  # recorded as "task" in training_report.json; chat.tasks serves it under this name
    script: str  # relative to the repo root (or absolute): the command a resume prints, the Train tab runs
    options: str  # "module:Class", the task's options dataclass
    recipe: str  # "module:Class", the task's training.pipeline.Recipe
    reader: str  # "module:function" reading the training file: returns .format, .encoding, .bad and `items`
    items: str = "rows"  # the reader result's attribute holding what it read, and what those are called
    sample: str | None = None  # sample data file, relative to the repo root
    your_file: str = "你的数据.txt"  # the training file's name in the one-line example (chat.tasks how_to_train)
    demo: str | None = None  # the demo model's options (YAML, read with --config), relative to the repo root
    # Time cap of the demo build on this CPU: on a 2-core AVX-512 machine, alone, the full demo recipes take about
    # 60 s (chat), 90 s (cloze) and 50 s (similarity); a slower or busier CPU trains fewer steps
    demo_minutes: float = 1.0
    description: str = ""  # --help's first line
    # The run's key figure: dotted paths into training_report.json, the first one present is used (the Runs page)
    metric: tuple[str, ...] = ()
    metric_name: str = ""  # e.g. "困惑度 perplexity"
    percent: bool = False  # the figure is a share (shown as a percentage)
    usual: Usual | None = None  # where the benches' runs of this task landed
    # (items, what to expect): under that many `items` the benches' runs from scratch learned little (--check says so)
    plenty: tuple[int, str] | None = None

    def key_figure(self, report: dict) -> tuple[float, str] | None:
        """(value, "name value") of a run's key figure, or None."""
        for path in self.metric:
            value = _dig(report, path)
            if value is not None:
                return value, f"{self.metric_name} {value:.1%}" if self.percent else f"{self.metric_name} {value:.4g}"
        return None

    def verdict(self, report: dict) -> str | None:
        return self.usual.verdict(report) if self.usual else None

    def options_class(self) -> type:
        return _load(self.options)

    def recipe_class(self) -> type:
        return _load(self.recipe)

    def path(self, relative: str) -> str:
        return relative if os.path.isabs(relative) else os.path.join(ROOT, relative)

    @property
    def data_option(self) -> str:
        """The options field of the training file (its role is TRAIN_FILE)."""
        return next(f.name for f in fields(self.options_class()) if f.metadata.get("role") == TRAIN_FILE)

    @property
    def data_flag(self) -> str:
        return "--" + self.data_option.replace("_", "-")

    def flags(self, values: dict) -> list[str]:
        """Command-line words for option values given by field name (the task's options, LoraArguments,
        RunArguments), in the order given: a name none of them has is refused (ValueError), True is a bare flag,
        None, False and "" are left out."""
        from training.args import LoraArguments, RunArguments

        known = {f.name for group in (self.options_class(), LoraArguments, RunArguments) for f in fields(group)}
        words: list[str] = []
        for name, value in values.items():
            if name not in known:
                raise ValueError(f"{self.script} has no option {name!r}")
            flag = "--" + name.replace("_", "-")
            if value is True:
                words.append(flag)
            elif value not in (None, False, ""):
                words += [flag, f"{value:g}" if isinstance(value, float) else str(value)]
        return words

    def read(self, path: str):
        """The task's reader over `path` (what the script will read from it)."""
        return _load(self.reader)(path)

    def main(self, argv: list[str] | None = None, callbacks=()) -> int:
        """The script: parse the command line with the task's options (light: --help and a mistyped flag answer at
        once), then import the recipe (torch, the Trainer: seconds) and train."""
        from training.args import LoraArguments, RunArguments, parse_args

        args, lora, options = parse_args(
            (self.options_class(), LoraArguments, RunArguments), argv, f"python {self.script}", self.description
        )
        return self.recipe_class()().train(args, lora, options, argv=argv, callbacks=callbacks)
