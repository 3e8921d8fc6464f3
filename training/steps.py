"""The steps every task shares, in the order training/pipeline.py calls them.

open_output -> pick_base -> (the recipe's data and model; extend_vocab) -> run_training ->
stop_if_interrupted -> base_report -> publish
"""

from __future__ import annotations

import os
import sys
from dataclasses import asdict, fields

from data.errors import InputError
from training.cli import EXIT_INTERRUPTED, process_count, say
from training.models import SCRATCH, load_base
from training.output import OutputFolder, _test_hook
from training.runner import RunResult
from training.tasks import DATA_FILE, INPUT_ROLES, OUTPUT_FILE, SIDE_FILE, TRAIN_FILE


def _roles(group) -> dict[str, str | None]:
    """Each option of a dataclass with its role (training.tasks: TRAIN_FILE, DATA_FILE, SIDE_FILE, OUTPUT_FILE)."""
    return {f.name: f.metadata.get("role") for f in fields(group)}


def _fingerprint(path: str) -> str:
    import hashlib

    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except OSError:
        return f"unreadable:{path}"
    return digest.hexdigest()[:16]


def run_identity(task: str, groups) -> dict:
    """What makes a run this run: the task, the data files' contents and every option that shapes
    the model (not epochs, learning rate or other schedule options, which a resume may change)."""
    identity: dict = {"task": task}
    data = {}
    for group in groups:
        roles = _roles(group)
        for key, value in asdict(group).items():
            if roles[key] in (SIDE_FILE, OUTPUT_FILE):  # a resume may change them freely
                continue
            if roles[key] in (TRAIN_FILE, DATA_FILE):
                if value:
                    data[key] = _fingerprint(value)
            else:
                identity[key] = value
    identity["data"] = data
    processes = process_count()
    if processes > 1:  # recorded only then, so single-process states saved before this field still resume
        # a resume reshuffles which process sees which batch: refused rather than silently re-seen data
        identity["processes"] = processes
    return identity


def input_files(options, groups) -> dict[str, str]:
    """Every file the run reads, by its flag: the data, prompts, general text, user dictionary, config. None may sit
    where the run writes (training/output.py)."""
    found = {"--config": options.config} if getattr(options, "config", None) else {}
    for group in groups:
        roles = _roles(group)
        for key, value in asdict(group).items():
            if roles[key] in INPUT_ROLES and isinstance(value, str) and value:
                found["--" + key.replace("_", "-")] = value
    return found


def output_folder(options, task: str) -> str:
    """--output, else checkpoints/<task>."""
    return options.output or os.path.join("checkpoints", task)


def open_output(options, task: str, groups=()):
    """Default --output, folder checks (one process under accelerate); returns (output, resume_from): the
    OutputFolder and the state to resume from.

    `groups`: the task's own argument dataclasses, from which the run identity is recorded and,
    on --resume, checked."""
    from accelerate import PartialState
    from transformers import set_seed

    folder = output_folder(options, task)
    output = OutputFolder(folder, options.overwrite, options.resume, run_identity(task, groups) if groups else None)
    output.refuse_inputs_inside(input_files(options, groups))
    import torch

    # cpu=True on a machine without a GPU: under torchrun a plain PartialState() reported 1 process
    # there (DistributedType.NO), and both processes prepared the same folders
    state = PartialState(cpu=not torch.cuda.is_available())
    if state.num_processes == 1:
        resume_from = output.prepare()
    else:  # torchrun / accelerate launch: the main process alone touches the folders and tells the others
        resume_from = _prepare_once(state, output)
    set_seed(options.seed)
    return output, resume_from


def _prepare_once(state, output: OutputFolder) -> str | None:
    """output.prepare() on the main process; its outcome (the checkpoint to resume from, or the reason it
    refused) is broadcast, so the other processes neither race on the folders nor hang in a collective."""
    from accelerate.utils import broadcast_object_list

    from data.errors import EXIT_BAD_INPUT
    from training.output import NothingToDo

    box, failure = [None], None
    if state.is_main_process:
        try:
            box = [("ok", output.prepare(), output.resumed_from)]
        except NothingToDo as e:
            box, failure = [("done", None, None)], e
        except BaseException as e:  # InputError, or anything else: the others must not wait for ever
            box, failure = [("error", None, None)], e
    broadcast_object_list(box)
    outcome, value, resumed = box[0]
    if outcome == "ok":
        output.resumed_from = resumed
        return value
    if failure is not None:
        raise failure  # said once, by the main process
    raise SystemExit(EXIT_BAD_INPUT if outcome == "error" else 0)


