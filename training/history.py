"""Runs you can find again: what a run records of itself while it trains, and the list of every run under a
checkpoints folder (the app's 历史 Runs tab and its `/runs` API; `python -m training.history` in a terminal).

A run records itself in `<output>.partial/run_status.json` (light: no torch here):

    {"status": "running" | "stopped" | "failed", "task", "started_at", "pid", "command", "reason"}

written when its folder is opened, and again when it stops (Ctrl-C, the Train tab's Stop) or fails. A
finished run has no status file: its checkpoint folder and training_report.json say everything (the
publish removes the file). A `.partial` whose status still says "running" but whose process is gone was
interrupted (killed, the machine went down): `--resume` continues it when it saved a state.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import socket
import sys
from dataclasses import asdict, dataclass, field

from training.ownership import (
    RUN_FILE,
    STATE_DIR,
    STATUS_FILE,
    read_json,
    remove_ours,
    write_json_atomic,
    written_names,
)

FINISHED, WEAK, RUNNING, STOPPED, FAILED, INTERRUPTED = (
    "finished",
    "finished, learned little",
    "running",
    "stopped",
    "failed",
    "interrupted",
)
STATUS_ZH = {
    FINISHED: "完成",
    WEAK: "完成（没学到多少）",
    RUNNING: "训练中",
    STOPPED: "已停止",
    FAILED: "失败",
    INTERRUPTED: "中断",
}


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).astimezone().strftime("%Y-%m-%dT%H:%M:%S%z")


def write_status(folder: str, **values) -> None:
    """Merge `values` into the run's status file in `folder` (its .partial); a courtesy: never stops a run."""
    if not os.path.isdir(folder):
        return
    path = os.path.join(folder, STATUS_FILE)
    status = read_json(path)
    status = status if isinstance(status, dict) else {}
    status.update(values)
    try:
        write_json_atomic(path, status)
    except OSError:
        pass


def started(folder: str, task: str, command: str, data: str | None, at: str) -> None:
    write_status(
        folder,
        status=RUNNING,
        task=task,
        started_at=at,
        pid=os.getpid(),
        host=socket.gethostname(),
        command=command,
        data=data,
        reason=None,
        ended_at=None,
        trained=None,
        cwd=os.getcwd(),
    )


FRESH_S = 120  # a progress file written this recently: its run is alive, whatever else says


def _fresh(folder: str) -> bool:
    import time

    try:
        return time.time() - os.path.getmtime(os.path.join(folder, "progress.json")) < FRESH_S
    except OSError:
        return False


def _alive(status: dict) -> bool:
    pid = status.get("pid")
    if status.get("host") not in (None, socket.gethostname()):
        return True  # another machine's process (a shared folder): it cannot be checked from here, so never "gone"
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists, owned by someone else
        return True
    return True


@dataclass
class RunRecord:
    """One row of the Runs page."""

    name: str  # the folder's path under the checkpoints folder, without ".partial"
    folder: str  # the folder itself (a checkpoint, or <output>.partial for a run that did not finish)
    task: str
    status: str  # FINISHED, WEAK, RUNNING, STOPPED, FAILED, INTERRUPTED
    data: str | None = None  # the training file
    base: str | None = None
    started_at: str | None = None
    duration_s: float | None = None
    steps: int | None = None
    metric: str | None = None  # e.g. "perplexity 182.4"
    metric_value: float | None = None
    verdict: str | None = None  # how the figure compares with the task's usual range (training/norms.py)
    reason: str | None = None  # why it stopped or failed
    command: str | None = None  # the command that trains it again
    cwd: str | None = None  # the folder the command ran in (its relative paths start there)
    resumable: bool = False
    demo: bool = False
    report: dict = field(default_factory=dict, repr=False)

    def row(self) -> dict:
        """The API's row (no report)."""
        out = asdict(self)
        out.pop("report")
        return out


