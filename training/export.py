"""Take a checkpoint elsewhere: ONNX for any CPU runtime, or a LoRA run as a full model.

    python training/export.py checkpoints/my-model --format onnx --output onnx/my-model [--int8]
    python training/export.py checkpoints/my-lora --format merged --output merged/my-lora

ONNX (torch.onnx.export, ONNX Runtime to check it): the model's logits for `input_ids`, `attention_mask` (and
`token_type_ids` for BERT) with a dynamic batch and length, opset 18. At export the ONNX model is run on sample
inputs and its logits are compared with PyTorch's (said in one line; a difference over the tolerance is an
error). `--int8` adds onnxruntime's dynamic quantisation (model.int8.onnx) and measures what it changes on the
model's own data (accuracy for classifiers, top-1 agreement for language models). The output folder keeps the
tokenizer and config, and a README saying how to load it. A chat or write model exports its full-sequence
forward (no KV cache): a greedy decode recomputes the prefix each step.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import sys

if __package__ in (None, ""):  # run as a script: the repository root on the path
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from data.errors import EXIT_BAD_INPUT, InputError  # noqa: E402

ATOL = 1e-3  # ONNX Runtime against PyTorch, fp32 logits
OPSET = 18  # the torch.export exporter writes 18; converting down to 17 left opset-18 Split nodes
SAMPLES = ["今天天气怎么样", "我想订一张去北京的机票，明天上午出发", "这家店的菜很好吃"]
# what each task's checkpoint is, for loading and for the README
KINDS = {
    "chat": ("AutoModelForCausalLM", "text-generation"),
    "write": ("AutoModelForCausalLM", "text-generation"),
    "cloze": ("AutoModelForMaskedLM", "fill-mask"),
    "similarity": ("AutoModelForSequenceClassification", "text-classification"),
    "classify": ("AutoModelForSequenceClassification", "text-classification"),
}


def load(folder: str):
    """(task, model, tokenizer) of a checkpoint folder written here."""
    import transformers

    from chat.loading import task_of

    task = task_of(folder) if os.path.isdir(folder) else None
    if task not in KINDS:
        raise InputError(f"{folder} is not a checkpoint folder of this project (config.json of a known task)")
    loader = getattr(transformers, KINDS[task][0])
    try:
        model = loader.from_pretrained(folder)
        tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    except (OSError, ValueError) as e:
        raise InputError(f"{folder} does not load: {(str(e).splitlines() or ['?'])[0][:200]}")
    model.eval()
    if hasattr(model.config, "use_cache"):
        model.config.use_cache = False  # the exported graph returns logits only
    return task, model, tokenizer


def _inputs(tokenizer, model, texts, pairs: bool):
    """(input names, tensors) for `texts` (as pairs with themselves reversed for a pair model), cut to the
    positions the model has."""
    config = model.config
    positions = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None) or 128
    second = texts[::-1] if pairs else None
    enc = tokenizer(texts, second, padding=True, truncation=True, max_length=min(64, positions), return_tensors="pt")
    names = ["input_ids", "attention_mask"]
    if "token_type_ids" in enc and config.model_type not in ("gpt2",):
        names.append("token_type_ids")
    return names, [enc[n] for n in names]


def _logits_module(model, names):
    """forward(input_ids, attention_mask[, token_type_ids]) -> logits: the graph ONNX records."""
    import torch

    class Logits(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, token_type_ids=None):
            extra = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
            return self.model(input_ids=input_ids, attention_mask=attention_mask, **extra).logits

    return Logits()


@contextlib.contextmanager
def _quiet():
    """The exporter's and the quantiser's notes (torchvision missing, version conversion, "consider
    pre-processing") are not the user's business: warnings and their loggers below ERROR are dropped."""
    import logging
    import warnings

    loggers = [logging.getLogger(), logging.getLogger("torch.onnx"), logging.getLogger("torch.export")]
    levels = [lg.level for lg in loggers]
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels):
                lg.setLevel(level)


