"""training/cloze.py end to end on a tiny scratch BERT, and the fill-mask predictor."""

from __future__ import annotations

import json

import pytest

from chat.fill_mask import FillMaskPredictor
from data import InputError
from tests.conftest import SAMPLES, write
from training import cloze as cloze_script
from training.cli import guarded

CORPUS = str(SAMPLES / "cloze_corpus.txt")
PROMPTS = str(SAMPLES / "cloze_prompts.txt")
TINY = [
    "--model",
    "scratch",
    "--n-layer",
    "2",
    "--n-embd",
    "128",
    "--n-head",
    "4",
    "--max-len",
    "64",
    "--batch-size",
    "16",
    "--lr",
    "2e-3",
    "--mlm-probability",
    "0.3",
    # the recipe before the prose defaults (issue #35): this test is about the mechanics in 2,400 steps;
    # the default recipe's heavier views need the default 8,000 (README: the sample run)
    "--bag-probability",
    "0",
    "--span-probability",
    "0.5",
    "--recombine-probability",
    "0.5",
    "--seed",
    "0",
]


@pytest.fixture(scope="module")
def cloze_checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("cloze") / "cloze"
    general = write(out.parent / "general.txt", "今天天气很好，我们去公园散步。\n他每天早上跑步，身体很健康。\n")
    argv = [
        "--data",
        CORPUS,
        "--eval-prompts",
        PROMPTS,
        "--general-text",
        str(general),
        "--output",
        str(out),
        *TINY,
        "--epochs",
        "400",
    ]
    assert guarded(cloze_script.main, argv) == 0
    return out


@pytest.mark.slow
def test_scratch_model_learns_the_sample_facts(cloze_checkpoint):
    r = json.loads((cloze_checkpoint / "training_report.json").read_text(encoding="utf-8"))
    prompts = r["prompts"]
    assert prompts["top1_accuracy_before"] <= 0.2
    assert (
        prompts["top1_accuracy_after"] >= 0.6
    )  # runs on this seed clear ~0.9; the bar leaves room for CPU differences
    assert len(prompts["after"]) == 19 and len(prompts["after"][0]["top_k"][0]) == 5
    assert r["general"]["path"].endswith("general.txt")
    assert r["general"]["masked_accuracy_before"] <= 0.1  # measured on the random-init model, before the first step
    assert all("masked_accuracy" in e for e in r["epochs"] if "valid_loss" in e)
    assert r["task"] == "cloze" and r["best"]["epoch"] == r["epochs"][-1]["epoch"]  # the last weights are kept
    card = (cloze_checkpoint / "README.md").read_text(encoding="utf-8")
    assert "pipeline_tag: fill-mask" in card


@pytest.mark.slow
def test_folder_loads_with_plain_fill_mask_pipeline(cloze_checkpoint):
    from transformers import pipeline

    fill = pipeline("fill-mask", model=str(cloze_checkpoint), top_k=3)
    out = fill("面包姐姐住在青[MASK]镇。")
    assert len(out) == 3 and {"token_str", "score"} <= set(out[0])
    predictor = FillMaskPredictor.from_pretrained(str(cloze_checkpoint))
    mine = predictor.predict("面包姐姐住在青[MASK]镇。", top_k=3)[0].candidates
    assert [c.text for c in mine] == [o["token_str"] for o in out]
    assert [round(c.probability, 3) for c in mine] == [round(o["score"], 3) for o in out]


@pytest.mark.slow
def test_joint_mode_ranks_whole_words(cloze_checkpoint):
    predictor = FillMaskPredictor.from_pretrained(str(cloze_checkpoint))
    joint = predictor.predict("青柠镇的面包师叫林[MASK][MASK]。", top_k=5)
    assert len(joint) == 1 and joint[0].length == 2
    texts = [c.text for c in joint[0].candidates]
    assert all(len(t) == 2 for t in texts)
    probs = [c.probability for c in joint[0].candidates]
    assert probs == sorted(probs, reverse=True) and 0 < probs[0] <= 1
    independent = predictor.predict("青柠镇的面包师叫林[MASK][MASK]。", top_k=5, joint=False)
    assert [s.length for s in independent] == [1, 1]
    mixed = predictor.predict("三国人物诸[MASK][MASK]，家乡在南[MASK]。", top_k=2)
    assert [(s.start, s.length) for s in mixed] == [(0, 2), (2, 1)]


