"""Issue #34, the second fault-injection pass: each case reproduced with real files and real runs
of the scripts (tiny models), and shown to end in a correct run or one clear line with exit 2."""

from __future__ import annotations

import json
import os
import shutil
import signal

import pytest

from tests.conftest import SAMPLES as ROOT_SAMPLES
from tests.conftest import write
from tests.test_reliability import CORPUS, TINY, cloze, one_line_error, script, weights

# -- 1-2. nothing the user owns is deleted -----------------------------------------------------


@pytest.fixture
def out_and_backup(tmp_path, trained):
    out = tmp_path / "ck" / "chat"
    shutil.copytree(trained, out)
    backup = tmp_path / "ck" / "chat.old-backup"  # the user's own copy, named like ours used to be
    shutil.copytree(trained, backup)
    write(backup / "notes.txt", "my notes\n")
    return out, backup


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("r2") / "model"
    assert cloze("--output", str(out), "--epochs", "2") == 0
    return out


def test_a_refused_run_leaves_a_users_old_looking_folder_alone(out_and_backup, capsys):
    out, backup = out_and_backup
    assert cloze("--output", str(out), "--epochs", "1") == 2  # exists: refused
    assert (backup / "notes.txt").read_text() == "my notes\n" and (backup / "model.safetensors").is_file()
    assert f"left {backup} alone" in capsys.readouterr().err


def test_an_overwrite_replaces_only_the_output_and_never_the_users_folders(out_and_backup, tmp_path):
    out, backup = out_and_backup
    twin = tmp_path / "ck" / f"chat.old-{os.getpid()}"  # even the exact name the publish would pick
    shutil.copytree(backup, twin)
    assert cloze("--output", str(out), "--epochs", "1", "--overwrite") == 0
    assert (backup / "notes.txt").is_file() and (twin / "notes.txt").is_file()
    assert sorted(p.name for p in out.parent.iterdir()) == sorted(["chat", "chat.old-backup", twin.name])
    assert "REPLACING.json" not in os.listdir(out)


def test_a_marker_naming_someone_elses_folder_deletes_nothing(out_and_backup):
    """A checkpoint copied from elsewhere may carry a marker that names a sibling: only the very folder
    this program moved aside (same inode) is ever removed."""
    out, backup = out_and_backup
    st = os.stat(backup)
    write(out / "REPLACING.json", json.dumps({"name": "chat.old-7", "dev": st.st_dev, "ino": st.st_ino + 1}))
    shutil.copytree(backup, out.parent / "chat.old-7")
    assert cloze("--output", str(out), "--epochs", "1", "--overwrite") == 0
    assert (out.parent / "chat.old-7" / "notes.txt").is_file()


@pytest.mark.slow
def test_a_crash_between_the_renames_removes_only_the_folder_it_moved_aside(out_and_backup):
    out, backup = out_and_backup
    r = script(
        "cloze",
        "--data",
        CORPUS,
        *TINY,
        "--epochs",
        "1",
        "--output",
        str(out),
        "--overwrite",
        env={"TRAINING_TEST_CRASH_AT": "between_renames"},
    )
    assert r.returncode == -signal.SIGKILL and not out.exists()
    aside = [p for p in out.parent.iterdir() if p.name.startswith("chat.old-") and p != backup]
    assert len(aside) == 1  # the previous model, moved aside by the killed run
    assert cloze("--output", str(out), "--epochs", "1") == 0  # finishes that publish
    assert not aside[0].exists() and (backup / "notes.txt").is_file()
    assert sorted(p.name for p in out.parent.iterdir()) == ["chat", "chat.old-backup"]


@pytest.mark.parametrize("extra", [["--overwrite"], ["--resume"], []])
def test_a_users_own_folder_named_like_the_working_folder_is_never_removed(out_and_backup, extra, capsys):
    """`<output>.partial` is removed only when this program made it (its run.json, states or marker)."""
    out, _ = out_and_backup
    mine = write(out.parent / "chat.partial" / "notes.txt", "my notes\n")
    assert cloze("--output", str(out), "--epochs", "1", *extra) == 2
    assert mine.read_text() == "my notes\n"
    assert "was not made by this program" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("where", ["output", "partial"])
def test_an_output_folder_holding_the_input_data_is_refused(tmp_path, trained, where):
    out = tmp_path / "withdata"
    shutil.copytree(trained, out)
    folder = out if where == "output" else tmp_path / "withdata.partial"
    data = write(folder / "mydata.txt", open(CORPUS, encoding="utf-8").read())
    before = weights(out)
    for extra in (["--overwrite"], ["--resume"]):
        r = script("cloze", "--data", str(data), *TINY, "--epochs", "1", "--output", str(out), *extra)
        assert "is inside the output folder" in one_line_error(r)
        assert data.is_file() and weights(out) == before


@pytest.mark.slow
def test_a_config_file_inside_the_output_folder_is_refused(tmp_path, trained):
    out = tmp_path / "o"
    shutil.copytree(trained, out)
    cfg = write(out / "my.yaml", "epochs: 1\n")
    r = script("cloze", "--data", CORPUS, *TINY, "--output", str(out), "--overwrite", "--config", str(cfg))
    assert "--config" in one_line_error(r) and cfg.is_file()


