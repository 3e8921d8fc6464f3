"""OpenAI-compatible serving side by side (issue #36): this app's `/v1` against `transformers serve`.

    python bench/serve.py [--users 16] [--seconds 60] [--tokens 40]

One chat model of the default base's shape (12 x 768, vocab 21,128, random weights, its [SEP] row zeroed
so replies run their full length: bench/decode.py), four servers one after another on the same folder:
(a) `python app.py` (its `/v1`, continuous batching), (b) the same with `--no-batching`,
(c) `transformers serve --continuous-batching`, (d) `transformers serve`. Each gets `--users` concurrent
clients of the official `openai` package, streaming greedy replies of `--tokens` tokens to the same
prompts, for `--seconds`. One JSON line per server: replies, aggregate tokens/s, time to first token
p50/p95, whole reply p95, errors; then one line with the ratios. Run it alone: the clients and the server
share the machine's cores.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
OPENERS = ["你好", "早上好", "在吗？", "周末去哪儿玩？", "我今天好累", "最近在忙什么呢？", "晚饭吃什么？", "好久不见"]
BASE_SHAPE = dict(n_layer=12, n_embd=768, n_head=12, vocab=21128)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_model(folder: Path) -> None:
    """bench/decode.py's random base-size chat model, with the chat template our checkpoints carry."""
    from transformers import BertTokenizerFast

    from bench.decode import make_folder
    from chat.settings import MAX_HISTORY, MAX_MESSAGE_CHARS
    from data.chat_template import load_as_written, make_chat_ready

    make_folder(BASE_SHAPE["n_layer"], BASE_SHAPE["n_embd"], BASE_SHAPE["n_head"], BASE_SHAPE["vocab"], folder)
    tok = BertTokenizerFast.from_pretrained(str(folder))
    make_chat_ready(tok, MAX_HISTORY, MAX_MESSAGE_CHARS)
    tok.save_pretrained(str(folder))
    load_as_written(str(folder))


def start(kind: str, folder: Path, log: Path) -> tuple[subprocess.Popen, str, str]:
    """(process, base URL of /v1, model name) once the server answers /v1/models."""
    import requests

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    port = free_port()
    if kind.startswith("app"):
        cmd = [sys.executable, str(ROOT / "app.py"), "--checkpoints", str(folder.parent), "--no-demo"]
        cmd += ["--port", str(port), "--concurrency", "64"] + (["--no-batching"] if kind == "app-no-batching" else [])
        name = folder.name
    else:
        cli = str(Path(sys.executable).with_name("transformers"))
        cmd = [cli, "serve", str(folder), "--port", str(port)]
        cmd += ["--continuous-batching"] if kind == "transformers-serve-cb" else []
        name = str(folder)
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if requests.get(url + "/models", timeout=5).ok:
                return proc, url, name
        except requests.RequestException:
            pass
        time.sleep(1)
    proc.kill()
    raise SystemExit(f"{kind} did not start; see {log}")


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return round(values[min(len(values) - 1, int(q * (len(values) - 1) + 0.5))], 3)


def load(url: str, name: str, users: int, seconds: float, tokens: int, tokenizer) -> dict:
    from openai import OpenAI

    ttft, whole, counts, errors = [], [], [], []
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def user(k: int) -> None:
        client = OpenAI(base_url=url, api_key="bench", max_retries=0, timeout=300)
        n = 0
        while time.monotonic() < stop_at:
            message = OPENERS[(k + n) % len(OPENERS)] + f"（{k}-{n}）"
            n += 1
            t0, first, text = time.perf_counter(), None, ""
            try:
                stream = client.chat.completions.create(
                    model=name,
                    messages=[{"role": "user", "content": message}],
                    temperature=0,
                    max_tokens=tokens,
                    stream=True,
                )
                for chunk in stream:
                    piece = chunk.choices[0].delta.content if chunk.choices else None
                    if piece:
                        first = first or time.perf_counter()
                        text += piece
            except Exception as e:  # counted, and the user goes on
                with lock:
                    errors.append(f"{type(e).__name__}: {str(e)[:120]}")
                continue
            end = time.perf_counter()
            with lock:
                ttft.append((first or end) - t0)
                whole.append(end - t0)
                counts.append(len(tokenizer(text, add_special_tokens=False)["input_ids"]))

    started = time.perf_counter()
    threads = [threading.Thread(target=user, args=(k,)) for k in range(users)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    return {
        "replies": len(whole),
        "tokens_per_s": round(sum(counts) / wall, 1),
        "mean_reply_tokens": round(statistics.mean(counts), 1) if counts else None,
        "ttft_p50_s": percentile(ttft, 0.5),
        "ttft_p95_s": percentile(ttft, 0.95),
        "reply_p95_s": percentile(whole, 0.95),
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "wall_s": round(wall, 1),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--users", type=int, default=16)
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--tokens", type=int, default=40)
    p.add_argument(
        "--only", default="app,app-no-batching,transformers-serve-cb,transformers-serve", help="servers, in order"
    )
    a = p.parse_args()
    from transformers import AutoTokenizer

    from bench import cpu_flags, machine

    tmp = Path(tempfile.mkdtemp(prefix="bench_serve_"))
    folder = tmp / "checkpoints" / "chat-base"
    make_model(folder)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    rows = {}
    try:
        for kind in a.only.split(","):
            proc, url, name = start(kind, folder, tmp / f"{kind}.log")
            try:
                load(url, name, 1, 0.1, 4, tokenizer)  # one reply: warm-up (first-request work, caches)
                row = {"bench": "serve", "server": kind, "users": a.users, "reply_tokens": a.tokens}
                row.update(load(url, name, a.users, a.seconds, a.tokens, tokenizer))
                row["machine"], row["cpu_flags"] = machine(), cpu_flags()
            finally:
                proc.terminate()
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
            rows[kind] = row
            print(json.dumps(row, ensure_ascii=False), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    theirs = [rows[k]["tokens_per_s"] for k in rows if k.startswith("transformers") and rows[k]["tokens_per_s"]]
    if "app" in rows and theirs:
        print(
            json.dumps(
                {
                    "bench": "serve_summary",
                    "app_vs_best_transformers_serve_tokens_per_s": round(rows["app"]["tokens_per_s"] / max(theirs), 2),
                    "app_ttft_p95_s": rows["app"]["ttft_p95_s"],
                    "targets": {"tokens_per_s_x": ">= 1.5", "ttft_p95_s": "<= 2", "errors": 0},
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
