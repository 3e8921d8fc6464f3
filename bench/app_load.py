"""Load on the demo app: 16 concurrent chat users for 2 minutes through gradio_client.

    python bench/app_load.py                # uses checkpoints/ (demo models built if missing)
    python bench/app_load.py --fresh        # empty checkpoints folder: also times fresh clone -> serving
    python bench/app_load.py --training     # then the same load while the Train tab runs a chat training
    python bench/app_load.py --base-size    # a 12x768 chat model: batching on vs off (add --fast for int8)

Starts `python app.py` as a user would, then each simulated user sends a message, reads
the streamed reply, and sends the next one (history kept per client session). Prints one
JSON line: requests served, errors, p50/p95 time to first token (first non-empty reply
text seen by the client), p50 whole-reply time, start-to-serving seconds. With --training a
second line: the same users while a chat training (sample dialogues, from scratch) started
through the app's /train_start runs at its lower priority, with the idle p95 beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
OPENERS = ["你好", "早上好", "在吗？", "周末去哪儿玩？", "我今天好累", "最近在忙什么呢？", "晚饭吃什么？", "好久不见"]


def start_app(checkpoints: str, concurrency: int, log_path: str, extra: tuple = ()):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    t = time.perf_counter()
    log = open(log_path, "w")
    proc = subprocess.Popen(
        [
            sys.executable,
            os.path.join(ROOT, "app.py"),
            "--checkpoints",
            checkpoints,
            "--port",
            "0",
            "--concurrency",
            str(concurrency),
            *extra,
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    while proc.poll() is None:
        with open(log_path, errors="replace") as f:
            text = f.read()
        if "[app] serving at " in text:
            return proc, text.split("[app] serving at ")[1].split()[0], time.perf_counter() - t
        time.sleep(0.5)
    raise SystemExit(f"app exited with {proc.returncode}; see {log_path}")


def wait_for_chat(proc, log_path: str, started: float) -> float | None:
    """The app serves first and trains missing demo models after: seconds from start until the chat
    demo is ready (None when no chat demo was built)."""
    time.sleep(2)  # the "building" line follows the "serving" line
    while proc.poll() is None:
        with open(log_path, errors="replace") as f:
            text = f.read()
        if "building the chat demo" not in text:
            return None
        if "chat demo model ready" in text:
            return time.perf_counter() - started
        if "chat demo model failed" in text:
            raise SystemExit(f"the chat demo model failed; see {log_path}")
        time.sleep(0.5)
    raise SystemExit(f"app exited with {proc.returncode}; see {log_path}")


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def user(
    url: str,
    seconds: float,
    k: int,
    ttft: list,
    total: list,
    errors: list,
    stop_at: float,
    args: tuple = (),
    tokens: list | None = None,
    turns: int | None = None,
    messages_per_chat: int = 4,
) -> None:
    """One visitor chatting until `stop_at` (or for `turns` replies); `args` follow the message in /chat."""
    from gradio_client import Client

    client = Client(url, verbose=False)
    turn = attempts = 0
    while time.time() < stop_at and (turns is None or attempts < turns):
        attempts += 1
        message = OPENERS[(k + turn) % len(OPENERS)]
        t = time.perf_counter()
        first = None
        chatbot = None
        try:
            job = client.submit(message, *args, api_name="/chat")
            for chatbot, _ in job:
                if (
                    first is None
                    and chatbot
                    and chatbot[-1]["role"] == "assistant"
                    and chatbot[-1]["content"]
                    and chatbot[-1]["content"][0].get("text")
                ):
                    first = time.perf_counter() - t
            job.result()
        except Exception as e:  # counted, and the first few printed in the JSON line
            errors.append(f"{type(e).__name__}: {str(e)[:120]}")
            continue
        total.append(time.perf_counter() - t)
        if first is not None:
            ttft.append(first)
        if tokens is not None and chatbot:  # the base-size model's vocabulary is one character per token
            tokens.append(len(chatbot[-1]["content"][0].get("text") or ""))
        turn += 1
        if turn % messages_per_chat == 0:
            client.predict(api_name="/clear")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--users", type=int, default=16)
    p.add_argument("--seconds", type=float, default=120)
    p.add_argument("--concurrency", type=int, default=16, help="the app's --concurrency")
    p.add_argument(
        "--fresh",
        action="store_true",
        help="start from an empty checkpoints folder (times serving and the chat demo build)",
    )
    p.add_argument(
        "--checkpoints", help="the app's --checkpoints (default: checkpoints/, or a new empty one with --fresh)"
    )
    p.add_argument("--training", action="store_true", help="a second run while the Train tab trains a chat model")
    p.add_argument("--fast", action="store_true", help="with --base-size: the app's --fast (int8 chat weights)")
    p.add_argument(
        "--messages-per-chat",
        type=int,
        default=4,
        help="with --base-size: messages before a user clears the chat (past 4 the model's history window moves)",
    )
    p.add_argument(
        "--base-size",
        action="store_true",
        help="a chat model of the default base's shape (12x768, vocab 21,128, random weights): batching on vs off",
    )
    a = p.parse_args()
    if a.messages_per_chat < 1:
        p.error(f"--messages-per-chat must be 1 or more, got {a.messages_per_chat}")
    if a.base_size:
        return base_size(a.users, a.seconds, a.concurrency, a.fast, a.messages_per_chat)
    tmp = tempfile.mkdtemp(prefix="app_load_")
    checkpoints = a.checkpoints or (os.path.join(tmp, "checkpoints") if a.fresh else os.path.join(ROOT, "checkpoints"))
    started = time.perf_counter()
    proc, url, start_s = start_app(checkpoints, a.concurrency, os.path.join(tmp, "app.log"))
    chat_ready_s = wait_for_chat(proc, os.path.join(tmp, "app.log"), started)
    lines = []
    try:
        lines.append({**load(url, a.users, a.seconds), "training": False})
        if a.training:
            lines.append({**load_while_training(url, a.users, a.seconds, checkpoints), "training": True})
            lines[-1]["ttft_p95_idle_s"] = lines[0]["ttft_p95_s"]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    for line in lines:
        result = {
            "bench": "app_load",
            "users": a.users,
            "seconds": a.seconds,
            "concurrency": a.concurrency,
            **line,
            "start_to_serving_s": round(start_s, 1),
            "start_to_chat_demo_ready_s": None if chat_ready_s is None else round(chat_ready_s, 1),
            "cpu_count": os.cpu_count(),
        }
        print(json.dumps(result, ensure_ascii=False))


def together(fn, n: int) -> float:
    """fn(0) ... fn(n - 1) in n threads at once; the seconds until all have returned."""
    threads = [threading.Thread(target=fn, args=(k,)) for k in range(n)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - started


def load(
    url: str, users: int, seconds: float, args: tuple = (), count_tokens: bool = False, messages_per_chat: int = 4
) -> dict:
    """`users` chat users at once for `seconds`: served, errors, time to first token, whole reply (and
    tokens/s where a reply's characters are its tokens)."""
    ttft: list[float] = []
    total: list[float] = []
    errors: list[str] = []
    tokens: list[int] | None = [] if count_tokens else None
    stop_at = time.time() + seconds
    wall = together(
        lambda k: user(url, seconds, k, ttft, total, errors, stop_at, args, tokens, None, messages_per_chat),
        users,
    )
    return {
        "requests_served": len(total),
        "errors": len(errors),
        "error_examples": errors[:3],
        **({"tokens_per_s": round(sum(tokens) / wall, 1)} if count_tokens else {}),
        "ttft_p50_s": round(statistics.median(ttft), 3) if ttft else None,
        "ttft_p95_s": round(percentile(ttft, 0.95), 3) if ttft else None,
        "reply_p50_s": round(statistics.median(total), 3) if total else None,
        "reply_p95_s": round(percentile(total, 0.95), 3) if total else None,
    }


def load_while_training(url: str, users: int, seconds: float, checkpoints: str) -> dict:
    """The same load while the app's Train tab trains a chat model (started and stopped through its API;
    its resumable state is removed afterwards)."""
    import shutil

    from gradio_client import Client

    c = Client(url, verbose=False)
    name = f"app-load-{os.getpid()}"
    # task, upload, sample data, base, amount, epochs, lr, batch, max len, LoRA, output name, replace
    c.predict("chat", None, True, "scratch", "充分 thorough", None, None, None, None, False, name, False,
              api_name="/train_start")  # fmt: skip
    deadline = time.time() + 120
    while "训练中 training" not in (status := c.predict(api_name="/train_status")[0]):
        if time.time() > deadline or "失败 failed" in status:
            raise SystemExit(f"the training run did not start: {status}")
        time.sleep(1)
    result = load(url, users, seconds)
    status = c.predict(api_name="/train_status")[0]
    c.predict(api_name="/train_stop")
    deadline = time.time() + 120
    while "已停止 stopped" not in c.predict(api_name="/train_status")[0] and time.time() < deadline:
        time.sleep(1)
    shutil.rmtree(os.path.join(checkpoints, name + ".partial"), ignore_errors=True)
    if os.path.exists(os.path.join(checkpoints, name + ".log")):  # the job's log, kept beside its output
        os.remove(os.path.join(checkpoints, name + ".log"))
    result["training_status"] = status.split("\n")[0]
    return result


BASE_SHAPE = dict(n_layer=12, n_embd=768, n_head=12, vocab=21128)  # bert-base-chinese's vocab, GPT-2 small's body
REPLY_TOKENS = 40
ALONE_REPLIES = 8


def base_size(users: int, seconds: float, concurrency: int, fast: bool = False, messages_per_chat: int = 4) -> None:
    """Batching on vs off on a model of the default base's size, in one run: one user alone, then `users` at
    once (40-token replies), through the app; then the decode step per batch size beside the weight-read
    floor. One JSON line per app run, one for the steps, one with the ratios."""
    from pathlib import Path

    from bench.decode import make_folder

    tmp = Path(tempfile.mkdtemp(prefix="app_load_base_"))
    folder = tmp / "checkpoints" / "chat-base"
    make_folder(BASE_SHAPE["n_layer"], BASE_SHAPE["n_embd"], BASE_SHAPE["n_head"], BASE_SHAPE["vocab"], folder)
    from data.encoder import CHAT_SAMPLING as d

    # /chat after the message: model, temperature, top-k, top-p, repetition penalty, max new tokens
    args = (str(folder), d["temperature"], d["top_k"], d["top_p"], d["repetition_penalty"], REPLY_TOKENS)
    runs = {}
    for batching in (True, False):
        extra = ("--chat-model", str(folder), "--no-demo") + (() if batching else ("--no-batching",))
        extra += ("--fast",) if fast else ()
        proc, url, _ = start_app(str(tmp / "checkpoints"), concurrency, str(tmp / f"app-{batching}.log"), extra)
        try:
            alone: dict = {"ttft": [], "total": [], "errors": [], "tokens": []}
            user(url, 0, 0, alone["ttft"], alone["total"], alone["errors"], time.time() + 600, args, alone["tokens"],
                 turns=ALONE_REPLIES + 1)  # fmt: skip
            alone_s = statistics.median(alone["total"][1:])  # the first reply warms up
            many = load(url, users, seconds, args, count_tokens=True, messages_per_chat=messages_per_chat)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        runs[batching] = line = {
            "bench": "app_load_base_size",
            "batching": batching,
            "precision": "int8" if fast else "fp32",
            "users": users,
            "seconds": seconds,
            "reply_tokens": REPLY_TOKENS,
            "messages_per_chat": messages_per_chat,
            "alone_reply_s": round(alone_s, 3),
            "alone_errors": len(alone["errors"]),
            **many,
            "cpu_count": os.cpu_count(),
        }
        print(json.dumps(line, ensure_ascii=False), flush=True)
    precision = "int8" if fast else "fp32"
    print(json.dumps(decode_steps(folder, precision), ensure_ascii=False), flush=True)
    engine = {b: engine_only(folder, users, seconds / 2, b, precision, messages_per_chat) for b in (True, False)}
    for line in engine.values():
        print(json.dumps(line, ensure_ascii=False), flush=True)
    on, off = runs[True], runs[False]
    summary = {
        "bench": "app_load_base_size_summary",
        "throughput_x": round(on["tokens_per_s"] / off["tokens_per_s"], 2),
        "reply_p95_ratio": round(on["reply_p95_s"] / off["reply_p95_s"], 3),
        "ttft_p95_s": on["ttft_p95_s"],
        "alone_slowdown": round(on["alone_reply_s"] / off["alone_reply_s"] - 1, 3),
        "engine_only_throughput_x": round(engine[True]["tokens_per_s"] / engine[False]["tokens_per_s"], 2),
        "targets": {
            "throughput_x": ">= 4",
            "reply_p95_ratio": "<= 0.333",
            "ttft_p95_s": "<= 2",
            "alone_slowdown": "<= 0.10",
        },
    }
    print(json.dumps(summary, ensure_ascii=False), flush=True)


def engine_only(
    folder, users: int, seconds: float, batching: bool, precision: str = "fp32", messages_per_chat: int = 4
) -> dict:
    """The same conversations straight through ChatEngine in this process, no Gradio and no clients: what
    the app's serving costs on top (its server and the bench's clients share the 2 cores)."""
    from chat import ChatEngine
    from data.encoder import CHAT_SAMPLING as d

    engine = ChatEngine.from_pretrained(str(folder), batching=batching, precision=precision)
    sampling = {k: d[k] for k in ("temperature", "top_k", "top_p", "repetition_penalty")}
    tokens, totals = [], []
    stop_at = time.time() + seconds

    def chat(k: int) -> None:
        turns, turn = [], 0
        while time.time() < stop_at:
            message, t = OPENERS[(k + turn) % len(OPENERS)], time.perf_counter()
            reply = engine.reply(turns, message, do_sample=True, max_new_tokens=REPLY_TOKENS, **sampling)
            totals.append(time.perf_counter() - t)
            tokens.append(len(reply))
            turns += [{"role": "user", "content": message}, {"role": "assistant", "content": reply}]
            turn += 1
            if turn % messages_per_chat == 0:  # as the app users clear their chat
                turns = []

    wall = together(chat, users)
    return {
        "bench": "engine_only",
        "batching": batching,
        "precision": precision,
        "users": users,
        "messages_per_chat": messages_per_chat,
        "replies": len(totals),
        "tokens_per_s": round(sum(tokens) / wall, 1),
        "reply_p95_s": round(percentile(totals, 0.95), 3) if totals else None,
        **({"kv": engine.batcher.stats()} if batching else {}),
    }


def decode_steps(folder, precision: str = "fp32") -> dict:
    """Median decode-step time with 1, 4, 8 and 16 rows running (40-token replies submitted together),
    and the floor a cached fp32 step cannot beat: reading every weight once."""
    from bench.decode import read_bandwidth
    from chat import ChatEngine

    engine = ChatEngine.from_pretrained(str(folder), batching=True, precision=precision)
    weights = os.path.getsize(os.path.join(folder, "model.safetensors"))  # the fp32 weights, as saved
    steps = {}
    for n in (1, 4, 8, 16):
        engine.batcher.step_times.clear()
        together(lambda i: engine.reply([], f"第{i}句话", max_new_tokens=REPLY_TOKENS), n)
        # the most rows that ran together: n, unless a thread came late for the first step (seen once, int8)
        rows = max(engine.batcher.step_times)
        steps[rows] = round(statistics.median(engine.batcher.step_times[rows]) * 1000, 1)
    floor = weights / read_bandwidth() * 1000
    return {
        "bench": "decode_step_per_batch",
        "precision": precision,
        "step_ms": steps,
        "ms_per_token": {n: round(ms / n, 2) for n, ms in steps.items()},
        "weight_read_floor_ms": round(floor, 1),  # of the fp32 weights
        "weights_mib": round(weights / 2**20, 1),
        "kv": engine.batcher.stats(),
    }


if __name__ == "__main__":
    main()
