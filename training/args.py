"""Argument groups shared by the training scripts, parsed by `HfArgumentParser`.

Every flag has a default and a one-line help; `--config FILE.yaml|json` supplies the same
keys (dashes or underscores), and flags on the command line override the file.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import math
import os
import sys
from dataclasses import dataclass, field, fields
from types import MappingProxyType

from data.errors import InputError

MAX_CONFIG_BYTES = 256 * 1024
# The pretrained base of the BERT tasks (cloze, similarity) when --model is not given
DEFAULT_BERT = "bert-base-chinese"


# --report-to: the tracker -> the package it needs (the Trainer's integrations do the logging)
TRACKERS = {"none": None, "tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}


def _f(default, help, **kw):
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class ScratchArguments:
    """The shape of a model built from scratch; each script's arguments extend it (cloze overrides the size)."""

    min_freq: int = _f(1, "scratch: keep characters seen at least this often")
    n_layer: int = _f(4, "scratch: transformer layers")
    n_embd: int = _f(256, "scratch: hidden size")
    n_head: int = _f(4, "scratch: attention heads")

    def __post_init__(self):
        require_finite(self)
        if self.min_freq < 1:
            raise InputError(f"--min-freq must be at least 1, got {self.min_freq}")
        if min(self.n_layer, self.n_embd, self.n_head) < 1 or self.n_embd % self.n_head:
            raise InputError(
                f"--n-embd ({self.n_embd}) must be a positive multiple of --n-head ({self.n_head}), with --n-layer >= 1"
            )
        need = scratch_training_bytes(self.n_layer, self.n_embd, getattr(self, "max_len", 512))
        have = physical_memory_bytes()
        if have and need > have:
            raise InputError(
                f"a model of --n-layer {self.n_layer} --n-embd {self.n_embd} with --max-len "
                f"{getattr(self, 'max_len', 512)} needs about {need / 2**30:,.0f} GiB to train; this machine has "
                f"{have / 2**30:,.0f} GiB: choose smaller sizes"
            )
        for flag, value, most in (
            ("--n-layer", self.n_layer, MAX_LAYERS),
            ("--n-embd", self.n_embd, MAX_EMBD),
            ("--n-head", self.n_head, MAX_HEADS),
            ("--max-len", getattr(self, "max_len", 0), MAX_LEN),
        ):
            if value > most:
                raise InputError(
                    f"{flag} must be at most {most:,} (got {value:,}): larger does not train on this kind of machine"
                )


# Sizes past which a run cannot be what was meant: GPT-2 XL has 48 layers of 1,600, BERT and GPT-2 read 512 and
# 1,024 positions. Larger values were typos that spent minutes building a model or failed at the first save.
MAX_LAYERS, MAX_EMBD, MAX_HEADS, MAX_LEN = 96, 8192, 128, 8192
MAX_BATCH = 65536  # sequences per step (and accumulation steps): beyond it, a typo; memory is checked separately
MAX_EPOCHS = 1_000_000
MAX_MINUTES = 7 * 24 * 60


