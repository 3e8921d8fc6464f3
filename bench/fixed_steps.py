"""Six fixed-step runs and a fingerprint of what each wrote: a refactor that changes nothing gives the same lines.

    python bench/fixed_steps.py > before.jsonl      # on the old code
    python bench/fixed_steps.py > after.jsonl       # on the new code
    diff before.jsonl after.jsonl                   # no output: byte-identical weights and reports

Each run trains a tiny model from scratch on the sample data for a fixed number of steps (no time cap, so no
clock decides anything) and prints one JSON line: the run's name, the sha256 of its weights file and of its
report with the fields that hold times or paths left out. Runs alone (two PyTorch processes on 2 cores slow
each other many times over); about two minutes on a 2-core AMD EPYC.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLES = os.path.join(ROOT, "data", "samples")
TINY = ["--n-layer", "1", "--n-embd", "32", "--n-head", "2", "--max-steps", "12", "--seed", "7", "--batch-size", "8"]
# fields that hold a clock, a path or a machine's speed: they differ between any two runs
VOLATILE = {
    "wall_time_s", "train_runtime_s", "tokens_per_s", "path", "output", "resumed_from", "probed_seconds_per_step",
    "minutes", "seconds_per_step", "created", "finished_at",
    "runtime_s", "started", "budget_s", "ceiling_s", "elapsed_s",
}  # fmt: skip


def runs(work: str) -> list[tuple[str, str, list[str]]]:
    dialogs, corpus, pairs = (os.path.join(SAMPLES, f) for f in ("dialogs.txt", "cloze_corpus.txt", "pairs.tsv"))
    cloze = os.path.join(work, "cloze")
    chat = ["--data", dialogs, "--model", "scratch", "--max-len", "64", *TINY]
    similarity = ["--train", pairs, "--model", "scratch", *TINY]
    return [
        ("chat", "training/chat.py", chat),
        ("chat_lora", "training/chat.py", [*chat, "--lora"]),
        ("cloze", "training/cloze.py", ["--data", corpus, "--model", "scratch", *TINY]),
        ("cloze_continued", "training/cloze.py", ["--data", corpus, "--model", cloze, *TINY]),
        ("similarity", "training/similarity.py", similarity),
        ("similarity_no_mlm", "training/similarity.py", [*similarity, "--no-mlm-stage"]),
    ]  # fmt: skip


def stable(value):
    if isinstance(value, dict):
        return {k: stable(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [stable(v) for v in value]
    return value


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="comma-separated run names")
    parser.add_argument("--keep", help="folder to write each run's report to, as fingerprinted (to diff them)")
    given = parser.parse_args()
    only = given.only
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONHASHSEED": "0"}
    with tempfile.TemporaryDirectory() as work:
        for name, script, argv in runs(work):
            if only and name not in only.split(",") and name != "cloze":
                continue
            out = os.path.join(work, name)
            done = subprocess.run(
                [sys.executable, os.path.join(ROOT, script), *argv, "--output", out],
                cwd=ROOT, env=env, capture_output=True, text=True,
            )  # fmt: skip
            if done.returncode:
                print(json.dumps({"run": name, "exit": done.returncode, "error": done.stderr.strip()[-300:]}))
                continue
            with open(os.path.join(out, "model.safetensors"), "rb") as f:
                weights = sha(f.read())
            with open(os.path.join(out, "training_report.json"), encoding="utf-8") as f:
                report = json.loads(f.read().replace(work, "<work>"))  # the base of a continued run is in `work`
            report = stable(report)
            if given.keep:
                os.makedirs(given.keep, exist_ok=True)
                with open(os.path.join(given.keep, name + ".json"), "w", encoding="utf-8") as f:
                    json.dump(report, f, indent=1, sort_keys=True, ensure_ascii=False)
            line = {"run": name, "weights": weights, "report": sha(json.dumps(report, sort_keys=True).encode())}
            print(json.dumps(line), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
