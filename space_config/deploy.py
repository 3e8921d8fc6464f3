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
import os
import re
import shutil
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from data.errors import EXIT_BAD_INPUT, InputError  # noqa: E402  (needs the repo root on sys.path first)
from training.shipping import (  # noqa: E402  (the allow-list the Space bundle shares with training/push.py)
    add_chat_template,
    copy_checkpoint,
    find_tokens,
    preflight,
    write_dry_run,
)

PACKAGES = ("chat", "training", "data", "webui")
TOP_FILES = ("app.py", "LICENSE")
# CPU-only torch on Spaces: the default PyPI wheel pulls several GB of CUDA libraries.
CPU_TORCH = ["--extra-index-url https://download.pytorch.org/whl/cpu"]
# Free "CPU basic" Space: 2 vCPU, 16 GiB memory, 50 GB of (non-persistent) disk.
FREE_MEMORY = 16 * 2**30
FREE_DISK = 50 * 10**9
RUNTIME_MEMORY = 1.5 * 2**30  # python + torch + gradio before any model


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
        copy_checkpoint(folder, os.path.join(out, "checkpoints", name), say)
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
            write_dry_run(a.dry_run, lambda out: assemble(out, checkpoints))
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