def _duration(report: dict) -> float | None:
    """From the start (reading the data) to the report, when both are recorded; else the training's wall time."""
    try:
        begun = dt.datetime.strptime(report["started_at"], "%Y-%m-%dT%H:%M:%S%z")
        end = dt.datetime.strptime(report["finished_at"], "%Y-%m-%dT%H:%M:%S%z")
        return round((end - begun).total_seconds(), 1)
    except (KeyError, TypeError, ValueError):
        return report.get("wall_time_s")


def _started_from_report(report: dict) -> str | None:
    if report.get("started_at"):
        return report["started_at"]
    finished, wall = report.get("finished_at"), report.get("wall_time_s")
    try:
        end = dt.datetime.strptime(finished, "%Y-%m-%dT%H:%M:%S%z")
        return (end - dt.timedelta(seconds=float(wall or 0))).strftime("%Y-%m-%dT%H:%M:%S%z")
    except (TypeError, ValueError):
        return None


def _training(task: str):
    from chat.tasks import TASKS

    spec = TASKS.get(task)
    return spec.training if spec is not None else None


def finished_record(name: str, folder: str, report: dict) -> RunRecord:
    task = report.get("task", "?")
    hyper = report.get("hyperparameters") or {}
    training = _training(task)
    metric = training.key_figure(report) if training else None
    return RunRecord(
        name=name,
        folder=folder,
        task=task,
        status=WEAK if report.get("warning") else FINISHED,
        data=hyper.get(training.data_option) if training else None,
        base=report.get("base_model"),
        started_at=_started_from_report(report),
        duration_s=_duration(report),
        steps=report.get("global_step"),
        metric=metric[1] if metric else None,
        metric_value=metric[0] if metric else None,
        verdict=training.verdict(report) if training else None,
        command=report.get("command"),
        cwd=report.get("cwd"),
        demo=os.path.basename(folder).startswith("demo-"),
        report=report,
    )


def unfinished_record(name: str, folder: str) -> RunRecord | None:
    """A `.partial` of ours (its run identity inside): running, stopped, failed or interrupted."""
    if not os.path.isfile(os.path.join(folder, RUN_FILE)):
        return None  # not a run's working folder (a user's own folder of that name)
    status = read_json(os.path.join(folder, STATUS_FILE))
    status = status if isinstance(status, dict) else {}
    progress = read_json(os.path.join(folder, "progress.json"))
    progress = progress if isinstance(progress, dict) else {}
    state = status.get("status") or INTERRUPTED  # a .partial from before run_status.json existed: no status
    if state in (RUNNING, INTERRUPTED) and _fresh(folder):
        state = RUNNING
    elif state == RUNNING and not _alive(status):
        state = INTERRUPTED
    states = os.path.join(folder, "states")
    saved = [n for n in os.listdir(states) if n.startswith("checkpoint-")] if os.path.isdir(states) else []
    resumable = bool(saved)
    steps = progress.get("step")
    for checkpoint in saved:  # a stop within a second of the last progress write: the saved state knows the step
        trainer_state = read_json(os.path.join(states, checkpoint, "trainer_state.json"))
        if isinstance(trainer_state, dict) and isinstance(trainer_state.get("global_step"), int):
            steps = max(steps or 0, trainer_state["global_step"])
    duration = None
    try:
        begun = dt.datetime.strptime(status["started_at"], "%Y-%m-%dT%H:%M:%S%z")
        if state == RUNNING:
            end = dt.datetime.now(dt.timezone.utc)
        elif status.get("ended_at"):
            end = dt.datetime.strptime(status["ended_at"], "%Y-%m-%dT%H:%M:%S%z")
        else:  # interrupted: it ended at its last sign of life
            stamp = os.path.join(folder, "progress.json" if progress else STATUS_FILE)
            end = dt.datetime.fromtimestamp(os.path.getmtime(stamp), dt.timezone.utc)
        duration = round(max(0.0, (end - begun).total_seconds()), 1)
    except (KeyError, TypeError, ValueError, OSError):
        pass
    command = status.get("command")
    cwd = status.get("cwd")
    return RunRecord(
        name=name,
        folder=folder,
        task=status.get("task") or progress.get("task") or "?",
        status=state,
        data=status.get("data"),
        base=status.get("base"),
        started_at=status.get("started_at"),
        duration_s=duration,
        steps=steps,
        reason=status.get("reason"),
        command=command,
        cwd=cwd,
        # a run that failed while training (diverged) starts afresh (--overwrite); one whose resume failed before it
        # trained again (offline base, too big a batch) still has its states
        resumable=resumable
        and bool(status.get("command"))
        and (state in (STOPPED, INTERRUPTED) or (state == FAILED and status.get("trained") is False)),
        demo=os.path.basename(name).startswith("demo-"),
        report={"epochs": progress.get("points") or []},
    )


