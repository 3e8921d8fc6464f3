"""Training throughput: a GPT2-chitchat-style padded fp32 loop vs our Trainer path, side by side.

    python bench/train_throughput.py [--epochs 1] [--ppl-minutes 10]
    python bench/train_throughput.py --processes 60   # 1 process x 2 threads vs 2 processes x 1 thread

Same data (LCCC multi-turn sample in ../shared/data/lccc), same 6-layer 512-hidden scratch
GPT-2, same batch size, measured in one run:
  (a) baseline: shuffled batches padded to the batch's longest sequence, fp32, AdamW +
      linear schedule, a hand-written loop like GPT2-chitchat's train.py;
  (b) ours: training/chat.py's Trainer path with its best CPU settings (length-grouped
      batches, bf16 autocast).
Prints one JSON line: effective (non-pad) tokens/s of each, the ratio, MFU against fp32 and
bf16 matmul peaks measured in the same run, and the held-out perplexity on the LCCC
`valid` dialogues after a fixed-time scratch run of (b).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from transformers import GPT2Config, GPT2LMHeadModel, TrainerCallback, get_linear_schedule_with_warmup  # noqa: E402

from data import DialogueEncoder, build_char_vocab, make_tokenizer, read_dialogues  # noqa: E402
from training import chat as chat_script  # noqa: E402
from training.cli import quiet_libraries  # noqa: E402

LCCC = ROOT.parent / "shared" / "data" / "lccc" / "multi_turn.json"
SIZE = dict(n_layer=6, n_embd=512, n_head=8)
MAX_LEN, BATCH, LR = 256, 16, 1e-3


def matmul_peak(dtype: torch.dtype, n: int = 2048, seconds: float = 3.0) -> float:
    """Sustained FLOP/s of a square matmul in `dtype` on this CPU."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(3):
        a @ b
    reps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        reps += 1
    return 2 * n**3 * reps / (time.perf_counter() - start)


def flops_per_token(config: GPT2Config, mean_len: float) -> float:
    """Training FLOPs per token: 6 x matmul parameters (blocks + LM head) + attention scores."""
    d, layers = config.n_embd, config.n_layer
    block = layers * 12 * d * d
    head = config.vocab_size * d
    attention = layers * 2 * 2 * d * mean_len  # QK^T and AV, forward; x3 with backward
    return 6 * (block + head) + 3 * attention