# -- 4, 13. option values that used to slip through ---------------------------------------------


@pytest.mark.parametrize(
    "flags, words",
    [
        (["--seed", "-1"], "--seed must be a whole number from 0"),
        (["--seed", "1099511627776"], "--seed must be a whole number from 0"),
        (["--output", ""], "--output must name a folder"),
    ],
)
def test_bad_option_values_are_one_line(tmp_path, flags, words):
    argv = [a for a in TINY if a not in ("--seed", "0")]
    r = script("cloze", "--data", CORPUS, *argv, "--epochs", "1", *(["--output", str(tmp_path / "o")]), *flags)
    assert words in one_line_error(r)
    assert not (tmp_path / "checkpoints").exists()


def test_a_thirty_digit_seed_in_a_config_is_one_line(tmp_path):
    cfg = write(tmp_path / "c.yaml", "seed: 123456789012345678901234567890\n")
    r = script("cloze", "--data", CORPUS, "--config", str(cfg), "--output", str(tmp_path / "o"))
    assert "--seed must be a whole number from 0" in one_line_error(r)


# -- 3, 5, 10. bad rows and bad side files ------------------------------------------------------


@pytest.mark.slow
def test_lone_surrogates_in_json_rows_are_skipped_with_their_line(tmp_path):
    lines = [json.dumps({"text": t}, ensure_ascii=True) for t in open(CORPUS, encoding="utf-8").read().split("\n") if t]
    lines.insert(3, '{"text": "\\ud800\\u4f60\\u597d\\u4f60\\u597d\\u4f60\\u597d\\u4f60\\u597d"}')
    data = write(tmp_path / "c.jsonl", "\n".join(lines) + "\n")
    r = script("cloze", "--data", str(data), *TINY, "--epochs", "1", "--output", str(tmp_path / "o"))
    assert r.returncode == 0, r.stderr[-1500:]
    assert "c.jsonl:4" in r.stderr and "half a character" in r.stderr


@pytest.mark.slow
def test_a_dialogue_file_of_lone_surrogates_only_is_one_line(tmp_path):
    data = write(tmp_path / "d.jsonl", '{"dialogue": ["\\ud800你好", "好\\udfff呀"]}\n' * 3)
    r = script("chat", "--data", str(data), *TINY, "--epochs", "1", "--output", str(tmp_path / "o"))
    words = one_line_error(r)
    assert "no usable dialogue" in words and "d.jsonl:1: holds half a character" in words


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["gbk", "binary", "fifo"])
def test_a_user_dictionary_in_gbk_is_read_and_a_binary_or_fifo_is_one_line(tmp_path, kind):
    path = tmp_path / "dict.txt"
    if kind == "gbk":
        write(path, "云栖岛 10 ns\n林小溪 10 nr\n", encoding="gb18030")
    elif kind == "binary":
        path.write_bytes(bytes(range(256)) * 4)
    else:
        os.mkfifo(path)
    r = script(
        "cloze", "--data", CORPUS, *TINY, "--epochs", "1", "--output", str(tmp_path / "o"), "--user-dict", str(path)
    )
    if kind == "gbk":
        assert r.returncode == 0, r.stderr[-1500:]
    else:
        words = one_line_error(r)
        assert ("binary" if kind == "binary" else "not a regular file") in words and "not found" not in words


@pytest.mark.slow
def test_similarity_labels_that_are_not_finite_are_skipped_not_classes(tmp_path):
    rows = [f"今天天气{i}好\t今天天气{i}不错\t{lab}" for i, lab in enumerate(["nan", "inf", "1e400", "-inf"] * 4)]
    data = write(tmp_path / "p.tsv", "\n".join(rows) + "\n")
    r = script("similarity", "--train", str(data), *TINY, "--epochs", "1", "--output", str(tmp_path / "o"))
    assert "no usable sentence pair" in one_line_error(r) and "not a finite number" in r.stderr


# -- 6, 12. refused before anything is built or run ---------------------------------------------


@pytest.mark.parametrize("flags", [["--n-embd", "200000", "--n-head", "1"], ["--max-len", "300000000"]])
def test_absurd_sizes_are_refused_with_the_memory_they_would_need(tmp_path, flags):
    argv = [a for a in TINY if a not in ("--n-embd", "32", "--n-head", "2", "--max-len")]
    r = script("chat", "--data", str(ROOT_SAMPLES / "dialogs.txt"), *argv, *flags, "--output", str(tmp_path / "o"))
    words = one_line_error(r)
    assert "GiB to train" in words and "choose smaller sizes" in words


