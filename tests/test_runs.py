"""Runs you can find again (issue #47): every run records itself, the list (finished, stopped, failed,
interrupted), two runs compared, delete only what this program made, TensorBoard events, and --check."""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys

import pytest
from transformers import TrainerCallback

from tests.conftest import SAMPLES, write
from training import cloze as cloze_script
from training import history
from training.cli import guarded

CORPUS = str(SAMPLES / "cloze_corpus.txt")
TINY = ["--model", "scratch", "--n-layer", "1", "--n-embd", "32", "--n-head", "2", "--max-len", "32", "--seed", "0"]


def cloze(out, *args, callbacks=()) -> int:
    from training.tasks.cloze import TRAINING

    argv = ["--data", CORPUS, *TINY, "--output", str(out), *args]
    return guarded(lambda a: TRAINING.main(a, callbacks=callbacks), argv)


class CtrlCAt(TrainerCallback):
    """Ctrl-C (SIGINT to this process) once the run has saved a state: what a person does at the terminal."""

    def on_save(self, args, state, control, **kw):
        os.kill(os.getpid(), signal.SIGINT)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """A checkpoints folder with two finished runs, a stopped one and a failed one, all trained here."""
    root = tmp_path_factory.mktemp("runs")
    assert cloze(root / "a", "--epochs", "2") == 0
    assert cloze(root / "b", "--epochs", "2", "--lr", "3e-3", "--report-to", "tensorboard") == 0
    assert cloze(root / "stop", "--epochs", "50", "--logging-steps", "1", callbacks=[CtrlCAt()]) == 130
    # a weight decay of 1e30 turns every weight into NaN within a step: a real divergence
    assert cloze(root / "bad", "--max-steps", "3", "--weight-decay", "1e30") == 1
    return root


def by_name(root) -> dict[str, history.RunRecord]:
    return {r.name: r for r in history.list_runs(str(root))}


def test_every_run_is_listed_with_its_status_figure_and_command(root):
    runs = by_name(root)
    assert set(runs) == {"a", "b", "stop", "bad"}
    a, stop, bad = runs["a"], runs["stop"], runs["bad"]
    assert a.status in (history.FINISHED, history.WEAK) and a.task == "cloze" and a.data == CORPUS
    assert a.metric and a.metric_value is not None and a.steps and a.duration_s > 0 and a.base == "scratch"
    assert a.command.startswith("python training/cloze.py --data") and "--epochs 2" in a.command
    assert stop.status == history.STOPPED and stop.resumable and stop.steps and "Ctrl-C" in stop.reason
    assert stop.folder.endswith("stop.partial") and stop.base == "scratch"
    assert bad.status == history.FAILED and "diverged" in bad.reason and not bad.resumable
    # newest first
    assert [r.name for r in history.list_runs(str(root))] == sorted(runs, key=lambda n: runs[n].started_at)[::-1]
    # the report says how its figure compares with the benches' usual range
    report = json.loads((root / "a" / "training_report.json").read_text())
    assert report["started_at"] and report["command"] == a.command
    assert a.verdict is None or "docs/benchmarks.md" in a.verdict


def test_a_run_whose_process_is_gone_reads_as_interrupted(root, tmp_path):
    import shutil

    shutil.copytree(root / "stop.partial", tmp_path / "gone.partial")
    status = tmp_path / "gone.partial" / "run_status.json"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    value = json.loads(status.read_text())
    status.write_text(json.dumps({**value, "status": "running", "pid": int(dead.stdout)}))
    progress = tmp_path / "gone.partial" / "progress.json"
    os.utime(progress, (progress.stat().st_mtime - 600,) * 2)  # its progress stopped ten minutes ago
    (record,) = history.list_runs(str(tmp_path))
    assert record.status == history.INTERRUPTED and record.resumable
    os.utime(progress)  # a progress file written just now: alive, whatever the status says
    assert history.list_runs(str(tmp_path))[0].status == history.RUNNING


def test_two_runs_compare_by_curves_and_the_options_that_differ(root):
    runs = by_name(root)
    rows = history.differences(runs["a"], runs["b"])
    assert ("lr", "None", "0.003") in rows or any(r[0] == "lr" for r in rows)
    assert any(r[0] == "report_to" for r in rows) and not any(r[0] == "output" for r in rows)
    for name in ("a", "b", "stop"):
        assert history.curves(runs[name])["train"], name
    # the stopped run's options come from its command, parsed as the script parses them (defaults included)
    assert history.options_of(runs["stop"])["batch_size"] == 16


