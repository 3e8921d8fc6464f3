"""Writing the checkpoint folder, the contract between training/ and chat/.

model weights (safetensors) + config, tokenizer files (tokenizer.json and vocab.txt),
optional generation_config.json, README.md model card with YAML metadata,
training_report.json, loss.png; with LoRA also adapter/ beside the merged weights.
"""

from __future__ import annotations

import json
import os
import platform
import time


def save_model(model, tokenizer, folder: str, generation_config=None) -> None:
    """Save weights and tokenizer; a peft model saves its adapter to adapter/ and merged weights on top."""
    from peft import PeftModel

    if isinstance(model, PeftModel):
        model.save_pretrained(os.path.join(folder, "adapter"))
        model = model.merge_and_unload()
    if generation_config is not None:
        model.generation_config = generation_config
    model.save_pretrained(folder)  # safetensors is the only format transformers 5 writes
    positions = getattr(model.config, "max_position_embeddings", None) or getattr(model.config, "n_positions", None)
    if positions and tokenizer.model_max_length > positions:
        # a scratch tokenizer has no length (1e30): with its positions here, `truncation=True` in any
        # tokenizer call or pipeline cuts where the model's position table ends (issue #34)
        tokenizer.model_max_length = positions
    tokenizer.save_pretrained(folder)
    if getattr(tokenizer, "chat_template", None) or _writes_chinese(tokenizer):
        from data.chat_template import load_as_written

        load_as_written(folder)  # AutoTokenizer then keeps the Chinese decoder (and a writer's paragraph token)
    vocab = getattr(tokenizer, "vocab", None)
    if isinstance(vocab, dict) and vocab:
        # transformers 5 writes tokenizer.json only; vocab.txt keeps the folder usable by
        # BertTokenizer(vocab=...) and by tools that read the plain vocabulary.
        with open(os.path.join(folder, "vocab.txt"), "w", encoding="utf-8") as f:
            # one token per line: a line-break token (a writer's paragraph) is written by name, so the ids hold
            tokens = (t if "\n" not in t else "[NEWLINE]" for t, _ in sorted(vocab.items(), key=lambda kv: kv[1]))
            f.write("\n".join(tokens) + "\n")


def _writes_chinese(tokenizer) -> bool:
    """The tokenizer has this project's Chinese decoder (data.chat_template.make_decoder_chinese)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    return backend is not None and json.loads(backend.to_str()).get("decoder", {}).get("type") == "Sequence"


def versions() -> dict:
    import accelerate
    import peft
    import torch
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "accelerate": accelerate.__version__,
        "peft": peft.__version__,
    }


def write_report(folder: str, report: dict) -> None:
    report = {**report, "versions": versions(), "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    with open(os.path.join(folder, "training_report.json"), "w", encoding="utf-8") as f:
        json.dump(report, f, ensure_ascii=False, indent=2)


CJK_FONTS = (
    "Noto Sans CJK SC",
    "Noto Sans CJK JP",
    "Source Han Sans SC",
    "WenQuanYi Zen Hei",
    "SimHei",
    "Microsoft YaHei",
)


def drawable(title: str) -> tuple[str, str | None]:
    """(title, font family): a CJK font when the title needs one and one is installed, else the title without the
    characters matplotlib's default font lacks (which it would draw as boxes, warning once per character)."""
    from matplotlib import font_manager

    if title.isascii():
        return title, None
    installed = {f.name for f in font_manager.fontManager.ttflist}
    found = [name for name in CJK_FONTS if name in installed]
    if found:
        return title, found[0]
    return "".join(c for c in title if c.isascii()).strip() or "loss", None


def plot_loss(folder: str, log_history: list[dict], title: str) -> None:
    """loss.png: training loss per logged step and validation loss per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(e["step"], e["loss"]) for e in log_history if "loss" in e and "step" in e]
    valid = [(e["step"], e["eval_loss"]) for e in log_history if "eval_loss" in e and "step" in e]
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=100)
    if train:
        ax.plot(*zip(*train), label="train loss", linewidth=1.2)
    if valid:
        ax.plot(*zip(*valid), "o-", label="valid loss", linewidth=1.5)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    text, family = drawable(title)
    ax.set_title(text, **({"fontfamily": family} if family else {}))
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(folder, "loss.png"))
    plt.close(fig)


def write_model_card(
    folder: str,
    *,
    title: str,
    pipeline_tag: str,
    base_model: str | None,
    tags: list[str],
    metrics: dict,
    summary_zh: str,
    summary_en: str,
    usage: str,
    report: dict,
    samples: list[dict] | None = None,
) -> None:
    """README.md with the Hub's YAML metadata (huggingface_hub.ModelCardData) and a bilingual body; `samples`
    (opening, continuation) rows are shown as the model wrote them."""
    from huggingface_hub import ModelCard, ModelCardData

    meta = ModelCardData(
        language=["zh"],
        library_name="transformers",
        pipeline_tag=pipeline_tag,
        tags=tags,
        metrics=sorted(metrics),
        base_model=base_model or None,
    )
    rows = "\n".join(f"| {k} | {v} |" for k, v in metrics.items())
    data = report.get("data", {})
    data_lines = "\n".join(
        f"- {split}: `{os.path.basename(d['path'])}`, "
        + (f"{d['characters']:,} characters" if "characters" in d else f"{d.get('rows', '?')} rows")
        + f" ({d.get('skipped', {}).get('count', 0)} skipped)"
        for split, d in data.items()
        if isinstance(d, dict) and d.get("path")
    )
    hp = report.get("hyperparameters", {})
    hp_line = ", ".join(
        f"{k}={hp[k]}"
        for k in ("epochs", "lr", "batch_size", "grad_accum", "max_len", "lora", "bf16", "seed")
        if k in hp
    )
    body = f"""
# {title}

{summary_zh}

{summary_en}

- 基础模型 Base model: `{base_model or "scratch (trained from random initialisation)"}`
- 训练数据 Training data:
{data_lines or "- (see training_report.json)"}
- 超参数 Hyperparameters: {hp_line}
- 训练时间 Wall time: {report.get("wall_time_s", 0):.0f} s

| metric | value |
|---|---|
{rows}

## 使用 Usage

```python
{usage.strip()}
```

Full figures: `training_report.json`; loss curve: `loss.png`.
"""
    if samples:
        shown = "\n\n".join(f"> **{s['opening']}**{s['continuation']}".replace("\n", "\n> ") for s in samples)
        body += f"\n## 续写示例 Samples (held-out openings in bold)\n\n{shown}\n"
    ModelCard(f"---\n{meta.to_yaml()}\n---\n{body}").save(os.path.join(folder, "README.md"))