@pytest.mark.parametrize(
    "text,message",
    [
        ("没有掩码", r"no \[MASK\]"),
        ("   ", "empty"),
        ("[MASK]" * 11, "at most 10"),
        ("字" * 1200 + "[MASK]", "under 1000"),
    ],
)
def test_predictor_edge_cases(cloze_checkpoint, text, message):
    predictor = FillMaskPredictor.from_pretrained(str(cloze_checkpoint))
    with pytest.raises(InputError, match=message):
        predictor.predict(text)


def test_predictor_refuses_a_long_text_in_tokens(cloze_checkpoint):
    predictor = FillMaskPredictor.from_pretrained(str(cloze_checkpoint))
    with pytest.raises(InputError, match="reads at most 64"):
        predictor.predict("字" * 100 + "[MASK]")


def test_predictor_loading_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        FillMaskPredictor.from_pretrained(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="not a fill-mask model folder"):
        FillMaskPredictor.from_pretrained(str(tmp_path / "empty"))


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--data", "nope.txt"], "error: file not found: nope.txt"),
        (["--data", "one.txt"], "holds no passage long enough"),
        (["--data", "tiny.txt"], "a cloze corpus needs at least a few sentences"),
        (["--data", "ok.txt", "--eval-prompts", "noprompt.tsv"], "holds no usable prompt"),
        (["--data", "ok.txt", "--mlm-probability", "1.5"], "--mlm-probability must be between 0 and 1"),
        (["--data", "ok.txt", "--user-dict", "nodict.txt"], "file not found: nodict.txt"),
        (["--data", "ok.txt", "--dropout", "1"], "--dropout must be in [0, 1), got 1.0"),
    ],
)
def test_bad_input_one_line_exit_2(argv, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "one.txt", "字\n")
    write(tmp_path / "tiny.txt", "一二三\n")
    write(tmp_path / "ok.txt", "三国人物诸葛涛擅长天文和水利。\n" * 3)
    write(tmp_path / "noprompt.tsv", "没有掩码的句子\t涛\n")
    assert guarded(cloze_script.main, [*argv, "--model", "scratch"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize("family", ["Bert", "RoFormer", "Roberta"])
def test_the_masked_lm_head_is_where_the_trainer_looks(family):
    """training/mlm.py swaps the head child `cls` / `lm_head` for one forward; a transformers
    release that renames or nests it must fail here, not quietly train at the slow speed."""
    import torch
    import transformers

    from training.tasks.cloze.mlm import _mlm_head_owner

    config = getattr(transformers, f"{family}Config")(
        vocab_size=50,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=40,
        **({"embedding_size": 32} if family == "RoFormer" else {}),
    )
    model = getattr(transformers, f"{family}ForMaskedLM")(config)
    owner = _mlm_head_owner(model)
    assert owner is not None, f"{family}ForMaskedLM has no `cls`/`lm_head` child any more: update training/mlm.py"
    module, name = owner
    assert isinstance(module._modules.get(name), torch.nn.Module)  # a registered child, as the swap expects
    hidden = torch.randn(2, 5, 32)
    assert module._modules[name](hidden).shape == (2, 5, 50)  # it maps hidden states to the vocabulary


def test_masked_positions_loss_equals_the_library_loss(tmp_path):
    """Training scores the vocabulary at masked positions only: same loss, same gradients."""
    import torch
    from transformers import BertConfig, BertForMaskedLM, TrainingArguments

    from training.tasks.cloze.mlm import MaskedLMTrainer

    torch.manual_seed(0)
    model = BertForMaskedLM(
        BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    )
    ids = torch.randint(5, 50, (4, 10))
    labels = torch.full_like(ids, -100)
    labels[:, ::3] = ids[:, ::3]
    trainer = MaskedLMTrainer(model=model, args=TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[]))
    model.train()
    torch.manual_seed(1)  # same dropout masks for both forwards
    mine = trainer.compute_loss(
        model, {"input_ids": ids, "labels": labels.clone()}, num_items_in_batch=(labels != -100).sum()
    )
    mine.backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    torch.manual_seed(1)
    reference = model(input_ids=ids, labels=labels).loss
    reference.backward()
    assert torch.allclose(mine, reference, atol=1e-6)
    assert all(torch.allclose(a, b.grad, atol=1e-6) for a, b in zip(grads, model.parameters()))
    assert "cls.predictions.decoder.weight" in model.state_dict()  # the head is back in place


def test_whole_word_mask_trains_end_to_end(tmp_path):
    # The Trainer used to drop the collator's offset_mapping before it reached the collator.
    out = tmp_path / "wwm"
    assert (
        guarded(
            cloze_script.main, ["--data", CORPUS, "--whole-word-mask", "--output", str(out), *TINY, "--epochs", "1"]
        )
        == 0
    )
    assert (
        json.loads((out / "training_report.json").read_text(encoding="utf-8"))["hyperparameters"]["whole_word_mask"]
        is True
    )


@pytest.mark.slow
def test_lora_cloze_run_writes_adapter_and_merged(tmp_path):
    out = tmp_path / "lora"
    assert guarded(cloze_script.main, ["--data", CORPUS, "--output", str(out), *TINY, "--epochs", "2", "--lora"]) == 0
    assert (out / "adapter" / "adapter_config.json").exists() and (out / "model.safetensors").exists()
    cfg = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert set(cfg["target_modules"]) == {"query", "value"}
    FillMaskPredictor.from_pretrained(str(out)).predict("诸[MASK]")


@pytest.mark.slow
@pytest.mark.parametrize("entry", [["training/cloze.py"], ["-m", "training.cloze"]])
def test_documented_commands_fail_cleanly(entry, tmp_path):
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT

    r = subprocess.run(
        [sys.executable, *entry, "--data", str(tmp_path / "missing.txt")],
        cwd=ROOT,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith("error: file not found")
    assert "Traceback" not in r.stderr


@pytest.mark.slow
def test_continuing_a_model_on_new_text_adds_its_characters_and_learns(tmp_path, capsys):
    """A scratch model knows only its corpus's characters: continued on new facts, the new characters
    join its vocabulary (they would all read as [UNK]) and the small model gets the scratch recipe."""
    from transformers import AutoTokenizer

    first = write(tmp_path / "a.txt", "小明住在北京。\n小明喜欢北京的秋天。\n" * 4)
    news = write(tmp_path / "b.txt", "澹台青衫是石榴坪的厨师。\n石榴坪的厨师是澹台青衫。\n" * 4)
    tiny = ["--n-layer", "1", "--n-embd", "32", "--n-head", "2", "--max-len", "32", "--seed", "0"]
    assert (
        guarded(cloze_script.main, ["--data", str(first), "--output", str(tmp_path / "a"), *tiny, "--epochs", "1"]) == 0
    )
    before = AutoTokenizer.from_pretrained(str(tmp_path / "a"))
    assert before.convert_tokens_to_ids("澹") == before.unk_token_id
    capsys.readouterr()
    argv = ["--data", str(news), "--model", str(tmp_path / "a"), "--output", str(tmp_path / "b"), "--max-steps", "5"]
    assert guarded(cloze_script.main, argv) == 0
    assert "were not in" in capsys.readouterr().err  # the start says what was added
    after = AutoTokenizer.from_pretrained(str(tmp_path / "b"))
    ids = after("澹台青衫", add_special_tokens=False)["input_ids"]
    assert after.unk_token_id not in ids and len(ids) == 4
    assert (
        after("小明住在北京", add_special_tokens=False)["input_ids"]
        == before("小明住在北京", add_special_tokens=False)["input_ids"]
    )  # the old characters keep their ids, so their embeddings still apply
    report = json.loads((tmp_path / "b" / "training_report.json").read_text(encoding="utf-8"))
    assert report["model"]["vocab_size"] == len(after) > len(before)
    assert report["hyperparameters"]["lr"] == 1e-3  # a small base: the scratch rate, not fine-tuning's 5e-5
    FillMaskPredictor.from_pretrained(str(tmp_path / "b")).predict("澹台[MASK]衫")

    # LoRA freezes the embeddings: the run says how many characters it cannot read instead
    argv = ["--data", str(news), "--model", str(tmp_path / "a"), "--output", str(tmp_path / "c"), "--max-steps", "2"]
    assert guarded(cloze_script.main, [*argv, "--lora"]) == 0
    assert "read as [UNK]" in capsys.readouterr().err