def split_holdout(items: list, ratio: float, seed: int, groups: list | None = None) -> tuple[list, list]:
    """Seeded train/valid split keeping file order; at least one valid item when ratio > 0 and there are 2+.

    With `groups` (a key per item), whole groups go to one side, so related items never
    straddle the split.
    """
    import random

    keys = list(range(len(items))) if groups is None else list(dict.fromkeys(groups))
    if ratio <= 0 or len(keys) < 2:
        return list(items), []
    order = list(range(len(keys)))
    random.Random(seed).shuffle(order)
    held_keys = {keys[i] for i in order[: min(len(keys) - 1, max(1, round(len(keys) * ratio)))]}
    held = [(i if groups is None else groups[i]) in held_keys for i in range(len(items))]
    return [x for x, h in zip(items, held) if not h], [x for x, h in zip(items, held) if h]


def pick_base(name: str, loader, options, what: str):
    """Load the base model (or decide on scratch) and say so when falling back."""
    loaded, choice = load_base(name, loader, options.no_fallback, what, getattr(options, "hub", None))
    if choice.fallback_reason:
        say(f"note: {choice.fallback_reason}; training a small model from scratch instead (--no-fallback to stop)")
    return loaded, choice


def resumed_tokenizer(resume_from: str | None):
    """A scratch run resumes with the vocab it started with, saved beside its Trainer state."""
    if resume_from and os.path.isfile(os.path.join(resume_from, "tokenizer.json")):
        from transformers import BertTokenizerFast

        return BertTokenizerFast.from_pretrained(resume_from)
    return None


def extend_vocab(model, tokenizer, texts, choice, lora: bool, min_freq: int = 1):
    """Give the base's vocabulary the characters of the user's text it lacks; returns the tokenizer.

    Unknown characters all read as [UNK]. A model trained here from scratch knows only its own
    corpus's characters: continuing one on a 30-line corpus of new facts read 244 of its 471
    characters as [UNK] and learned none of the names. So characters seen at least `min_freq`
    times that the tokenizer maps to [UNK] are added to it, and the model gets embedding rows for
    them (transformers' mean-resizing starts them at the average of the others). With LoRA the
    embeddings stay frozen, so the run only says how many characters it cannot read."""
    from collections import Counter

    unk = tokenizer.unk_token_id
    if unk is None:
        return tokenizer
    counts = Counter(c for text in texts for c in text if not c.isspace() and not c.isascii())
    unknown = [c for c in counts if tokenizer.convert_tokens_to_ids(c) == unk]
    # a character the tokenizer can still read (e.g. after lower-casing or as ##c) is left alone
    unknown = [c for c in unknown if tokenizer(c, add_special_tokens=False)["input_ids"] == [unk]]
    if not unknown:
        return tokenizer
    share = sum(counts[c] for c in unknown) / max(1, sum(counts.values()))
    wanted = sorted((c for c in unknown if counts[c] >= min_freq), key=lambda c: (-counts[c], c))
    examples = "".join(sorted(unknown, key=lambda c: (-counts[c], c))[:10])
    what = (
        f"{len(unknown):,} characters of your text ({share:.0%} of its Chinese and other non-ASCII characters, e.g. "
        f"{examples})"
    )
    if lora or not wanted:
        why = "with --lora the embeddings stay frozen; train without --lora to add them" if lora else ""
        say(f"warning: {what} are not in {choice.name}'s vocabulary and read as [UNK]{'; ' + why if why else ''}")
        return tokenizer
    before = len(tokenizer)
    tokenizer.add_tokens(wanted)
    model.resize_token_embeddings(len(tokenizer))
    say(
        f"vocab: {what} were not in {choice.name}'s vocabulary; added {len(wanted):,} "
        f"({before:,} -> {len(tokenizer):,} tokens), their embeddings start at the average of the others"
    )
    return tokenizer


