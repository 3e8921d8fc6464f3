"""Training speed, side by side per task: our pipeline, a plain transformers Trainer, and a bare PyTorch loop.

    python bench/train_speed.py --quick   # chat, cloze, similarity, then 1x/2x/4x data (~17 min; --no-scaling ~13)
    python bench/train_speed.py --tasks classify,write --steps 150
    python bench/train_speed.py --tasks chat_base --steps 12   # the default chat base's 12x768 shape (slow)

For each task, on real data (LCCC dialogues, hand-written prose, LCQMC pairs, waimai reviews, a Lu Xun book from
../shared/data where present, else the samples), at the shape its from-scratch default trains (`chat_base`: a
fine-tune of a GPT-2 of the default chat base's shape, 12x768 with BERT-Chinese's 21,128-token vocab, random
weights, as `--model FOLDER` runs it):
  ours           the task's real script in-process (recipe, pipeline, callbacks and all), --max-steps N, bf16
                 where this CPU has it fast (as the app's demos), evaluation intervals left out of the timing;
  plain_trainer  what a transformers example script does: Trainer with default arguments (fp32), the library's
                 collator padding each batch to its longest (DataCollatorForLanguageModeling /
                 DataCollatorWithPadding), shuffled, no length grouping;
  bare_loop      a plain AdamW loop over a fresh model of the same config, in ours' precision, on the very
                 batches ours trained on (recorded as it ran: the same examples, masks and order), so the two
                 differ only by the pipeline; without a recording (`--one TASK bare_loop` alone) on batches
                 of its own, length-grouped.
Each (task, variant) runs in its own process (clean memory and threads), alone. One JSON line each:
tokens_per_s (real tokens, padding excluded, counted batch by batch),
padding_share, step_ms (median), peak_rss_mb, mfu (6 x matmul parameters x tokens/s over a square-matmul peak
measured in the same process at the variant's dtype), and the machine.
Then (unless --no-scaling) how the cost grows with the data: ours, default flags but one pass (--epochs 1),
on 1x, 2x and 4x a slice of the same data (chat, cloze, similarity): the pass's seconds, the whole run's
(reading, encoding, evaluation and saving included) and seconds per 1,000 examples.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
from bench import machine  # noqa: E402

SHARED = os.path.join(os.path.dirname(ROOT), "shared", "data")
BATCH = 16
TASKS = {
    # task: (data file, preferred; fallback), extra flags of the task's script
    "chat": ((os.path.join(SHARED, "lccc", "multi_turn.json"), "data/samples/dialogs.txt"), []),
    "cloze": (("bench/prose/saga280.txt", "data/samples/cloze_corpus.txt"), []),
    "similarity": ((os.path.join(SHARED, "lcqmc", "test.txt"), "data/samples/pairs.tsv"), ["--no-mlm-stage"]),
    "classify": ((os.path.join(SHARED, "waimai", "waimai_10k.csv"), "data/samples/reviews.csv"), []),
    "write": ((os.path.join(SHARED, "luxun", "gushi_xinbian.txt"), "data/samples/story.txt"), []),
}
TASKS["chat_base"] = TASKS["chat"]
QUICK = ("chat", "cloze", "similarity")
BATCHES = "bench_batches.pt"  # ours' training batches, in its folder, for the bare loop
BASE_VOCAB = 21128  # bert-base-chinese's vocab, which uer/gpt2-chinese-cluecorpussmall uses
# (task, data, examples at 1x): a slice of the real data, doubled twice
SCALING = {
    "chat": (os.path.join(SHARED, "lccc", "multi_turn.json"), 250),
    "cloze": (os.path.join(SHARED, "luxun", "zhaohua_xishi.txt"), 400),
    "similarity": (os.path.join(SHARED, "lcqmc", "test.txt"), 1000),
}


def data_file(task: str, work: str) -> str:
    preferred, fallback = TASKS[task][0]
    path = preferred if os.path.isabs(preferred) else os.path.join(ROOT, preferred)
    if not os.path.exists(path):
        return os.path.join(ROOT, fallback)
    if task == "similarity":  # the first 4,000 LCQMC pairs: enough for several hundred steps
        out = os.path.join(work, "pairs.tsv")
        with open(path, encoding="utf-8") as f, open(out, "w", encoding="utf-8") as g:
            g.writelines(line for _, line in zip(range(4000), f))
        return out
    return path


def base_folder(work: str, data: str) -> str:
    """A GPT-2 of the default chat base's shape (12 layers, 768 hidden, 21,128 tokens: the data's characters
    first, then CJK ideographs) with random weights, saved as a base folder for --model."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from data import SPECIAL_TOKENS, make_tokenizer
    from data.vocab import build_char_vocab

    with open(data, encoding="utf-8") as f:
        seen = [c for c in build_char_vocab([f.read()]) if c not in SPECIAL_TOKENS and not c.isspace()]
    known = set(seen)
    fill = (chr(c) for c in range(0x4E00, 0x9FFF) if chr(c) not in known)
    vocab = SPECIAL_TOKENS + seen
    vocab += [c for _, c in zip(range(BASE_VOCAB - len(vocab)), fill)]
    tokenizer = make_tokenizer(vocab)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(vocab), n_positions=512, n_embd=768, n_layer=12, n_head=12))
    folder = os.path.join(work, "base_12x768")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def bf16_fast() -> bool:
    from data.precision import cpu_bf16_support

    return bool(cpu_bf16_support())