def test_tensorboard_events_hold_the_training_loss(root):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (folder,) = glob.glob(str(root / "b" / "tensorboard" / "*"))
    events = EventAccumulator(folder)
    events.Reload()
    assert len(events.Scalars("train/loss")) >= 2
    assert "tensorboard" in json.loads((root / "b" / "checkpoint_manifest.json").read_text())["files"]
    assert not list((root / "a").glob("tensorboard"))  # off by default


def test_report_to_a_tracker_that_is_not_installed_is_one_line(tmp_path, capsys):
    pytest.importorskip("tensorboard")
    code = cloze(tmp_path / "x", "--report-to", "wandb") if not _installed("wandb") else 2
    assert code == 2 and not (tmp_path / "x.partial").exists()
    if not _installed("wandb"):
        assert "pip install wandb" in capsys.readouterr().err


def _installed(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def test_delete_removes_only_what_this_program_made(tmp_path):
    root = tmp_path / "ck"
    assert cloze(root / "mine", "--max-steps", "2") == 0
    assert cloze(root / "kept", "--max-steps", "2") == 0
    write(root / "kept" / "notes.txt", "my notes\n")
    lookalike = write(root / "yours.partial" / "state.txt", "not a run\n")  # a user's folder of the same pattern
    runs = by_name(root)
    assert set(runs) == {"mine", "kept"}
    assert "deleted" in history.delete_run(runs["mine"]) and not (root / "mine").exists()
    said = history.delete_run(runs["kept"])
    assert "kept 1 of yours" in said and sorted(os.listdir(root / "kept")) == ["notes.txt"]
    assert lookalike.read_text() == "not a run\n" and set(by_name(root)) == set()


def test_deleting_a_stopped_run_removes_its_working_folder(root, tmp_path):
    import shutil

    shutil.copytree(root / "stop.partial", tmp_path / "stop.partial")
    (record,) = history.list_runs(str(tmp_path))
    assert history.delete_run(record) == f"deleted {record.folder}" and os.listdir(tmp_path) == []


def test_a_pretrained_run_gets_no_verdict_from_the_scratch_benches():
    from training.tasks.chat import TRAINING

    report = {"best": {"valid_perplexity": 500.0}, "base_model_source": "scratch"}
    assert "worse than usual" in TRAINING.verdict(report)
    assert TRAINING.verdict({**report, "base_model_source": "hub"}) is None


def test_a_stopped_run_resumes_and_then_lists_as_finished(root, tmp_path):
    import shutil

    shutil.copytree(root / "stop.partial", tmp_path / "stop.partial")
    record = by_name(tmp_path)["stop"]
    assert record.status == history.STOPPED
    words = record.command.split()[2:]
    words[words.index("--output") + 1] = str(tmp_path / "stop")
    assert guarded(cloze_script.main, [*words, "--epochs", "2", "--resume"]) == 0
    (record,) = history.list_runs(str(tmp_path))
    assert record.status in (history.FINISHED, history.WEAK) and not (tmp_path / "stop" / "run_status.json").exists()


# -- the data check ------------------------------------------------------------------------------


def test_check_names_duplicates_rare_characters_and_cut_lines_and_writes_nothing(tmp_path, capsys):
    from training.tasks.similarity import TRAINING

    pairs = [("今天天气怎么样", "今天天气如何", 1), ("怎么办信用卡", "信用卡怎么办理", 1), ("我想吃饭", "我想睡觉", 0)]
    rows = [f"{a}\t{b}\t{y}" for a, b, y in pairs * 6]  # each pair six times
    rows += [f"{'一句非常长的句子' * 4}{i}\t{'另一句也很长的句子' * 4}\t0" for i in range(3)]
    rows += [f"第{i}个问题是什么\t第{i}个问题怎么样\t{i % 2}" for i in range(20)]
    rows += ["罕见的字龘\t另一个罕见字靐\t0"]
    data = write(tmp_path / "pairs.tsv", "\n".join(rows) + "\n")
    out = tmp_path / "model"
    argv = ["--train", str(data), *TINY[:-2], "--max-len", "24", "--output", str(out), "--check", "--min-freq", "2"]
    assert guarded(TRAINING.main, argv) == 0
    err = capsys.readouterr().err
    said = {line.split(":")[0]: line for line in err.splitlines()}
    assert "repeat an earlier one" in said["duplicates"] and "今天天气怎么样" in said["duplicates"]
    assert "龘" in said["characters the vocabulary lacks"] and "[UNK]" in said["characters the vocabulary lacks"]
    assert "are cut there" in said["lengths"] and "--max-len 24" in said["lengths"]
    assert said["labels (training examples each)"].count("=") == 2
    assert "little data" in said and "steps" in err and "on this machine" in err
    assert "check only: nothing was trained and no output folder made" in err
    assert not out.exists() and not (tmp_path / "model.partial").exists()
    assert sorted(os.listdir(tmp_path)) == ["pairs.tsv"]


# -- the 历史 Runs tab ------------------------------------------------------------------------------


@pytest.fixture
def served(tmp_path):
    import app
    from webui.jobs import TrainingJobs

    root = tmp_path / "checkpoints"
    root.mkdir()
    trainer = TrainingJobs(str(root))
    demo = app.build_demo(app.Settings(checkpoints=str(root), demo=False), trainer=trainer)
    demo.launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True, **app.SERVE_OPTIONS)
    yield demo, trainer, root
    trainer.close()
    demo.close()