# Below this size a base gets the from-scratch recipe (learning rate, schedule): the small models these
# scripts train from scratch, continued on new text, learned nothing in 30 passes at the fine-tuning
# rate of 5e-5 (loss 8.9 -> 8.7 on 30 lines); pretrained Hub models are 10x larger and more.
SMALL_MODEL_PARAMETERS = 20_000_000


def scratch_recipe(choice, model) -> bool:
    """Train with the from-scratch recipe: a scratch run, or a base as small as the ones trained here."""
    return choice.source == SCRATCH or model.num_parameters() < SMALL_MODEL_PARAMETERS


def run_command(script: str, argv) -> str:
    """The command line of this run, as a terminal would run it from the repository root."""
    import shlex

    return shlex.join(["python", script, *(sys.argv[1:] if argv is None else argv)])


def resume_command(script: str, argv) -> str:
    """The command that continues this run: the same words with --resume (and without --overwrite, which
    --resume refuses)."""
    words = [w for w in (sys.argv[1:] if argv is None else argv) if w != "--overwrite"]
    cmd = run_command(script, words)
    cmd = cmd if "--resume" in words else cmd + " --resume"
    processes = process_count()
    return f"the same launch ({processes} processes) of {cmd}" if processes > 1 else cmd


def stop_if_interrupted(result: RunResult, output: OutputFolder, script: str, argv) -> int | None:
    """Exit code after Ctrl-C (with the command that resumes), 0 for non-main processes, else None."""
    if result.interrupted:
        cmd = resume_command(script, argv)
        say(f"stopped at step {result.global_step}; the resumable state is in {output.work}\nresume with: {cmd}")
        return EXIT_INTERRUPTED
    if not result.trainer.is_world_process_zero():
        return 0
    return None


def refuse_oversized_batch(run) -> None:
    """A batch that cannot fit in this machine's memory is refused before training (it failed after the first step
    with the allocator's message). Stored activations per token and layer: ~(34 h + 5 a s) x 2 bytes in fp32
    (Korthikanti et al. 2022, doubled from their 16-bit figure), plus the output logits, their softmax and grad."""
    from training.args import physical_memory_bytes

    config, options = run.model.config, run.options
    device = next(run.model.parameters()).device
    if device.type == "cuda":
        import torch

        have = torch.cuda.get_device_properties(device).total_memory
    else:
        have = physical_memory_bytes()
    hidden = getattr(config, "hidden_size", None) or getattr(config, "n_embd", 0)
    layers = getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer", 0)
    heads = getattr(config, "num_attention_heads", None) or getattr(config, "n_head", 1)
    length = run.max_len or 512
    rows = min(options.batch_size, len(run.setup.train_ds))  # a batch holds at most the whole training set
    tokens = rows * length
    need = tokens * (layers * (34 * hidden + 5 * heads * length) * 2 + 12 * len(run.tokenizer))
    if have and need > have:
        raise InputError(
            f"a batch of {rows:,} sequences of {length:,} tokens needs about {need / 2**30:,.0f} GiB to train and this "
            f"machine has {have / 2**30:,.0f} GiB: use a smaller --batch-size (--grad-accum N keeps the same "
            "effective batch)"
        )


def refuse_non_finite(result: RunResult, output: OutputFolder) -> None:
    """A run whose weights (those it would publish) or whose kept evaluation are not finite numbers failed, whatever
    its metrics printed: nothing is published and the previous model stays. Its working folder is left as it is
    (the states may go back to before it diverged); --overwrite starts afresh."""
    import math

    import torch

    from data.errors import RunFailed

    model = result.trainer.model
    bad = [name for name, p in model.named_parameters() if not torch.isfinite(p.detach()).all()]
    kept = (result.best or {}).get("valid_loss")
    losses = [e["loss"] for e in result.trainer.state.log_history if "loss" in e]
    loss = kept if kept is not None else losses[-1] if losses else 0.0
    if not bad and math.isfinite(loss):
        return
    total = sum(1 for _ in model.parameters())
    what = f"{len(bad)} of {total} weight tensors hold NaN or infinity" if bad else f"the loss is {loss}"
    previous = os.path.isdir(output.final) and bool(os.listdir(output.final))
    untouched = f"the previous model in {output.final} is untouched" if previous else "no model was saved"
    raise RunFailed(
        f"training diverged ({what}): {untouched}, the run's states are in {output.work} (--overwrite starts "
        "afresh); try a lower --lr, and check the data for extreme values"
    )


