"""The output folder of a run: where it trains (<output>.partial/), what it may resume
(resume_state/ and the identity of the run), and the publish step that moves a finished model
into place without ever losing the previous one."""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import signal

from data.errors import InputError
from training.cli import say

STATE_DIR = "resume_state"


def _latest_checkpoint(folder: str) -> str | None:
    # Not transformers.trainer_utils.get_last_checkpoint: that takes the highest checkpoint-N folder
    # even when a kill during its save left it without trainer_state.json, and resuming from it fails
    # (tests/test_reliability.py shows the two differ). Only complete states count here.
    found = [
        (int(m.group(1)), p)
        for p in glob.glob(os.path.join(folder, "checkpoint-*"))
        if (m := re.search(r"checkpoint-(\d+)$", p))
    ]
    found = [(n, p) for n, p in found if os.path.isfile(os.path.join(p, "trainer_state.json"))]
    return max(found)[1] if found else None


def _is_checkpoint_folder(path: str) -> bool:
    return any(os.path.exists(os.path.join(path, f)) for f in ("config.json", "training_report.json"))


RUN_FILE = "run.json"  # the identity of the run that a working folder or a resume_state/ belongs to


READY_FILE = (
    "PUBLISH_READY"  # written once every model file is in .partial/: from then on the publish is finished, not redone
)


PROGRESS_FILE = "progress.json"  # in <output>.partial/ while training: what a watcher (the app) shows


def _read_identity(folder: str) -> dict | None:
    try:
        with open(os.path.join(folder, RUN_FILE), encoding="utf-8") as f:
            value = json.load(f)
        return value if isinstance(value, dict) else None
    except (OSError, ValueError):
        return None


def _write_identity(folder: str, identity: dict) -> None:
    with open(os.path.join(folder, RUN_FILE), "w", encoding="utf-8") as f:
        json.dump(identity, f, ensure_ascii=False, indent=1)


def identity_difference(saved: dict | None, current: dict | None) -> str | None:
    """What differs between two run identities, in words, or None when they match (or one is unknown:
    states written before identities were recorded are trusted)."""
    if not saved or not current:
        return None
    keys = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
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


class NothingToDo(Exception):
    """The command's work is already done (a crash-interrupted publish was finished on start)."""


