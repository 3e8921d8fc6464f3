"""training/chat.py end to end on tiny models: loss falls, folder reloads, LoRA, resume, fallback, bad input."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys

import pytest
import torch
from transformers import TrainerCallback

from tests.conftest import ROOT, SAMPLES, TINY_CHAT, write
from training import chat as chat_script
from training.cli import guarded

DIALOGS = str(SAMPLES / "dialogs.txt")
PROBE = "[CLS]你好[SEP]今天天气怎么样？[SEP]"


class CaptureModel(TrainerCallback):
    """Keeps the model the Trainer ends with (the best epoch's weights) and its logits on PROBE."""

    def on_train_end(self, args, state, control, model=None, processing_class=None, **kwargs):
        ids = processing_class(PROBE, add_special_tokens=False, return_tensors="pt").input_ids
        with torch.no_grad():
            model.eval()
            self.logits = model(ids).logits.clone()
        self.ids = ids


def train(tmp_path, *extra, callbacks=(), name="chat"):
    out = tmp_path / name
    argv = ["--data", DIALOGS, "--output", str(out), *TINY_CHAT, *extra]
    code = guarded(lambda a: chat_script.main(a, callbacks=callbacks), argv)
    return code, out


def report(folder):
    return json.loads((folder / "training_report.json").read_text(encoding="utf-8"))


@pytest.mark.slow
def test_scratch_run_learns_and_reloads_with_plain_pipeline(tmp_path):
    from transformers import pipeline

    cap = CaptureModel()
    code, out = train(tmp_path, "--epochs", "4", "--lr", "3e-3", callbacks=[cap])
    assert code == 0
    for f in (
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "vocab.txt",
        "generation_config.json",
        "README.md",
        "training_report.json",
        "loss.png",
        "resume_state/trainer_state.json",
    ):
        assert (out / f).exists(), f
    assert not (out.parent / "chat.partial").exists()
    r = report(out)
    losses = [e["valid_loss"] for e in r["epochs"]]
    assert len(losses) == 4 and losses[-1] < losses[0] - 0.5
    assert all("train_loss" in e and "train_perplexity" in e and "valid_perplexity" in e for e in r["epochs"])
    assert r["best"]["epoch"] == min(r["epochs"], key=lambda e: e["valid_loss"])["epoch"]
    assert r["data"]["train"]["rows"] + r["data"]["valid"]["rows"] == 208
    assert r["tokens_per_s"] > 0 and r["fallback_reason"] is None and r["base_model"] == "scratch"

    pipe = pipeline("text-generation", model=str(out), device="cpu")
    with torch.no_grad():
        logits = pipe.model(cap.ids).logits
    assert torch.equal(logits, cap.logits)
    gen = json.loads((out / "generation_config.json").read_text())
    assert gen["eos_token_id"] == pipe.tokenizer.sep_token_id
    assert pipe.tokenizer.unk_token_id in gen["suppress_tokens"]
    from huggingface_hub import ModelCard

    card = ModelCard.load(out / "README.md")  # the Hub's own parser reads the metadata
    assert (
        card.data.pipeline_tag == "text-generation"
        and card.data.language == ["zh"]
        and card.data.library_name == "transformers"
    )
    assert (
        "valid_perplexity" in card.data.metrics and "base_model" not in card.data.to_dict()
    )  # scratch: no base to name
    assert "## 使用 Usage" in card.text


@pytest.mark.slow
def test_lora_run_saves_adapter_and_merged_weights(tmp_path):
    from peft import PeftConfig, load_peft_weights
    from transformers import GPT2LMHeadModel

    cap = CaptureModel()
    code, out = train(tmp_path, "--epochs", "1", "--lora", "--lora-r", "4", callbacks=[cap])
    assert code == 0
    assert (out / "adapter" / "adapter_config.json").exists()
    assert (out / "adapter" / "adapter_model.safetensors").exists()
    merged = GPT2LMHeadModel.from_pretrained(str(out))
    assert not any("lora" in k for k in merged.state_dict())
    with torch.no_grad():
        assert torch.allclose(merged(cap.ids).logits, cap.logits, atol=1e-4)
    cfg = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert set(cfg["target_modules"]) == {"c_attn", "c_proj"} and cfg["r"] == 4
    assert report(out)["hyperparameters"]["lora"] is True
    # the adapter folder is peft's own format: peft reads its config and rank-4 weights for both target modules
    assert PeftConfig.from_pretrained(str(out / "adapter")).r == 4
    weights = load_peft_weights(str(out / "adapter"))
    assert {k.split(".")[-2] for k in weights} == {"lora_A", "lora_B"} and all(
        min(w.shape) == 4 for w in weights.values()
    )
    assert any(".c_attn." in k for k in weights) and any(".c_proj." in k for k in weights)


class InterruptAt(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            os.kill(os.getpid(), signal.SIGINT)  # a real Ctrl-C, caught by the runner's handler


@pytest.mark.slow
def test_ctrl_c_saves_state_and_resume_reaches_the_same_step(tmp_path, capsys):
    code, full = train(tmp_path, "--epochs", "3", name="full")
    assert code == 0
    final_step = report(full)["global_step"]

    code, out = train(tmp_path, "--epochs", "3", callbacks=[InterruptAt(5)], name="cut")
    assert code == 130
    err = capsys.readouterr().err
    assert "resume with:" in err and "--resume" in err
    stopped = int(re.search(r"stopped at step (\d+)", err).group(1))
    assert stopped in (5, 6)  # the step in flight when Ctrl-C arrived, or the next one
    assert not out.exists() and (tmp_path / "cut.partial" / "states").is_dir()

    code, out = train(tmp_path, "--epochs", "3", "--resume", name="cut")
    assert code == 0
    r = report(out)
    assert r["global_step"] == final_step and len(r["epochs"]) == 3
    assert r["resumed_from"].endswith(f"checkpoint-{stopped}")
    assert not (tmp_path / "cut.partial").exists()

    # a finished run continues from its kept state with more epochs
    code, out = train(tmp_path, "--epochs", "4", "--resume", name="cut")
    assert code == 0 and len(report(out)["epochs"]) == 4


def test_existing_output_is_not_overwritten_without_flag(tmp_path, capsys):
    out = tmp_path / "chat"
    write(out / "config.json", "{}")  # a model folder from elsewhere: never replaced, with or without the flag
    code, _ = train(tmp_path, "--epochs", "1")
    assert code == 2
    assert "is not a checkpoint this program wrote" in capsys.readouterr().err
    assert (out / "config.json").read_text() == "{}"
    code, _ = train(tmp_path / "ours", "--epochs", "1")
    assert code == 0
    code, _ = train(tmp_path / "ours", "--epochs", "1")  # one of ours: replaced only with --overwrite
    assert code == 2 and "already exists; pass --overwrite" in capsys.readouterr().err
    foreign = tmp_path / "mine"
    write(foreign / "notes.txt", "my notes")
    code = guarded(chat_script.main, ["--data", DIALOGS, "--output", str(foreign), "--overwrite", *TINY_CHAT])
    assert code == 2 and (foreign / "notes.txt").exists()
    assert "is not a checkpoint this program wrote" in capsys.readouterr().err


@pytest.mark.slow
def test_offline_hub_id_falls_back_to_scratch(tmp_path, capsys):
    code, out = train(tmp_path, "--epochs", "1", "--model", "uer/gpt2-chinese-cluecorpussmall")
    assert code == 0
    err = capsys.readouterr().err
    assert "not in the local cache" in err and "from scratch instead" in err
    r = report(out)
    assert r["base_model"] == "scratch" and "offline" in r["fallback_reason"]


def test_no_fallback_fails_in_one_line(tmp_path, capsys):
    code, _ = train(tmp_path, "--model", "uer/gpt2-chinese-cluecorpussmall", "--no-fallback")
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: 'uer/gpt2-chinese-cluecorpussmall' is not in the local cache")


@pytest.mark.slow
def test_pretrained_folder_path_and_max_len_clamp(tmp_path, capsys):
    from transformers import GPT2Config, GPT2LMHeadModel

    from data import build_char_vocab, make_tokenizer, read_dialogues

    dialogues = read_dialogues(DIALOGS).dialogues
    tok = make_tokenizer(build_char_vocab(u for d in dialogues for u in d))
    base = tmp_path / "tiny-gpt2"
    GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=48, n_embd=32, n_layer=1, n_head=2)).save_pretrained(
        base
    )
    tok.save_pretrained(base)
    argv = [
        "--data",
        DIALOGS,
        "--output",
        str(tmp_path / "ft"),
        "--model",
        str(base),
        "--max-len",
        "128",
        "--epochs",
        "1",
    ]
    assert guarded(chat_script.main, argv) == 0
    assert "--max-len 128 is more than" in capsys.readouterr().err
    r = report(tmp_path / "ft")
    assert r["base_model_source"] == "folder" and r["hyperparameters"]["max_len"] == 48
    assert "base_model:" in (tmp_path / "ft" / "README.md").read_text(encoding="utf-8")