@pytest.mark.slow
def test_a_model_folder_with_its_own_code_is_refused_whatever_stdin_is(tmp_path, trained):
    base = tmp_path / "custom"
    shutil.copytree(trained, base)
    cfg = json.loads((base / "config.json").read_text())
    cfg["auto_map"] = {"AutoModelForMaskedLM": "evil.Model"}
    write(base / "config.json", json.dumps(cfg))
    write(base / "evil.py", "raise SystemExit('ran the code')\n")
    args = ["--data", CORPUS, "--model", str(base), "--epochs", "1", "--output", str(tmp_path / "o")]
    r = script("cloze", *args, input="y\ny\n")
    assert "never runs a model's code" in one_line_error(r) and "ran the code" not in r.stderr


# -- 9. checkpoints know how long an input their positions take ----------------------------------


def test_a_plain_pipeline_truncates_a_long_input_to_the_checkpoints_positions(trained):
    from transformers import pipeline

    config = json.loads((trained / "config.json").read_text())
    tok = json.loads((trained / "tokenizer_config.json").read_text())
    assert tok["model_max_length"] == config["max_position_embeddings"]
    fill = pipeline("fill-mask", model=str(trained))
    out = fill("[MASK]" + "云栖岛" * 700, tokenizer_kwargs={"truncation": True})
    assert len(out) == 5


# -- 13. smaller ones -----------------------------------------------------------------------------


def test_a_utf8_file_cut_mid_character_loses_only_its_last_line(tmp_path):
    from data.corpus import read_corpus
    from data.dialogue import read_dialogues

    cut = write(tmp_path / "cut.txt", "").with_suffix(".txt")
    cut.write_bytes("小满住在城东。\n她开了一家花店。\n店名叫".encode()[:-1])
    corpus = read_corpus(cut)
    assert corpus.passages == ["小满住在城东。", "她开了一家花店。"] and corpus.encoding == "utf-8"
    assert corpus.bad.examples == ["cut.txt:3: not valid UTF-8 (the file was cut mid-character or damaged here)"]
    cut.write_bytes("你好\n你好呀\n\n早\n早上好\n再".encode()[:-1])
    assert read_dialogues(cut).dialogues == [["你好", "你好呀"], ["早", "早上好"]]
    # a GBK file whose only Chinese line is the last is GBK, not damaged UTF-8
    cut.write_bytes(b"plain ascii line\n" * 150 + "最后一行。\n".encode("gbk"))
    assert read_corpus(cut).passages[-1] == "最后一行。"


@pytest.mark.slow
def test_utf16_with_a_bom_is_read_as_text(tmp_path):
    data = write(tmp_path / "notepad.txt", open(CORPUS, encoding="utf-8").read(), encoding="utf-16")
    r = script("cloze", "--data", str(data), *TINY, "--epochs", "1", "--output", str(tmp_path / "o"))
    assert r.returncode == 0 and "read as UTF-16" in r.stderr, r.stderr[-1500:]


@pytest.mark.slow
def test_a_file_name_with_a_newline_is_still_one_error_line(tmp_path):
    r = script("cloze", "--data", str(tmp_path / "two\nlines.txt"), *TINY, "--output", str(tmp_path / "o"))
    assert "two\\nlines.txt" in one_line_error(r)


def test_a_config_key_inside_a_config_file_is_refused(tmp_path):
    cfg = write(tmp_path / "c.yaml", f"config: {tmp_path / 'other.yaml'}\nepochs: 1\n")
    r = script("cloze", "--data", CORPUS, "--config", str(cfg), "--output", str(tmp_path / "o"))
    assert "cannot name another one" in one_line_error(r)


@pytest.mark.slow
def test_a_refused_resume_or_a_failed_load_leaves_no_partial_folder(tmp_path, trained):
    out = tmp_path / "o"
    shutil.copytree(trained, out)
    r = script("cloze", "--data", CORPUS, *TINY, "--epochs", "2", "--output", str(out), "--resume")
    assert "already trained" in one_line_error(r)
    assert not (tmp_path / "o.partial").exists()  # so a plain start is not told of an "interrupted run"
    broken = write(tmp_path / "broken" / "config.json", '{"model_type": "bert"}')
    r = script("cloze", "--data", CORPUS, "--model", str(broken.parent), "--output", str(tmp_path / "n"))
    assert r.returncode == 2 and not (tmp_path / "n.partial").exists() and not (tmp_path / "n").exists()


# -- 8. the app's start on a busy machine ---------------------------------------------------------


@pytest.mark.slow
def test_the_apps_localhost_check_waits_for_a_slow_first_answer(monkeypatch):
    """Gradio's own check gives up after one 3 s timeout (a busy machine); the app's keeps asking."""
    import http.server
    import threading
    import time

    from gradio import networking

    import app

    class Slow(http.server.BaseHTTPRequestHandler):
        first = [True]

        def do_HEAD(self):
            if self.first[0]:
                self.first[0] = False
                time.sleep(3.5)  # longer than Gradio's one timeout
            self.send_response(200)
            self.end_headers()

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    try:
        monkeypatch.setattr(networking, "url_ok", networking.url_ok)  # restored after the test
        assert networking.url_ok(url) is False  # Gradio's: the first request times out, and it gives up
        Slow.first[0] = True
        app.patient_localhost_check(seconds=20)
        assert networking.url_ok(url) is True
    finally:
        server.shutdown()
