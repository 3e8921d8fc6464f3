"""Which files in an output folder are ours: the names a publish wrote (its manifest), the identity of the run that
a working folder belongs to, and the test for anything else (yours, never removed or replaced).

training/output.py decides with these what a run may replace, resume or must refuse.
"""

from __future__ import annotations

import json
import os
import shutil

from data.errors import InputError
from data.textio import write_atomic

STATE_DIR = "resume_state"  # the Trainer state a finished or stopped run keeps, in its folder
RUN_FILE = "run.json"  # the identity of the run that a working folder or a resume_state/ belongs to


# written once every model file is in .partial/: from then on the publish is finished, not redone
READY_FILE = "PUBLISH_READY"


# in <output>.partial/ from its start: the run's status for the Runs page (training/history.py); not published
STATUS_FILE = "run_status.json"

PROGRESS_FILE = "progress.json"  # in <output>.partial/ while training: what a watcher (the app) shows

# Written into <output>.partial/ just before the publish moves <output> aside: the name (and inode) of the
# folder it moves it to. Only a folder named there is ever deleted, so a user's own `<output>.old-backup`
# or a look-alike from elsewhere is never touched.
REPLACING_FILE = "REPLACING.json"


# Written into every checkpoint this program publishes: the names it wrote there. Only a folder holding it (or,
# from before it existed, a training_report.json of ours) is ever replaced, and only the names it lists are
# ours: anything else found in the folder is the user's and is never deleted.
MANIFEST = "checkpoint_manifest.json"
# What a checkpoint published before the manifest existed holds: the names a publish wrote.
LEGACY_NAMES = {
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "pytorch_model.bin",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "added_tokens.json",
    "training_report.json",
    "README.md",
    "loss.png",
    "adapter",
    "predictions.jsonl",
    "chat_template.jinja",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "demo_build.json",  # the app's demo marker (webui/demos.py)
    "run.json",
    STATE_DIR,
}
# Written into <output>.partial while training (not at the publish): listed in the manifest as ours. Not legacy
# names: a checkpoint published before the manifest existed had none, so a folder of that name there is yours.
TRAINING_NAMES = {"tensorboard"}  # --report-to tensorboard's events (training/runner.py)
BOOKKEEPING = {MANIFEST, READY_FILE, PROGRESS_FILE, REPLACING_FILE, STATUS_FILE}


def read_json(path: str):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def written_names(folder: str) -> set[str] | None:
    """The names this program wrote in `folder`, or None when `folder` is not a checkpoint it published."""
    manifest = read_json(os.path.join(folder, MANIFEST))
    if isinstance(manifest, dict) and isinstance(manifest.get("files"), list):
        return {str(n) for n in manifest["files"]} | BOOKKEEPING
    report = read_json(os.path.join(folder, "training_report.json"))
    if isinstance(report, dict) and "task" in report and "hyperparameters" in report:
        return LEGACY_NAMES | BOOKKEEPING
    return None


def foreign_names(folder: str) -> list[str]:
    """Entries of a published checkpoint that this program did not write there (a user's notes, say)."""
    ours = written_names(folder) or set()
    return sorted(n for n in os.listdir(folder) if n not in ours and not n.startswith(MANIFEST + ".tmp-"))


def adopt(folder: str, name: str) -> None:
    """Record `name`, written into a published checkpoint after the publish (the app's demo marker), as ours."""
    path = os.path.join(folder, MANIFEST)
    manifest = read_json(path)
    if isinstance(manifest, dict) and isinstance(manifest.get("files"), list) and name not in manifest["files"]:
        manifest["files"].append(name)
        write_json_atomic(path, manifest)


def write_json_atomic(path: str, value) -> None:
    write_atomic(path, json.dumps(value, ensure_ascii=False, indent=1))


def remove_ours(folder: str) -> None:
    """Remove a folder this program made, its markers (run.json, PUBLISH_READY) last: a kill part-way leaves a
    folder still known as ours, never one the next run must refuse as the user's."""
    if not os.path.isdir(folder):
        return
    markers = (RUN_FILE, READY_FILE)
    for name in os.listdir(folder):
        if name not in markers:
            path = os.path.join(folder, name)
            shutil.rmtree(path, ignore_errors=True) if os.path.isdir(path) else os.remove(path)
    shutil.rmtree(folder, ignore_errors=True)


def made_by_us(work: str) -> bool:
    """A `<output>.partial` this program made: it holds the run identity (written before the folder got its
    name: training/output.py _make_work) or the publish marker. Anything else by that name, an empty folder
    or one with a `states/` of the user's included, is the user's and is never removed."""
    if not os.path.isdir(work) or os.path.islink(work):
        return False
    return any(os.path.isfile(os.path.join(work, n)) for n in (RUN_FILE, READY_FILE))


def refuse_foreign_work(work: str) -> None:
    if os.path.lexists(work) and not made_by_us(work):
        raise InputError(
            f"{work} exists and was not made by this program (no {RUN_FILE} inside); "
            "it is left as it is: move it or choose another --output"
        )


def read_identity(folder: str) -> dict | None:
    try:
        with open(os.path.join(folder, RUN_FILE), encoding="utf-8") as f:
            value = json.load(f)
        return value if isinstance(value, dict) else None
    except (OSError, ValueError):
        return None


def write_identity(folder: str, identity: dict) -> None:
    with open(os.path.join(folder, RUN_FILE), "w", encoding="utf-8") as f:
        json.dump(identity, f, ensure_ascii=False, indent=1)


def identity_difference(saved: dict | None, current: dict | None) -> str | None:
    """What differs between two run identities, in words, or None when they match (or one is unknown:
    states written before identities were recorded are trusted). An option only one of them has (one added
    or removed by an upgrade in between) is not a difference; "processes" is recorded only above one."""
    if not saved or not current:
        return None
    keys = sorted(
        k
        for k in set(saved) | set(current)
        if (k in saved and k in current or k == "processes") and saved.get(k) != current.get(k)
    )
    if not keys:
        return None
    words = {
        "data": "the data files' contents",
        "task": "the task",
        "processes": f"the number of processes ({saved.get('processes') or 1} then, {current.get('processes') or 1} "
        "now: resume it with the launch it started with)",
    }
    return ", ".join(
        words.get(k, f"--{k.replace('_', '-')} ({saved.get(k)!r} then, {current.get(k)!r} now)") for k in keys[:3]
    )
