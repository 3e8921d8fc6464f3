"""Loading checkpoint folders written by training/ (merged weights, or a base plus adapter/)."""

from __future__ import annotations

import json
import logging
import os

from data.encoder import CHAT_SAMPLING
from data.errors import InputError
from data.hub import custom_code_reason, hub_reachable, looks_like_path
from data.textio import read_json_dict

log = logging.getLogger("chat")

# What a checkpoint folder needs; a Hub download fetches only these (safetensors only).
FOLDER_FILES = ["*.json", "*.safetensors", "vocab.txt", "*.model", "adapter/*"]


def resolve_model(name: str, kind: str) -> str:
    """A local folder for `name`: the folder itself, a Hub id from the cache, or (online) downloaded.

    Offline and uncached, one `InputError` within seconds instead of minutes of retries.
    """
    expanded = os.path.expanduser(name)
    if os.path.isdir(expanded):
        return expanded
    if looks_like_path(name) or os.path.exists(expanded) or not name.strip():
        raise InputError(f"{kind} model folder not found: {name}")
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(name, allow_patterns=FOLDER_FILES, local_files_only=True)
    except Exception:  # not cached: LocalEntryNotFoundError, or an id the cache cannot hold
        pass
    if not hub_reachable():
        raise InputError(
            f"{name!r} is neither a local folder nor in the Hugging Face cache, and the Hub cannot be reached (offline)"
        )
    try:
        return snapshot_download(name, allow_patterns=FOLDER_FILES)
    except Exception as e:  # RepositoryNotFoundError, HTTP errors: one line
        raise InputError(
            f"could not download {name!r} from the Hugging Face Hub: "
            f"{(str(e).strip().splitlines() or [type(e).__name__])[0][:200]}"
        )


def check_weights(folder: str) -> None:
    """Refuse a truncated or corrupt `model.safetensors` in one sentence before loading it: the
    header names every tensor's byte range, and a file shorter than the last range would load as
    a memory map that kills the process (SIGBUS) on first use."""
    import struct

    path = os.path.join(folder, "model.safetensors")
    if not os.path.isfile(path):
        return
    size = os.path.getsize(path)
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            (n,) = struct.unpack("<Q", head) if len(head) == 8 else (None,)
            if n is None or n > size - 8 or n > 100 * 2**20:
                raise ValueError
            header = json.loads(f.read(n))
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    except (ValueError, KeyError, TypeError, IndexError, struct.error, UnicodeDecodeError):
        raise InputError(
            f"{path} is not a valid safetensors file (truncated or corrupt); train or copy the model again"
        )
    except OSError as e:
        raise InputError(f"{path} cannot be read: {e.strerror or e}")
    if 8 + n + end > size:
        raise InputError(
            f"{path} is truncated ({size:,} of {8 + n + end:,} bytes); it may still be being written, "
            f"or a copy failed: train or copy the model again"
        )


