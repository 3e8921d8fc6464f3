"""The write task's default recipe on real and hand-written prose: held-out perplexity beside the best interpolated
Kneser-Ney n-gram model's (orders 3 and 5, the same tokens), minutes, and three continuations.

    python bench/write.py                                  # every set below that is present, default flags
    python bench/write.py --sets luxun --flags "--max-minutes 5"

Sets: `luxun` trains on one book of ../shared/data/luxun/ and measures on the other (public domain, hard-wrapped,
with editors' note markers; read where it is, never copied); `essays`, `fable`, `letters` are bench/prose/write/
(written for this project), each measured on its own last 5%. Each run is the real script in a child process,
alone (two PyTorch processes on 2 cores slow each other many times over). One JSON line per set.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from bench import machine  # noqa: E402  (one CPU description for every bench)

PROSE = os.path.join(ROOT, "bench", "prose", "write")
LUXUN = os.path.join(os.path.dirname(ROOT), "shared", "data", "luxun")


def sets() -> dict:
    books = sorted(glob.glob(os.path.join(LUXUN, "*.txt")))
    found = {"luxun": (books[0], books[1]) if len(books) >= 2 else None}
    for name in ("essays", "fable", "letters"):
        path = os.path.join(PROSE, f"{name}.txt")
        found[name] = (path, None) if os.path.isfile(path) else None
    return found


def run(name: str, data: str, dev: str | None, flags: list[str], work: str) -> dict:
    out = os.path.join(work, name)
    command = [sys.executable, os.path.join(ROOT, "training", "write.py"), "--data", data, "--output", out]
    command += ["--dev", dev] if dev else []
    start = time.time()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([*command, *flags], cwd=ROOT, capture_output=True, text=True, env=env)
    minutes = (time.time() - start) / 60
    if done.returncode:
        return {"set": name, "exit": done.returncode, "error": done.stderr.strip().splitlines()[-1:]}
    with open(os.path.join(out, "training_report.json"), encoding="utf-8") as f:
        report = json.load(f)
    return {
        "set": name,
        "train_characters": report["data"]["train"]["characters"],
        "held_out_characters": report["data"]["valid"]["characters"],
        "base": report["base_model"],
        "held_out_perplexity": report.get("held_out_perplexity"),
        "ngram": report.get("ngram"),
        "better_than_ngram_percent": report.get("better_than_ngram_percent"),
        "minutes": round(minutes, 2),
        "steps": report["global_step"],
        "samples": report.get("samples"),
        "flags": " ".join(flags),
        "cpu": machine(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    known = sets()
    parser.add_argument("--sets", default=",".join(known), help=f"comma-separated, of {', '.join(known)}")
    parser.add_argument("--flags", default="", help='flags for every run, e.g. "--max-minutes 5"')
    given = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        for name in given.sets.split(","):
            if name not in known:
                parser.error(f"unknown set {name!r}")
            if known[name] is None:
                print(json.dumps({"set": name, "skipped": "its files are missing"}), flush=True)
                continue
            data, dev = known[name]
            print(json.dumps(run(name, data, dev, shlex.split(given.flags), work), ensure_ascii=False), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
