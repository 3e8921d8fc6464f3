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
from training.ownership import (
    BOOKKEEPING,
    LEGACY_NAMES,
    MANIFEST,
    PROGRESS_FILE,
    READY_FILE,
    REPLACING_FILE,
    RUN_FILE,
    STATE_DIR,
    STATUS_FILE,
    TRAINING_NAMES,
    foreign_names,
    identity_difference,
    read_identity,
    refuse_foreign_work,
    remove_ours,
    write_identity,
    write_json_atomic,
    written_names,
)


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


class NothingToDo(Exception):
    """The command's work is already done (a crash-interrupted publish was finished on start)."""


class OutputFolder:
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
        self.not_published: set[str] = set()  # in .partial before the publish began, not written by it (trained())

    def _recorded_old(self, folder: str) -> tuple[str, set[str] | None] | None:
        """The aside-folder named by `folder`'s REPLACING marker, if it exists and is the very folder
        this program moved there (same name pattern, same parent, same inode), and the names in it that were
        ours when it was moved (recorded then: its own manifest may be the first thing a killed removal took)."""
        try:
            with open(os.path.join(folder, REPLACING_FILE), encoding="utf-8") as f:
                record = json.load(f)
            name, inode = record["name"], (record["dev"], record["ino"])
            ours = set(record["ours"]) if isinstance(record.get("ours"), list) else None
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
        return (path, ours) if os.path.isdir(path) and (st.st_dev, st.st_ino) == tuple(inode) else None

    def _forget_replacing(self) -> None:
        recorded = self._recorded_old(self.final)
        if recorded and self._carry_foreign(*recorded):
            shutil.rmtree(recorded[0], ignore_errors=True)
        if os.path.isfile(os.path.join(self.final, REPLACING_FILE)):
            os.remove(os.path.join(self.final, REPLACING_FILE))

    def _carry_foreign(self, old: str, ours: set[str] | None) -> bool:
        """Move what a user put into the replaced checkpoint (while this run trained) into the new one; True when
        nothing of theirs is left in `old`, which may then be removed. `ours`: the names that were ours in it."""
        foreign = foreign_names(old) if ours is None else sorted(set(os.listdir(old)) - ours)
        kept = True
        for name in foreign:
            if os.path.lexists(os.path.join(self.final, name)):
                kept = False  # the new model has a file by that name: keep the old folder rather than lose theirs
                continue
            os.replace(os.path.join(old, name), os.path.join(self.final, name))
            say(f"note: kept your {name} (not written by this program) in {self.final}")
        if not kept:
            say(f"note: left {old} in place: it holds files of yours that the new model's names would hide")
        return kept

    def recover(self) -> str | None:
        """Finish a publish that a crash interrupted; returns what was done, in words.

        Only folders this program recorded (REPLACING_FILE) are removed; anything else next to the
        output, e.g. a user's `<output>.old-backup`, is left alone."""
        if os.path.isfile(os.path.join(self.work, READY_FILE)):
            self._swap()
            return f"finished saving the model of an interrupted run: {self.final}"
        if os.path.isfile(os.path.join(self.final, REPLACING_FILE)):
            # a publish that finished its renames but was killed before removing the old folder
            for name in (READY_FILE, PROGRESS_FILE, STATUS_FILE):
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

    def place_output_file(self, flag: str, path: str, inputs: dict[str, str]) -> str:
        """Where a file the run writes beside its model (similarity's --output-file) goes, checked before training:
        never onto an input, a folder or a file of the user's (unless --overwrite); a file named directly in the
        output folder is written into the new checkpoint, so its manifest lists it."""
        target = os.path.realpath(path)
        for other, given in inputs.items():
            if os.path.realpath(given) == target:
                raise InputError(f"{flag} {path} is the file of {other}: it would be overwritten; choose another name")
        if os.path.isdir(target):
            raise InputError(f"{flag} {path} is a folder; name a file, e.g. {os.path.join(path, 'predictions.jsonl')}")
        parent = os.path.dirname(target)
        if target in (os.path.realpath(self.final), os.path.realpath(self.work)):
            raise InputError(f"{flag} {path} is the output folder itself; name a file, e.g. predictions.jsonl")
        if parent == os.path.realpath(self.final):
            reserved = (LEGACY_NAMES - {"predictions.jsonl"}) | BOOKKEEPING | {"states", "mlm_stage"}
            if os.path.basename(target) in reserved:
                raise InputError(f"{flag} {path} would replace a file of the checkpoint itself; choose another name")
            return os.path.join(self.work, os.path.basename(target))
        for folder in (self.final, self.work):
            inside = os.path.realpath(folder).rstrip(os.sep) + os.sep
            if target.startswith(inside):
                raise InputError(
                    f"{flag} {path} is in a subfolder of {folder}, which this run replaces; name a file "
                    "in the output folder itself or outside it"
                )
        if os.path.lexists(target) and not self.overwrite:
            how = (
                "choose another name or move it"
                if self.resume
                else "pass --overwrite to replace it or choose another name"
            )
            raise InputError(f"{flag} {path} already exists; {how}")
        probe = parent
        while not os.path.exists(probe):
            probe = os.path.dirname(probe)
        if not os.path.isdir(probe) or not os.access(probe, os.W_OK | os.X_OK):
            raise InputError(f"{flag} {path} cannot be written: {probe} is not a writable folder")
        return target

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

    def _refuse_foreign_final(self) -> None:
        """<output> is replaced as a whole when the run publishes: only a checkpoint this program wrote, holding
        nothing else, may be (an empty folder loses nothing)."""
        if not os.path.isdir(self.final) or not os.listdir(self.final):
            return
        if written_names(self.final) is None:
            raise InputError(
                f"{self.final} exists and is not a checkpoint this program wrote (no {MANIFEST} or "
                "training_report.json inside); it is left as it is: choose another --output"
            )
        foreign = foreign_names(self.final)
        if foreign and (self.overwrite or self.resume):
            shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
            raise InputError(
                f"{self.final} holds files this program did not write ({shown}); the new model replaces the "
                "folder, so move them out first"
            )

    def _make_work(self) -> None:
        """Create <output>.partial with the run identity already inside (written in a temporary folder that is then
        renamed): a kill at any moment leaves either no .partial or one that says it is ours."""
        import tempfile

        os.makedirs(os.path.dirname(self.work), exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=os.path.basename(self.work) + ".new-", dir=os.path.dirname(self.work))
        write_identity(tmp, self.identity or {})
        os.rename(tmp, self.work)

    def _prepare(self) -> str | None:
        self._refuse_foreign_final()
        interrupted = _latest_checkpoint(self.states)
        if self.resume:
            if interrupted:
                differs = identity_difference(read_identity(self.work), self.identity)
                if differs:
                    raise InputError(
                        f"the interrupted run in {self.work} was another run ({differs} differ); "
                        f"run the command it was started with, or --overwrite to start this one afresh"
                    )
                self.resumed_from = interrupted
                return interrupted
            saved = os.path.join(self.final, STATE_DIR)
            if os.path.isfile(os.path.join(saved, "trainer_state.json")):
                differs = identity_difference(read_identity(saved), self.identity)
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
                refuse_foreign_work(self.work)
                remove_ours(self.work)
                self.identity = self.identity or read_identity(saved) or {}
                self._make_work()
                target = os.path.join(self.states, f"checkpoint-{step}")
                copying = os.path.join(self.states, f".copy-{step}")  # renamed when whole: a kill leaves no half state
                shutil.copytree(saved, copying)
                os.rename(copying, target)
                _UNSTARTED.append(self)  # a copy of ours: gone again if this resume is refused before it trains
                self.resumed_from = saved
                return target
            raise InputError(f"nothing to resume: no interrupted run at {self.work} and no saved state in {self.final}")
        refuse_foreign_work(self.work)
        if os.path.exists(self.work) and not self.overwrite:
            raise InputError(
                f"{self.work} holds an interrupted run; pass --resume to continue it or --overwrite to start over"
            )
        if os.path.isdir(self.final) and os.listdir(self.final) and not self.overwrite:
            raise InputError(
                f"{self.final} already exists; pass --overwrite to replace it or --resume to continue training it"
            )
        remove_ours(self.work)
        self._make_work()
        _UNSTARTED.append(self)
        return None

    def trained(self) -> None:
        """Training ended: what .partial holds now, other than names a publish writes (left by a save that a kill
        interrupted, written again now), is not the publish's: a file of a user's put there is never listed."""
        names = set(os.listdir(self.work)) if os.path.isdir(self.work) else set()
        self.not_published = names - LEGACY_NAMES - TRAINING_NAMES

    def mark_ready(self) -> None:
        """Every model file is in .partial/: record the names written since training ended (the manifest), then
        the marker after which a crash is finished by the next start."""
        skip = BOOKKEEPING | self.not_published | {"states", RUN_FILE}
        names = {n for n in os.listdir(self.work) if n not in skip}
        if _latest_checkpoint(self.states) or os.path.isdir(os.path.join(self.work, STATE_DIR)):
            names.add(STATE_DIR)  # _swap moves the last state there
        write_json_atomic(os.path.join(self.work, MANIFEST), {"written_by": "training", "files": sorted(names)})
        with open(os.path.join(self.work, READY_FILE), "w") as f:
            f.write("ok\n")

    def discard_model_files(self) -> None:
        """After a failed save: remove half-written model files, keep the training state (resumable)."""
        for name in os.listdir(self.work) if os.path.isdir(self.work) else []:
            if name not in ("states", RUN_FILE, STATUS_FILE):
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
                ours = sorted(written_names(self.final) or ())
                json.dump({"name": os.path.basename(aside), "dev": st.st_dev, "ino": st.st_ino, "ours": ours}, f)
            os.replace(self.final, aside)
        _test_hook("between_renames")
        os.replace(self.work, self.final)
        for name in (READY_FILE, PROGRESS_FILE, STATUS_FILE):
            if os.path.exists(os.path.join(self.final, name)):
                os.remove(os.path.join(self.final, name))
        self._forget_replacing()

    def _aside_name(self) -> str:
        base = self.final.rstrip(os.sep) + f".old-{os.getpid()}"
        name, n = base, 1
        while os.path.lexists(name):  # someone's own folder by that name: pick another, never replace it
            name, n = f"{base}-{n}", n + 1
        return name


_UNSTARTED: list[OutputFolder] = []  # plans whose .partial this process made, until training saves a state


def abandon_unstarted() -> None:
    """Remove the .partial folders this process made for a run refused before it trained (a model that
    will not load, a resume that has nothing left to do): they hold only what this process put there (the
    run's identity, or a copy of the saved state it meant to resume), and left behind they make the next
    plain start say "holds an interrupted run" (issue #34)."""
    while _UNSTARTED:
        plan = _UNSTARTED.pop()
        if not plan.started:
            remove_ours(plan.work)


def _test_hook(point: str) -> None:
    """Tests stop the process at a named point (TRAINING_TEST_CRASH_AT=between_renames) to prove recovery."""
    if os.environ.get("TRAINING_TEST_CRASH_AT") == point:
        os.kill(os.getpid(), signal.SIGKILL)
