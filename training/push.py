"""Push a checkpoint folder to the Hugging Face Hub as a model repository.

    python training/push.py checkpoints/my-chat --repo USER/NAME [--private]
    python training/push.py checkpoints/my-chat --repo USER/NAME --dry-run out/   # what would be uploaded

What goes: the weights (safetensors), config, tokenizer, generation config and chat template, the card (README.md
with its YAML metadata: language, task, base model, metrics), training_report.json and the loss plot, with
local paths cut to file names; never the Trainer states, run.json, or anything outside the allow-list (the same
as the Space bundle's, training/shipping.py). A chat checkpoint without a chat template gets this project's.
Uploaded with huggingface_hub (`create_repo(..., exist_ok=True)`, `upload_folder`); the token comes from
HF_TOKEN or `hf auth login`; HF_ENDPOINT (a mirror) is honoured.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile

if __package__ in (None, ""):  # run as a script: the repository root on the path
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from data.errors import EXIT_BAD_INPUT, InputError  # noqa: E402
from training.shipping import add_chat_template, copy_checkpoint, find_tokens, preflight, write_dry_run  # noqa: E402

REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}")


def bundle(folder: str, out: str, say=print) -> list[str]:
    """The files to upload, in `out`: the allow-listed ones of `folder`, scrubbed; refused when one holds a token."""
    from chat.loading import task_of

    if not os.path.isdir(folder):
        raise InputError(f"checkpoint folder not found: {folder}")
    if not task_of(folder):
        raise InputError(f"{folder} is not a checkpoint folder this app knows (no config.json of a known task)")
    written = copy_checkpoint(folder, out, say)
    if add_chat_template(out):
        say("note: chat template added (written before chat checkpoints carried one)")
        written = sorted(set(written) | {n for n in os.listdir(out) if os.path.isfile(os.path.join(out, n))})
    if not any(n.endswith(".safetensors") for n in written):
        raise InputError(f"{folder} has no model weights in safetensors; train it again with this version")
    tokens = find_tokens(out)
    if tokens:
        raise InputError(
            f"{', '.join(tokens[:3])} would upload something that looks like an access token; remove it; nothing "
            "was uploaded"
        )
    return written


def upload(repo: str, folder: str, private: bool, token: str, say=print) -> str:
    """The network part, kept thin: create the model repository if missing, upload the folder."""
    from huggingface_hub import create_repo, upload_folder

    try:
        url = create_repo(repo, repo_type="model", private=private, exist_ok=True, token=token)
        upload_folder(repo_id=repo, folder_path=folder, token=token, commit_message="Upload with training/push.py")
    except Exception as e:  # HfHubHTTPError (401, 403, 409...), connection errors: one line
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise InputError(f"upload to {repo} failed: {first[:300]}")
    say(f"pushed: {url}")
    return str(url)


def push(folder: str, repo: str, private: bool = False, dry_run: str | None = None, say=print) -> str:
    """Push `folder` to `repo` (or write the upload to `dry_run`); returns the URL or the dry-run folder."""
    if not REPO_ID.fullmatch(repo or ""):
        raise InputError(f"--repo must look like USER/NAME, got {repo!r}")
    if dry_run:
        names: list[str] = []
        write_dry_run(dry_run, lambda out: names.extend(bundle(folder, out, say)))
        say(f"dry run: {len(names)} files for {repo} are in {dry_run}: {', '.join(names)}; nothing was uploaded")
        return dry_run
    token = preflight()
    with tempfile.TemporaryDirectory(prefix="push_") as tmp:
        bundle(folder, tmp, say)
        return upload(repo, tmp, private, token, say)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python training/push.py", description=__doc__.split("\n\n")[0])
    p.add_argument("folder", help="a checkpoint folder written by a training script")
    p.add_argument("--repo", required=True, help="the model repository to create or update: USER/NAME")
    p.add_argument("--private", action="store_true", help="create the repository as private")
    p.add_argument("--dry-run", metavar="OUT_DIR", help="write what would be uploaded to OUT_DIR; upload nothing")
    a = p.parse_args(argv)
    try:
        push(a.folder, a.repo, a.private, a.dry_run)
        return 0
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted; nothing more was uploaded", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
