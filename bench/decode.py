"""Decoding speed: GPT2-chitchat's re-run-the-whole-context loop vs ChatEngine (KV cache).

    python bench/decode.py

In one run, for a 12-layer 768-hidden GPT-2 with vocab 13,317 (GPT2-chitchat's size; random
weights) and for the demo-size model (4 layers, 256 hidden), 25 new tokens after a 60-token
and a 250-token history:
  (a) the chitchat loop: every new token re-runs the model over the whole sequence;
  (b) our engine: model.generate with the KV cache, through ChatEngine, in fp32, bf16 and int8
      (int8 with each of torch's x86 kernel families: the load picks the faster, chat/quantize.py);
  (c) CTranslate2 beside it (`pip install ctranslate2`; skipped with a note when it is absent),
      converted from the same folder, float32 and int8, greedy, the same threads.
Prints one JSON line (with the CPU, its flags and torch's kernel level): ms/token for each (the
whole reply, prompt included, divided by the new tokens), the ratios, the decode step alone (time
per token after the first: fp32, int8 with each kernel family, the app's batcher for one row with the
written-out GPT-2 step and with the model's forward, CTranslate2), and the memory-bandwidth
floors a cached decoder cannot beat: fp32 weight bytes, and int8 (int8 linear weights, fp32 rest),
over the read bandwidth measured here. int8's agreement with fp32 is printed too: the share of
positions where both pick the same next token on the same input; for CTranslate2, how many of its
greedy tokens match our fp32 engine's before the two part.
Every torch call runs on the app's compute thread (chat/compute.py), as in the app: one thread for all
model work; CTranslate2 runs after all of ours, in a process of its own.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from transformers import GenerationConfig, GPT2Config, GPT2LMHeadModel  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

from bench import cpu_flags, machine  # noqa: E402
from chat import ChatEngine  # noqa: E402
from chat.compute import COMPUTE  # noqa: E402
from chat.loading import load_chat_model  # noqa: E402
from chat.quantize import INT8_ENGINES, quantize_int8  # noqa: E402
from data import SPECIAL_TOKENS, make_tokenizer  # noqa: E402

NEW_TOKENS = 25
HISTORIES = (60, 250)


def read_bandwidth(mb: int = 1024, reps: int = 5) -> float:
    """Bytes/s of a streaming read over a buffer much larger than the caches."""
    x = torch.ones(mb * 2**20 // 4, dtype=torch.float32)
    x.sum()
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        x.sum()
        best = min(best, time.perf_counter() - t)
    return x.numel() * 4 / best


def make_folder(n_layer: int, n_embd: int, n_head: int, vocab: int, folder: Path) -> None:
    chars = [chr(0x4E00 + i) for i in range(vocab - len(SPECIAL_TOKENS))]
    tok = make_tokenizer(SPECIAL_TOKENS + chars)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(
        GPT2Config(vocab_size=len(tok), n_positions=512, n_embd=n_embd, n_layer=n_layer, n_head=n_head)
    )
    # Random weights give every token about the same score: [SEP] (which ends a reply) came within 3e-4
    # of the best and int8 rounding sampled it first, so every int8 reply was empty. A zero [SEP] row
    # (the output layer is tied to it) scores it far below: the replies run to their full length.
    with torch.no_grad():
        model.transformer.wte.weight[tok.sep_token_id].zero_()
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    GenerationConfig(do_sample=False, max_new_tokens=NEW_TOKENS).save_pretrained(folder)


def history_of(tokens: int) -> list[str]:
    """Turns of up to 9 characters (+[SEP]) adding up to `tokens` prompt tokens with [CLS]."""
    chars = [chr(0x4E00 + i * 7 % 5000) for i in range(tokens)]
    turns, n = [], 1
    while n + 10 <= tokens:
        turns.append("".join(chars[n : n + 9]))
        n += 10
    if tokens - n >= 2:  # a shorter last turn makes the prompt exactly `tokens` long
        turns.append("".join(chars[n : tokens - 1]))
    return turns


def chitchat_loop(model, ids: list[int], new: int) -> float:
    """Seconds per token: no cache, the whole sequence goes through the model for every token."""
    seq = torch.tensor([ids])
    t = time.perf_counter()
    with torch.inference_mode():
        for _ in range(new):
            logits = model(input_ids=seq).logits[0, -1]
            seq = torch.cat([seq, logits.argmax().view(1, 1)], dim=1)
    return (time.perf_counter() - t) / new


def engine_time(engine: ChatEngine, history: list[str], new: int) -> float:
    config, _ = engine._config(None, {"do_sample": False, "max_new_tokens": new})
    config.min_new_tokens = new  # random weights may emit [SEP] early: force exactly `new` tokens
    config.suppress_tokens = None
    prompt = engine.build_prompt(history[:-1], history[-1], new)
    t = time.perf_counter()
    ids = engine._generate(prompt, config, None)
    elapsed = time.perf_counter() - t
    return elapsed / max(len(ids), 1)


class _Clock:
    """A generate() streamer that notes when each new token arrives."""

    def __init__(self):
        self.times: list[float] = []

    def put(self, value) -> None:
        self.times.append(time.perf_counter())

    def end(self) -> None:
        pass


def step_ms(engine: ChatEngine, history: list[str], reps: int) -> float:
    """The decode step alone: median time between consecutive new tokens (prompt excluded)."""
    config, _ = engine._config(None, {"do_sample": False, "max_new_tokens": NEW_TOKENS})
    config.min_new_tokens, config.suppress_tokens = NEW_TOKENS, None
    prompt = engine.build_prompt(history[:-1], history[-1], NEW_TOKENS)
    gaps = []
    for _ in range(reps):
        clock = _Clock()
        engine._generate(prompt, config, None, clock)
        gaps += [b - a for a, b in zip(clock.times[2:], clock.times[3:])]  # times[0]: the prompt, [1]: first token
    return round(statistics.median(gaps) * 1000, 2)


def top1_agreement(a: ChatEngine, b: ChatEngine, prompt: list[int]) -> float:
    ids = torch.tensor([prompt])
    with torch.inference_mode():
        return round(
            (a.model(input_ids=ids).logits.argmax(-1) == b.model(input_ids=ids).logits.argmax(-1))
            .float()
            .mean()
            .item(),
            3,
        )


def int8_with(folder: Path, engine: str) -> ChatEngine:
    """Our int8 engine with its weights packed by one kernel family (the load would time both and pick)."""
    model, tokenizer, gen = load_chat_model(str(folder))
    chat = ChatEngine(quantize_int8(model, engine=engine), tokenizer, gen, max_history=100, name=str(folder))
    chat.precision = "int8"
    return chat


def int8_bytes(fp32_bytes: int, config) -> int:
    """Bytes a cached int8 decode step reads: the linear weights (output layer included) at one byte, the rest
    (norms, biases, positions; the tied embedding is read one row at a time) at four, from the fp32 file's size."""
    linear = config.n_layer * 12 * config.n_embd**2 + config.vocab_size * config.n_embd
    return linear + (fp32_bytes - 4 * linear)


