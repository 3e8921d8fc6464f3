"""Deploy the app to a Hugging Face Space (free CPU hardware) in one command.

    python space_config/deploy.py --space USER/NAME --checkpoints checkpoints/
    python space_config/deploy.py --space USER/NAME --dry-run space_bundle/   # build the bundle only

The bundle is the app (app.py, webui/), chat/, training/, data/ (with its samples), the Space card
(space_config/README.md), CPU-only requirements and the chosen checkpoint folders; no
tests, caches, Trainer states or .git. It is uploaded with huggingface_hub
(`create_repo(..., repo_type="space", space_sdk="gradio", exist_ok=True)`, `upload_folder`).
The token comes from HF_TOKEN or the saved login (`hf auth login`).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from data.errors import EXIT_BAD_INPUT, InputError  # noqa: E402  (needs the repo root on sys.path first)
from data.textio import read_json_dict  # noqa: E402

PACKAGES = ("chat", "training", "data", "webui")
TOP_FILES = ("app.py", "LICENSE")
# CPU-only torch on Spaces: the default PyPI wheel pulls several GB of CUDA libraries.
CPU_TORCH = ["--extra-index-url https://download.pytorch.org/whl/cpu"]
# Free "CPU basic" Space: 2 vCPU, 16 GiB memory, 50 GB of (non-persistent) disk.
FREE_MEMORY = 16 * 2**30
FREE_DISK = 50 * 10**9
RUNTIME_MEMORY = 1.5 * 2**30  # python + torch + gradio before any model


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


def code_files() -> list[str]:
    """The project's own tracked source files for the Space (git ls-files); without git, the .py
    files of the packages and the sample data. Symlinks are never followed."""
    import subprocess

    wanted = [*TOP_FILES, *PACKAGES]
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z", "--", *wanted], cwd=ROOT, capture_output=True, check=True, timeout=30
        ).stdout
        tracked = [f for f in out.decode("utf-8").split("\0") if f]
    except (OSError, subprocess.SubprocessError, UnicodeDecodeError):
        tracked = []
    if not tracked:  # not a git checkout (e.g. a copied bundle): code and samples only
        tracked = [f for f in TOP_FILES if os.path.isfile(os.path.join(ROOT, f))]
        for package in PACKAGES:
            for folder, dirs, names in os.walk(os.path.join(ROOT, package)):
                dirs[:] = [
                    d for d in dirs if not d.startswith((".", "__")) and not os.path.islink(os.path.join(folder, d))
                ]
                rel = os.path.relpath(folder, ROOT)
                tracked += [
                    os.path.join(rel, n) for n in names if n.endswith(".py") or rel == os.path.join("data", "samples")
                ]
    return sorted(
        f for f in tracked if os.path.isfile(os.path.join(ROOT, f)) and not os.path.islink(os.path.join(ROOT, f))
    )


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


def checkpoint_folders(root: str) -> list[str]:
    """The checkpoint folders the app would list from `root` (chat.loading.find_checkpoint_folders),
    or `root` itself."""
    from chat.loading import find_checkpoint_folders, task_of

    if not os.path.isdir(root):
        raise InputError(f"--checkpoints folder not found: {root}")
    found = [root] if task_of(root) else [path for _, path in find_checkpoint_folders(root)]
    linked = [p for p in found if os.path.islink(p)]
    if linked:  # a symlinked folder may point anywhere: ship only real folders
        print(f"note: not shipping symlinked checkpoint folders: {', '.join(linked)}", file=sys.stderr)
        found = [p for p in found if not os.path.islink(p)]
    if not found:
        raise InputError(
            f"no checkpoint folders in {root} (folders with config.json); train one first, or leave out --checkpoints"
        )
    return found


def space_requirements(text: str) -> str:
    """The project's requirements with torch taken from the CPU wheel index."""
    lines = []
    for line in text.splitlines():
        if re.match(r"^\s*torch\s*==", line):
            version = line.split("==", 1)[1].split("#")[0].strip()
            lines += CPU_TORCH + [f"torch=={version}+cpu" if "+" not in version else f"torch=={version}"]
        else:
            lines.append(line)
    return "\n".join(lines) + "\n"


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


def assemble(out: str, checkpoints: list[str], say=print) -> None:
    """Copy the allow-listed files into `out` (never through a symlink); refuse a bundle holding a token."""
    os.makedirs(out)
    for rel in code_files():
        os.makedirs(os.path.join(out, os.path.dirname(rel)), exist_ok=True)
        shutil.copyfile(os.path.join(ROOT, rel), os.path.join(out, rel), follow_symlinks=False)
    shutil.copyfile(os.path.join(ROOT, "space_config", "README.md"), os.path.join(out, "README.md"))
    with open(os.path.join(ROOT, "requirements.txt"), encoding="utf-8") as f:
        requirements = space_requirements(f.read())
    with open(os.path.join(out, "requirements.txt"), "w", encoding="utf-8") as f:
        f.write(requirements)
    names = set()
    for folder in checkpoints:
        name = os.path.basename(os.path.normpath(folder))
        if name in names:
            raise InputError(f"two checkpoint folders are both called {name!r}; rename one")
        names.add(name)
        for rel in checkpoint_files(folder, say):
            target = os.path.join(out, "checkpoints", name, rel)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            metadata = os.path.basename(rel) in METADATA_JSON
            if metadata or (os.path.basename(rel) in TEXT_FILES and os.path.dirname(rel) == ""):
                with open(os.path.join(folder, rel), encoding="utf-8", errors="replace") as f:
                    text = scrub_json(f.read()) if metadata else scrub_paths(f.read())
                with open(target, "w", encoding="utf-8") as f:
                    f.write(text)
            else:
                shutil.copyfile(os.path.join(folder, rel), target, follow_symlinks=False)
        if add_chat_template(os.path.join(out, "checkpoints", name)):
            say(f"note: checkpoints/{name}: chat template added (written before chat checkpoints carried one)")
    tokens = find_tokens(out)
    if tokens:
        raise InputError(
            f"{', '.join(tokens[:3])} would ship something that looks like an access token (hf_..., ghp_..., a "
            "private key); "
            "remove it from that file; nothing was uploaded"
        )