def _quiet_loading() -> None:
    """No "Loading weights" progress bars from the Python API (the app and scripts print their own lines)."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def into_memory(model):
    """Copy every weight out of the memory-mapped safetensors file into the process's own memory.

    `from_pretrained` leaves tensors backed by a memory map of model.safetensors; when that file
    is overwritten or truncated in place (retraining into the folder a running app serves, `cp`
    over it) the next read of a mapped page kills the process with SIGBUS. Owning the memory
    costs one copy at load time and makes the loaded model independent of the file. Tied weights
    stay tied: each shared Parameter object is visited once and keeps its identity.
    """
    import torch

    with torch.no_grad():
        for p in model.parameters():
            p.data = p.data.clone()
        for module in model.modules():
            for name, b in module._buffers.items():
                if b is not None:
                    module._buffers[name] = b.clone()
    return model


def load_chat_model(folder: str, dtype=None):
    """Return (model, tokenizer, generation_config) of a GPT-2 chat checkpoint folder (or Hub id).

    Accepts the folders training/chat.py writes (merged weights at the top) and adapter-only
    folders (`adapter_config.json` at the top or in adapter/), loaded through peft on their base.
    Raises `InputError` with one sentence for anything that is not a chat model.
    """
    import torch
    from transformers import BertTokenizerFast, GenerationConfig, GPT2LMHeadModel

    folder = resolve_model(folder, "chat")
    _quiet_loading()
    config_path = os.path.join(folder, "config.json")
    adapter_dir = next(
        (
            d
            for d in (folder, os.path.join(folder, "adapter"))
            if os.path.isfile(os.path.join(d, "adapter_config.json"))
        ),
        None,
    )
    has_weights = any(
        os.path.isfile(os.path.join(folder, f)) for f in ("model.safetensors", "model.safetensors.index.json")
    )
    dtype = dtype or torch.float32
    if os.path.isfile(config_path) and has_weights:
        model_type = read_json_dict(config_path).get("model_type")
        if model_type != "gpt2":
            raise InputError(f"{folder} holds a {model_type} model, not a GPT-2 chat model")
        check_weights(folder)
        try:
            model = GPT2LMHeadModel.from_pretrained(folder, dtype=dtype, use_safetensors=True)
        except (OSError, ValueError, RuntimeError) as e:
            raise InputError(
                f"{folder} could not be loaded: {(str(e).strip().splitlines() or [type(e).__name__])[0][:200]}"
            )
    elif adapter_dir:
        from peft import AutoPeftModelForCausalLM

        if not read_json_dict(os.path.join(adapter_dir, "adapter_config.json")).get("base_model_name_or_path"):
            raise InputError(f"{adapter_dir}/adapter_config.json does not name its base model")
        try:  # the base named in adapter_config.json, the adapter on it, merged into plain weights
            model = AutoPeftModelForCausalLM.from_pretrained(
                adapter_dir, dtype=dtype, use_safetensors=True
            ).merge_and_unload()
        except (OSError, ValueError) as e:
            raise InputError(
                f"cannot load the adapter in {adapter_dir} on its base model: "
                f"{(str(e).strip().splitlines() or [type(e).__name__])[0][:200]}"
            )
    else:
        raise InputError(f"{folder} is not a chat model folder (no config.json with safetensors weights, no adapter)")
    try:
        tokenizer = BertTokenizerFast.from_pretrained(folder)
    except (OSError, ValueError, TypeError):
        raise InputError(f"{folder} has no usable tokenizer (tokenizer.json or vocab.txt)")
    if tokenizer.cls_token_id is None or tokenizer.sep_token_id is None:
        raise InputError(f"the tokenizer in {folder} has no [CLS]/[SEP]; it is not a chat model of this project")
    from chat.settings import MAX_HISTORY, MAX_MESSAGE_CHARS
    from data.chat_template import make_chat_ready

    added = make_chat_ready(tokenizer, MAX_HISTORY, MAX_MESSAGE_CHARS)
    if "chat template" in added:  # in memory only: the folder is the user's, and is left as it is
        log.info("%s predates chat templates; this project's template is used (retraining is not needed)", folder)
    try:
        generation_config = GenerationConfig.from_pretrained(folder)
    except OSError:
        generation_config = GenerationConfig(**CHAT_SAMPLING)
    model.eval()
    return into_memory(model), tokenizer, generation_config


def load_auto_folder(folder: str, auto_model, kind: str, what: str):
    """(model, tokenizer) from a folder through an `AutoModelFor...` class, or one clear `InputError`."""
    from transformers import AutoTokenizer

    folder = resolve_model(folder, kind)
    _quiet_loading()
    reason = custom_code_reason(folder)
    if reason:
        raise InputError(reason)
    check_weights(folder)
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = auto_model.from_pretrained(folder, use_safetensors=True)
    except (OSError, ValueError, RuntimeError) as e:
        raise InputError(
            f"{folder} is not a {what} model folder: {(str(e).strip().splitlines() or [type(e).__name__])[0][:200]}"
        )
    return into_memory(model), tokenizer


def task_of(folder: str) -> str | None:
    """The registered task (chat.tasks) a folder belongs to: the task its training report records,
    else the first task that accepts one of its config's architectures; None for anything else."""
    from chat.tasks import TASKS

    task = read_json_dict(os.path.join(folder, "training_report.json")).get("task")
    if task in TASKS:
        return task
    for arch in read_json_dict(os.path.join(folder, "config.json")).get("architectures") or []:
        for t in TASKS.values():
            if isinstance(arch, str) and t.accepts(arch):
                return t.name
    return None


def find_checkpoint_folders(root: str) -> list[tuple[str, str]]:
    """(task, folder) for each checkpoint folder in `root` or one level below, sorted by path.

    Interrupted runs (`*.partial`), hidden folders and folders of no known task are skipped.
    Used by the app (to list models) and the Spaces deploy script (to ship the same ones).
    """
    found = []

    def visit(folder: str, depth: int) -> None:
        for name in sorted(os.listdir(folder)):
            path = os.path.join(folder, name)
            if name.startswith(".") or name.endswith(".partial") or not os.path.isdir(path):
                continue
            task = task_of(path)
            if task:
                found.append((task, path))
            elif depth == 0:
                visit(path, 1)

    if os.path.isdir(root):
        visit(root, 0)
    return found