def test_gradient_checkpointing_trains_the_same_model(tmp_path):
    """--gradient-checkpointing recomputes activations in the backward pass (less memory, more time: measured in
    docs/benchmarks.md): the Trainer gets it and the weights come out as without it."""

    class Seen(CaptureModel):
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            self.checkpointing = args.gradient_checkpointing and model.is_gradient_checkpointing

    plain, recomputed = Seen(), Seen()
    assert train(tmp_path, "--max-steps", "6", callbacks=[plain], name="plain")[0] == 0
    code, _ = train(tmp_path, "--max-steps", "6", "--gradient-checkpointing", callbacks=[recomputed], name="gc")
    assert code == 0
    assert recomputed.checkpointing and not plain.checkpointing
    assert torch.allclose(recomputed.logits, plain.logits, atol=1e-4)


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--data", "nope.txt"], "error: file not found: nope.txt"),
        (["--data", DIALOGS, "--model", "./no/such/folder"], "error: model folder not found"),
        (["--data", DIALOGS, "--epochs", "-1"], "error: --epochs must be positive"),
        (["--data", DIALOGS, "--n-embd", "30", "--n-head", "4"], "must be a positive multiple of --n-head"),
        (["--data", DIALOGS, "--resume", "--output", "nowhere/x"], "error: nothing to resume"),
        (["--data", DIALOGS, "--config", "missing.yaml"], "error: config file not found"),
    ],
)
def test_bad_input_gives_one_line_and_exit_2(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert guarded(chat_script.main, argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_folder_of_another_architecture_is_refused(tmp_path, capsys):
    from transformers import BertConfig, BertForMaskedLM

    BertForMaskedLM(
        BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    ).save_pretrained(tmp_path / "bert")
    assert (
        guarded(
            chat_script.main, ["--data", DIALOGS, "--model", str(tmp_path / "bert"), "--output", str(tmp_path / "o")]
        )
        == 2
    )
    assert "holds a bert model, not a GPT-2 chat model" in capsys.readouterr().err


def test_config_file_sets_options_and_flags_override(tmp_path):
    from training.args import LoraArguments, RunArguments, parse_args
    from training.tasks.chat.options import ChatArguments

    cfg = write(tmp_path / "run.yaml", "data: d.txt\nepochs: 7\nbatch-size: 4\nloss_on: replies\n")
    args, lora, runa = parse_args(
        (ChatArguments, LoraArguments, RunArguments), ["--config", str(cfg), "--epochs", "2"], "t", ""
    )
    assert (args.data, args.loss_on, runa.batch_size, runa.epochs) == ("d.txt", "replies", 4, 2)
    bad = write(tmp_path / "bad.json", json.dumps({"data": "d.txt", "epochz": 3}))
    from data import InputError

    with pytest.raises(InputError, match="unknown option"):
        parse_args((ChatArguments, LoraArguments, RunArguments), ["--config", str(bad)], "t", "")


def test_bad_rows_and_gbk_are_reported(tmp_path, capsys):
    text = "你好\n你好呀\n\n一句话\n\n" + "\n\n".join(["吃了吗\n吃了"] * 30) + "\n\n长文\n" + "长" * 10_000 + "\n"
    data = write(tmp_path / "gbk.txt", text, encoding="gb18030")
    code = guarded(
        chat_script.main,
        ["--data", str(data), "--output", str(tmp_path / "o"), *TINY_CHAT, "--epochs", "1", "--valid-ratio", "0"],
    )
    assert code == 0
    err = capsys.readouterr().err
    assert "read as GB18030" in err and "gbk.txt:4: dialogue has only one utterance" in err
    assert "1 utterances were cut to fit --max-len 64" in err
    r = report(tmp_path / "o")
    assert r["data"]["train"]["encoding"] == "gb18030" and r["data"]["train"]["skipped"]["count"] == 1


@pytest.mark.slow
@pytest.mark.parametrize("entry", [["training/chat.py"], ["-m", "training.chat"]])
def test_documented_commands_run_as_script_and_module(entry, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    bad = subprocess.run(
        [sys.executable, *entry, "--data", str(tmp_path / "missing.txt")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1].startswith("error: file not found")
    assert "Traceback" not in bad.stderr
    ok = subprocess.run(
        [sys.executable, *entry, "--data", DIALOGS, "--output", str(tmp_path / "o"), *TINY_CHAT, "--epochs", "1"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert (tmp_path / "o" / "model.safetensors").exists()


def test_epoch_table_names_a_partial_last_epoch_by_its_fraction():
    from training.runner import epoch_table

    history = [
        {"epoch": 0.5, "loss": 2.0},
        {"epoch": 1.0, "loss": 1.0},
        {"epoch": 1.0, "eval_loss": 1.5},
        {"epoch": 1.6, "loss": 0.8},
        {"epoch": 1.6, "eval_loss": 1.2},
    ]
    rows = epoch_table(history)
    assert [r["epoch"] for r in rows] == [1, 1.6]
    assert rows[0]["train_loss"] == 1.5 and rows[1]["train_loss"] == 0.8 and rows[1]["valid_loss"] == 1.2


@pytest.mark.slow
def test_a_default_scratch_run_stops_when_validation_stops_improving(tmp_path):
    """The default schedule from scratch keeps the best epoch and stops 4 evaluations after it (2,000 LCCC
    dialogues: best at 7 of 24 passes); an explicit amount of training is left alone."""
    from training.tasks.chat.recipe import ChatRecipe

    code, out = train(tmp_path, "--max-minutes", "0.05", name="default")
    assert code == 0 and report(out)["hyperparameters"]["patience"] == ChatRecipe.scratch_patience
    code, out = train(tmp_path, "--epochs", "1", name="explicit")
    assert code == 0 and report(out)["hyperparameters"]["patience"] == 0
