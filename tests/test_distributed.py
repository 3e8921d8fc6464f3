"""Several processes on CPU (torchrun, gloo): each training script writes one checkpoint, agrees
with a one-process run, stops, resumes and refuses what it cannot do. Tiny models, a few seconds each."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT, SAMPLES

pytestmark = pytest.mark.slow

TINY = ["--n-layer", "1", "--n-embd", "32", "--n-head", "2", "--seed", "0"]


def torchrun(script: str, args: list[str], processes: int = 2, **kw) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [*cmd, os.path.join(ROOT, "training", script), *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kw,
    )


def finish(proc: subprocess.Popen, timeout: float = 240) -> tuple[int, str]:
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out


def children(pid: int) -> list[int]:
    """The launcher's worker processes, from /proc (no pgrep needed)."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if entry.isdigit() and int(fields[1]) == pid:
            found.append(int(entry))
    return sorted(found)


def report(folder) -> dict:
    return json.loads((folder / "training_report.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize(
    "script,args",
    [
        ("chat.py", ["--data", str(SAMPLES / "dialogs.txt"), "--epochs", "2"]),
        ("cloze.py", ["--data", str(SAMPLES / "cloze_corpus.txt"), "--epochs", "2"]),
        ("similarity.py", ["--train", str(SAMPLES / "pairs.tsv"), "--epochs", "1"]),  # with its masked-LM stage
    ],
)
def test_each_script_under_two_processes_writes_one_checkpoint(tmp_path, script, args):
    out = tmp_path / "model"
    code, log = finish(torchrun(script, [*args, *TINY, "--batch-size", "8", "--output", str(out)]))
    assert code == 0, log[-3000:]
    r = report(out)
    assert r["processes"] == 2 and r["global_batch_size"] == 16
    assert "global batch 16 = 2 processes x 8" in log  # the start line says it
    assert log.count("saved to") == 1 + (script == "similarity.py")  # one process talks (similarity: 2 stages)
    assert "[rank1]" not in log and "Traceback" not in log
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no .partial, nothing else


def test_two_processes_train_like_one_with_the_same_global_batch(tmp_path):
    """Same seed, steps and global batch (1 x 16 vs 2 x 8): final losses within 2%, scored the same way."""
    import torch

    from chat import ChatEngine

    args = ["--data", str(SAMPLES / "dialogs.txt"), *TINY, "--max-len", "64", "--epochs", "6", "--lr", "2e-3"]
    one = subprocess.run(
        [sys.executable, "training/chat.py", *args, "--batch-size", "16", "--output", str(tmp_path / "one")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert one.returncode == 0, one.stderr[-2000:]
    code, log = finish(torchrun("chat.py", [*args, "--batch-size", "8", "--output", str(tmp_path / "two")]))
    assert code == 0, log[-3000:]
    a, b = report(tmp_path / "one"), report(tmp_path / "two")
    assert a["global_step"] == b["global_step"] and a["global_batch_size"] == b["global_batch_size"] == 16
    assert abs(a["best"]["train_loss"] - b["best"]["train_loss"]) / a["best"]["train_loss"] < 0.02

    # held-out loss of both models in one process (the Trainer's own eval averages per process's batches)
    held_out = [["你好", "你好呀，最近怎么样"], ["周末去哪儿玩", "去爬山吧"], ["吃饭了吗", "还没呢，你呢"]]
    losses = []
    for name in ("one", "two"):
        engine = ChatEngine.from_pretrained(str(tmp_path / name))
        tok, model = engine.tokenizer, engine.model
        total = []
        for q, r in held_out:
            ids = tok(q, r, return_tensors="pt")["input_ids"]
            with torch.no_grad():
                total.append(model(input_ids=ids, labels=ids).loss.item())
        losses.append(sum(total) / len(total))
    assert abs(losses[0] - losses[1]) / losses[0] < 0.02, losses


def test_ctrl_c_under_two_processes_then_resume_finishes_the_plan(tmp_path):
    out = tmp_path / "model"
    args = ["--data", str(SAMPLES / "dialogs.txt"), *TINY, "--batch-size", "8", "--epochs", "40", "--output", str(out)]
    proc = torchrun("chat.py", args, start_new_session=True)
    deadline = time.monotonic() + 120
    while not list((tmp_path / "model.partial").glob("states/checkpoint-*")) and time.monotonic() < deadline:
        time.sleep(0.5)  # a periodic save exists: the run is well under way
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in a terminal reaches the launcher and its workers
    code, log = finish(proc)
    assert code != 0 and "stopped at step" in log and "the same launch (2 processes)" in log
    planned = int(re.search(r"-> ([\d,]+) steps", log).group(1).replace(",", ""))
    assert (tmp_path / "model.partial").is_dir() and not out.exists()

    refused = subprocess.run(
        [sys.executable, "training/chat.py", *args, "--resume"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert refused.returncode == 2 and "number of processes (2 then, 1 now" in refused.stderr
    assert len(refused.stderr.strip().splitlines()[-1]) > 0 and "Traceback" not in refused.stderr

    code, log = finish(torchrun("chat.py", [*args, "--resume"]))
    assert code == 0, log[-3000:]
    r = report(out)
    assert r["global_step"] == planned and r["resumed_from"] and r["processes"] == 2


def test_a_worker_killed_leaves_no_half_written_model(tmp_path):
    out = tmp_path / "model"
    args = ["--data", str(SAMPLES / "dialogs.txt"), *TINY, "--batch-size", "8", "--epochs", "200", "--output", str(out)]
    proc = torchrun("chat.py", args)
    deadline = time.monotonic() + 120
    while not (tmp_path / "model.partial" / "progress.json").exists() and time.monotonic() < deadline:
        time.sleep(0.5)
    workers = children(proc.pid)
    assert len(workers) == 2
    os.kill(workers[-1], signal.SIGKILL)
    code, log = finish(proc)
    assert code != 0 and "exitcode  : -9" in log  # the launcher names the killed process
    assert not out.exists()  # the model folder appears only when it is complete


def test_accelerate_launch_runs_two_processes_on_cpu_and_says_when_it_does_not(tmp_path):
    """`accelerate launch --multi_gpu` runs 2 gloo processes on a CPU machine; `--cpu --num_processes 2`
    starts one (accelerate needs mpirun for more), which the script says."""
    import shutil

    accelerate = shutil.which("accelerate")
    if accelerate is None:
        pytest.skip("the accelerate command is not on PATH")
    args = ["training/chat.py", "--data", str(SAMPLES / "dialogs.txt"), *TINY, "--epochs", "1", "--batch-size", "8"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    for flags, processes in ((["--multi_gpu", "--num_processes", "2"], 2), (["--cpu", "--num_processes", "2"], 1)):
        out = tmp_path / f"p{processes}"
        done = subprocess.run(
            [accelerate, "launch", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
             *flags, *args, "--output", str(out)],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=240,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
        assert report(out)["processes"] == processes
        assert ("runs one process here" in done.stderr) == (processes == 1)
