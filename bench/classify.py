"""The classify task's default recipe on real and hand-written labelled sets: dev accuracy beside the simple
baseline (character n-gram TF-IDF + logistic regression, fitted on the same split), minutes, per class.

    python bench/classify.py                          # every set below that is present, default flags
    python bench/classify.py --sets waimai --flags "--max-minutes 5"

Sets: `waimai` is ../shared/data/waimai/waimai_10k.csv (12k real takeaway reviews, `label,review`; read where it
is, never copied); `tickets`, `news`, `moods` are bench/corpora/classify/ (written by hand for this project:
help-desk tickets in 4 imbalanced classes, news blurbs in 5 topics, a folder of diary lines in 3 moods). Each run
is the real script in a child process, alone (run nothing else meanwhile: two PyTorch processes on 2 cores slow
each other many times over). One JSON line per set.
"""

from __future__ import annotations

import argparse
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

CORPORA = os.path.join(ROOT, "bench", "corpora", "classify")
SETS = {
    "waimai": os.path.join(os.path.dirname(ROOT), "shared", "data", "waimai", "waimai_10k.csv"),
    "tickets": os.path.join(CORPORA, "tickets.tsv"),
    "news": os.path.join(CORPORA, "news.jsonl"),
    "moods": os.path.join(CORPORA, "moods"),
}


def run(name: str, path: str, flags: list[str], work: str) -> dict:
    out = os.path.join(work, name)
    command = [sys.executable, os.path.join(ROOT, "training", "classify.py"), "--data", path, "--output", out, *flags]
    start = time.time()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    minutes = (time.time() - start) / 60
    if done.returncode:
        return {"set": name, "exit": done.returncode, "error": done.stderr.strip().splitlines()[-1:]}
    with open(os.path.join(out, "training_report.json"), encoding="utf-8") as f:
        report = json.load(f)
    accuracy, baseline = report.get("dev_accuracy"), report.get("tfidf_baseline")
    return {
        "set": name,
        "texts": report["data"]["train"]["rows"] + report["data"]["valid"]["rows"],
        "classes": len(report["labels"]),
        "base": report["base_model"],
        "dev_texts": report["data"]["valid"]["rows"],
        "dev_accuracy": accuracy,
        "macro_f1": report.get("macro_f1"),
        "tfidf_baseline": baseline,
        "points_vs_baseline": None if baseline is None else round(100 * (accuracy - baseline), 1),
        "majority": report.get("majority_baseline"),
        "minutes": round(minutes, 2),
        "steps": report["global_step"],
        "per_class_recall": {k: v["recall"] for k, v in (report.get("per_class") or {}).items()},
        "most_confused": report.get("most_confused"),
        "flags": " ".join(flags),
        "cpu": machine(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sets", default=",".join(SETS), help=f"comma-separated, of {', '.join(SETS)}")
    parser.add_argument("--flags", default="", help='flags for every run, e.g. "--max-minutes 5"')
    given = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        for name in given.sets.split(","):
            path = SETS.get(name)
            if path is None:
                parser.error(f"unknown set {name!r}")
            if not os.path.exists(path):
                print(json.dumps({"set": name, "skipped": f"{path} is missing"}), flush=True)
                continue
            print(json.dumps(run(name, path, shlex.split(given.flags), work), ensure_ascii=False), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
