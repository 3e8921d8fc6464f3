"""Issue #35: a busy machine is not a failed run. Threads follow the free cores (a real busy process
beside the test), a default cloze run is sized by its rule and stopped only by a ceiling, and a
run the ceiling cut says what it knows and goes on with --resume. No timing is asserted: the
clock of the time cap is a fake that moves half a second per reading."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import types

import pytest
import torch

from tests.conftest import SAMPLES
from training import callbacks, schedule, threads
from training import cloze as cloze_script
from training.cli import guarded
from training.schedule import Rule, amount
from training.tasks.cloze import recipe as cloze_recipe

TINY = ["--model", "scratch", "--n-layer", "1", "--n-embd", "32", "--n-head", "2", "--max-len", "32", "--seed", "0"]


@pytest.fixture
def busy_core():
    """A real process that keeps one core busy for as long as the test needs."""
    proc = subprocess.Popen([sys.executable, "-c", "import time\nt = time.time()\nwhile time.time() - t < 60: pass"])
    time.sleep(0.3)
    yield proc
    proc.kill()
    proc.wait()


@pytest.fixture
def restore_threads(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_the_thread_count_follows_the_free_cores():
    assert threads.threads_for(0.0, 2, 1) == 2  # quiet: every core
    assert threads.threads_for(1.0, 2, 2) == 1  # one core busy elsewhere: the other one
    assert threads.threads_for(3.2, 16, 16) == 13
    assert threads.threads_for(5.0, 2, 2) == 1  # never fewer than one
    assert threads.threads_for(0.4, 2, 1) == 1  # between the two marks: as it was (no flip-flop)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_another_busy_process_is_measured_and_gets_its_core(busy_core, restore_threads):
    share = threads.CpuShare()
    time.sleep(1.0)
    others = share.others()
    assert others is not None and others >= 0.5  # the busy process, not this one (asleep)
    used, seen = threads.settle(1.0)
    assert seen >= 0.5 and used == max(1, (share.cores or 1) - round(seen))
    if share.cores > 1:
        assert used < share.cores


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_users_omp_num_threads_is_left_alone(busy_core, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    before = torch.get_num_threads()
    assert threads.settle(0.5) == (before, None) and torch.get_num_threads() == before


def test_a_ceiling_rule_keeps_its_steps_on_a_slow_machine_and_caps_only_past_the_ceiling():
    rule = Rule(min_steps=100, min_passes=1, max_minutes=1, ceiling=3)
    slow = amount(rule, 10, 1, 1.0, None, None, None)  # 100 s at 1 s a step: over the 1 minute, under the 3
    assert (slow.steps, slow.capped) == (100, False) and "stops at 3 min at the latest" in slow.reason
    crawl = amount(rule, 10, 1, 3.0, None, None, None)  # 300 s: past the ceiling
    assert crawl.capped and crawl.steps == 60 and "the 3-minute ceiling caps it" in crawl.reason
    mine = amount(rule, 10, 1, 1.0, 1.0, None, None)  # a --max-minutes of the user's own is a cap, as before
    assert mine.capped and mine.steps == 60
    old = Rule(min_steps=100, min_passes=1, max_minutes=1)  # no ceiling: the time caps the plan itself
    assert amount(old, 10, 1, 1.0, None, None, None).steps == 60


@pytest.fixture
def fake_clock(monkeypatch):
    """The time cap's clock moves 0.5 s at each reading (once per step): a slow machine, deterministically."""
    now = [0.0]

    def tick():
        now[0] += 0.5
        return now[0]

    monkeypatch.setattr(schedule, "time", types.SimpleNamespace(perf_counter=tick))  # the probe
    monkeypatch.setattr(
        callbacks, "time", types.SimpleNamespace(perf_counter=tick, time=time.time, monotonic=time.monotonic)
    )  # the cap


@pytest.mark.slow
def test_a_run_the_ceiling_cuts_says_what_it_knows_and_resume_trains_the_rest(
    tmp_path, fake_clock, monkeypatch, capsys
):
    # the probe times 0.575 s a step (0.5 x 1.15); 300 steps want ~2.9 min, the ceiling is 2 x 0.5 min
    monkeypatch.setattr(cloze_recipe, "QUIZ_PATIENCE", 0)  # only the ceiling may end it here
    monkeypatch.setattr(
        cloze_recipe, "FACTS_RULE", Rule(min_steps=300, min_passes=1, max_minutes=0.5, unit="lines", ceiling=2)
    )
    out = tmp_path / "facts"
    argv = ["--data", str(SAMPLES / "cloze_corpus.txt"), *TINY, "--output", str(out)]
    assert guarded(cloze_script.main, argv) == 0
    report = json.loads((out / "training_report.json").read_text(encoding="utf-8"))
    sched = report["schedule"]
    assert sched["ceiling_s"] == 60 and sched["wanted_steps"] == 300
    assert sched["replanned"][-1]["steps"] < 300 and sched["steps_trained"] < 300  # fitted to the ceiling
    err = capsys.readouterr().err
    assert "the 1-minute ceiling ended training at step" in err and "of 300" in err
    assert f"it recalls {report['self_quiz']['recalled']} of {report['self_quiz']['probes']} facts" in err
    assert "To train on: python training/cloze.py" in err and err.rstrip().endswith("--resume")
    assert "learned " in err and report["self_quiz"]["facts"]["learned"] + report["self_quiz"]["facts"]["not_learned"]
    # the plan extends: --resume goes on to the rule's 300 steps, however far the ceiling let it get
    assert guarded(cloze_script.main, [*argv, "--resume"]) == 0
    again = json.loads((out / "training_report.json").read_text(encoding="utf-8"))
    assert again["schedule"]["steps_trained"] == 300
