"""The terminal chat driven through stdin, as `python -m chat`."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT


def run_chat(args, stdin: str, cwd=ROOT):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "chat", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=180,
    )


@pytest.mark.slow
def test_piped_messages_get_one_reply_line_each(chat_checkpoint, tmp_path):
    transcript = tmp_path / "t.txt"
    r = run_chat(
        ["--model", str(chat_checkpoint), "--greedy", "--max-new-tokens", "12"],
        f"你好\n\n今天天气怎么样？\n/save {transcript}\n/reset\n在吗\n/exit\n不会被读到\n",
    )
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 3  # three messages, one reply line each; blank lines and commands print nothing to stdout
    saved = transcript.read_text(encoding="utf-8").splitlines()
    assert saved[0] == "你好" and saved[2] == "今天天气怎么样？" and len(saved) == 4
    assert "conversation cleared" in r.stderr and "Traceback" not in r.stderr

    # the same greedy conversation gives the same replies; /save refuses to overwrite
    again = run_chat(
        ["--model", str(chat_checkpoint), "--greedy", "--max-new-tokens", "12"], f"你好\n/save {transcript}\n"
    )
    assert again.stdout.splitlines()[0] == lines[0]
    assert "already exists" in again.stderr


@pytest.mark.slow
def test_bad_model_and_flags_exit_2_in_one_line(tmp_path):
    r = run_chat(["--model", str(tmp_path / "nope")], "你好\n")
    assert r.returncode == 2 and r.stderr.strip() == f"error: chat model folder not found: {tmp_path / 'nope'}"
    r = run_chat(["--model", str(tmp_path), "--top-p", "0"], "")
    assert r.returncode == 2 and r.stderr.strip().startswith("error: top_p must be in (0, 1]")
    r = run_chat(["--model", str(tmp_path), "--max-history", "-3"], "")
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].endswith(
        "--max-history must be 0 (no limit) or more, got -3"
    )
    assert "Traceback" not in r.stderr


@pytest.mark.slow
def test_end_of_input_exits_cleanly(chat_checkpoint):
    r = run_chat(["--model", str(chat_checkpoint), "--seed", "1"], "")
    assert r.returncode == 0 and r.stdout == "" and "Traceback" not in r.stderr


@pytest.mark.slow
def test_fast_flag_chats_with_int8_weights(chat_checkpoint):
    r = run_chat(["--model", str(chat_checkpoint), "--fast", "--greedy", "--max-new-tokens", "8"], "你好\n")
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 1 and "Traceback" not in r.stderr
    r = run_chat(["--model", str(chat_checkpoint), "--precision", "fp16"], "你好\n")
    assert r.returncode == 2 and "invalid choice: 'fp16'" in r.stderr


def test_an_interactive_chat_is_saved_in_the_transcripts_folder_not_the_current_one(tmp_path):
    from chat.__main__ import autosave_path

    folder = tmp_path / "transcripts"
    first = autosave_path(str(folder))
    open(first, "w").close()
    second = autosave_path(str(folder))
    assert os.path.dirname(first) == str(folder) and second != first and second.endswith(".txt")
    ignored = subprocess.run(["git", "check-ignore", "-q", "transcripts/chat-1.txt"], cwd=ROOT).returncode
    assert ignored == 0, "transcripts/ must be git-ignored"


@pytest.mark.slow
def test_bf16_falls_back_to_fp32_where_it_is_slow(chat_checkpoint):
    from data.precision import bf16_fast_here

    fast, _ = bf16_fast_here()
    r = run_chat(
        ["--model", str(chat_checkpoint), "--precision", "bf16", "--greedy", "--max-new-tokens", "4"], "你好\n"
    )
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 1
    assert ("--precision bf16 ignored" in r.stderr) is (not fast), r.stderr


def test_the_sampling_flags_are_the_generation_settings_fields():
    """One definition: every GenerationSettings field is a flag of `python -m chat`, parsed into it."""
    from dataclasses import fields

    from chat.__main__ import parse_args
    from chat.settings import GenerationSettings

    args, settings = parse_args(["--top-k", "3", "--no_repeat_ngram_size", "2", "--greedy", "--fast", "--seed", "7"])
    assert (settings.top_k, settings.no_repeat_ngram_size, settings.do_sample, settings.seed) == (3, 2, False, 7)
    assert args.precision == "int8" and settings.temperature is None  # unset: the checkpoint's own value
    for f in fields(GenerationSettings):
        parse_args([f"--{f.name.replace('_', '-')}", "1"])  # each field has its flag
    with pytest.raises(SystemExit) as e:
        parse_args(["--bogus"])
    assert e.value.code == 2