def ct2_generators(folder: Path, tmp: Path) -> dict:
    """CTranslate2 generators (float32, int8) converted from `folder`; {} when ctranslate2 is not installed."""
    try:
        import ctranslate2
    except ImportError:
        return {}
    out = {}
    for compute in ("float32", "int8"):
        path = tmp / f"{folder.name}-ct2-{compute}"
        ctranslate2.converters.TransformersConverter(str(folder)).convert(str(path), quantization=compute, force=True)
        # GPT-2's converter takes the start and end tokens from the tokenizer: ours is BERT's, which names neither
        config = json.loads((path / "config.json").read_text())
        config.update(bos_token="[CLS]", eos_token="[SEP]")
        (path / "config.json").write_text(json.dumps(config))
        out[compute] = ctranslate2.Generator(
            str(path), device="cpu", compute_type=compute, inter_threads=1, intra_threads=torch.get_num_threads()
        )
    return out


def ct2_cells(folder: Path, tokens: dict, reps: int) -> dict:
    """In a process of its own: {history: {compute: ct2_times(...)}} for the prompts `tokens` ({history: tokens})."""
    with tempfile.TemporaryDirectory() as tmp:
        generators = ct2_generators(folder, Path(tmp))
        try:
            return {h: {c: ct2_times(g, t, reps) for c, g in generators.items()} for h, t in tokens.items()}
        finally:
            generators.clear()  # CTranslate2's threads must stop before the interpreter does


def ct2_version() -> str | None:
    try:
        import ctranslate2
    except ImportError:
        return None
    return ctranslate2.__version__


