"""Faults from the fault-injection pass (issue #16), each reproduced: crashes, a wrong-model resume,
leaked files, bad input, hostile app requests. Crash tests use real signals in child processes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from data import InputError
from tests.conftest import ROOT, SAMPLES, write
from training import cloze as cloze_script
from training.cli import guarded

CORPUS = str(SAMPLES / "cloze_corpus.txt")
TINY = [
    "--model",
    "scratch",
    "--n-layer",
    "1",
    "--n-embd",
    "32",
    "--n-head",
    "2",
    "--max-len",
    "32",
    "--batch-size",
    "16",
    "--seed",
    "0",
]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}


def cloze(*args) -> int:
    return guarded(cloze_script.main, ["--data", CORPUS, *TINY, *args])


def script(name: str, *args, env=None, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "training" / f"{name}.py"), *args],
        capture_output=True,
        text=True,
        env={**ENV, **(env or {})},
        timeout=300,
        **kw,
    )


def one_line_error(r) -> str:
    assert r.returncode == 2, r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, r.stderr[-2000:]
    return errors[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("rel") / "model"
    assert cloze("--output", str(out), "--epochs", "2") == 0
    return out


def weights(folder: Path) -> bytes:
    return (folder / "model.safetensors").read_bytes()


# -- 1. a loaded model survives its file being overwritten -------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["fill_mask", "chat"])
def test_a_loaded_model_survives_its_file_being_truncated(tmp_path, trained, chat_checkpoint, kind):
    folder = tmp_path / "m"
    shutil.copytree(chat_checkpoint if kind == "chat" else trained, folder)
    code = {
        "fill_mask": "from chat.fill_mask import FillMaskPredictor as P; m = P.from_pretrained(F); "
        "os.truncate(F + '/model.safetensors', 1000); print(m.predict('三国人物诸[MASK]', "
        "top_k=2)[0].candidates[0].text)",
        "chat": "from chat import ChatEngine; m = ChatEngine.from_pretrained(F); "
        "os.truncate(F + '/model.safetensors', 1000); print(m.reply([], '你好', temperature=0, max_new_tokens=4))",
    }[kind]
    r = subprocess.run(
        [sys.executable, "-c", f"import os; F = {str(folder)!r}; {code}"],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=120,
    )
    assert r.returncode == 0, (r.returncode, r.stderr[-1500:])  # was -7 (SIGBUS)
    if kind != "chat":
        return
    r = subprocess.run(
        [sys.executable, "-m", "chat", "--model", str(folder)],
        input="你好\n",
        capture_output=True,
        text=True,
        env=ENV,
        cwd=tmp_path,
        timeout=120,
    )
    assert "truncated" in one_line_error(r) or "not a valid safetensors" in one_line_error(r)


def test_app_store_reloads_a_retrained_folder_and_retries_a_failed_one(tmp_path, trained):
    import app

    folder = tmp_path / "cloze"
    store = app.ModelStore(retry_after_s=3600)
    with pytest.raises(InputError):
        store.get("cloze", str(folder))  # not there yet
    shutil.copytree(trained, folder)  # restored: the folder changed, so it is tried again at once
    first = store.get("cloze", str(folder))
    assert store.get("cloze", str(folder)) is first  # kept while unchanged
    os.truncate(folder / "model.safetensors", 1000)  # overwritten in place: the next request reloads and says why
    with pytest.raises(InputError, match="truncated|safetensors"):
        store.get("cloze", str(folder))
    shutil.rmtree(folder)
    shutil.copytree(trained, folder)
    assert store.get("cloze", str(folder)) is not first
    # without any change, a failure is retried after retry_after_s
    store = app.ModelStore(retry_after_s=0)
    broken = tmp_path / "broken"
    write(broken / "config.json", "{}")
    with pytest.raises(InputError):
        store.get("cloze", str(broken))
    shutil.rmtree(broken)
    shutil.copytree(trained, broken)
    assert store.get("cloze", str(broken))


# -- 2. --resume only continues the run that was interrupted ---------------------------------


@pytest.mark.slow
def test_resume_refuses_the_state_of_another_run(tmp_path, trained):
    out = tmp_path / "out"
    shutil.copytree(trained, out)
    other = write(tmp_path / "other.txt", "\n".join(Path(CORPUS).read_text(encoding="utf-8").splitlines()[:20]) + "\n")
    # a different run started with --overwrite and killed before its first save leaves .partial with no state
    started = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "training" / "cloze.py"),
            "--data",
            str(other),
            *TINY,
            "--epochs",
            "500",
            "--output",
            str(out),
            "--overwrite",
        ],
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    run_file = tmp_path / "out.partial" / "run.json"
    deadline = time.monotonic() + 120
    while not run_file.exists() and started.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    started.send_signal(signal.SIGKILL)
    started.wait()
    assert run_file.exists()
    r = script("cloze", "--data", str(other), *TINY, "--epochs", "500", "--output", str(out), "--resume")
    assert "another run" in one_line_error(r) and "data" in r.stderr
    assert "resuming from step" not in r.stderr
    # the same run as the saved state still resumes
    assert cloze("--output", str(out), "--epochs", "3", "--resume") == 0


def test_resume_refuses_a_different_model_shape(tmp_path, trained):
    out = tmp_path / "out"
    shutil.copytree(trained, out)
    assert (
        guarded(
            cloze_script.main,
            [
                "--data",
                CORPUS,
                *TINY[:-2],
                "--n-layer",
                "2",
                "--seed",
                "0",
                "--output",
                str(out),
                "--epochs",
                "3",
                "--resume",
            ],
        )
        == 2
    )


# -- 3. deploy ships an allow-list ----------------------------------------------------------------


def test_deploy_ships_no_private_file_symlink_local_path_or_token(tmp_path, trained):
    ckpts = tmp_path / "checkpoints"
    shutil.copytree(trained, ckpts / "mine")
    write(ckpts / "mine" / "notes.txt", "my private notes\n")
    os.symlink("/etc", ckpts / "mine" / "etc-link")
    os.symlink(trained, ckpts / "linked")
    secret = ROOT / "training" / "credentials.json"  # untracked, inside a code folder
    assert not secret.exists()
    write(secret, '{"password": "hunter2"}')
    try:
        out = tmp_path / "bundle"
        r = subprocess.run(
            [
                sys.executable,
                str(ROOT / "space_config" / "deploy.py"),
                "--space",
                "a/b",
                "--checkpoints",
                str(ckpts),
                "--dry-run",
                str(out),
            ],
            capture_output=True,
            text=True,
            env=ENV,
            timeout=120,
        )
    finally:
        secret.unlink()
    assert r.returncode == 0, r.stderr
    shipped = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() or p.is_symlink())
    assert not any(p.is_symlink() for p in out.rglob("*"))
    assert "training/credentials.json" not in shipped and "checkpoints/mine/notes.txt" not in shipped
    assert not any(s.startswith("checkpoints/linked") or "etc-link" in s for s in shipped)
    assert "checkpoints/mine/model.safetensors" in shipped and "notes.txt" in r.stdout + r.stderr
    for name in ("training_report.json", "README.md"):
        text = (out / "checkpoints" / "mine" / name).read_text(encoding="utf-8")
        assert str(tmp_path) not in text and str(ROOT) not in text
    # a token-shaped string anywhere in the bundle: refused, and no bundle left behind
    write(ckpts / "mine" / "README.md", "token: hf_" + "a1B2" * 9 + "\n")
    out2 = tmp_path / "bundle2"
    r = subprocess.run(
        [
            sys.executable,
            str(ROOT / "space_config" / "deploy.py"),
            "--space",
            "a/b",
            "--checkpoints",
            str(ckpts / "mine"),
            "--dry-run",
            str(out2),
        ],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=120,
    )
    assert "access token" in one_line_error(r) and not out2.exists()


# -- 4-6. crash windows: publish, signals, disk full ---------------------------------------------


@pytest.mark.slow
def test_a_crash_between_the_publish_renames_is_finished_on_the_next_start(tmp_path, trained):
    out = tmp_path / "out"
    shutil.copytree(trained, out)
    before = weights(out)
    r = script(
        "cloze",
        "--data",
        CORPUS,
        *TINY,
        "--epochs",
        "3",
        "--output",
        str(out),
        "--overwrite",
        env={"TRAINING_TEST_CRASH_AT": "between_renames"},
    )
    assert r.returncode == -signal.SIGKILL
    assert not out.exists() and (tmp_path / "out.partial").is_dir()  # the window: no `out` at all
    r = script("cloze", "--data", CORPUS, *TINY, "--epochs", "3", "--output", str(out))
    assert r.returncode == 0 and "finished saving the model of an interrupted run" in r.stderr, r.stderr
    assert (
        weights(out) != before
        and json.loads((out / "training_report.json").read_text())["hyperparameters"]["epochs"] == 3
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no .partial, no .old-*


def test_resume_skips_a_checkpoint_killed_while_being_saved(tmp_path):
    """Why training/output.py keeps its own search: transformers' get_last_checkpoint takes the
    highest checkpoint-N folder even without trainer_state.json (a save cut short), which cannot resume."""
    from transformers.trainer_utils import get_last_checkpoint

    from training.output import _latest_checkpoint

    write(tmp_path / "checkpoint-10" / "trainer_state.json", "{}")
    write(tmp_path / "checkpoint-20" / "model.safetensors", "half")  # killed while saving
    assert _latest_checkpoint(str(tmp_path)) == str(tmp_path / "checkpoint-10")
    assert get_last_checkpoint(str(tmp_path)) == str(tmp_path / "checkpoint-20")  # the library differs


@pytest.mark.slow
def test_a_kill_while_writing_the_model_resumes_into_writing_it(tmp_path):
    out = tmp_path / "out"
    r = script(
        "cloze",
        "--data",
        CORPUS,
        *TINY,
        "--epochs",
        "2",
        "--output",
        str(out),
        env={"TRAINING_TEST_CRASH_AT": "after_weights"},
    )
    assert r.returncode == -signal.SIGKILL and not out.exists()
    r = script("cloze", "--data", CORPUS, *TINY, "--epochs", "2", "--output", str(out))
    assert "--resume" in one_line_error(r)
    r = script("cloze", "--data", CORPUS, *TINY, "--epochs", "2", "--output", str(out), "--resume")
    assert r.returncode == 0 and "had finished training" in r.stderr, r.stderr
    assert (out / "training_report.json").is_file() and (out / "resume_state" / "trainer_state.json").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_ctrl_c_save_a_resumable_state_and_print_a_valid_command(tmp_path, trained, sig):
    out = tmp_path / "out"
    shutil.copytree(trained, out)
    args = [
        sys.executable,
        str(ROOT / "training" / "cloze.py"),
        "--data",
        CORPUS,
        *TINY,
        "--epochs",
        "2000",
        "--output",
        str(out),
        "--overwrite",
    ]
    proc = subprocess.Popen(args, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list((tmp_path / "out.partial" / "states").glob("checkpoint-*")) and time.monotonic() < deadline:
        time.sleep(0.1)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    command = next(ln for ln in err.splitlines() if ln.startswith("resume with:"))
    assert "--overwrite" not in command and command.endswith("--resume")
    assert weights(out) == weights(trained)  # the finished model is untouched
    assert list((tmp_path / "out.partial" / "states").glob("checkpoint-*/trainer_state.json"))


@pytest.mark.slow
@pytest.mark.parametrize("error", ["disk", "safetensors"])
def test_disk_full_while_saving_is_one_line_and_keeps_the_old_model(tmp_path, trained, monkeypatch, capsys, error):
    import errno

    from training import checkpoint

    out = tmp_path / "out"
    shutil.copytree(trained, out)
    before = weights(out)

    def full(*a, **kw):
        if error == "disk":
            raise OSError(errno.ENOSPC, "No space left on device")
        from safetensors import SafetensorError

        raise SafetensorError("Error while serializing: IoError(No space left on device)")

    monkeypatch.setattr(checkpoint, "save_model", full)
    assert cloze("--output", str(out), "--epochs", "3", "--overwrite") == 2
    err = capsys.readouterr().err
    assert "No space left on device" in err and "untouched" in err and "Traceback" not in err
    assert weights(out) == before
    assert sorted(p.name for p in (tmp_path / "out.partial").iterdir()) == ["run.json", "run_status.json", "states"]
    monkeypatch.undo()
    assert cloze("--output", str(out), "--epochs", "3", "--resume") == 0  # space freed: the same run is written
    assert weights(out) != before


# -- 7-12. bad input ----------------------------------------------------------------------------

DEEP = "[" * 200_000 + "\n"


@pytest.mark.parametrize(
    "name, args",
    [
        ("chat", ["--data", "{f}.jsonl"]),
        ("chat", ["--data", "{f}.json"]),
        ("cloze", ["--data", "{f}.jsonl"]),
        ("cloze", ["--data", "{f}.jsonl", "--pairs"]),
        ("similarity", ["--train", "{f}.jsonl"]),
    ],
)
@pytest.mark.slow
def test_deeply_nested_json_is_refused_in_one_line(tmp_path, name, args):
    for ext in ("jsonl", "json"):
        write(tmp_path / f"deep.{ext}", DEEP)
    r = script(
        name, *[a.format(f=tmp_path / "deep") for a in args], "--model", "scratch", "--output", str(tmp_path / "o")
    )
    assert "nested too deeply" in one_line_error(r)


@pytest.mark.parametrize(
    "text, message",
    [
        ("data: [1, 2]\n", "data must be text"),
        ("seed: [1, 2]\n", "seed must be a whole number"),
        ("epochs: {a: 1}\n", "epochs must be a number"),
        (
            "a: &a [x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a]\nc: [*b, *b, *b, *b, *b, *b, "
            "*b, *b]\n",
            "aliases",
        ),
        ("[" * 100_000 + "\n", "not valid YAML"),
    ],
)
def test_bad_config_values_are_refused_in_one_line(tmp_path, text, message):
    cfg = write(tmp_path / "run.yaml", text)
    r = script("cloze", "--config", str(cfg), "--data", CORPUS, "--output", str(tmp_path / "o"))
    assert message in one_line_error(r)


def test_config_numbers_written_as_text_still_work(tmp_path):
    from training.args import RunArguments, check_config_types

    assert check_config_types({"lr": "1e-3", "epochs": 2, "seed": "7", "bf16": True}, (RunArguments,), "x") == {
        "lr": 1e-3,
        "epochs": 2.0,
        "seed": 7,
        "bf16": "true",
    }  # --bf16's mode: true = "where it is fast"
    from data.precision import bf16_fast_here

    assert RunArguments(bf16="True").bf16 is bf16_fast_here()[0]  # "where it is fast": this machine decides
    assert RunArguments(bf16="force").bf16 is True
    assert RunArguments().bf16 is False


def test_non_finite_and_absurd_labels_are_skipped(tmp_path):
    from data.pairs import read_pairs

    f = write(tmp_path / "p.tsv", "a\tb\tnan\nc\td\tinf\ne\tf\t1e400\ng\th\t2000000000\ni\tj\t1\nk\tl\t0\n")
    pairs = read_pairs(f)
    assert pairs.labels == [1, 0] and pairs.label_names == ["0", "1"] and pairs.bad.count == 4
    scores = read_pairs(write(tmp_path / "s.tsv", "a\tb\t0.5\nc\td\tnan\ne\tf\t4.5\ng\th\tinf\n"))
    assert scores.task == "regression" and scores.labels == [0.5, 4.5] and "finite" in scores.bad.examples[0]


def test_devices_huge_lines_and_unreadable_files_are_refused(tmp_path, monkeypatch):
    from data import corpus, textio

    with pytest.raises(InputError, match="not a regular file"):
        textio.read_text("/dev/zero")
    long_line = write(tmp_path / "one-line.txt", "字" * 50_000 + "\n短句也在这里。\n")
    read = corpus.read_corpus(long_line)
    assert read.passages == ["短句也在这里。"] and "longer than 20,000" in read.bad.examples[0]

    def denied(*a, **kw):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(textio, "open", denied, raising=False)
    with pytest.raises(InputError, match="permission denied"):
        textio.read_text(CORPUS)


def test_an_output_folder_that_cannot_be_written_is_refused_before_training(tmp_path, capsys):
    blocker = write(tmp_path / "file", "x")
    assert cloze("--output", str(blocker / "sub" / "model"), "--epochs", "1") == 2
    err = capsys.readouterr().err
    assert "is a file, not a folder" in err and "parameters" not in err  # refused before the model was built


# -- 13-16. the app ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def served(tmp_path_factory, trained, chat_checkpoint):
    import app

    root = tmp_path_factory.mktemp("app") / "checkpoints"
    shutil.copytree(chat_checkpoint, root / "chat")
    shutil.copytree(trained, root / "cloze")
    demo = app.build_demo(app.Settings(checkpoints=str(root), concurrency=4))
    demo.launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True, **app.SERVE_OPTIONS)
    yield demo, root
    demo.close()


def test_the_server_enforces_its_limits_and_answers_in_words(served):
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    demo, _ = served
    c = Client(demo.local_url, verbose=False)
    with pytest.raises(AppError, match="too long"):
        c.predict("好" * 1_000_000, api_name="/chat")
    with pytest.raises(AppError, match="must be a number"):
        c.predict("你好", temperature="hot", api_name="/chat")
    with pytest.raises(AppError, match="between 8 and 256"):
        c.predict("你好", max_new_tokens=100_000, api_name="/chat")
    for text, message in (("没有空位的句子", "MASK"), ("[MASK]" * 50, "10"), ("长" * 5000, "too long")):
        with pytest.raises(AppError, match=message):
            c.predict(text, api_name="/fill_mask")
    with pytest.raises(AppError, match="between 1 and 20"):
        c.predict("今天天气很[MASK]。", top_k=10_000, api_name="/fill_mask")
    chatbot, _ = c.predict("你好", max_new_tokens=8, api_name="/chat")
    assert chatbot and chatbot[-1]["role"] == "assistant"


def test_history_kept_per_visitor_is_bounded():
    from webui.tabs.chat import MAX_KEPT_CHARS, MAX_KEPT_MESSAGES, trim_history

    turns = [{"role": "user" if i % 2 == 0 else "assistant", "content": "话" * 900} for i in range(100)]
    kept = trim_history(turns)
    assert len(kept) <= MAX_KEPT_MESSAGES and sum(len(t["content"]) for t in kept) <= MAX_KEPT_CHARS
    assert kept[-1] is turns[-1] and kept[0]["role"] == "user"


def test_uploads_over_the_limit_are_refused(served):
    import httpx

    demo, _ = served
    small = httpx.post(demo.local_url + "gradio_api/upload", files={"files": ("a.txt", b"x" * 1000)}, timeout=30)
    big = httpx.post(demo.local_url + "gradio_api/upload", files={"files": ("b.bin", b"x" * 3_000_000)}, timeout=30)
    assert small.status_code == 200 and big.status_code == 413, (small.status_code, big.status_code, big.text[:200])


def test_a_checkpoint_trained_after_the_start_is_listed_on_the_next_page_load(served, trained):
    from gradio_client import Client

    demo, root = served
    shutil.copytree(trained, root / "later")
    filled, _ = Client(demo.local_url, verbose=False).predict("三国人物诸[MASK]", "later", api_name="/fill_mask")
    assert "Most likely" in filled


@pytest.mark.slow
def test_a_scratch_similarity_run_with_its_masked_lm_stage_resumes(tmp_path):
    """bench/faults.py found it: the pair stage of a scratch run starts from the masked-LM stage's model (32
    positions at --max-len 32) and a resume rebuilt a 64-position model: a size-mismatch traceback."""
    out = tmp_path / "sim"
    args = ["--train", str(SAMPLES / "pairs.tsv"), *TINY, "--epochs", "12", "--output", str(out)]
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "training" / "similarity.py"), *args],
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 240
    while (
        not list((tmp_path / "sim.partial" / "states").glob("checkpoint-*/trainer_state.json"))
        and time.monotonic() < deadline
    ):
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-1500:]
    r = script("similarity", *args, "--resume")
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert json.loads((out / "training_report.json").read_text(encoding="utf-8"))["resumed_from"]