def list_runs(root: str) -> list[RunRecord]:
    """Every run under `root` (and one level below, as the app lists models), newest first."""
    from chat.loading import task_of

    records: list[RunRecord] = []

    def visit(folder: str, depth: int) -> None:
        try:
            names = sorted(os.listdir(folder))
        except OSError:
            return
        for entry in names:
            path = os.path.join(folder, entry)
            if entry.startswith(".") or not os.path.isdir(path):
                continue
            name = os.path.relpath(path, root)
            if entry.endswith(".partial"):
                record = unfinished_record(name[: -len(".partial")], path)
                if record is not None:
                    records.append(record)
                continue
            if task_of(path):
                report = read_json(os.path.join(path, "training_report.json"))
                if isinstance(report, dict) and "task" in report:
                    records.append(finished_record(name, path, report))
            elif depth == 0:
                visit(path, 1)

    if os.path.isdir(root):
        visit(root, 0)
    records.sort(key=lambda r: r.started_at or "", reverse=True)
    return records


def delete_run(record: RunRecord) -> str:
    """Delete a run's folder when this program made it: a checkpoint loses the files its publish wrote (a file of
    yours inside stays, and so does the folder then); a working folder (.partial) goes as a whole. Returns what
    was done, in one line."""
    folder = record.folder
    if record.status == RUNNING:
        raise ValueError(f"{record.name} is still training: stop it first")
    if folder.endswith(".partial"):
        if not os.path.isfile(os.path.join(folder, RUN_FILE)):
            raise ValueError(f"{folder} is not a run's working folder of this program; it is left as it is")
        remove_ours(folder)  # the folder as a whole, its markers last
        if os.path.isdir(folder):
            raise ValueError(f"{folder} could not be removed completely")
        return f"deleted {folder}"
    ours = written_names(folder)
    if ours is None:
        raise ValueError(f"{folder} was not written by this program (no checkpoint_manifest.json); it is left as it is")
    kept = []
    for entry in os.listdir(folder):
        path = os.path.join(folder, entry)
        if entry in ours:
            shutil.rmtree(path) if os.path.isdir(path) and not os.path.islink(path) else os.remove(path)
        else:
            kept.append(entry)
    if kept:
        return f"deleted the model files in {folder}; kept {len(kept)} of yours: {', '.join(sorted(kept)[:5])}"
    os.rmdir(folder)
    return f"deleted {folder}"