def ct2_times(generator, tokens: list[str], reps: int) -> tuple[float, float, list[int]]:
    """CTranslate2, greedy, exactly NEW_TOKENS: (ms per token of the whole reply, median step ms, the ids)."""
    per_token, gaps = [], []
    for rep in range(reps + 1):  # the first is a warm-up
        times, ids = [], []
        start = time.perf_counter()
        for step in generator.generate_tokens(tokens, max_length=NEW_TOKENS, sampling_topk=1, end_token=[]):
            times.append(time.perf_counter())
            ids.append(step.token_id)
        if rep:
            per_token.append((times[-1] - start) / len(ids))
            gaps += [b - a for a, b in zip(times[1:], times[2:])]  # times[0]: the prompt and the first token
    return round(statistics.median(per_token) * 1000, 2), round(statistics.median(gaps) * 1000, 2), ids


def greedy_ids(engine: ChatEngine, history: list[str]) -> list[int]:
    config, _ = engine._config(None, {"do_sample": False, "max_new_tokens": NEW_TOKENS})
    config.min_new_tokens, config.suppress_tokens = NEW_TOKENS, None
    return list(engine._generate(engine.build_prompt(history[:-1], history[-1], NEW_TOKENS), config, None))


def batched_step_ms(engine: ChatEngine, history: list[str], reps: int, lean: bool) -> float:
    """The app's path: the batcher's decode step for one row (its own step timer), with the written-out
    GPT-2 step (chat/decode_step.py) or, lean=False, the model's forward."""
    batcher = engine.batcher
    written_out = batcher._lean
    if not lean:
        batcher._lean = None
    try:
        greedy_ids(engine, history)  # warm-up
        batcher.step_times.clear()
        for _ in range(reps):
            greedy_ids(engine, history)
        return round(statistics.median(batcher.step_times[1]) * 1000, 2)
    finally:
        batcher._lean = written_out


def same_prefix(a: list[int], b: list[int]) -> int:
    """How many leading tokens two greedy replies share (random weights make near-ties: they part early)."""
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def median_ms(fn, reps: int) -> float:
    fn()  # warm-up
    return round(statistics.median(fn() for _ in range(reps)) * 1000, 2)


