"""What leaves this machine with a checkpoint (the Spaces bundle, `training/push.py`): the allow-listed files of a
checkpoint folder, local paths cut from its text and metadata, and a refusal of anything shaped like an access
token. Light: no torch until a chat template has to be written."""

from __future__ import annotations

import json
import os
import re

from data.textio import read_json_dict

# What a checkpoint folder may ship: the model, its tokenizer and its description. Anything else
# (notes, credentials, Trainer states, symlinks) stays home.
CHECKPOINT_FILES = re.compile(
    r"(model(-\d+-of-\d+)?\.safetensors|model\.safetensors\.index\.json|config\.json|generation_config\.json"
    r"|tokenizer\.json|tokenizer_config\.json|special_tokens_map\.json|vocab\.txt|[\w.-]+\.model|chat_template\.jinja"
    r"|README\.md|training_report\.json|loss\.png"
    r"|adapter/(adapter_config\.json|adapter_model\.safetensors))"
)
TEXT_FILES = ("README.md",)  # local paths in these are cut to file names
# ... and in the string values of these (tokenizer.json is left whole: its patterns are not paths)
METADATA_JSON = (
    "training_report.json",
    "config.json",
    "tokenizer_config.json",
    "generation_config.json",
    "adapter_config.json",
    "special_tokens_map.json",
)
# Access tokens that must never be uploaded: Hugging Face, GitHub, OpenAI-style, AWS, Slack, private keys.
TOKEN = re.compile(
    rb"hf_[A-Za-z0-9]{30,}|gh[pousr]_[A-Za-z0-9]{30,}|sk-[A-Za-z0-9_-]{20,}|AKIA[0-9A-Z]{16}|xox[abpr]-[A-Za-z0-9-]{10,}"
    rb"|-----BEGIN [A-Z ]*PRIVATE KEY-----"
)
ABS_PATH = re.compile(r"(?:[A-Za-z]:)?[\\/](?:[^\s\\/\"'`()]+[\\/])+([^\s\\/\"'`()]+)")


def checkpoint_files(folder: str, say=print) -> list[str]:
    """The allow-listed files of one checkpoint folder (relative paths); what is left out is named."""
    keep, left = [], []
    for current, dirs, names in os.walk(folder):
        rel_dir = os.path.relpath(current, folder)
        for d in list(dirs):
            if os.path.islink(os.path.join(current, d)):
                left.append(os.path.normpath(os.path.join(rel_dir, d)) + "/ (symlink)")
        dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(current, d))]
        for name in names:
            rel = os.path.normpath(os.path.join(rel_dir, name))
            if os.path.islink(os.path.join(current, name)):
                left.append(rel + " (symlink)")
            elif CHECKPOINT_FILES.fullmatch(rel.replace(os.sep, "/")):
                keep.append(rel)
            elif not rel.startswith("resume_state"):
                left.append(rel)
    if left:
        say(
            f"  left out of {os.path.basename(os.path.normpath(folder))}: {', '.join(sorted(left)[:8])}"
            + (" ..." if len(left) > 8 else "")
        )
    return sorted(keep)


def scrub_paths(text: str) -> str:
    """Absolute local paths (which name your user and folders) cut to their last part."""
    return ABS_PATH.sub(lambda m: m.group(1), text)


# In a JSON value (escapes already undone): a path with at least one separator, POSIX or Windows,
# absolute or relative (C:\Users\alice\Desktop\data.txt, /home/alice/base, data/dialogs.txt).
ANY_PATH = re.compile(r"(?:[A-Za-z]:)?(?:~)?[\\/]?(?:[^\s\\/\"'`()]+[\\/])+([^\s\\/\"'`()]+)")