def test_runs_api_lists_details_and_deletes_after_confirmation(served, root):
    import shutil

    from gradio_client import Client

    demo, _, ck = served
    for name in ("a", "b", "stop.partial", "bad.partial"):
        shutil.copytree(root / name, ck / name)
    c = Client(demo.local_url, verbose=False)
    rows = c.predict(api_name="/runs")
    assert {(r["name"], r["task"], r["status"]) for r in rows} == {
        ("a", "cloze", runs_status(root, "a")),
        ("b", "cloze", runs_status(root, "b")),
        ("stop", "cloze", "stopped"),
        ("bad", "cloze", "failed"),
    }
    assert all("metric" in r for r in rows)
    about, *_ = c.predict(["a", "b"], api_name="/run_details")
    assert "A" in about and "B" in about
    about, *_ = c.predict(["stop.partial"], api_name="/run_details")
    assert "stopped" in about and "resumed" in about
    said, *_ = c.predict(["a"], False, api_name="/run_delete")
    assert "确认删除" in said and (ck / "a").is_dir()
    said, *_ = c.predict(["a"], True, api_name="/run_delete")
    assert "已删除" in said and not (ck / "a").exists() and (ck / "b" / "config.json").is_file()


def runs_status(root, name) -> str:
    return by_name(root)[name].status


def test_on_a_public_page_that_allows_training_runs_cannot_be_deleted_or_pushed(root, tmp_path):
    import shutil

    from gradio_client import Client
    from gradio_client.exceptions import AppError

    import app
    from webui.jobs import TrainingJobs

    shutil.copytree(root / "a", tmp_path / "a")
    trainer = TrainingJobs(str(tmp_path))
    settings = app.Settings(checkpoints=str(tmp_path), demo=False, host="0.0.0.0", allow_training=True)
    demo = app.build_demo(settings, trainer=trainer)
    demo.launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True, **app.SERVE_OPTIONS)
    try:
        c = Client(demo.local_url, verbose=False)
        assert [r["name"] for r in c.predict(api_name="/runs")] == ["a"]
        with pytest.raises(AppError, match="Delete is off"):
            c.predict(["a"], True, api_name="/run_delete")
        with pytest.raises(AppError, match="Push is off"):
            c.predict(["a"], "me/x", True, api_name="/run_push")
        assert (tmp_path / "a" / "config.json").is_file()
    finally:
        trainer.close()
        demo.close()


def test_runs_tab_is_off_where_training_is_off(tmp_path):
    import app

    demo = app.build_demo(app.Settings(checkpoints=str(tmp_path), demo=False, share=True), trainer=None)
    names = {d.get("api_name") for d in demo.config["dependencies"]}
    assert "runs" not in names and "run_delete" not in names