def main() -> None:
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    # every torch call on the compute thread, as in the app (chat/compute.py: a second thread running torch
    # slows the first); from here only the batched rows, whose turns run there anyway
    on = COMPUTE.run
    bandwidth = on(read_bandwidth)
    out = {
        "bench": "decode",
        "machine": machine(),
        "cpu_flags": cpu_flags(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "new_tokens": NEW_TOKENS,
        "read_bandwidth_GBps": round(bandwidth / 1e9, 2),
    }
    engines_here = [e for e in INT8_ENGINES if e in torch.backends.quantized.supported_engines]
    with tempfile.TemporaryDirectory() as tmp:
        for label, (layers, hidden, heads, vocab), reps in (
            ("chitchat_12x768", (12, 768, 12, 13317), 5),
            ("demo_4x256", (4, 256, 4, 2000), 7),
        ):
            on(make_folder, layers, hidden, heads, vocab, Path(tmp) / label)
            engines = {
                p: on(ChatEngine.from_pretrained, str(Path(tmp) / label), precision=p, max_history=100)
                for p in ("fp32", "bf16", "int8")
            }
            fp32 = engines["fp32"]
            out.setdefault("int8_engine_picked", engines["int8"].model.int8_engine)
            by_engine = {e: on(int8_with, Path(tmp) / label, e) for e in engines_here}
            batched = {
                p: on(ChatEngine.from_pretrained, str(Path(tmp) / label), precision=p, max_history=100, batching=True)
                for p in ("fp32", "int8")
            }
            # from the saved fp32 weights: the loaded fp32 model's linear layers are prepacked, outside parameters()
            weight_bytes = os.path.getsize(Path(tmp) / label / "model.safetensors")
            floor_ms = weight_bytes / bandwidth * 1000
            int8_floor_ms = int8_bytes(weight_bytes, fp32.model.config) / bandwidth * 1000
            row = {
                "params_M": round(weight_bytes / 4 / 1e6, 1),
                "floor_ms_per_token_fp32": round(floor_ms, 2),
                "floor_ms_per_token_int8": round(int8_floor_ms, 2),
            }
            for h in HISTORIES:
                history = history_of(h)
                prompt = fp32.build_prompt(history[:-1], history[-1], NEW_TOKENS)
                naive = on(median_ms, lambda: chitchat_loop(fp32.model, prompt, NEW_TOKENS), max(3, reps // 2))
                ms = {
                    p: on(median_ms, lambda e=e: engine_time(e, history, NEW_TOKENS), reps) for p, e in engines.items()
                }
                step = {p: on(step_ms, engines[p], history, reps) for p in ("fp32", "int8")}
                row[f"h{h}"] = {
                    "prompt_tokens": len(prompt),
                    "chitchat_loop_ms": naive,
                    **{f"engine_{p}_ms": v for p, v in ms.items()},
                    "speedup_vs_loop": round(naive / ms["fp32"], 2),
                    "fp32_vs_floor": round(ms["fp32"] / floor_ms, 2),
                    "fp32_step_ms": step["fp32"],
                    "fp32_step_vs_floor": round(step["fp32"] / floor_ms, 2),
                    "int8_step_ms": step["int8"],
                    "bf16_speedup": round(ms["fp32"] / ms["bf16"], 2),
                    "int8_speedup": round(ms["fp32"] / ms["int8"], 2),
                    "int8_top1_agreement": on(top1_agreement, fp32, engines["int8"], prompt),
                    "bf16_top1_agreement": on(top1_agreement, fp32, engines["bf16"], prompt),
                    **{f"int8_{e}_step_ms": on(step_ms, c, history, reps) for e, c in by_engine.items()},
                }
                cell = row[f"h{h}"]
                for p, engine in batched.items():  # the app's path
                    cell[f"app_{p}_step_ms"] = batched_step_ms(engine, history, reps, lean=True)
                    cell[f"app_{p}_step_ms_model_forward"] = batched_step_ms(engine, history, reps, lean=False)
                cell["int8_step_vs_floor"] = round(cell["int8_step_ms"] / int8_floor_ms, 2)
            for h in HISTORIES:  # what CTranslate2 is compared with, measured after all of ours
                history = history_of(h)
                cell = row[f"h{h}"]
                cell["_reference"] = on(greedy_ids, fp32, history)
                cell["_tokens"] = fp32.tokenizer.convert_ids_to_tokens(
                    fp32.build_prompt(history[:-1], history[-1], NEW_TOKENS)
                )
            out[label] = row
        engines = fp32 = by_engine = batched = None  # ours let go before CTranslate2 runs
        # CTranslate2 after all of ours, in a process of its own: its idle threads slowed the torch runs after it,
        # and in this process torch's compute thread slowed it (12x768 int8 step 19.9 ms here, 15.3 alone)
        version = ct2_version()
        out["ctranslate2"] = version or "not installed (pip install ctranslate2): no CTranslate2 rows"
        spawn = multiprocessing.get_context("spawn")  # a fresh interpreter: no thread of this one comes along
        for label, reps in (("chitchat_12x768", 5), ("demo_4x256", 7)) if version else ():
            cells = out[label]
            tokens = {h: cells[f"h{h}"]["_tokens"] for h in HISTORIES}
            with ProcessPoolExecutor(1, mp_context=spawn) as pool:
                measured = pool.submit(ct2_cells, Path(tmp) / label, tokens, reps).result()
            for h, by_compute in measured.items():
                cell = cells[f"h{h}"]
                for compute, (whole, step, ids) in by_compute.items():
                    cell[f"ct2_{compute}_ms"] = whole
                    cell[f"ct2_{compute}_step_ms"] = step
                    cell[f"ct2_{compute}_same_greedy_tokens"] = f"{same_prefix(cell['_reference'], ids)}/{NEW_TOKENS}"
                cell["int8_step_vs_ct2"] = round(cell["int8_step_ms"] / cell["ct2_int8_step_ms"], 2)
                cell["app_int8_step_vs_ct2"] = round(cell["app_int8_step_ms"] / cell["ct2_int8_step_ms"], 2)
                cell["fp32_step_vs_ct2"] = round(cell["fp32_step_ms"] / cell["ct2_float32_step_ms"], 2)
        for label in ("chitchat_12x768", "demo_4x256"):
            for h in HISTORIES:
                del out[label][f"h{h}"]["_reference"], out[label][f"h{h}"]["_tokens"]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