def curves(record: RunRecord) -> dict[str, list[tuple[int, float]]]:
    """The run's loss curves by step: {"train": [(step, loss)], "valid": [...]}, from its report's per-epoch
    figures (a finished run), its progress file (one that trains or stopped) or its last Trainer state."""
    folder = record.folder
    report = record.report
    if report.get("epochs") and report.get("global_step") and report.get("epochs_trained"):
        per_epoch = report["global_step"] / report["epochs_trained"]
        out = {"train": [], "valid": []}
        for row in report["epochs"]:
            for key, name in (("train_loss", "train"), ("valid_loss", "valid")):
                if isinstance(row.get(key), (int, float)):
                    out[name].append((round(row["epoch"] * per_epoch), float(row[key])))
        return out
    states = [os.path.join(folder, STATE_DIR, "trainer_state.json")]
    checkpoints = os.path.join(folder, "states")
    if os.path.isdir(checkpoints):
        found = [n for n in os.listdir(checkpoints) if n.startswith("checkpoint-") and n[11:].isdigit()]
        states += [
            os.path.join(checkpoints, n, "trainer_state.json") for n in sorted(found, key=lambda n: -int(n[11:]))
        ]
    progress = read_json(os.path.join(folder, "progress.json"))
    if isinstance(progress, dict) and isinstance(progress.get("curve"), dict) and progress["curve"].get("train"):
        curve = progress["curve"]
        return {k: [(int(a), float(b)) for a, b in curve.get(k, [])] for k in ("train", "valid")}
    for path in states:
        state = read_json(path)
        if isinstance(state, dict) and isinstance(state.get("log_history"), list):
            out: dict[str, list] = {"train": [], "valid": []}
            for entry in state["log_history"]:
                if "loss" in entry and "step" in entry:
                    out["train"].append((int(entry["step"]), float(entry["loss"])))
                if "eval_loss" in entry and "step" in entry:
                    out["valid"].append((int(entry["step"]), float(entry["eval_loss"])))
            return out
    return {"train": [], "valid": []}


def options_of(record: RunRecord) -> dict:
    """The run's options: a finished run's recorded hyperparameters, else the flags of its command."""
    if record.report.get("hyperparameters"):
        return dict(record.report["hyperparameters"])
    import shlex

    words = shlex.split(record.command or "")[2:]
    training = _training(record.task)
    if training is not None:  # every option, the defaults included, as the script parsed them
        from training.args import LoraArguments, RunArguments, parse_args

        try:
            groups = parse_args((training.options_class(), LoraArguments, RunArguments), words, "", "")
            return {k: v for g in groups for k, v in asdict(g).items() if k != "config"}
        except (Exception, SystemExit):  # a --config that moved: the flags as written
            pass
    out: dict = {}
    i = 0
    while i < len(words):
        if words[i].startswith("--"):
            key = words[i][2:].replace("-", "_")
            if i + 1 < len(words) and not words[i + 1].startswith("--"):
                out[key], i = words[i + 1], i + 2
                continue
            out[key] = True
        i += 1
    return out


def differences(a: RunRecord, b: RunRecord) -> list[tuple[str, str, str]]:
    """(option, a's value, b's value) for each option the two runs set differently (the output folder aside)."""
    left, right = options_of(a), options_of(b)
    rows = []
    for key in sorted(set(left) | set(right)):
        if key in ("output", "overwrite", "resume"):
            continue
        x, y = left.get(key), right.get(key)
        if str(x) != str(y):
            rows.append((key, "" if x is None else str(x), "" if y is None else str(y)))
    for field_name in ("task", "data", "base"):
        x, y = getattr(a, field_name), getattr(b, field_name)
        if x != y and field_name not in {r[0] for r in rows}:
            rows.insert(0, (field_name, str(x), str(y)))
    return rows


def main(argv: list[str] | None = None) -> int:
    """`python -m training.history [FOLDER] [--json]`: the runs, newest first."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m training.history", description="list the runs in a folder")
    parser.add_argument("folder", nargs="?", default="checkpoints")
    parser.add_argument("--json", action="store_true", help="one JSON line per run")
    args = parser.parse_args(argv)
    runs = list_runs(args.folder)
    for r in runs:
        if args.json:
            print(json.dumps(r.row(), ensure_ascii=False))
        else:
            minutes = f"{r.duration_s / 60:.1f} min" if r.duration_s is not None else "-"
            when = (r.started_at or "-")[:16]
            print(f"{when}  {r.status:<24} {r.task:<10} {r.name:<28} {minutes:>9}  {r.metric or ''}")
    if not runs and not args.json:
        print(f"no runs in {args.folder}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
