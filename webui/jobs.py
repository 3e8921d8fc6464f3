"""Training runs started from the browser: one at a time per app, the real training script in a
child process (the same command line a terminal would run, shown in the tab), at low CPU
priority so chat stays responsive.

Stop is Ctrl-C (SIGINT to the child): the runner saves a resumable state and exits, and
`resume()` runs the same command with `--resume`. Progress (step, ETA, the loss curve) comes
from `<output>.partial/progress.json`, which training/runner.py's ProgressFile writes. What a
run prints goes to `<output>.log`, kept beside the model; the log of a run that failed before writing
anything else is removed when the next run starts or the app closes (only a log file this app created).
"""

from __future__ import annotations

import contextlib
import filecmp
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field

from chat.tasks import ROOT, TASKS, task_named
from data.errors import InputError
from data.textio import read_json_dict
from webui.demos import last_error, spawn_training

MAX_UPLOAD_BYTES = 50 * 2**20
# quick / standard / thorough: the time cap (--max-minutes) of a run; the schedule sizes the steps within it
PRESETS = {"快速 quick": 2.0, "标准 standard": None, "充分 thorough": 30.0}  # None: the script's own default cap
SAFE_NAME = re.compile(r"^[\w\u4e00-\u9fff][\w\u4e00-\u9fff.-]{0,63}$")
LOG_TAIL = 12
_PROGRESS_BAR = re.compile(r"\d+%\|.*\||\d+(\.\d+)?(it/s|s/it)")  # tqdm: "63%|███ | 102/161 [...]"


def output_folder(checkpoints: str, name: str) -> str:
    """checkpoints/<name> for a plain folder name; anything that could leave the folder is refused."""
    name = (name or "").strip()
    if not SAFE_NAME.match(name) or name.endswith(".partial") or ".." in name:
        raise InputError(
            f"输出名称不可用 Bad output name {name[:40]!r}: letters, digits, Chinese, '-', '_' or '.', "
            "at most 64, no '/' or '..'"
        )
    return os.path.join(checkpoints, name)


def preview(task: str, path: str) -> dict:
    """What the training script will read from `path`: format, encoding, rows, skipped rows with their
    file:line reasons, and the reader's own notes (the script's own reader). Raises InputError when it cannot train
    on it at all."""
    spec = task_named(task)
    if spec.training is None:
        raise InputError(f"{spec.title} has no data reader to preview with")
    if os.path.getsize(path) > MAX_UPLOAD_BYTES:
        raise InputError(f"文件太大 The file is over {MAX_UPLOAD_BYTES // 2**20} MB")
    unit = spec.training.items
    found = spec.training.read(path)
    items = getattr(found, unit)
    if not items:
        raise InputError(f"{os.path.basename(path)}: no usable {unit} in it ({found.bad.count} bad rows)")
    return {
        "format": found.format,
        "encoding": found.encoding,
        "rows": len(items),
        "unit": unit,
        "skipped": found.bad.count,
        "reasons": list(found.bad.examples),
        "first": [str(x)[:120] for x in items[:3]],
        # what a reader says of its file beyond rows (classify: the columns it picked, the label counts)
        "notes": list(found.describe()) if hasattr(found, "describe") else [],
    }


@dataclass
class Job:
    task: str
    command: list[str]
    data: str  # the training file in `command`
    output: str
    log: str
    state: str = "starting"  # starting -> training -> saving -> done | stopped | failed
    reason: str = ""
    started: float = field(default_factory=time.time)
    progress: dict = field(default_factory=dict)
    first_plan: int | None = None  # the planned steps first shown: a re-plan is said once, in words
    made_log: tuple | None = None  # (device, inode) of the log file when this app created it (not a file of yours)
    cwd: str | None = None  # where the command runs (None: the repository)

    @property
    def shown_command(self) -> str:
        """The command as a terminal would run it from the repository (paths relative to it when inside)."""

        def rel(a: str) -> str:
            return os.path.relpath(a, ROOT) if os.path.isabs(a) and a.startswith(ROOT + os.sep) else a

        return " ".join(["python", rel(self.command[1]), *(rel(a) for a in self.command[2:])])