def matmul_parameters(model) -> int:
    """Parameters that take part in a matmul per token: all but the embedding tables, plus a tied output head."""
    total = sum(
        p.numel() for n, p in model.named_parameters() if "embeddings" not in n and "wte" not in n and "wpe" not in n
    )
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is not None and head.weight is model.get_input_embeddings().weight:
        total += head.weight.numel()
    return total


class StepTimer:
    """Intervals between consecutive step ends, an interval holding an evaluation or a save left out."""

    def __init__(self):
        from transformers import TrainerCallback

        timer = self

        class Callback(TrainerCallback):
            def on_step_end(self, args, state, control, **kw):
                now = time.perf_counter()
                if timer.last is not None and not timer.skip:
                    timer.intervals.append(now - timer.last)
                timer.last, timer.skip = now, False

            def on_evaluate(self, args, state, control, **kw):
                timer.skip = True

            def on_save(self, args, state, control, **kw):
                timer.skip = True

        self.callback = Callback()
        self.intervals: list[float] = []
        self.last = None
        self.skip = False

    def steady(self, warmup: int = 5) -> list[float]:
        return self.intervals[warmup:] or self.intervals


def count_batches() -> dict:
    """Real tokens of every batch the Trainer trains on (attention mask summed), counted as it runs: the report's
    per-epoch average misstated short runs (a 12-step run of the 12x768 chat base read 104% MFU)."""
    from transformers import Trainer

    counted = {"tokens": 0, "steps": 0, "padded": 0, "batches": []}
    step = Trainer.training_step

    def counting(self, model, inputs, *args, **kwargs):
        counted["batches"].append({k: v.clone() for k, v in inputs.items() if hasattr(v, "clone")})
        mask = inputs.get("attention_mask")
        counted["tokens"] += int(mask.sum()) if mask is not None else inputs["input_ids"].numel()
        counted["padded"] += inputs["input_ids"].numel()
        counted["steps"] += 1
        return step(self, model, inputs, *args, **kwargs)

    Trainer.training_step = counting  # this process runs one variant only
    return counted


def run_ours(task: str, data: str, steps: int, work: str, bf16: bool) -> dict:
    from chat.tasks import TASKS as SERVED
    from training.tasks import Training

    training: Training = SERVED[task.removesuffix("_base")].training
    timer = StepTimer()
    out = os.path.join(work, "ours")
    argv = [
        training.data_flag,
        data,
        "--model",
        base_folder(work, data) if task == "chat_base" else "scratch",
        "--max-steps",
        str(steps),
        "--output",
        out,
        "--batch-size",
        str(BATCH),
        "--seed",
        "0",
        *TASKS[task][1],
        *(["--bf16"] if bf16 else []),
    ]
    counted = count_batches()
    code = training.main(argv, callbacks=[timer.callback])
    assert code == 0, code
    import torch

    torch.save(counted["batches"], os.path.join(out, BATCHES))  # the bare loop replays them
    per_step = counted["tokens"] / max(1, counted["steps"])
    intervals = timer.steady()
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(out)
    return {
        "tokens_per_step": per_step,
        "intervals": intervals,
        "padding_share": 1 - counted["tokens"] / max(1, counted["padded"]),
        "config": config,
        "folder": out,
        "dtype": "bf16" if bf16 else "fp32",
    }