def baseline_loop(model, sequences, pad_id, epochs: int, seed: int) -> tuple[float, int]:
    """GPT2-chitchat-style loop: random batches padded to their longest, fp32. Returns (seconds, tokens)."""
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.01)
    steps = epochs * math.ceil(len(sequences) / BATCH)
    sched = get_linear_schedule_with_warmup(opt, int(0.05 * steps), steps)
    model.train()
    rng, tokens, start = random.Random(seed), 0, time.perf_counter()
    for _ in range(epochs):
        order = list(range(len(sequences)))
        rng.shuffle(order)
        for i in range(0, len(order), BATCH):
            batch = [sequences[j] for j in order[i : i + BATCH]]
            width = max(len(s) for s in batch)
            ids = torch.full((len(batch), width), pad_id)
            labels = torch.full((len(batch), width), -100)
            for r, s in enumerate(batch):
                ids[r, : len(s)] = torch.tensor(s)
                labels[r, : len(s)] = torch.tensor(s)
            loss = model(input_ids=ids, labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad()
            tokens += sum(len(s) for s in batch)
    return time.perf_counter() - start, tokens


class EpochTimer(TrainerCallback):
    """Time spent inside training epochs only (evaluation and checkpoint saving excluded)."""

    def __init__(self, limit_s: float | None = None):
        self.seconds, self.limit_s, self._t = 0.0, limit_s, None
        self.started = None

    def on_train_begin(self, args, state, control, **kw):
        self.started = time.perf_counter()

    def on_epoch_begin(self, args, state, control, **kw):
        self._t = time.perf_counter()

    def on_epoch_end(self, args, state, control, **kw):
        self.seconds += time.perf_counter() - self._t

    def on_step_end(self, args, state, control, **kw):
        if self.limit_s and time.perf_counter() - self.started > self.limit_s:
            control.should_training_stop = True


def ours(out: Path, epochs: float, extra: list[str], timer: EpochTimer) -> dict:
    argv = [
        "--data",
        str(LCCC),
        "--output",
        str(out),
        "--model",
        "scratch",
        "--max-len",
        str(MAX_LEN),
        "--n-layer",
        str(SIZE["n_layer"]),
        "--n-embd",
        str(SIZE["n_embd"]),
        "--n-head",
        str(SIZE["n_head"]),
        "--batch-size",
        str(BATCH),
        "--lr",
        str(LR),
        "--epochs",
        str(epochs),
        "--seed",
        "0",
        "--overwrite",
        *extra,
    ]
    code = chat_script.main(argv, callbacks=[timer])
    if code:
        raise SystemExit(f"training/chat.py exited with {code}")
    return json.loads((out / "training_report.json").read_text(encoding="utf-8"))


def processes(steps: int) -> dict:
    """training/chat.py on the LCCC sample, same global batch and steps: 1 process x all threads vs
    2 processes (torchrun, gloo) x 1 thread. Tokens/s from each run's report."""
    import subprocess

    common = ["--data", str(LCCC), "--model", "scratch", "--n-layer", str(SIZE["n_layer"]), "--n-embd"]
    common += [str(SIZE["n_embd"]), "--n-head", str(SIZE["n_head"]), "--max-len", str(MAX_LEN)]
    common += ["--max-steps", str(steps), "--valid-ratio", "0", "--seed", "0", "--overwrite"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, launch, batch in (
            ("1x%d_threads" % (os.cpu_count() or 1), [sys.executable], BATCH),
            (
                "2x1_thread",
                [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"],
                BATCH // 2,
            ),
        ):
            out = Path(tmp) / name
            cmd = [
                *launch,
                str(ROOT / "training" / "chat.py"),
                *common,
                "--batch-size",
                str(batch),
                "--output",
                str(out),
            ]
            done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
            if done.returncode:
                raise SystemExit(f"{name} failed: {done.stderr[-800:]}")
            r = json.loads((out / "training_report.json").read_text(encoding="utf-8"))
            runs[name] = {"tokens_per_s": r["tokens_per_s"], "train_runtime_s": r["train_runtime_s"],
                          "global_batch": r["global_batch_size"], "steps": r["global_step"]}  # fmt: skip
    a, b = runs.values()
    ratio = round(b["tokens_per_s"] / a["tokens_per_s"], 2)
    return {"bench": "train_throughput_processes", "model": SIZE, "runs": runs, "ratio_2proc_vs_1proc": ratio,
            "cpu_count": os.cpu_count()}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=1, help="epochs measured for each of (a) and (b)")
    p.add_argument("--ppl-minutes", type=float, default=10.0, help="length of the fixed-time perplexity run (0: skip)")
    p.add_argument(
        "--processes",
        type=int,
        default=0,
        metavar="STEPS",
        help="instead: 1 process x all threads vs 2 processes x 1 thread (torchrun), STEPS steps each",
    )
    a = p.parse_args()
    if not LCCC.exists():
        print(json.dumps({"bench": "train_throughput", "skipped": f"{LCCC} not found"}))
        return
    if a.processes:
        print(json.dumps(processes(a.processes)))
        return
    quiet_libraries()
    torch.set_num_threads(os.cpu_count() or 1)
    f = read_dialogues(LCCC)
    tok = make_tokenizer(build_char_vocab(u for d in f.dialogues for u in d))
    enc = DialogueEncoder(tok, MAX_LEN)
    seqs = [enc.encode(d).input_ids for d in f.dialogues]
    mean_len = sum(map(len, seqs)) / len(seqs)
    config = GPT2Config(vocab_size=len(tok), n_positions=MAX_LEN, **SIZE)
    fpt = flops_per_token(config, mean_len)

    peak32, peak16 = matmul_peak(torch.float32), matmul_peak(torch.bfloat16)
    torch.manual_seed(0)
    base_s, base_tokens = baseline_loop(GPT2LMHeadModel(config), seqs, tok.pad_token_id, a.epochs, 0)
    base_tps = base_tokens / base_s

    with tempfile.TemporaryDirectory() as tmp:
        timer = EpochTimer()
        r = ours(Path(tmp) / "ours", a.epochs, ["--bf16", "--valid-ratio", "0"], timer)
        ours_tps = r["sequences"]["train_tokens"] * a.epochs / timer.seconds
        result = {
            "bench": "train_throughput",
            "data": "lccc/multi_turn.json train",
            "dialogues": len(seqs),
            "model": {
                **SIZE,
                "vocab": len(tok),
                "params_M": round(sum(p.numel() for p in GPT2LMHeadModel(config).parameters()) / 1e6, 2),
            },
            "mean_seq_len": round(mean_len, 1),
            "batch_size": BATCH,
            "epochs": a.epochs,
            "baseline_fp32_padded_tokens_per_s": round(base_tps, 1),
            "ours_bf16_grouped_tokens_per_s": round(ours_tps, 1),
            "ratio": round(ours_tps / base_tps, 2),
            "peak_fp32_gflops": round(peak32 / 1e9, 1),
            "peak_bf16_gflops": round(peak16 / 1e9, 1),
            "mfu_baseline_vs_fp32_peak": round(base_tps * fpt / peak32, 3),
            "mfu_ours_vs_bf16_peak": round(ours_tps * fpt / peak16, 3),
        }
        if a.ppl_minutes > 0:
            # Size the schedule to the time budget from the measured speed, so the LR decays fully.
            per_epoch = r["sequences"]["train_tokens"] / ours_tps
            epochs = max(1, int(a.ppl_minutes * 60 / (per_epoch * 1.1)))
            timer = EpochTimer(limit_s=a.ppl_minutes * 60)
            rp = ours(Path(tmp) / "ppl", epochs, ["--bf16"], timer)  # validation: the file's `valid` split
            best = rp["best"] or {}
            result.update(
                {
                    "ppl_run_minutes": a.ppl_minutes,
                    "ppl_run_epochs": rp["epochs_trained"],
                    "valid_dialogues": rp["data"]["valid"]["rows"],
                    "valid_perplexity": best.get("valid_perplexity"),
                    "valid_perplexity_epoch": best.get("epoch"),
                }
            )
    print(json.dumps(result, ensure_ascii=False))


if __name__ == "__main__":
    main()