def base_report(task: str, run, result: RunResult, total: int, trainable: int) -> dict:
    """The fields every training_report.json has (`run`: training.pipeline.Run); recipes add their data and
    metrics. "hyperparameters" are the options as given, with what the run decided in their place: the
    plan's learning rate, passes, patience and time, the folder, the --max-len the base allows."""
    epochs_done = result.trainer.state.epoch or 0
    hyper = {}
    for group in (run.args, run.lora, run.options):
        hyper.update({k: v for k, v in asdict(group).items() if k != "config"})
    plan = result.plan
    hyper.update(
        lr=plan.lr,
        epochs=plan.epochs,
        patience=plan.patience,
        max_minutes=plan.max_minutes,
        output=output_folder(run.options, task),
        **({"max_len": run.max_len} if "max_len" in hyper else {}),
    )
    model, tokenizer = run.model, run.tokenizer
    train_tokens = run.train_tokens
    return {
        "task": task,
        "command": run_command(
            run.recipe.script, [w for w in (sys.argv[1:] if run.argv is None else run.argv) if w != "--resume"]
        ),
        "cwd": os.getcwd(),
        "started_at": run.started_at,
        "base_model": run.choice.name,
        "base_model_source": run.choice.source,
        "fallback_reason": run.choice.fallback_reason,
        "hyperparameters": hyper,
        "model": {
            "model_type": model.config.model_type,
            "parameters": total,
            "trainable_parameters": trainable,
            "vocab_size": len(tokenizer),
        },
        "processes": result.trainer.args.world_size,
        "global_batch_size": result.trainer.args.train_batch_size
        * result.trainer.args.world_size
        * result.trainer.args.gradient_accumulation_steps,
        "epochs": result.epochs,
        "best": result.best,
        "epochs_trained": round(epochs_done, 3),
        "global_step": result.global_step,
        "resumed_from": run.output.resumed_from,
        "wall_time_s": round(result.wall_time_s, 2),
        "train_runtime_s": round(result.train_runtime_s, 2),
        "schedule": result.schedule,
        "tokens_per_s": round(train_tokens * (epochs_done - result.start_epoch) / max(result.train_runtime_s, 1e-9), 1),
    }


def publish(
    output: OutputFolder, result: RunResult, tokenizer, report: dict, card: dict, summary: str, generation_config=None
) -> None:
    """Write the checkpoint folder (weights, tokenizer, report, card, plot) and move it into place."""
    from data.errors import InputError
    from training.checkpoint import plot_loss, save_model, write_model_card, write_report

    folder, trainer = output.work, result.trainer
    resume = "free some space, then run the same command with --resume to write it"
    try:
        save_model(trainer.model, tokenizer, folder, generation_config)
        _test_hook("after_weights")
        write_report(folder, report)
        plot_loss(folder, trainer.state.log_history, f"{report['task']}: {os.path.basename(output.final)}")
        write_model_card(
            folder,
            report=report,
            base_model=None if report["base_model_source"] == SCRATCH else report["base_model"],
            **card,
        )
    except KeyboardInterrupt:
        output.discard_model_files()
        say(
            f"interrupted while writing the model; the finished training state is in {output.work}: "
            f"run the same command with --resume to write it"
        )
        raise SystemExit(EXIT_INTERRUPTED)
    except Exception as e:  # OSError (disk full, no permission) or safetensors' SafetensorError: one line
        if not isinstance(e, OSError) and type(e).__name__ != "SafetensorError":
            raise
        output.discard_model_files()
        reason = getattr(e, "strerror", None) or (str(e).splitlines() or [type(e).__name__])[0][:200]
        raise InputError(
            f"could not write the model to {output.work}: {reason}; the previous model in {output.final} is untouched "
            f"and the training state is kept: {resume}"
        )
    output.finalize()
    say(f"{summary}saved to {output.final} in {result.wall_time_s:.0f} s")
