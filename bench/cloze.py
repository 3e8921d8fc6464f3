"""Cloze: does a model learn the user's facts, what does it forget, how fast does it answer?

    python bench/cloze.py [--seeds 3]

1. Taught facts from scratch: training/cloze.py on data/samples/cloze_corpus.txt, then
   top-1 accuracy on data/samples/cloze_prompts.txt (phrased differently), over seeds.
2. Forgetting: a scratch BERT first trained on general text (LCQMC questions from
   ../shared/data), then taught the sample facts; masked-token accuracy on held-out general
   sentences before and after, and the taught-fact accuracy it reaches.
3. Latency of FillMaskPredictor at demo size: p50/p95 ms, single mask and joint 2-mask.
4. `--defaults`: default flags only on the corpora in bench/corpora/ (invented facts nobody
   tuned for, 15-400 lines), with and without --whole-word-mask: top-1 on reworded prompts
   (masks filled as one word, as the app does), the self-quiz figure, minutes per run.
Prints one JSON line (`--defaults` also one per run as it goes).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from chat.fill_mask import FillMaskPredictor  # noqa: E402
from training import cloze as cloze_script  # noqa: E402
from training.cli import quiet_libraries  # noqa: E402
from training.mlm import same_answer  # noqa: E402

SAMPLES = ROOT / "data" / "samples"
LCQMC = ROOT.parent / "shared" / "data" / "lcqmc"
RECIPE = [
    "--n-layer",
    "2",
    "--n-embd",
    "128",
    "--n-head",
    "4",
    "--batch-size",
    "16",
    "--lr",
    "1e-3",
    "--mlm-probability",
    "0.3",
]


def train(argv: list[str]) -> dict:
    code = cloze_script.main(argv)
    if code:
        raise SystemExit(f"training/cloze.py exited with {code}")
    out = Path(argv[argv.index("--output") + 1])
    return json.loads((out / "training_report.json").read_text(encoding="utf-8"))


def sentences(path: Path, limit: int) -> list[str]:
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        out += [s for s in line.split("\t")[:2] if len(s) >= 6]
        if len(out) >= limit:
            break
    return out[:limit]


def latency(predictor: FillMaskPredictor, texts: list[str], **kw) -> dict:
    times = []
    for text in texts:
        t = time.perf_counter()
        predictor.predict(text, top_k=5, **kw)
        times.append((time.perf_counter() - t) * 1000)
    times.sort()
    return {"p50_ms": round(statistics.median(times), 2), "p95_ms": round(times[int(0.95 * (len(times) - 1))], 2)}


CORPORA = ROOT / "bench" / "corpora"


def reworded_top1(folder: Path, prompts: Path) -> tuple[float, int]:
    """Top-1 of a saved model on reworded prompts, each run of masks filled as one word (as the app does)."""
    from data.corpus import read_prompts

    fill = FillMaskPredictor.from_pretrained(str(folder))
    items, _ = read_prompts(prompts)
    hits = 0
    for item in items:
        top1 = "".join(slot.candidates[0].text for slot in fill.predict(item.text, top_k=1))
        hits += same_answer(top1, item.answer, fill.tokenizer)
    return hits / len(items), len(items)


def defaults_table(tmp: Path, only: list[str] | None) -> dict:
    """Default flags only (what a new user runs) on corpora written for this bench, with and without
    --whole-word-mask: reworded-prompt top-1, the script's own self-quiz, minutes."""
    rows = []
    for corpus in sorted(CORPORA.glob("*.txt")):
        if corpus.name.endswith(".prompts.txt") or (only and corpus.stem not in only):
            continue
        for wwm in (False, True):
            out = tmp / f"{corpus.stem}-{int(wwm)}"
            r = train(["--data", str(corpus), "--output", str(out), *(["--whole-word-mask"] if wwm else [])])
            top1, n = reworded_top1(out, corpus.with_name(corpus.stem + ".prompts.txt"))
            quiz = r.get("self_quiz") or {}
            rows.append(
                {
                    "corpus": corpus.stem,
                    "lines": len(corpus.read_text(encoding="utf-8").splitlines()),
                    "whole_word_mask": wwm,
                    "reworded_top1": round(top1, 4),
                    "prompts": n,
                    "self_quiz": f"{quiz.get('recalled')}/{quiz.get('probes')}",
                    "minutes": round(r["wall_time_s"] / 60, 2),
                    "steps": r["global_step"],
                }
            )
            print(json.dumps(rows[-1], ensure_ascii=False), flush=True)
    tops = [row["reworded_top1"] for row in rows]
    return {
        "rows": rows,
        "mean_reworded_top1": round(statistics.mean(tops), 4),
        "min_reworded_top1": min(tops),
        "max_minutes_up_to_150_lines": max(row["minutes"] for row in rows if row["lines"] <= 150),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=300)
    p.add_argument("--defaults", action="store_true", help="only the default-flags table over bench/corpora/")
    p.add_argument("--corpora", help="comma-separated corpus names for --defaults (default: all)")
    a = p.parse_args()
    quiet_libraries()
    if a.defaults:
        with tempfile.TemporaryDirectory() as tmp:
            result = {
                "bench": "cloze.defaults",
                **defaults_table(Path(tmp), a.corpora.split(",") if a.corpora else None),
            }
        print(json.dumps(result, ensure_ascii=False))
        return
    corpus, prompts = str(SAMPLES / "cloze_corpus.txt"), str(SAMPLES / "cloze_prompts.txt")
    result: dict = {"bench": "cloze", "recipe": " ".join(RECIPE), "epochs": a.epochs}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        accs = []
        for seed in range(a.seeds):
            r = train(
                [
                    "--data",
                    corpus,
                    "--eval-prompts",
                    prompts,
                    "--model",
                    "scratch",
                    "--output",
                    str(tmp / f"s{seed}"),
                    "--epochs",
                    str(a.epochs),
                    "--seed",
                    str(seed),
                    *RECIPE,
                ]
            )
            accs.append(r["prompts"]["top1_accuracy_after"])
        result["taught_facts_top1_from_scratch"] = {
            "per_seed": accs,
            "mean": round(statistics.mean(accs), 4),
            "train_seconds_per_run": r["wall_time_s"],
        }
        if LCQMC.is_dir():
            general_train = tmp / "general_train.txt"
            general_train.write_text("\n".join(sentences(LCQMC / "test.txt", 8000)), encoding="utf-8")
            general_eval = tmp / "general_eval.txt"
            general_eval.write_text("\n".join(sentences(LCQMC / "dev.txt", 600)), encoding="utf-8")
            # --general-text here only adds the sample corpus's characters to the vocab, so the
            # later fine-tune can learn names such as 林小溪 (its accuracy figure is not used).
            base = train(
                [
                    "--data",
                    str(general_train),
                    "--general-text",
                    corpus,
                    "--model",
                    "scratch",
                    "--output",
                    str(tmp / "general"),
                    "--epochs",
                    "15",
                    "--seed",
                    "0",
                    *RECIPE,
                ]
            )
            taught = train(
                [
                    "--data",
                    corpus,
                    "--eval-prompts",
                    prompts,
                    "--general-text",
                    str(general_eval),
                    "--model",
                    str(tmp / "general"),
                    "--output",
                    str(tmp / "taught"),
                    "--epochs",
                    str(a.epochs),
                    "--seed",
                    "0",
                    *RECIPE,
                ]
            )
            result["forgetting"] = {
                "general_pretraining": {"sentences": 8000, "epochs": 15, "seconds": base["wall_time_s"]},
                "general_masked_accuracy_before": taught["general"]["masked_accuracy_before"],
                "general_masked_accuracy_after": taught["general"]["masked_accuracy_after"],
                "taught_facts_top1_before": taught["prompts"]["top1_accuracy_before"],
                "taught_facts_top1_after": taught["prompts"]["top1_accuracy_after"],
            }
        else:
            result["forgetting"] = f"skipped: {LCQMC} not found"
        predictor = FillMaskPredictor.from_pretrained(str(tmp / "s0"))
        lines = [
            ln.split("\t")[0]
            for ln in Path(prompts).read_text(encoding="utf-8").splitlines()
            if "\t" in ln and not ln.startswith("#")
        ]
        texts = (lines * 20)[:200]
        latency(predictor, texts[:10])  # warm-up
        result["latency_demo_size"] = {
            "single_or_independent": latency(predictor, texts, joint=False),
            "joint": latency(predictor, [t for t in texts if "[MASK][MASK]" in t] * 10),
        }
    print(json.dumps(result, ensure_ascii=False))


if __name__ == "__main__":
    main()