class OutputPlan:
    """Decides where a run writes, what it resumes from, and swaps the result in atomically.

    Publishing is recoverable: model files are written into `<output>.partial/`, then a
    PUBLISH_READY marker, then `<output>` is moved to `<output>.old-PID` and `.partial` to
    `<output>`. A crash anywhere in that sequence is finished or rolled back by the next start
    (`recover`), which says which in one line.
    """

    def __init__(self, output: str, overwrite: bool = False, resume: bool = False, identity: dict | None = None):
        self.final = os.path.abspath(output)
        self.work = self.final.rstrip(os.sep) + ".partial"
        self.states = os.path.join(self.work, "states")
        self.overwrite, self.resume = overwrite, resume
        self.identity = identity
        self.resumed_from: str | None = None
        self.finished_state = False  # resuming a state whose training had already ended (killed while saving)

    def _olds(self) -> list[str]:
        return sorted(glob.glob(glob.escape(self.final.rstrip(os.sep)) + ".old-*"), key=os.path.getmtime)

    def recover(self) -> str | None:
        """Finish or roll back a publish that a crash interrupted; returns what was done, in words."""
        olds = self._olds()
        if os.path.isfile(os.path.join(self.work, READY_FILE)):
            self._swap()
            for old in olds:
                shutil.rmtree(old, ignore_errors=True)
            return f"finished saving the model of an interrupted run: {self.final}"
        if not os.path.exists(self.final) and olds:
            os.replace(olds[-1], self.final)
            for old in olds[:-1]:
                shutil.rmtree(old, ignore_errors=True)
            return f"restored the previous model in {self.final} (a crash interrupted replacing it)"
        for old in olds:  # a publish that finished but was killed while removing the old folder
            shutil.rmtree(old, ignore_errors=True)
        return None

    def _check_writable(self) -> None:
        parent = os.path.dirname(self.final) or "."
        probe = parent
        while not os.path.exists(probe):
            probe = os.path.dirname(probe) or "."
        if not os.path.isdir(probe):
            raise InputError(f"cannot write {self.final}: {probe} is a file, not a folder")
        if not os.access(probe, os.W_OK | os.X_OK):
            raise InputError(f"cannot write {self.final}: {probe} is not writable")

    def prepare(self) -> str | None:
        """Check the folders; return the Trainer checkpoint to resume from (or None)."""
        if os.path.exists(self.final) and not os.path.isdir(self.final):
            raise InputError(f"--output {self.final} is a file, not a folder")
        self._check_writable()
        try:
            done = self.recover()
            if done:
                say(f"note: {done}")
                if done.startswith("finished") and not (self.overwrite or self.resume):
                    raise NothingToDo(
                        f"{self.final} is ready; --resume --epochs N trains it further, --overwrite starts over"
                    )
            return self._prepare()
        except OSError as e:
            raise InputError(f"cannot prepare {self.work}: {e.strerror or e}")

    def _prepare(self) -> str | None:
        if os.path.isdir(self.final) and os.listdir(self.final) and not _is_checkpoint_folder(self.final):
            raise InputError(f"{self.final} exists and is not a checkpoint folder; choose another --output")
        interrupted = _latest_checkpoint(self.states)
        if self.resume:
            if interrupted:
                differs = identity_difference(_read_identity(self.work), self.identity)
                if differs:
                    raise InputError(
                        f"the interrupted run in {self.work} was another run ({differs} differ); "
                        f"run the command it was started with, or --overwrite to start this one afresh"
                    )
                self.resumed_from = interrupted
                return interrupted
            saved = os.path.join(self.final, STATE_DIR)
            if os.path.isfile(os.path.join(saved, "trainer_state.json")):
                differs = identity_difference(_read_identity(saved), self.identity)
                if differs:
                    started = (
                        " (the run started in .partial saved no state before it stopped)"
                        if os.path.exists(self.work)
                        else ""
                    )
                    raise InputError(
                        f"the saved state in {self.final} belongs to another run{started}: {differs} differ; "
                        f"use --overwrite to train this one from the start"
                    )
                with open(os.path.join(saved, "trainer_state.json")) as f:
                    step = json.load(f)["global_step"]
                if os.path.exists(self.work):
                    shutil.rmtree(self.work)
                target = os.path.join(self.states, f"checkpoint-{step}")
                shutil.copytree(saved, target)
                _write_identity(self.work, self.identity or _read_identity(saved) or {})
                self.resumed_from = saved
                return target
            raise InputError(f"nothing to resume: no interrupted run at {self.work} and no saved state in {self.final}")
        if os.path.exists(self.work) and not self.overwrite:
            raise InputError(
                f"{self.work} holds an interrupted run; pass --resume to continue it or --overwrite to start over"
            )
        if os.path.isdir(self.final) and os.listdir(self.final) and not self.overwrite:
            raise InputError(
                f"{self.final} already exists; pass --overwrite to replace it or --resume to continue training it"
            )
        if os.path.exists(self.work):
            shutil.rmtree(self.work)
        os.makedirs(self.work)
        _write_identity(self.work, self.identity or {})
        return None

    def mark_ready(self) -> None:
        """Every model file is in .partial/: a crash from here on is finished by the next start."""
        with open(os.path.join(self.work, READY_FILE), "w") as f:
            f.write("ok\n")

    def discard_model_files(self) -> None:
        """After a failed save: remove half-written model files, keep the training state (resumable)."""
        for name in os.listdir(self.work) if os.path.isdir(self.work) else []:
            if name not in ("states", RUN_FILE):
                path = os.path.join(self.work, name)
                shutil.rmtree(path, ignore_errors=True) if os.path.isdir(path) else os.remove(path)

    def finalize(self) -> None:
        """Keep the last Trainer state as resume_state/, then move the folder into place."""
        self.mark_ready()
        self._swap()

    def _swap(self) -> None:
        last = _latest_checkpoint(self.states)
        state = os.path.join(self.work, STATE_DIR)
        if last and not os.path.exists(state):
            shutil.move(last, state)
        if os.path.isdir(state) and os.path.isfile(os.path.join(self.work, RUN_FILE)):
            os.replace(os.path.join(self.work, RUN_FILE), os.path.join(state, RUN_FILE))
        shutil.rmtree(self.states, ignore_errors=True)
        old = None
        if os.path.exists(self.final):
            old = self.final.rstrip(os.sep) + f".old-{os.getpid()}"
            os.replace(self.final, old)
        _test_hook("between_renames")
        os.replace(self.work, self.final)
        for name in (READY_FILE, PROGRESS_FILE):
            if os.path.exists(os.path.join(self.final, name)):
                os.remove(os.path.join(self.final, name))
        if old:
            shutil.rmtree(old, ignore_errors=True)


def _test_hook(point: str) -> None:
    """Tests stop the process at a named point (TRAINING_TEST_CRASH_AT=between_renames) to prove recovery."""
    if os.environ.get("TRAINING_TEST_CRASH_AT") == point:
        os.kill(os.getpid(), signal.SIGKILL)