def export_onnx(folder: str, out: str, int8: bool = False, say=print) -> dict:
    """Write `out`/model.onnx (+ model.int8.onnx), the tokenizer, config and a README; returns the figures."""
    import numpy as np
    import onnxruntime as ort
    import torch

    task, model, tokenizer = load(folder)
    pairs = task == "similarity"
    names, tensors = _inputs(tokenizer, model, SAMPLES, pairs)
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "model.onnx")
    batch, sequence = torch.export.Dim("batch", max=4096), torch.export.Dim("sequence", max=8192)
    with torch.no_grad(), _quiet():
        torch.onnx.export(  # the torch.export path: the TorchScript tracer baked the sample's padding into the graph
            _logits_module(model, names),
            tuple(tensors),
            path,
            input_names=names,
            output_names=["logits"],
            dynamic_shapes={n: {0: batch, 1: sequence} for n in names},
            opset_version=OPSET,
            dynamo=True,
            external_data=False,  # one file (models here are far below ONNX's 2 GB limit)
            verbose=False,
        )
    try:
        session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    except Exception as e:  # an invalid graph: one line, and nothing is left behind (main removes the folder)
        raise InputError(f"ONNX Runtime cannot load the exported model: {(str(e).splitlines() or ['?'])[0][:300]}")
    worst = 0.0
    for texts in (SAMPLES, SAMPLES[:1], [SAMPLES[1] * 2, SAMPLES[2]]):  # other batch sizes and lengths
        n, t = _inputs(tokenizer, model, texts, pairs)
        with torch.no_grad():
            ref = model(**dict(zip(n, t))).logits.numpy()
        got = session.run(["logits"], {k: v.numpy() for k, v in zip(n, t)})[0]
        worst = max(worst, float(np.abs(ref - got).max()))
    if worst > ATOL:
        raise InputError(f"ONNX Runtime's logits differ from PyTorch's by {worst:.2g} (over {ATOL}); not exported")
    say(f"model.onnx: ONNX Runtime's logits equal PyTorch's within {worst:.1e} (tolerance {ATOL}) on 3 input shapes")
    figures = {"task": task, "max_abs_diff": worst, "files": ["model.onnx"]}
    if int8:
        figures.update(quantize(path, os.path.join(out, "model.int8.onnx"), task, model, tokenizer, folder, say))
        figures["files"].append("model.int8.onnx")
    tokenizer.save_pretrained(out)
    model.config.save_pretrained(out)
    _readme(out, task, figures)
    with open(os.path.join(out, "export.json"), "w", encoding="utf-8") as f:
        json.dump(figures, f, ensure_ascii=False, indent=1)
    return figures


def _own_rows(folder: str, task: str, limit: int = 400) -> tuple[list, str]:
    """Rows of the model's own data for measuring int8: its training file (named in its report), as its task's
    reader reads it; said as such (the model has seen them)."""
    from chat.tasks import TASKS

    report_path = os.path.join(folder, "training_report.json")
    try:
        with open(report_path, encoding="utf-8") as f:
            report = json.load(f)
    except (OSError, ValueError):
        return [], "no training_report.json"
    training = TASKS[task].training
    path = (report.get("hyperparameters") or {}).get(training.data_option)
    if not path or not os.path.isfile(path):
        return [], f"its training file ({path}) is not here"
    found = training.read(path)
    rows = list(getattr(found, training.items))[:limit]
    if task == "similarity" and found.labels is not None:  # (a, b) pairs -> (a, b, label name)
        rows = [(a, b, found.label_names[int(y)]) for (a, b), y in zip(rows, found.labels)]
    return rows, path


def quantize(path: str, out: str, task: str, model, tokenizer, folder: str, say=print) -> dict:
    """onnxruntime's dynamic int8 quantisation, and what it changes on the model's own data."""
    import numpy as np
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _quiet():
        quantize_dynamic(path, out, weight_type=QuantType.QInt8)
    fp32 = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    q8 = ort.InferenceSession(out, providers=["CPUExecutionProvider"])
    rows, source = _own_rows(folder, task)
    pairs = task == "similarity"
    if task in ("similarity", "classify"):
        if not rows:  # no data of its own here: sample texts, agreement only
            rows = [(t, t[::-1], None) if pairs else (t, None) for t in SAMPLES]
            source = "sample texts"
        if pairs:
            enc = tokenizer(
                [r[0] for r in rows],
                [r[1] for r in rows],
                padding=True,
                truncation=True,
                max_length=128,
                return_tensors="np",
            )
        else:
            enc = tokenizer([r[0] for r in rows], padding=True, truncation=True, max_length=128, return_tensors="np")
        label2id = {str(k): v for k, v in model.config.label2id.items()}
        labels = np.array([label2id.get(str(r[-1]), -1) for r in rows])
        feed = {i.name: enc[i.name] for i in fp32.get_inputs()}
        a = fp32.run(["logits"], feed)[0].argmax(-1)
        b = q8.run(["logits"], feed)[0].argmax(-1)
        agree = float((a == b).mean())
        line = f"int8: {agree:.1%} of {len(rows)} rows of {os.path.basename(source)} get the same label as fp32"
        figures = {"int8_agreement": agree, "int8_rows": len(rows), "int8_data": os.path.basename(source)}
        if (labels >= 0).all():
            acc32, acc8 = float((a == labels).mean()), float((b == labels).mean())
            line += f"; accuracy {acc32:.1%} -> {acc8:.1%} (at argmax; rows the model trained on)"
            figures.update(int8_accuracy_fp32=acc32, int8_accuracy=acc8)
    else:
        texts = [str(r if isinstance(r, str) else (r[0] if isinstance(r, (list, tuple)) else r))[:120] for r in rows]
        texts = [t for t in texts if t.strip()][:64] or SAMPLES
        enc = tokenizer(texts, padding=True, truncation=True, max_length=128, return_tensors="np")
        feed = {i.name: enc[i.name] for i in fp32.get_inputs()}
        mask = enc["attention_mask"].astype(bool)
        a = fp32.run(["logits"], feed)[0].argmax(-1)[mask]
        b = q8.run(["logits"], feed)[0].argmax(-1)[mask]
        agree = float((a == b).mean())
        line = f"int8: the top-1 token agrees with fp32 at {agree:.1%} of {mask.sum()} positions"
        line += f" ({len(texts)} texts of {os.path.basename(source)})" if rows else " (sample texts)"
        figures = {"int8_top1_agreement": agree, "int8_positions": int(mask.sum())}
    size = os.path.getsize(out) / os.path.getsize(path)
    say(f"{line}; {size:.0%} of the fp32 file's size")
    figures["int8_size_ratio"] = round(size, 3)
    return figures