@pytest.mark.slow
def test_two_runs_from_the_train_tab_compared_and_one_deleted_in_the_browser(served, tmp_path):
    """Chromium: two short chat runs from the Train tab (1 and 2 passes), the Runs tab compares them (their
    curves on one plot, the differing option listed) and deletes one after the tick; the other run and a
    user's folder that looks like a run's stay."""
    from gradio_client import Client

    from tests.test_train_tab import chromium_page, start_args, wait_for

    demo, _, ck = served
    c = Client(demo.local_url, verbose=False)
    for name, epochs in (("one", 1), ("two", 2)):
        c.predict(*start_args(out=name, n_epochs=epochs), api_name="/train_start")
        wait_for(c, ("完成 done",), timeout=300)
    lookalike = write(ck / "one-copy.partial" / "notes.txt", "mine\n")
    with chromium_page(demo.local_url) as (page, expect):
        page.get_by_role("tab", name="历史 Runs").click()
        expect(page.locator("#runs-table")).to_contain_text("two", timeout=30_000)
        for name in ("one", "two"):
            page.locator("#runs-pick input").click()
            page.get_by_role("option").filter(has_text=f"{name} · ").first.click()
        page.keyboard.press("Escape")
        expect(page.locator("#runs-details")).to_contain_text("B:", timeout=30_000)
        expect(page.locator("#runs-plot img, #runs-plot svg").first).to_be_visible(timeout=30_000)
        expect(page.locator("#runs-diff")).to_contain_text("epochs")
        # keep one picked (Backspace drops the last one) and delete it
        page.locator("#runs-pick input").click()
        page.locator("#runs-pick input").press("Backspace")
        page.keyboard.press("Escape")
        expect(page.locator("#runs-details")).to_contain_text("one", timeout=30_000)
        page.locator("#runs-delete").click()
        expect(page.locator("#runs-done")).to_contain_text("确认删除", timeout=30_000)
        assert (ck / "one").is_dir()  # not without the tick
        page.locator("#runs-sure input").check()
        page.locator("#runs-delete").click()
        expect(page.locator("#runs-done")).to_contain_text("已删除", timeout=30_000)
    assert not (ck / "one").exists() and (ck / "two" / "config.json").is_file()
    assert lookalike.read_text() == "mine\n"


def test_the_train_tabs_check_says_what_the_run_would_meet_and_writes_nothing(served):
    from gradio_client import Client

    from tests.test_train_tab import start_args

    demo, _, ck = served
    c = Client(demo.local_url, verbose=False)
    said = c.predict(*start_args(task_name="similarity")[:10], api_name="/train_check")
    assert "nothing trained, no output folder" in said and "labels (training examples each)" in said
    assert "on this machine" in said and "little data" in said
    assert os.listdir(ck) == []


def test_pushing_a_run_without_a_token_or_a_hub_is_one_line(served, root, monkeypatch):
    import shutil

    from gradio_client import Client
    from gradio_client.exceptions import AppError

    demo, _, ck = served
    shutil.copytree(root / "a", ck / "a")
    c = Client(demo.local_url, verbose=False)
    with pytest.raises(AppError, match="Not pushed: (no Hugging Face token|the Hugging Face Hub cannot be reached)"):
        c.predict(["a"], "me/model", True, api_name="/run_push")
    with pytest.raises(AppError, match="Pick one finished run"):
        c.predict([], "me/model", True, api_name="/run_push")


def test_the_train_tab_shows_a_base_downloading(tmp_path):
    from webui.jobs import Job, TrainingJobs
    from webui.tabs.train import status_text

    log = write(
        tmp_path / "run.log",
        "corpus: 96 passages\nmodel.safetensors:  12%|█▏        | 3.7M/31.0M [00:01<00:08, 3.2MB/s]\r"
        "model.safetensors:  45%|████▌     | 14.0M/31.0M [00:02<00:02, 7.1MB/s]",
    )
    trainer = TrainingJobs(str(tmp_path))
    trainer.job = Job("cloze", ["python", "training/cloze.py"], "d.txt", str(tmp_path / "m"), str(log))
    line, _, tail = status_text(trainer)
    assert "下载中 Downloading" in line and "45%" in line and "45%" not in tail
    trainer.job.state = "training"
    assert "Downloading" not in status_text(trainer)[0]