def examples(task: str, folder: str, data: str):
    """The task's examples encoded as ours encodes them (its tokenizer, its --max-len), for the other variants."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    with open(os.path.join(folder, "training_report.json"), encoding="utf-8") as f:
        max_len = json.load(f)["hyperparameters"]["max_len"]
    if task in ("chat", "chat_base"):
        from data import DialogueEncoder, read_dialogues

        encoder = DialogueEncoder(tokenizer, max_len)
        rows = [{"input_ids": list(encoder.encode(d).input_ids)} for d in read_dialogues(data).dialogues]
    elif task == "cloze":
        lines = [ln.strip() for ln in open(data, encoding="utf-8") if ln.strip()]
        rows = [{"input_ids": tokenizer(ln, truncation=True, max_length=max_len)["input_ids"]} for ln in lines]
    elif task == "classify":
        from data.labelled import read_labelled

        found = read_labelled(data)
        names = {name: i for i, name in enumerate(sorted({y for _, y in found.rows}))}
        enc = tokenizer([t for t, _ in found.rows], truncation=True, max_length=max_len)
        rows = [{"input_ids": i, "labels": names[y]} for i, (_, y) in zip(enc["input_ids"], found.rows)]
    elif task == "write":  # a plain script's way: a paragraph per example, cut at --max-len, no packing
        from data.prose import read_prose

        paragraphs = [p for p in read_prose(data).paragraphs if p.strip()]
        rows = [{"input_ids": tokenizer(p, truncation=True, max_length=max_len)["input_ids"]} for p in paragraphs]
    else:
        from data.pairs import read_pairs

        found = read_pairs(data)
        enc = tokenizer([a for a, _ in found.pairs], [b for _, b in found.pairs], truncation=True, max_length=max_len)
        rows = [
            {"input_ids": i, "token_type_ids": t, "labels": int(y)}
            for i, t, y in zip(enc["input_ids"], enc["token_type_ids"], found.labels)
        ]
    return tokenizer, rows


def collator(task: str, tokenizer, pad_multiple=None):
    from transformers import DataCollatorForLanguageModeling, DataCollatorWithPadding

    if task in ("chat", "chat_base", "write"):
        return DataCollatorForLanguageModeling(tokenizer, mlm=False, pad_to_multiple_of=pad_multiple)
    if task == "cloze":
        return DataCollatorForLanguageModeling(tokenizer, mlm=True, pad_to_multiple_of=pad_multiple)
    return DataCollatorWithPadding(tokenizer, pad_to_multiple_of=pad_multiple)


def fresh_model(config):
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, AutoModelForSequenceClassification

    torch.manual_seed(0)
    kind = {"gpt2": AutoModelForCausalLM}.get(config.model_type)
    if kind is None:
        kind = (
            AutoModelForSequenceClassification
            if getattr(config, "num_labels", 0)
            and config.architectures
            and "SequenceClassification" in config.architectures[0]
            else AutoModelForMaskedLM
        )
    return kind.from_config(config)


class Counting:
    """A collator wrapper that counts real and padded tokens."""

    def __init__(self, inner):
        self.inner, self.real, self.padded = inner, 0, 0

    def __call__(self, rows):
        return self.add(self.inner(rows), rows)

    def add(self, batch, rows=None):
        """Count a batch (made from `rows`, or recorded)."""
        if "attention_mask" in batch:
            self.real += int(batch["attention_mask"].sum())
        else:
            self.real += sum(len(r["input_ids"]) for r in rows) if rows else batch["input_ids"].numel()
        self.padded += batch["input_ids"].numel()
        return batch


def run_plain(task: str, folder: str, data: str, steps: int, work: str) -> dict:
    from transformers import Trainer, TrainingArguments

    tokenizer, rows = examples(task, folder, data)
    from transformers import AutoConfig

    model = fresh_model(AutoConfig.from_pretrained(folder))
    counting = Counting(collator(task, tokenizer))
    timer = StepTimer()
    args = TrainingArguments(
        output_dir=os.path.join(work, "plain"),
        per_device_train_batch_size=BATCH,
        max_steps=steps,
        learning_rate=1e-3,
        report_to=[],
        save_strategy="no",
        logging_steps=max(1, steps // 10),
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
        remove_unused_columns=False,
    )
    Trainer(model=model, args=args, train_dataset=rows, data_collator=counting, callbacks=[timer.callback]).train()
    return {
        "tokens_per_step": counting.real / steps,
        "intervals": timer.steady(),
        "padding_share": 1 - counting.real / counting.padded,
        "config": model.config,
        "dtype": "fp32",
    }


def run_bare(task: str, folder: str, data: str, steps: int, bf16: bool) -> dict:
    import torch
    from transformers import AutoConfig, get_linear_schedule_with_warmup

    tokenizer, rows = examples(task, folder, data)
    model = fresh_model(AutoConfig.from_pretrained(folder))
    model.train()
    counting = Counting(collator(task, tokenizer, 8 if bf16 else None))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    schedule = get_linear_schedule_with_warmup(optimizer, int(0.05 * steps), steps)
    rng = random.Random(0)

    def batches():  # length-grouped as the Trainer's group_by_length: shuffled mega-batches sorted by length
        while True:
            order = list(range(len(rows)))
            rng.shuffle(order)
            mega = 50 * BATCH
            for i in range(0, len(order), mega):
                chunk = sorted(order[i : i + mega], key=lambda j: -len(rows[j]["input_ids"]))
                groups = [chunk[k : k + BATCH] for k in range(0, len(chunk), BATCH)]
                rng.shuffle(groups)
                yield from groups

    recorded = os.path.join(folder, BATCHES)
    replay = torch.load(recorded) if os.path.isfile(recorded) else None

    intervals, source = [], batches()
    for i in range(steps):
        start = time.perf_counter()
        batch = counting.add(replay[i % len(replay)]) if replay else counting([rows[j] for j in next(source)])
        batch = {k: v for k, v in batch.items() if k != "text_positions"}  # the write teacher's lookup: not the model's
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        intervals.append(time.perf_counter() - start)
    return {
        "tokens_per_step": counting.real / steps,
        "intervals": intervals[5:],
        "padding_share": 1 - counting.real / counting.padded,
        "config": model.config,
        "dtype": "bf16" if bf16 else "fp32",
    }


def shape(config) -> str:
    layers = getattr(config, "num_hidden_layers", None) or config.n_layer
    return f"{config.model_type} {layers}x{getattr(config, 'hidden_size', None) or config.n_embd}"


def one(task: str, variant: str, steps: int, folder: str | None) -> dict:
    """One (task, variant) in this process: its figures as a JSON-ready dict."""
    import torch

    from training.cli import quiet_libraries

    quiet_libraries()
    bf16 = bf16_fast()
    work = tempfile.mkdtemp()  # under the parent's folder (TMPDIR), which it removes: ours' model is read next
    data = data_file(task, work)
    if variant == "ours":
        got = run_ours(task, data, steps, work, bf16)
    elif variant == "plain_trainer":
        got = run_plain(task, folder, data, steps, work)
    else:
        got = run_bare(task, folder, data, steps, bf16)
    step_s = statistics.mean(got["intervals"])
    tokens_per_s = got["tokens_per_step"] / step_s
    model = fresh_model(got["config"])
    from bench.train_throughput import matmul_peak

    peak = matmul_peak(torch.bfloat16 if got["dtype"] == "bf16" else torch.float32)
    mfu = 6 * matmul_parameters(model) * tokens_per_s / peak
    return {
        "bench": "train_speed",
        "task": task,
        "variant": variant,
        "shape": shape(got["config"]),
        "dtype": got["dtype"],
        "steps": steps,
        "batch": BATCH,
        "tokens_per_s": round(tokens_per_s, 1),
        "padding_share": None if got["padding_share"] is None else round(got["padding_share"], 3),
        "step_ms": round(1000 * statistics.median(got["intervals"]), 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "mfu": round(mfu, 3),
        "matmul_peak_gflops": round(peak / 1e9, 1),
        "data": os.path.basename(data),
        "machine": machine(),
        "ours_folder": got.get("folder"),
    }


def data_slice(task: str, source: str, n: int, work: str) -> str:
    """The first `n` examples of `source` as a file the task reads: dialogues, text lines, pairs."""
    if task == "chat":
        with open(source, encoding="utf-8") as f:
            dialogues = json.load(f)["train"]
        out = os.path.join(work, f"dialogues_{n}.json")
        with open(out, "w", encoding="utf-8") as f:
            json.dump({"train": dialogues[:n]}, f, ensure_ascii=False)
        return out
    with open(source, encoding="utf-8") as f:
        lines = [ln for ln in f if ln.strip()][:n]
    out = os.path.join(work, f"{task}_{n}{'.tsv' if task == 'similarity' else '.txt'}")
    with open(out, "w", encoding="utf-8") as f:
        f.writelines(lines)
    return out


def scaling(task: str, work: str) -> None:
    """One pass of ours (default flags, scratch) at 1x, 2x and 4x a slice of the data: a JSON line each."""
    from chat.tasks import TASKS as SERVED

    source, n = SCALING[task]
    if not os.path.exists(source):
        print(json.dumps({"bench": "train_speed_scaling", "task": task, "skipped": f"{source} is absent"}))
        return
    training = SERVED[task].training
    base = None
    for x in (1, 2, 4):
        out = os.path.join(work, f"scaling_{task}_{x}")
        cmd = [sys.executable, os.path.join(ROOT, training.script), training.data_flag]
        cmd += [data_slice(task, source, n * x, work), "--model", "scratch", "--epochs", "1", "--output", out]
        cmd += ["--seed", "0", *TASKS[task][1]]
        start = time.perf_counter()
        r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        wall = time.perf_counter() - start
        if r.returncode:
            tail = (r.stderr.strip().splitlines() or ["?"])[-1][:300]
            print(json.dumps({"bench": "train_speed_scaling", "task": task, "data_x": x, "error": tail}))
            return
        with open(os.path.join(out, "training_report.json"), encoding="utf-8") as f:
            report = json.load(f)
        pass_s = report["train_runtime_s"]
        base = base or pass_s
        print(
            json.dumps(
                {
                    "bench": "train_speed_scaling",
                    "task": task,
                    "data_x": x,
                    "examples": n * x,
                    "steps": report["global_step"],
                    "pass_s": round(pass_s, 1),
                    "pass_vs_1x": round(pass_s / base, 2),
                    "run_s": round(wall, 1),
                    "pass_s_per_1000": round(1000 * pass_s / (n * x), 2),
                    "machine": machine(),
                },
                ensure_ascii=False,
            ),
            flush=True,
        )
        shutil.rmtree(out, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="chat, cloze and similarity, 150 steps each")
    p.add_argument("--tasks", default=",".join(TASKS))
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--no-scaling", action="store_true", help="leave out the 1x/2x/4x data rows")
    p.add_argument("--one", nargs=2, metavar=("TASK", "VARIANT"), help=argparse.SUPPRESS)
    p.add_argument("--folder", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.one:
        print(json.dumps(one(*a.one, a.steps, a.folder), ensure_ascii=False), flush=True)
        return
    unknown = [t for t in a.tasks.split(",") if t not in TASKS]
    if unknown:
        p.error(f"unknown task {unknown[0]!r}: choose from {', '.join(TASKS)}")
    steps = 150 if a.quick else a.steps
    keep = tempfile.mkdtemp(prefix="train_speed_")
    for task in QUICK if a.quick else a.tasks.split(","):
        ours_folder = None
        for variant in ("ours", "plain_trainer", "bare_loop"):
            cmd = [sys.executable, __file__, "--one", task, variant, "--steps", str(steps)]
            if ours_folder:
                cmd += ["--folder", ours_folder]
            env = {**os.environ, "TMPDIR": keep}
            r = subprocess.run(cmd, capture_output=True, text=True, env=env)
            line = next((ln for ln in r.stdout.splitlines() if ln.startswith('{"bench"')), None)
            if r.returncode or line is None:
                print(
                    json.dumps(
                        {
                            "bench": "train_speed",
                            "task": task,
                            "variant": variant,
                            "error": (r.stderr.strip().splitlines() or ["?"])[-1][:300],
                        }
                    ),
                    flush=True,
                )
                break
            row = json.loads(line)
            if variant == "ours":
                ours_folder = row["ours_folder"]
            row.pop("ours_folder", None)
            print(json.dumps(row, ensure_ascii=False), flush=True)
    if not a.no_scaling:
        for task in [t for t in (QUICK if a.quick else a.tasks.split(",")) if t in SCALING]:
            scaling(task, keep)
    shutil.rmtree(keep, ignore_errors=True)


if __name__ == "__main__":
    main()
