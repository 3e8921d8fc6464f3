"""Take a model elsewhere (issue #48): ONNX export checked against PyTorch, int8 measured, a LoRA run merged,
and what `training/push.py` would upload."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from tests.conftest import SAMPLES, TINY_CHAT
from training.cli import guarded

ort = pytest.importorskip("onnxruntime", reason="pip install onnxruntime onnx onnxscript (requirements-test.txt)")
TINY_BERT = [
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
    "--seed",
    "0",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from training.tasks.chat import TRAINING as CHAT
    from training.tasks.cloze import TRAINING as CLOZE
    from training.tasks.similarity import TRAINING as SIMILARITY

    root = tmp_path_factory.mktemp("export")
    data = str(SAMPLES / "cloze_corpus.txt")
    assert guarded(CLOZE.main, ["--data", data, *TINY_BERT, "--max-steps", "5", "--output", str(root / "cloze")]) == 0
    pairs = ["--train", str(SAMPLES / "pairs.tsv"), *TINY_BERT, "--no-mlm-stage", "--epochs", "1"]
    assert guarded(SIMILARITY.main, [*pairs, "--output", str(root / "similarity")]) == 0
    chat = ["--data", str(SAMPLES / "dialogs.txt"), *TINY_CHAT, "--epochs", "1", "--lora"]
    assert guarded(CHAT.main, [*chat, "--output", str(root / "chat")]) == 0
    return root


def export(folder, out, *extra) -> int:
    from training import export as script

    return script.main([str(folder), "--output", str(out), *extra])


@pytest.mark.parametrize("task", ["cloze", "similarity"])
def test_onnx_runtime_gives_pytorchs_logits(trained, tmp_path, task, capsys):
    import torch
    from transformers import AutoModelForMaskedLM, AutoModelForSequenceClassification, AutoTokenizer

    assert export(trained / task, tmp_path / "onnx", "--int8") == 0
    said = capsys.readouterr().out
    assert "equal PyTorch's within" in said and "int8:" in said
    files = set(os.listdir(tmp_path / "onnx"))
    assert {"model.onnx", "model.int8.onnx", "tokenizer.json", "config.json", "README.md"} <= files
    loader = AutoModelForMaskedLM if task == "cloze" else AutoModelForSequenceClassification
    model = loader.from_pretrained(trained / task).eval()
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "onnx")  # the export's own tokenizer
    pairs = (
        (["花呗怎么还款", "今天下雨吗"], ["花呗如何还钱", "明天天晴吗"])
        if task == "similarity"
        else (["林小溪住在云栖岛上", "墨河"], None)
    )
    enc = tokenizer(*pairs, padding=True, return_tensors="pt")
    session = ort.InferenceSession(str(tmp_path / "onnx" / "model.onnx"))
    feed = {i.name: enc[i.name].numpy() for i in session.get_inputs()}
    with torch.no_grad():
        ref = model(**{k: enc[k] for k in feed}).logits.numpy()
    np.testing.assert_allclose(session.run(["logits"], feed)[0], ref, atol=1e-3)
    figures = json.loads((tmp_path / "onnx" / "export.json").read_text())
    assert figures["max_abs_diff"] <= 1e-3 and ("int8_agreement" in figures or "int8_top1_agreement" in figures)


def test_a_chat_models_onnx_greedy_continuation_equals_generate(trained, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    assert export(trained / "chat", tmp_path / "onnx") == 0
    model = AutoModelForCausalLM.from_pretrained(trained / "chat").eval()
    tokenizer = AutoTokenizer.from_pretrained(trained / "chat")
    prompt = tokenizer("[CLS]你好[SEP]", add_special_tokens=False, return_tensors="pt")["input_ids"]
    eos = model.generation_config.eos_token_id
    stop = set(eos if isinstance(eos, list) else [eos]) - {None}
    with torch.no_grad():
        # plain greedy: the checkpoint's own sampling settings and suppressed tokens left out on both sides
        # (generate merges the model's own generation config into one passed to it: replace it)
        model.generation_config = GenerationConfig(
            max_new_tokens=12, min_new_tokens=12, do_sample=False, eos_token_id=eos, pad_token_id=0
        )
        out = model.generate(prompt, attention_mask=torch.ones_like(prompt))
    want = out[0, prompt.shape[1] :].tolist()
    session = ort.InferenceSession(str(tmp_path / "onnx" / "model.onnx"))
    ids = prompt.numpy()
    got = []
    for _ in range(12):  # the README's recipe: append the last position's argmax (no end before 12), run again
        logits = session.run(["logits"], {"input_ids": ids, "attention_mask": np.ones_like(ids)})[0][0, -1]
        logits[list(stop)] = -np.inf
        got.append(int(logits.argmax()))
        ids = np.concatenate([ids, [[got[-1]]]], axis=1)
    assert got == want and len(set(got)) > 1


def test_a_lora_run_merged_is_a_full_model_without_its_adapter(trained, tmp_path):
    from transformers import AutoModelForCausalLM

    assert os.path.isdir(trained / "chat" / "adapter")
    assert export(trained / "chat", tmp_path / "merged", "--format", "merged") == 0
    assert not (tmp_path / "merged" / "adapter").exists() and (tmp_path / "merged" / "model.safetensors").is_file()
    a = AutoModelForCausalLM.from_pretrained(trained / "chat").state_dict()
    b = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").state_dict()
    assert all(np.allclose(a[k].numpy(), b[k].numpy()) for k in a)


def test_export_refuses_what_it_cannot_do_in_one_line(trained, tmp_path, capsys):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("mine")
    assert export(trained / "cloze", tmp_path / "full") == 2
    assert "not empty" in capsys.readouterr().err and (tmp_path / "full" / "x").read_text() == "mine"
    assert export(tmp_path, tmp_path / "out") == 2 and not (tmp_path / "out").exists()


def test_push_dry_run_writes_the_model_files_and_nothing_private(trained, tmp_path, capsys):
    from training import push

    out = tmp_path / "upload"
    assert push.main([str(trained / "chat"), "--repo", "me/my-chat", "--dry-run", str(out)]) == 0
    files = set(os.listdir(out))
    assert {"model.safetensors", "config.json", "tokenizer.json", "README.md", "training_report.json"} <= files
    assert {"generation_config.json", "chat_template.jinja"} <= files
    assert not files & {"resume_state", "run.json", "checkpoint_manifest.json", "states"}
    card = (out / "README.md").read_text(encoding="utf-8")
    assert card.startswith("---") and "language:" in card and "pipeline_tag:" in card
    for name in files - {"model.safetensors", "loss.png"}:
        path = out / name
        if path.is_file():
            assert str(trained) not in path.read_text(encoding="utf-8", errors="replace"), name
    # no token: one line on how to log in
    os.environ.pop("HF_TOKEN", None)
    code = push.main([str(trained / "chat"), "--repo", "me/my-chat"])
    err = capsys.readouterr().err
    assert code == 2 and ("hf auth login" in err or "cannot be reached" in err)
