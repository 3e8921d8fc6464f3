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

# Written into <output>.partial/ just before the publish moves <output> aside: the name (and inode) of the
# folder it moves it to. Only a folder named there is ever deleted, so a user's own `<output>.old-backup`
# or a look-alike from elsewhere is never touched (issue #34).
REPLACING_FILE = "REPLACING.json"


def _made_by_us(work: str) -> bool:
    """A `<output>.partial` this program made: it holds the run identity, the states or the publish marker
    (or nothing at all: killed between creating it and writing the identity). Anything else by that
    name is the user's, and is never removed (issue #34)."""
    if not os.path.isdir(work) or os.path.islink(work):
        return False
    names = set(os.listdir(work))
    return not names or bool(names & {RUN_FILE, "states", READY_FILE})


def _refuse_foreign_work(work: str) -> None:
    if os.path.lexists(work) and not _made_by_us(work):
        raise InputError(
            f"{work} exists and was not made by this program (no {RUN_FILE} inside); "
            "it is left as it is: move it or choose another --output"
        )


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


class NothingToDo(Exception):
    """The command's work is already done (a crash-interrupted publish was finished on start)."""


class OutputPlan:
    """Decides where a run writes, what it resumes from, and swaps the result in atomically.

    Publishing is recoverable: model files are written into `<output>.partial/`, then a
    PUBLISH_READY marker, then `<output>` is moved to `<output>.old-PID` (the name recorded in
    REPLACING_FILE first) and `.partial` to `<output>`, and the recorded folder is removed. A crash
    anywhere in that sequence is finished by the next start (`recover`), which says so in one line.
    Nothing this program did not record is ever deleted.
    """

    def __init__(self, output: str, overwrite: bool = False, resume: bool = False, identity: dict | None = None):
        self.final = os.path.abspath(output)
        self.work = self.final.rstrip(os.sep) + ".partial"
        self.states = os.path.join(self.work, "states")
        self.overwrite, self.resume = overwrite, resume
        self.identity = identity
        self.resumed_from: str | None = None
        self.finished_state = False  # resuming a state whose training had already ended (killed while saving)
        self.started = False  # training began: from then on .partial holds the run's own states

    def _recorded_old(self, folder: str) -> str | None:
        """The aside-folder named by `folder`'s REPLACING marker, if it exists and is the very folder
        this program moved there (same name pattern, same parent, same inode)."""
        try:
            with open(os.path.join(folder, REPLACING_FILE), encoding="utf-8") as f:
                record = json.load(f)
            name, inode = record["name"], (record["dev"], record["ino"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        base = os.path.basename(self.final.rstrip(os.sep))
        if not (isinstance(name, str) and re.fullmatch(re.escape(base) + r"\.old-\d+(-\d+)?", name)):
            return None
        path = os.path.join(os.path.dirname(self.final.rstrip(os.sep)), name)
        try:
            st = os.stat(path)
        except OSError:
            return None
        return path if os.path.isdir(path) and (st.st_dev, st.st_ino) == tuple(inode) else None

    def _forget_replacing(self) -> None:
        old = self._recorded_old(self.final)
        if old:
            shutil.rmtree(old, ignore_errors=True)
        if os.path.isfile(os.path.join(self.final, REPLACING_FILE)):
            os.remove(os.path.join(self.final, REPLACING_FILE))

    def recover(self) -> str | None:
        """Finish a publish that a crash interrupted; returns what was done, in words.

        Only folders this program recorded (REPLACING_FILE) are removed; anything else next to the
        output, e.g. a user's `<output>.old-backup`, is left alone."""
        if os.path.isfile(os.path.join(self.work, READY_FILE)):
            self._swap()
            return f"finished saving the model of an interrupted run: {self.final}"
        if os.path.isfile(os.path.join(self.final, REPLACING_FILE)):
            # a publish that finished its renames but was killed before removing the old folder
            for name in (READY_FILE, PROGRESS_FILE):
                if os.path.exists(os.path.join(self.final, name)):
                    os.remove(os.path.join(self.final, name))
            self._forget_replacing()
        return None

    def _note_lookalikes(self) -> None:
        base = self.final.rstrip(os.sep)
        others = sorted(p for p in glob.glob(glob.escape(base) + ".old-*") if os.path.isdir(p))
        if others:
            say(f"note: left {', '.join(others[:3])}{' ...' if len(others) > 3 else ''} alone (not made by this run)")

    def refuse_inputs_inside(self, inputs: dict[str, str]) -> None:
        """A run replaces <output> (and <output>.partial) as a whole: an input file inside either
        would be deleted by the publish, so such a run is refused before it starts (issue #34)."""
        for flag, path in inputs.items():
            real = os.path.realpath(path)
            for folder in (self.final, self.work):
                inside = os.path.realpath(folder)
                if real == inside or real.startswith(inside.rstrip(os.sep) + os.sep):
                    raise InputError(
                        f"{flag} {path} is inside the output folder {folder}, which this run replaces; "
                        "move the file elsewhere or choose another --output"
                    )

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
            self._note_lookalikes()
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
                _refuse_foreign_work(self.work)
                if os.path.exists(self.work):
                    shutil.rmtree(self.work)
                target = os.path.join(self.states, f"checkpoint-{step}")
                shutil.copytree(saved, target)
                _write_identity(self.work, self.identity or _read_identity(saved) or {})
                _UNSTARTED.append(self)  # a copy of ours: gone again if this resume is refused before it trains
                self.resumed_from = saved
                return target
            raise InputError(f"nothing to resume: no interrupted run at {self.work} and no saved state in {self.final}")
        _refuse_foreign_work(self.work)
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
        _UNSTARTED.append(self)
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
        if os.path.exists(self.final):  # (a crash after this move finds <output> gone: the marker stays valid)
            aside = self._aside_name()
            st = os.stat(self.final)
            with open(os.path.join(self.work, REPLACING_FILE), "w", encoding="utf-8") as f:
                json.dump({"name": os.path.basename(aside), "dev": st.st_dev, "ino": st.st_ino}, f)
            os.replace(self.final, aside)
        _test_hook("between_renames")
        os.replace(self.work, self.final)
        for name in (READY_FILE, PROGRESS_FILE):
            if os.path.exists(os.path.join(self.final, name)):
                os.remove(os.path.join(self.final, name))
        self._forget_replacing()

    def _aside_name(self) -> str:
        base = self.final.rstrip(os.sep) + f".old-{os.getpid()}"
        name, n = base, 1
        while os.path.lexists(name):  # someone's own folder by that name: pick another, never replace it
            name, n = f"{base}-{n}", n + 1
        return name


_UNSTARTED: list[OutputPlan] = []  # plans whose .partial this process made, until training saves a state


def abandon_unstarted() -> None:
    """Remove the .partial folders this process made for a run refused before it trained (a model that
    will not load, a resume that has nothing left to do): they hold only what this process put there (the
    run's identity, or a copy of the saved state it meant to resume), and left behind they make the next
    plain start say "holds an interrupted run" (issue #34)."""
    while _UNSTARTED:
        plan = _UNSTARTED.pop()
        if not plan.started and os.path.isdir(plan.work):
            shutil.rmtree(plan.work, ignore_errors=True)


def _test_hook(point: str) -> None:
    """Tests stop the process at a named point (TRAINING_TEST_CRASH_AT=between_renames) to prove recovery."""
    if os.environ.get("TRAINING_TEST_CRASH_AT") == point:
        os.kill(os.getpid(), signal.SIGKILL)