def _size(path: str) -> int:
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def report(out: str, say=print) -> list[str]:
    """Print what the bundle holds; return warnings about the free Space's limits."""
    total = _size(out)
    shipped = sorted(os.path.relpath(os.path.join(d, f), out) for d, _, files in os.walk(out) for f in files)
    say(f"bundle {out}: {len(shipped)} files, {human(total)}")
    for name in sorted(os.listdir(out)):
        say(
            f"  {name + ('/' if os.path.isdir(os.path.join(out, name)) else ''):<18} "
            f"{human(_size(os.path.join(out, name)))}"
        )
    for rel in shipped:
        if rel.startswith("checkpoints" + os.sep):
            say(f"    {rel}  {human(os.path.getsize(os.path.join(out, rel)))}")
    ckpt_root = os.path.join(out, "checkpoints")
    weights = 0
    if os.path.isdir(ckpt_root):
        for name in sorted(os.listdir(ckpt_root)):
            w = sum(
                os.path.getsize(os.path.join(d, f))
                for d, _, files in os.walk(os.path.join(ckpt_root, name))
                for f in files
                if f.endswith(".safetensors") and "adapter" not in d
            )
            weights += w
            say(f"    checkpoints/{name}: weights {human(w)}")
    warnings = []
    if total > FREE_DISK:
        warnings.append(f"the bundle ({human(total)}) is larger than the free Space's {human(FREE_DISK)} of disk")
    if weights + RUNTIME_MEMORY > FREE_MEMORY:
        warnings.append(
            f"the models' weights ({human(weights)}) plus the runtime (~{human(RUNTIME_MEMORY)}) exceed the free "
            "Space's "
            f"16 GiB of memory; upload fewer checkpoints or pay for bigger hardware"
        )
    elif weights + RUNTIME_MEMORY > 0.75 * FREE_MEMORY:
        warnings.append(f"the models' weights ({human(weights)}) leave little of the free Space's 16 GiB of memory")
    for w in warnings:
        say(f"warning: {w}")
    return warnings


def preflight() -> str:
    """The token and a reachable Hub, checked before anything is assembled; returns the token."""
    from huggingface_hub import get_token

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


def upload(space: str, bundle: str, private: bool, token: str, say=print) -> str:
    """The network part, kept thin: create the Space if missing, upload the bundle."""
    from huggingface_hub import create_repo, upload_folder

    try:
        url = create_repo(space, repo_type="space", space_sdk="gradio", private=private, exist_ok=True, token=token)
        upload_folder(
            repo_id=space,
            repo_type="space",
            folder_path=bundle,
            token=token,
            commit_message="Deploy with space_config/deploy.py",
        )
    except Exception as e:  # HfHubHTTPError (401, 403, 409...), connection errors: one line
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise InputError(f"upload to {space} failed: {first[:300]}")
    say(f"deployed: https://huggingface.co/spaces/{space} (it builds, then serves in a few minutes)")
    return str(url)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python space_config/deploy.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--space", required=True, help="the Space to create or update: USER/NAME")
    p.add_argument(
        "--checkpoints",
        help="a checkpoint folder, or a folder of them, to upload (default: none; the Space builds demo models)",
    )
    p.add_argument("--private", action="store_true", help="create the Space as private")
    p.add_argument("--dry-run", metavar="OUT_DIR", help="write the bundle to OUT_DIR and upload nothing")
    a = p.parse_args(argv)
    try:
        if not re.fullmatch(r"[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}", a.space):
            raise InputError(f"--space must look like USER/NAME, got {a.space!r}")
        checkpoints = checkpoint_folders(a.checkpoints) if a.checkpoints else []
        if a.dry_run:
            if os.path.exists(a.dry_run) and (not os.path.isdir(a.dry_run) or os.listdir(a.dry_run)):
                raise InputError(f"{a.dry_run} already exists and is not empty; choose a new folder for the bundle")
            if os.path.isdir(a.dry_run):
                os.rmdir(a.dry_run)
            try:
                assemble(a.dry_run, checkpoints)
            except BaseException:
                shutil.rmtree(a.dry_run, ignore_errors=True)  # no half bundle, and never one holding a token
                raise
            report(a.dry_run)
            print(f"dry run: the bundle for {a.space} is in {a.dry_run}; nothing was uploaded")
            return 0
        token = preflight()
        with tempfile.TemporaryDirectory(prefix="space_bundle_") as tmp:
            bundle = os.path.join(tmp, "bundle")
            assemble(bundle, checkpoints)
            report(bundle)
            upload(a.space, bundle, a.private, token)
        return 0
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted; nothing more was uploaded", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
