"""The third fault-injection pass (issue #50), each case reproduced with real files and real runs of the
scripts (tiny models): the user's file byte-identical afterwards, or one line and exit 2; no NaN model
published; no traceback."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal

import pytest

from tests.conftest import SAMPLES, write
from tests.test_reliability import CORPUS, TINY, cloze, one_line_error, script, weights
from training import similarity as similarity_script
from training.cli import guarded

PAIRS = str(SAMPLES / "pairs.tsv")
T = ["--model", "scratch", "--n-layer", "1", "--n-embd", "32", "--n-head", "2"]


def digest(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def similarity(*args) -> int:
    return guarded(similarity_script.main, [*T, "--max-len", "32", "--no-mlm-stage", *args])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("r3") / "model"
    assert cloze("--output", str(out), "--epochs", "2") == 0
    return out


@pytest.fixture
def model(tmp_path, trained):
    out = tmp_path / "m"
    shutil.copytree(trained, out)
    return out


# -- a user's files are never lost -------------------------------------------------------------


def test_output_file_never_overwrites_an_input_or_an_existing_file(tmp_path, capsys):
    mine = tmp_path / "mine.tsv"
    shutil.copy(PAIRS, mine)
    before = digest(mine)
    out = str(tmp_path / "m5")
    argv = ["--train", str(mine), "--output", out, "--max-steps", "2", "--predict", PAIRS]
    assert similarity(*argv, "--output-file", str(mine)) == 2
    assert "is the file of --train" in capsys.readouterr().err and digest(mine) == before
    theirs = write(tmp_path / "theirs.jsonl", "keep me\n")
    assert similarity(*argv, "--output-file", str(theirs)) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err and theirs.read_text() == "keep me\n"
    assert not os.path.exists(out) and not os.path.exists(out + ".partial")  # refused before anything was made


def test_output_file_checks_come_before_training(tmp_path, capsys):
    folder = tmp_path / "a-folder"
    folder.mkdir()
    out = str(tmp_path / "m9")
    argv = ["--train", PAIRS, "--output", out, "--max-steps", "2", "--predict", PAIRS]
    assert similarity(*argv, "--output-file", str(folder)) == 2
    err = capsys.readouterr().err
    assert "is a folder" in err and "train loss" not in err and not os.path.exists(out + ".partial")
    missing = tmp_path / "new" / "deeper" / "p.jsonl"  # a folder that does not exist yet is made
    assert similarity(*argv, "--output-file", str(missing)) == 0
    assert len(missing.read_text(encoding="utf-8").splitlines()) == 266


def test_default_predictions_are_part_of_the_checkpoint(tmp_path):
    from training.ownership import foreign_names

    out = tmp_path / "m"
    argv = ["--train", PAIRS, "--output", str(out), "--max-steps", "2", "--predict", PAIRS]
    assert similarity(*argv) == 0 and (out / "predictions.jsonl").is_file()
    assert foreign_names(str(out)) == []  # written by the run: a later --overwrite may replace it
    assert similarity(*argv, "--overwrite") == 0


@pytest.mark.slow
def test_resume_refuses_a_folder_holding_the_users_files(model):
    notes = write(model / "my_notes.txt", "notes\n")
    r = script("cloze", "--data", CORPUS, *TINY, "--epochs", "3", "--output", str(model), "--resume")
    assert "my_notes.txt" in one_line_error(r) and notes.read_text() == "notes\n"
    r = script("cloze", "--data", CORPUS, *TINY, "--epochs", "3", "--output", str(model), "--overwrite")
    assert "my_notes.txt" in one_line_error(r) and notes.read_text() == "notes\n"


@pytest.mark.parametrize("flag", ["--predict", "--dev"])
def test_an_input_inside_the_output_folder_is_refused(model, flag, capsys):
    inside = model / "to_predict.tsv"
    shutil.copy(PAIRS, inside)
    argv = ["--train", PAIRS, "--output", str(model), "--max-steps", "2", "--overwrite", flag, str(inside)]
    assert similarity(*argv) == 2
    assert f"{flag} {inside} is inside the output folder" in capsys.readouterr().err and inside.is_file()


@pytest.mark.parametrize("flag", ["--eval-prompts", "--general-text", "--user-dict", "--valid-data"])
def test_every_input_of_a_cloze_or_chat_run_is_checked(model, flag, capsys):
    inside = write(model / "input.txt", "小明住在[MASK][MASK]。\t北京\n")
    if flag == "--valid-data":
        argv = ["--data", str(SAMPLES / "dialogs.txt"), *TINY, "--output", str(model), "--overwrite"]
        from training import chat as chat_script

        assert guarded(chat_script.main, [*argv, flag, str(inside)]) == 2
    else:
        assert cloze("--output", str(model), "--overwrite", flag, str(inside)) == 2
    assert "is inside the output folder" in capsys.readouterr().err and inside.is_file()


@pytest.mark.parametrize("contents", [{"states/ca.csv": "1,2\n", "notes.txt": "mine\n"}, {}])
def test_a_users_own_partial_folder_is_never_removed(tmp_path, contents, capsys):
    work = tmp_path / "m2.partial"
    work.mkdir()
    for name, text in contents.items():
        write(work / name, text)
    assert cloze("--output", str(tmp_path / "m2"), "--epochs", "1", "--overwrite") == 2
    assert "was not made by this program" in capsys.readouterr().err
    assert sorted(str(p.relative_to(work)) for p in work.rglob("*") if p.is_file()) == sorted(contents)


def test_overwrite_replaces_only_a_checkpoint_this_program_wrote(tmp_path, capsys):
    theirs = tmp_path / "m8"
    write(theirs / "config.json", "{}")
    thesis = write(theirs / "thesis.docx", "chapter 1\n")
    assert cloze("--output", str(theirs), "--epochs", "1", "--overwrite") == 2
    assert "is not a checkpoint this program wrote" in capsys.readouterr().err
    assert thesis.read_text() == "chapter 1\n" and sorted(os.listdir(theirs)) == ["config.json", "thesis.docx"]


@pytest.mark.slow
def test_a_file_added_while_training_is_kept_when_the_publish_replaces_the_folder(model, tmp_path):
    """Between the checks and the publish (minutes of training) a user may put a file into the old folder: the
    publish moves the folder aside and removes it only after carrying such files into the new one."""
    r = script(
        "cloze",
        *["--data", CORPUS, *TINY, "--epochs", "3", "--output", str(model), "--overwrite"],
        env={"TRAINING_TEST_CRASH_AT": "between_renames"},
    )
    assert r.returncode == -signal.SIGKILL
    (aside,) = [p for p in tmp_path.iterdir() if p.name.startswith("m.old-")]
    write(aside / "added-while-training.txt", "mine\n")
    r = script("cloze", "--data", CORPUS, *TINY, "--epochs", "3", "--output", str(model))
    assert r.returncode == 0, r.stderr[-2000:]
    assert (model / "added-while-training.txt").read_text() == "mine\n" and "kept your" in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


# -- a broken model is never published ----------------------------------------------------------


@pytest.mark.slow
def test_a_run_whose_weights_turn_nan_publishes_nothing_and_fails(model):
    before = weights(model)
    # a weight decay of 1e30 drives every weight to infinity and then NaN within a step: a real divergence
    r = script(
        "cloze",
        *["--data", CORPUS, *TINY, "--max-steps", "3", "--output", str(model), "--overwrite"],
        "--weight-decay",
        "1e30",
    )
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert [ln for ln in r.stderr.splitlines() if ln.startswith("error:")] == [
        next(ln for ln in r.stderr.splitlines() if "training diverged" in ln)
    ]
    assert "previous model" in r.stderr and weights(model) == before
    r = script("cloze", "--data", CORPUS, *TINY, "--max-steps", "3", "--output", str(model))
    assert "holds an interrupted run" in one_line_error(r)  # its states are kept: --overwrite starts afresh


def test_similarity_scores_off_their_scale_are_refused_or_skipped(tmp_path, capsys):
    rows = [line.split("\t")[:2] for line in open(PAIRS, encoding="utf-8").read().splitlines()[:60]]
    cycle = ["1e308", "-1", "nan", "2", "0", "1", "1.5", "99999999999999999999"]
    weird = write(tmp_path / "weird.tsv", "".join(f"{a}\t{b}\t{cycle[i % 8]}\n" for i, (a, b) in enumerate(rows)))
    assert similarity("--train", str(weird), "--output", str(tmp_path / "w"), "--max-steps", "2") == 2
    assert "do not look like similarity scores" in capsys.readouterr().err
    mostly = [f"{i % 5}.5" if i % 30 else "1e308" for i in range(60)]  # one typo in 30 among 0..5 scores
    ok = write(tmp_path / "ok.tsv", "".join(f"{a}\t{b}\t{y}\n" for (a, b), y in zip(rows, mostly)))
    assert similarity("--train", str(ok), "--output", str(tmp_path / "o"), "--max-steps", "2") == 0
    err = capsys.readouterr().err
    assert "ok.tsv:1: score 1e308 is outside 0..5" in err and "skipped 2 bad pairs" in err


def test_a_tiny_pair_file_is_described_as_pairs(tmp_path, capsys):
    tiny = write(tmp_path / "tiny.tsv", "a\tb\tfoo\nc\td\tbar\n")
    assert guarded(similarity_script.main, ["--train", str(tiny), *T, "--output", str(tmp_path / "t")]) == 2
    err = capsys.readouterr().err
    assert "has only 2 usable sentence pair(s)" in err and "cloze corpus" not in err


# -- one line, exit 2, before anything is built -------------------------------------------------


@pytest.mark.parametrize(
    "args, words",
    [
        (["--epochs", "inf"], "--epochs must be a finite number"),
        (["--epochs", "1e308"], "--epochs must be at most"),
        (["--max-minutes", "nan"], "--max-minutes must be a finite number"),
        (["--batch-size", "1000000000000"], "--batch-size must be from 1 to"),
        (["--max-len", "20000000"], "--max-len must be at most|GiB to train"),  # whichever the memory says first
        (["--n-layer", "100000"], "--n-layer must be at most|GiB to train"),
        (["--lora-alpha", "-5"], "--lora-alpha must be positive"),
        (["--logging-steps", "-1"], "--logging-steps must be 0"),
        (["--format", "xml"], "--format: invalid choice: 'xml'"),
        (["--lr"], "--lr needs a value"),
        (["--max-steps", "1.5"], "--max-steps must be a whole number, got '1.5'"),
        (["--symmetric", "maybe"], "--symmetric: Truthy value expected"),
        (["--bogus", "3"], "unknown option --bogus 3"),
    ],
)
def test_absurd_and_malformed_options_are_one_line(tmp_path, args, words, capsys):
    out = tmp_path / "m"
    assert guarded(similarity_script.main, ["--train", PAIRS, "--output", str(out), *args]) == 2
    err = capsys.readouterr().err
    assert any(w in err for w in words.split("|")) and "usage:" not in err and len(err.strip().splitlines()) == 1, err
    assert not os.path.exists(str(out) + ".partial")


def test_a_batch_size_in_a_config_file_is_checked_too(tmp_path, capsys):
    config = write(tmp_path / "run.yaml", "batch_size: 1e12\n")
    assert similarity("--train", PAIRS, "--config", str(config), "--output", str(tmp_path / "m")) == 2
    assert "--batch-size must be from 1 to" in capsys.readouterr().err


def test_a_batch_too_large_for_this_machine_is_refused_before_training(tmp_path, monkeypatch, capsys):
    from training import args as args_module

    monkeypatch.setattr(args_module, "physical_memory_bytes", lambda: 64 * 2**20)  # a 64 MiB machine
    assert cloze("--output", str(tmp_path / "m"), "--batch-size", "4096", "--max-len", "512") == 2
    err = capsys.readouterr().err
    assert "needs about" in err and "--grad-accum" in err and "train loss" not in err


def test_the_manifest_lists_what_a_publish_wrote(trained):
    from training.ownership import MANIFEST, foreign_names

    manifest = json.loads((trained / MANIFEST).read_text())
    assert {"model.safetensors", "config.json", "training_report.json", "resume_state"} <= set(manifest["files"])
    assert foreign_names(str(trained)) == []


def test_a_checkpoint_from_before_the_manifest_is_still_replaced_and_resumed(model, chat_checkpoint, tmp_path):
    """Folders published by earlier versions have no manifest: our training_report.json and the names a publish
    wrote (a chat model's chat_template.jinja, the app's demo_build.json) still make them ours."""
    from training.ownership import MANIFEST, foreign_names

    old_chat = tmp_path / "old-chat"
    shutil.copytree(chat_checkpoint, old_chat)
    (old_chat / MANIFEST).unlink()
    write(old_chat / "demo_build.json", "{}")
    assert foreign_names(str(old_chat)) == []
    (model / MANIFEST).unlink()
    assert cloze("--output", str(model), "--epochs", "3", "--resume") == 0
    assert json.loads((model / MANIFEST).read_text())["files"]


@pytest.mark.parametrize("name", ["config.json", "PUBLISH_READY", "run.json", "states", ""])
def test_an_output_file_never_takes_a_name_of_the_checkpoint_itself(tmp_path, name, capsys):
    out = tmp_path / "m"
    argv = ["--train", PAIRS, "--output", str(out), "--max-steps", "2", "--predict", PAIRS]
    assert similarity(*argv, "--output-file", str(out / name) if name else str(out)) == 2
    err = capsys.readouterr().err
    assert "checkpoint itself" in err or "output folder itself" in err


def test_dev_scores_are_read_on_the_training_files_scale(tmp_path):
    from data.pairs import read_pairs

    train = read_pairs(write(tmp_path / "t.tsv", "".join(f"甲{i}\t乙{i}\t{i % 5}.5\n" for i in range(20))))
    dev = read_pairs(write(tmp_path / "d.tsv", "丙\t丁\t0.5\n戊\t己\t7\n"), task="regression", scale=train.scale)
    assert train.scale == (0, 5) and dev.labels == [0.5] and "outside 0..5" in dev.bad.examples[0]


@pytest.mark.slow
def test_a_model_written_again_after_a_kill_is_all_ours(model):
    """A kill after the weights were written leaves them in .partial; the resume writes them again, and the
    manifest must list them (it listed only the names new since training ended, and the next --overwrite was
    refused as if model.safetensors were the user's)."""
    from training.ownership import foreign_names

    argv = ["--data", CORPUS, *TINY, "--epochs", "3", "--output", str(model)]
    r = script("cloze", *argv, "--overwrite", env={"TRAINING_TEST_CRASH_AT": "after_weights"})
    assert r.returncode == -signal.SIGKILL
    assert script("cloze", *argv, "--resume").returncode == 0
    assert foreign_names(str(model)) == []
    r = script("cloze", *argv, "--overwrite")
    assert r.returncode == 0, r.stderr[-2000:]