class TrainingJobs:
    """One training job at a time for the whole app; every visitor sees the same job."""

    def __init__(self, checkpoints: str, python: str = sys.executable, on_done=None):
        self.checkpoints, self.python, self.on_done = checkpoints, python, on_done
        self.job: Job | None = None
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Lock()
        self._uploads: str | None = None

    @property
    def uploads(self) -> str:
        """A private (0700) temporary folder for uploaded files, made on first use, removed by close()."""
        if self._uploads is None:
            self._uploads = tempfile.mkdtemp(prefix="train-uploads-")
        return self._uploads

    def busy(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def command(self, task: str, data: str, output: str, base: str, minutes: float | None, advanced: dict) -> list[str]:
        """The script's command line, built from its options by name (`advanced`: option names, e.g. epochs, lr,
        batch_size, max_len, lora; 0 or empty leaves one to the script's default)."""
        training = task_named(task).training
        values = {training.data_option: data, "output": output, "model": base or "scratch", "max_minutes": minutes}
        values.update({name: value for name, value in advanced.items() if value})
        return [self.python, training.path(training.script), *training.flags(values)]

    def start(
        self,
        task: str,
        data: str,
        name: str,
        base: str = "scratch",
        minutes: float | None = None,
        advanced: dict | None = None,
        overwrite: bool = False,
    ) -> Job:
        output = output_folder(self.checkpoints, name)
        if os.path.exists(output) and not overwrite:
            raise InputError(
                f"{name} 已存在 already exists under {self.checkpoints}: choose another name, or tick overwrite"
            )
        data = self._keep(data, output)
        argv = self.command(task, data, output, base, minutes, advanced or {})
        if overwrite:
            argv.append("--overwrite")
        return self._run(Job(task, argv, data, output, output + ".log"))

    def _keep(self, data: str, output: str) -> str:
        """An uploaded file moves beside the run's output (`<output>.data/<file>`), so the command the tab
        shows still runs after the app has gone (issue #38). A file already there with other contents
        is kept, and the upload gets a new name."""
        if self._uploads is None or os.path.dirname(os.path.abspath(data)) != os.path.abspath(self._uploads):
            return data  # the sample data, used where it is
        folder = output + ".data"
        os.makedirs(folder, exist_ok=True)
        stem, ext = os.path.splitext(os.path.basename(data))
        target, n = os.path.join(folder, stem + ext), 1
        while os.path.exists(target) and not filecmp.cmp(target, data, shallow=False):
            n += 1
            target = os.path.join(folder, f"{stem}-{n}{ext}")
        if not os.path.exists(target):
            shutil.copyfile(data, target)
        with contextlib.suppress(OSError):
            os.remove(data)
        return target

    def resume(self) -> Job:
        job = self.job
        if job is None or job.state != "stopped":
            raise InputError("没有可继续的训练 There is no stopped run to resume")
        argv = [a for a in job.command if a != "--overwrite"] + ["--resume"]
        return self._run(Job(job.task, argv, job.data, job.output, job.log, made_log=job.made_log, cwd=job.cwd))

    def check(self, task: str, data: str, base: str, advanced: dict, timeout_s: float = 300) -> str:
        """The script's --check on this data with these options (what the run would meet, its plan and time on this
        machine), run like a training run (a child process, low priority) and waited for; its lines, without the
        progress bars. Nothing is trained or written."""
        if self.busy():  # two PyTorch processes on a few cores slow each other many times over: its timing would lie
            raise InputError("正在训练，稍后再检查 A run is training: check when it has finished or stopped")
        training = task_named(task).training
        values = {training.data_option: data, "model": base or "scratch"}
        values.update({name: value for name, value in advanced.items() if value and name != "report_to"})
        argv = [self.python, training.path(training.script), *training.flags(values), "--check"]
        with tempfile.NamedTemporaryFile("r", suffix=".log", encoding="utf-8", errors="replace") as log:
            proc = spawn_training(argv, log.name)
            try:
                code = proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                raise InputError(f"检查超时 The check took over {timeout_s:.0f} s") from None
            text = log.read()
            lines = text.replace("\r", "\n").split("\n")
            rows = [r.rstrip() for r in lines if r.strip() and not _PROGRESS_BAR.search(r)]
            if code != 0:
                raise InputError(last_error(log.name))
        return "\n".join(rows)

    def owns(self, record) -> bool:
        """The app's current job is (or is about to be) this run."""
        job = self.job
        folder = record.folder[: -len(".partial")] if record.folder.endswith(".partial") else record.folder
        return job is not None and self.busy() and os.path.abspath(job.output) == os.path.abspath(folder)

    def resume_run(self, record) -> Job:
        """--resume for a run the Runs page lists as stopped or interrupted (training.history.RunRecord), started
        from the command it recorded, as this tab runs its own: in the repository, at low priority."""
        import shlex

        words = shlex.split(record.command or "")
        training = task_named(record.task).training if record.task in TASKS else None
        if training is None or len(words) < 2 or not record.resumable:
            raise InputError(f"{record.name} 不能继续 cannot be resumed: it recorded no command, or saved no state")
        flags = [w for w in words[2:] if w != "--overwrite"]
        argv = [self.python, training.path(training.script), *flags, *([] if "--resume" in flags else ["--resume"])]
        output = record.folder[: -len(".partial")] if record.folder.endswith(".partial") else record.folder
        log = output + ".log"
        cwd = record.cwd if record.cwd and os.path.isdir(record.cwd) else ROOT  # where its relative paths start
        return self._run(Job(record.task, argv, record.data or "", output, log, cwd=cwd))

    def _run(self, job: Job) -> Job:
        with self._lock:
            if self.busy():
                raise InputError("正在训练另一个模型 Busy: another training run is going on; wait for it or stop it")
            os.makedirs(self.checkpoints, exist_ok=True)
            self._drop_failed_log(self.job)
            new = not os.path.lexists(job.log)
            self._proc = spawn_training(job.command, job.log, append=True, cwd=job.cwd)  # a resume adds to its log
            if new:
                job.made_log = _file_id(job.log)
            self.job = job
        threading.Thread(target=self._watch, args=(self._proc, job), daemon=True).start()
        return job

    def stop(self) -> None:
        """Ctrl-C for the run: it saves a resumable state and exits."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            raise InputError("没有正在进行的训练 No run is going on")
        proc.send_signal(signal.SIGINT)

    def status(self) -> Job | None:
        job = self.job
        if job is not None and job.state in ("starting", "training", "saving"):
            p = read_json_dict(os.path.join(job.output + ".partial", "progress.json"))
            if p and p.get("updated", 0) >= job.started:
                job.progress = p
                job.state = "saving" if p.get("phase") == "saving" else "training"
                if job.first_plan is None and p.get("max_steps"):
                    job.first_plan = p["max_steps"]
        if job is not None and job.state == "done" and not job.progress.get("final"):
            # the run's own last word (its report), not the last progress file, written every few steps
            report = read_json_dict(os.path.join(job.output, "training_report.json"))
            step = report.get("global_step")
            if isinstance(step, int):
                job.progress = {**job.progress, "step": step, "max_steps": step, "eta_s": None, "final": True}
        return job

    def log_tail(self, lines: int = LOG_TAIL) -> str:
        job = self.job
        if job is None:
            return ""
        try:
            with open(job.log, encoding="utf-8", errors="replace") as f:
                text = f.read()[-20_000:]
        except OSError:
            return ""
        rows = [  # the progress bar's redraws are the status line's job, not the log's
            r.rstrip() for r in text.replace("\r", "\n").split("\n") if r.strip() and not _PROGRESS_BAR.search(r)
        ]
        return "\n".join(rows[-lines:])

    def last_bar(self) -> str | None:
        """The log's latest progress bar while the run starts (a base downloading: "model.safetensors: 45%|...")."""
        job = self.job
        if job is None or job.state != "starting":
            return None
        try:
            with open(job.log, encoding="utf-8", errors="replace") as f:
                text = f.read()[-4_000:]
        except OSError:
            return None
        bars = [r.strip() for r in text.replace("\r", "\n").split("\n") if _PROGRESS_BAR.search(r)]
        return bars[-1][:160] if bars else None

    def _watch(self, proc: subprocess.Popen, job: Job) -> None:
        code = proc.wait()
        data = job.data
        if code == 0 and os.path.isfile(os.path.join(job.output, "config.json")):
            job.state = "done"
            if self.on_done is not None:
                self.on_done(job)
        elif code == 130:
            job.state, job.reason = "stopped", "stopped with Ctrl-C; resumable"
        else:
            job.state, job.reason = "failed", f"{last_error(job.log)} (exit {code})"
        inside = self._uploads is not None and os.path.dirname(os.path.abspath(data)) == os.path.abspath(self._uploads)
        if job.state != "stopped" and inside:
            with contextlib.suppress(OSError):  # an uploaded file is kept only while its run may be resumed
                os.remove(data)

    def _drop_failed_log(self, job: Job | None) -> None:
        """Remove the log of a run that failed before it wrote its model or a resumable state, when the next run
        starts or the app closes: the page has shown it until then, and failed tries must not pile up NAME.log
        files among the models. Only a log this app created (its record: the file's device and inode) goes; a run
        that left a folder keeps its log beside it."""
        if job is None or job.state != "failed" or job.made_log is None:
            return
        if os.path.lexists(job.output) or os.path.lexists(job.output + ".partial"):
            return
        if _file_id(job.log) == job.made_log:
            with contextlib.suppress(OSError):
                os.remove(job.log)

    def close(self) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        self._drop_failed_log(self.job)
        if self._uploads is not None:
            shutil.rmtree(self._uploads, ignore_errors=True)


def _file_id(path: str) -> tuple | None:
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino) if stat.S_ISREG(st.st_mode) else None


def public_reason(settings) -> str | None:
    """Why training is off on this app (anyone with the link could start runs), or None."""
    if getattr(settings, "allow_training", False):
        return None
    return publicly_reachable(settings)


def publicly_reachable(settings) -> str | None:
    """Why anyone with the link can reach this page (Spaces, --share, a public --host), or None."""
    if os.environ.get("SPACE_ID"):
        return "on Hugging Face Spaces"
    if settings.share:
        return "with --share (a public link)"
    if settings.host not in ("127.0.0.1", "localhost", "::1"):
        return f"on a public address (--host {settings.host})"
    return None


__all__ = ["TrainingJobs", "Job", "PRESETS", "preview", "output_folder", "public_reason"]