def require_finite(options) -> None:
    """Every number option is a finite number: argparse reads `inf` and `nan` as floats, and `--epochs inf`
    reached the schedule as an OverflowError."""
    for f in fields(options):
        value = getattr(options, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise InputError(f"--{f.name.replace('_', '-')} must be a finite number, got {value}")


def scratch_training_bytes(n_layer: int, n_embd: int, max_len: int, vocab: int = 21128) -> int:
    """What training such a model costs at least, before any activation: weights, gradients and
    AdamW's two moments, fp32 (16 bytes a parameter). vocab: bert-base-chinese's, the largest used here."""
    parameters = (vocab + max_len) * n_embd + n_layer * 12 * n_embd * n_embd
    return 16 * parameters


def physical_memory_bytes() -> int | None:
    """This machine's memory, or the container's limit when that is lower (cgroup v2 or v1)."""
    try:
        have = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not on this platform: no check
        return None
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as f:
                limit = f.read().strip()
        except OSError:
            continue
        if limit.isdigit() and 0 < int(limit) < have:
            return int(limit)
    return have


@dataclass
class LoraArguments:
    lora: bool = _f(
        False,
        "train LoRA adapters instead of all weights (peft); the adapter goes to adapter/, merged weights to the top",
    )
    lora_r: int = _f(8, "LoRA rank")
    lora_alpha: int = _f(16, "LoRA scaling alpha")
    lora_dropout: float = _f(0.05, "dropout on the LoRA path")

    def __post_init__(self):
        require_finite(self)
        if self.lora_r < 1:
            raise InputError(f"--lora-r must be at least 1, got {self.lora_r}")
        if self.lora_alpha <= 0:
            raise InputError(f"--lora-alpha must be positive, got {self.lora_alpha}")
        if not 0 <= self.lora_dropout < 1:
            raise InputError(f"--lora-dropout must be in [0, 1), got {self.lora_dropout}")


@dataclass
class RunArguments:
    output: str = _f(None, "output checkpoint folder (default: checkpoints/<task>)")
    overwrite: bool = _f(False, "replace an existing output folder this program wrote (and an existing --output-file)")
    resume: bool = _f(False, "continue the interrupted or finished run in --output (optimizer state included)")
    epochs: float = _f(
        None, "passes over the training data (default: sized by the data and this machine; see the start line)"
    )
    max_steps: int = _f(None, "optimizer steps instead of --epochs")
    max_minutes: float = _f(
        None,
        "time cap: the default schedule is sized to end within it, and any run stops (saving) at it "
        "(default: chat 10, similarity 15 minutes; a cloze fact run keeps its steps, ~5 minutes on a quiet "
        "2-core machine, and stops at 15 at the latest)",
    )
    lr: float = _f(None, "peak learning rate (default: 5e-5 pretrained, 2e-4 with LoRA, 1e-3 from scratch)")
    batch_size: int = _f(16, "sequences per device per step")
    grad_accum: int = _f(1, "gradient accumulation steps")
    gradient_checkpointing: bool = _f(
        False,
        "recompute each layer's activations in the backward pass instead of keeping them: less memory for about "
        "half again the time (fine-tuning a 12x768 GPT-2 at batch 16: 8.8 -> 3.5 GB; docs/benchmarks.md)",
    )
    warmup_ratio: float = _f(0.05, "fraction of steps spent warming up the learning rate")
    weight_decay: float = _f(0.01, "AdamW weight decay")
    bf16: str = _f(
        "no",
        "bf16 mixed precision where it is fast (GPUs with bf16, CPUs with AMX or AVX512-BF16), else fp32 with a note; "
        "--bf16 force: always",
        nargs="?",
        const="auto",
        metavar="force",
    )
    seed: int = _f(42, "random seed (data split, initialisation, sampling order)")
    patience: int = _f(0, "stop after this many epochs without a better validation loss (0: never)")
    valid_ratio: float = _f(0.05, "fraction held out for validation when --valid-data is not given")
    logging_steps: int = _f(0, "log the training loss every N steps (0: about 10 times per epoch)")
    no_fallback: bool = _f(False, "fail instead of training from scratch when --model cannot be loaded")
    hub: str = _f(
        None,
        "where a Hub id in --model downloads from: huggingface (the default; HF_ENDPOINT, e.g. a mirror, is honoured) "
        "or modelscope (pip install modelscope; also USE_MODELSCOPE_HUB=1)",
        choices=["huggingface", "modelscope"],
    )
    report_to: str = _f(
        "none",
        "experiment tracker: tensorboard (logs in <output>/tensorboard/, so `tensorboard --logdir checkpoints` shows "
        "every run), wandb or mlflow when installed",
        choices=list(TRACKERS),
    )
    check: bool = _f(
        False,
        "read the data and say what training would meet (rows skipped, duplicates, characters the vocabulary lacks, "
        "lengths against --max-len, label balance, the time on this machine), then stop: nothing is trained or "
        "written",
    )
    config: str = _f(None, "YAML or JSON file with any of these options (flags override it)")

    def __post_init__(self):
        require_finite(self)
        module = TRACKERS.get(self.report_to)
        if module and importlib.util.find_spec(module) is None:
            raise InputError(f"--report-to {self.report_to} needs the {module} package: pip install {module}")
        checks = [
            (self.epochs is None or self.epochs > 0, f"--epochs must be positive, got {self.epochs}"),
            (
                self.epochs is None or self.epochs <= MAX_EPOCHS,
                f"--epochs must be at most {MAX_EPOCHS:,}, got {self.epochs}",
            ),
            (
                self.max_steps is None or self.max_steps <= MAX_EPOCHS * 100,
                f"--max-steps must be at most {MAX_EPOCHS * 100:,}",
            ),
            (
                self.max_minutes is None or self.max_minutes <= MAX_MINUTES,
                f"--max-minutes must be at most {MAX_MINUTES:,} (a week), got {self.max_minutes}",
            ),
            (self.max_steps is None or self.max_steps >= 1, f"--max-steps must be at least 1, got {self.max_steps}"),
            (
                self.max_minutes is None or self.max_minutes > 0,
                f"--max-minutes must be positive, got {self.max_minutes}",
            ),
            (self.epochs is None or self.max_steps is None, "give --epochs or --max-steps, not both"),
            (self.lr is None or 0 < self.lr < 1, f"--lr must be between 0 and 1, got {self.lr}"),
            (
                1 <= self.batch_size <= MAX_BATCH,
                f"--batch-size must be from 1 to {MAX_BATCH:,}, got {self.batch_size:,}",
            ),
            (
                1 <= self.grad_accum <= MAX_BATCH,
                f"--grad-accum must be from 1 to {MAX_BATCH:,}, got {self.grad_accum:,}",
            ),
            (self.logging_steps >= 0, f"--logging-steps must be 0 (automatic) or more, got {self.logging_steps}"),
            (0 <= self.warmup_ratio < 1, f"--warmup-ratio must be in [0, 1), got {self.warmup_ratio}"),
            (self.weight_decay >= 0, f"--weight-decay must be >= 0, got {self.weight_decay}"),
            (self.patience >= 0, f"--patience must be >= 0, got {self.patience}"),
            (0 <= self.valid_ratio <= 0.5, f"--valid-ratio must be between 0 and 0.5, got {self.valid_ratio}"),
            (not (self.resume and self.overwrite), "--resume and --overwrite cannot be used together"),
            (self.output is None or self.output.strip() != "", "--output must name a folder, got an empty name"),
            (0 <= self.seed < 2**32, f"--seed must be a whole number from 0 to {2**32 - 1}, got {self.seed}"),
        ]
        for ok, message in checks:
            if not ok:
                raise InputError(message)
        if not isinstance(self.bf16, bool):  # from here on a plain yes/no: is this run in bf16?
            from data.precision import bf16_mode, resolve_bf16
            from training.cli import say

            try:
                self.bf16 = resolve_bf16(bf16_mode(self.bf16), say)
            except ValueError as e:
                raise InputError(str(e))


def load_config_file(path: str) -> dict:
    if not os.path.isfile(path):
        raise InputError(f"config file not found: {path}")
    from data.textio import load_yaml, loads_json, read_text

    if os.path.getsize(path) > MAX_CONFIG_BYTES:
        raise InputError(f"{path} is larger than {MAX_CONFIG_BYTES // 1024} KiB; a config file holds a few options")
    text, _ = read_text(path)
    try:
        cfg = (load_yaml(text) or {}) if path.endswith((".yaml", ".yml")) else loads_json(text)
    except Exception as e:  # yaml.YAMLError / json.JSONDecodeError / ValueError: all mean a malformed file
        first = getattr(e, "problem", None) or (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise InputError(f"{path} is not valid {'YAML' if path.endswith(('.yaml', '.yml')) else 'JSON'}: {first}")
    if not isinstance(cfg, dict):
        raise InputError(f"{path} must hold a mapping of option names to values")
    return {str(k).replace("-", "_"): v for k, v in cfg.items()}


_TYPE_WORDS = {int: "a whole number", float: "a number", bool: "true or false", str: "text"}


def _coerce(value, kind):
    """`value` as `kind`, or raise ValueError. YAML reads `1e-3` as text, so numbers in text are accepted."""
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.strip().lower() in ("true", "yes", "1")
        raise ValueError
    if kind is str and isinstance(value, bool):  # `bf16: true` in YAML: the flag's text form
        return str(value).lower()
    if isinstance(value, bool) or isinstance(value, (list, dict)):
        raise ValueError
    if kind is int:
        number = float(value)
        if number != int(number):
            raise ValueError
        return int(number)
    if kind is float:
        number = float(value)
        if number != number or number in (float("inf"), float("-inf")):
            raise ValueError
        return number
    if kind is str and isinstance(value, (str, int, float)):
        return str(value)
    raise ValueError


def check_config_types(cfg: dict, types: tuple, path: str) -> dict:
    """Config-file values converted to the type each option takes, or one clear error. argparse
    never sees them, so without this a `seed: [1, 2]` would reach the code as a list."""
    import typing

    by_name = {f.name: f for t in types for f in fields(t)}
    out = {}
    for key, value in cfg.items():
        f = by_name[key]
        kinds = [a for a in (typing.get_args(f.type) or (f.type,)) if a is not type(None)]
        kinds = [
            {"str": str, "int": int, "float": float, "bool": bool}.get(k, k) if isinstance(k, str) else k for k in kinds
        ]
        if isinstance(f.type, str):  # `from __future__ import annotations`: "int", "str | None", "bool | None"
            kinds = [
                {"str": str, "int": int, "float": float, "bool": bool}[k.strip()]
                for k in f.type.split("|")
                if k.strip() != "None"
            ]
        if value is None:
            out[key] = value
            continue
        for kind in kinds:
            try:
                out[key] = _coerce(value, kind)
                break
            except (TypeError, ValueError, OverflowError):
                continue
        else:
            want = " or ".join(_TYPE_WORDS.get(k, getattr(k, "__name__", str(k))) for k in kinds)
            raise InputError(f"{path}: {key.replace('_', '-')} must be {want}, got {str(value)[:40]!r}")
        choices = f.metadata.get("choices")
        if choices and out[key] not in choices:
            raise InputError(
                f"{path}: {key.replace('_', '-')} must be one of {', '.join(map(str, choices))}, got {value!r}"
            )
    return out


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Adds "(default: X)" only where the help does not already say the default, and never "None"."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or action.default in (None, False, argparse.SUPPRESS) or action.default == "no":
            return text
        return super()._get_help_string(action)


def parse_args(types: tuple, argv: list[str] | None, prog: str, description: str):
    """Parse flags (and an optional --config file) into the given dataclasses."""
    from transformers import HfArgumentParser

    argv = list(sys.argv[1:] if argv is None else argv)

    class Parser(HfArgumentParser):
        @staticmethod
        def _parse_dataclass_field(parser, field):
            # a field's "role" (training.tasks: which file it names) is ours, not an argparse keyword
            if "role" in field.metadata:
                field = copy.copy(field)
                field.metadata = MappingProxyType({k: v for k, v in field.metadata.items() if k != "role"})
            HfArgumentParser._parse_dataclass_field(parser, field)

    parser = Parser(types, prog=prog, description=description, formatter_class=_HelpFormatter)
    for action in parser._actions:  # `--max-len` first in usage and help (`--max_len` still works)
        action.option_strings.sort(key=lambda o: "_" in o)
    # the inherited scratch-shape flags come first as fields; in usage and help they go after the script's own
    shape = {f.name for f in fields(ScratchArguments)}
    for actions in (parser._actions, *(g._group_actions for g in parser._action_groups)):
        actions.sort(key=lambda a: a.dest in shape)
    parser.error = _refuse  # one line, not argparse's usage block
    known = {f.name for t in types for f in fields(t)}
    cfg_path = _config_path(argv)
    if cfg_path:
        cfg = load_config_file(cfg_path)
        if "config" in cfg:  # read once, never followed: say so rather than ignore it
            raise InputError(f"{cfg_path}: a config file cannot name another one (config: {str(cfg['config'])[:60]})")
        unknown = sorted(set(cfg) - known)
        if unknown:
            raise InputError(f"{cfg_path}: unknown option(s) {', '.join(unknown)}")
        parser.set_defaults(**check_config_types(cfg, types, cfg_path))
    try:
        *groups, unknown = parser.parse_args_into_dataclasses(argv, return_remaining_strings=True)
    except InputError:
        raise
    except (TypeError, ValueError) as e:  # a config value of the wrong type, caught in __init__
        raise InputError(f"bad option value: {e}")
    if unknown:
        raise InputError(f"unknown option {' '.join(unknown)[:80]}; {prog} --help lists the options")
    return groups


def _refuse(message: str):
    """argparse's complaint as one sentence naming the flag (its usage block would be 19 lines of every flag)."""
    import re

    m = re.match(r"argument (\S+): (.*)", message, re.S)
    if not m:
        raise InputError(f"{message}; see --help")
    flag = sorted(m.group(1).split("/"), key=lambda o: "_" in o)[0]
    problem = m.group(2).strip()
    if problem == "expected one argument":
        raise InputError(f"{flag} needs a value")
    kind = re.match(r"invalid (int|float) value: (.*)", problem)
    if kind:
        raise InputError(
            f"{flag} must be {_TYPE_WORDS[{'int': int, 'float': float}[kind.group(1)]]}, got {kind.group(2)}"
        )
    raise InputError(f"{flag}: {problem}")


def _config_path(argv: list[str]) -> str | None:
    for i, a in enumerate(argv):
        if a == "--config" and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith("--config="):
            return a.split("=", 1)[1]
    return None