def _readme(out: str, task: str, figures: dict) -> None:
    pairs = task == "similarity"
    feed = (
        'enc = tok(["花呗怎么还款"], ["花呗如何还钱"], return_tensors="np")'
        if pairs
        else 'enc = tok(["今天天气怎么样"], return_tensors="np")'
    )
    text = f"""# ONNX export ({task}, {KINDS[task][1]})

Exported by `training/export.py` (opset {OPSET}). ONNX Runtime's logits matched PyTorch's within
{figures["max_abs_diff"]:.1e} at export. Files: {", ".join(figures["files"])}, the tokenizer and `config.json`.

```python
import onnxruntime as ort
from transformers import AutoTokenizer

tok = AutoTokenizer.from_pretrained("{os.path.basename(os.path.normpath(out))}")
session = ort.InferenceSession("{os.path.basename(os.path.normpath(out))}/model.onnx")
{feed}
logits = session.run(["logits"], {{i.name: enc[i.name] for i in session.get_inputs()}})[0]
```
"""
    if task in ("chat", "write"):
        text += (
            "\nThe graph is the full-sequence forward (no KV cache): to generate, append the argmax (or a sample) "
            "of the last position's logits to `input_ids` and run again.\n"
        )
    with open(os.path.join(out, "README.md"), "w", encoding="utf-8") as f:
        f.write(text)


def export_merged(folder: str, out: str, say=print) -> None:
    """A LoRA run as a full model: its published weights are already merged (the pipeline merges at save); the
    folder is written without the adapter, as any full checkpoint."""
    task, model, tokenizer = load(folder)
    if not os.path.isdir(os.path.join(folder, "adapter")):
        say(f"note: {folder} was not trained with LoRA; writing it as it is")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    for name in ("generation_config.json", "chat_template.jinja", "README.md", "training_report.json", "loss.png"):
        if os.path.isfile(os.path.join(folder, name)) and not os.path.exists(os.path.join(out, name)):
            shutil.copyfile(os.path.join(folder, name), os.path.join(out, name))
    say(f"merged: {out} (a full {task} model; the adapter is left out)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python training/export.py", description=__doc__.split("\n\n")[0])
    p.add_argument("folder", help="a checkpoint folder written by a training script")
    p.add_argument("--format", choices=["onnx", "merged"], default="onnx")
    p.add_argument("--output", required=True, help="a new folder for the export")
    p.add_argument("--int8", action="store_true", help="ONNX: also a dynamically quantised int8 model, measured")
    a = p.parse_args(argv)
    try:
        if os.path.exists(a.output) and (not os.path.isdir(a.output) or os.listdir(a.output)):
            raise InputError(f"{a.output} already exists and is not empty; choose a new folder")
        if a.format == "onnx":
            try:
                import onnx  # noqa: F401
                import onnxruntime  # noqa: F401
                import onnxscript  # noqa: F401  (torch.onnx's exporter)
            except ImportError:
                raise InputError(
                    "--format onnx needs onnx, onnxruntime and onnxscript: pip install onnx onnxruntime onnxscript"
                ) from None
            made = not os.path.exists(a.output)
            try:
                export_onnx(a.folder, a.output, a.int8)
            except BaseException:  # no half export: the folder was new or empty, so all in it is ours
                if made:
                    shutil.rmtree(a.output, ignore_errors=True)
                else:
                    for name in os.listdir(a.output):
                        path = os.path.join(a.output, name)
                        shutil.rmtree(path, ignore_errors=True) if os.path.isdir(path) else os.remove(path)
                raise
        else:
            export_merged(a.folder, a.output)
        return 0
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