def scrub_json(text: str) -> str:
    """A JSON file with every path in its string values cut to its last part, written back as JSON.
    Scrubbing the raw text missed escaped Windows paths ("C:\\\\Users...") and left config.json's
    `_name_or_path` whole (issue #34); URLs are left as they are."""
    from data.textio import loads_json

    def clean(value):
        if isinstance(value, str):
            return value if "://" in value else ANY_PATH.sub(lambda m: m.group(1), value)
        if isinstance(value, list):
            return [clean(v) for v in value]
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        return value

    try:
        value = loads_json(text)
    except ValueError:
        return scrub_paths(text)
    return json.dumps(clean(value), ensure_ascii=False, indent=2) + "\n"


def find_tokens(folder: str) -> list[str]:
    """Files in the bundle that hold something shaped like an access token."""
    hits = []
    for current, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(current, name)
            tail = b""
            with open(path, "rb") as f:  # in blocks: model weights can be gigabytes
                for block in iter(lambda: f.read(1 << 22), b""):
                    if TOKEN.search(tail + block):
                        hits.append(os.path.relpath(path, folder))
                        break
                    tail = block[-128:]  # a token straddling two blocks
    return sorted(hits)


def copy_checkpoint(folder: str, target: str, say=print) -> list[str]:
    """The allow-listed files of `folder` copied into `target` (never through a symlink), local paths cut from the
    card and the JSON metadata; returns the relative paths written."""
    import shutil

    written = checkpoint_files(folder, say)
    for rel in written:
        out = os.path.join(target, rel)
        os.makedirs(os.path.dirname(out), exist_ok=True)
        metadata = os.path.basename(rel) in METADATA_JSON
        if metadata or (os.path.basename(rel) in TEXT_FILES and os.path.dirname(rel) == ""):
            with open(os.path.join(folder, rel), encoding="utf-8", errors="replace") as f:
                text = scrub_json(f.read()) if metadata else scrub_paths(f.read())
            with open(out, "w", encoding="utf-8") as f:
                f.write(text)
        else:
            shutil.copyfile(os.path.join(folder, rel), out, follow_symlinks=False)
    return written


def add_chat_template(folder: str) -> bool:
    """A chat checkpoint in the bundle without a chat template gets this project's (issue #36), so tools
    reading the Space's files build the prompt the app builds; True when one was added."""
    if os.path.exists(os.path.join(folder, "chat_template.jinja")):
        return False
    if read_json_dict(os.path.join(folder, "config.json")).get("model_type") != "gpt2":
        return False
    from transformers import BertTokenizerFast

    from chat.settings import MAX_HISTORY, MAX_MESSAGE_CHARS
    from data.chat_template import load_as_written, make_chat_ready

    try:
        tokenizer = BertTokenizerFast.from_pretrained(folder)
    except (OSError, ValueError, TypeError):
        return False  # no usable tokenizer: the app says so when it loads the folder
    make_chat_ready(tokenizer, MAX_HISTORY, MAX_MESSAGE_CHARS)
    tokenizer.save_pretrained(folder)
    load_as_written(folder)
    return True


def preflight() -> str:
    """The token and a reachable Hub, checked before anything is assembled; returns the token."""
    from huggingface_hub import get_token

    from data.errors import InputError
    from data.hub import hub_reachable

    token = get_token()  # HF_TOKEN, or the token saved by `hf auth login`
    if not token:
        raise InputError(
            "no Hugging Face token: set HF_TOKEN or run `hf auth login` (a token with write access); nothing was "
            "uploaded"
        )
    if not hub_reachable():
        raise InputError(
            "the Hugging Face Hub cannot be reached (offline?); nothing was uploaded. "
            "`--dry-run DIR` builds the bundle without the network"
        )
    return token


def write_dry_run(out: str, build) -> None:
    """`build(out)` into a new or empty folder `out`; on any failure `out` goes again (no half upload, and never one
    holding a token): what --dry-run writes for deploy.py and push.py."""
    import shutil

    from data.errors import InputError

    if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
        raise InputError(f"{out} already exists and is not empty; choose a new folder")
    if os.path.isdir(out):
        os.rmdir(out)  # empty: the build makes it again
    try:
        build(out)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
