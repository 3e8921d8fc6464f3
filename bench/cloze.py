"""Cloze: does a model learn the user's facts, what does it forget, how fast does it answer?

    python bench/cloze.py [--seeds 3]

1. Taught facts from scratch: training/cloze.py on data/samples/cloze_corpus.txt, then
   top-1 accuracy on data/samples/cloze_prompts.txt (phrased differently), over seeds.
2. Forgetting: a scratch BERT first trained on general text (LCQMC questions from
   ../shared/data), then taught the sample facts; masked-token accuracy on held-out general
   sentences before and after, and the taught-fact accuracy it reaches.
3. Latency of FillMaskPredictor at demo size: p50/p95 ms, single mask and joint 2-mask.
4. `--defaults`: default flags only, on two sets of invented facts: bench/prose/ (natural prose
   written by hand, 40-280 lines) and bench/corpora/ (written from templates, 15-400 lines). Top-1
   on reworded prompts, as the app fills them (each run of masks as one word) and as a plain
   `pipeline("fill-mask")` does (each mask on its own), the self-quiz figure, minutes per run.
   `--busy` runs a second training process beside each run (bench/busy.py).

    python bench/cloze.py --defaults [--set prose] [--busy]
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

from bench import machine  # noqa: E402
from chat.fill_mask import FillMaskPredictor  # noqa: E402
from training import cloze as cloze_script  # noqa: E402
from training.cli import quiet_libraries  # noqa: E402
from training.tasks.cloze.mlm import same_answer  # noqa: E402

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


CORPORA = ROOT / "bench" / "corpora"  # templated: written by bench/corpora/make.py
PROSE = ROOT / "bench" / "prose"  # natural prose, written by hand (issue #35)
SETS = {"prose": PROSE, "templated": CORPORA}


def reworded_top1(folder: Path, prompts: Path) -> tuple[float, float, int]:
    """Top-1 of a saved model on reworded prompts, twice: each run of masks filled as one word (as the app
    does), and a plain `pipeline("fill-mask")` taking each mask's top-1 on its own (what any other tool does)."""
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    from data.corpus import read_prompts
    from training.tasks.cloze.mlm import hit_rate, quiz

    fill = FillMaskPredictor.from_pretrained(str(folder))
    items, _ = read_prompts(prompts)
    hits = 0
    for item in items:
        top1 = "".join(slot.candidates[0].text for slot in fill.predict(item.text, top_k=1))
        hits += same_answer(top1, item.answer, fill.tokenizer)
    model = AutoModelForMaskedLM.from_pretrained(str(folder))
    plain = hit_rate(quiz(model, AutoTokenizer.from_pretrained(str(folder)), items, top_k=1))
    return hits / len(items), plain, len(items)


def corpora(sets: list[str], only: list[str] | None) -> list[tuple[str, Path]]:
    return [
        (name, corpus)
        for name in sets
        for corpus in sorted(SETS[name].glob("*.txt"))
        if not corpus.name.endswith(".prompts.txt") and not (only and corpus.stem not in only)
    ]


def defaults_table(tmp: Path, sets: list[str], only: list[str] | None, busy: bool, wwm_too: bool, extra) -> dict:
    """Default flags only (what a new user runs) on corpora written for this bench (with --compare-wwm also
    with --whole-word-mask): reworded-prompt top-1 as the app answers and as a plain pipeline answers, the
    script's own self-quiz, minutes; with `busy`, each run beside a second training process (bench/busy.py)."""
    from bench.busy import competing_load

    rows = []
    for name, corpus in corpora(sets, only):
        for wwm in (False, True) if wwm_too else (False,):
            out = tmp / f"{corpus.stem}-{int(wwm)}"
            argv = ["--data", str(corpus), "--output", str(out), *(["--whole-word-mask"] if wwm else []), *extra]
            with competing_load(busy):
                r = train(argv)
            top1, plain, n = reworded_top1(out, corpus.with_name(corpus.stem + ".prompts.txt"))
            quiz = r.get("self_quiz") or {}
            schedule = r.get("schedule") or {}
            rows.append(
                {
                    "set": name,
                    "corpus": corpus.stem,
                    "lines": len(corpus.read_text(encoding="utf-8").splitlines()),
                    "busy": busy,
                    "whole_word_mask": wwm,
                    "reworded_top1": round(top1, 4),
                    "pipeline_top1": round(plain, 4),
                    "prompts": n,
                    "self_quiz": f"{quiz.get('recalled')}/{quiz.get('probes')}",
                    "minutes": round(r["wall_time_s"] / 60, 2),
                    "steps": r["global_step"],
                    "ended_by_time_cap": schedule.get("ended_by_time_cap"),
                }
            )
            print(json.dumps(rows[-1], ensure_ascii=False), flush=True)
    summary = {}
    for name in sets:
        mine = [row for row in rows if row["set"] == name and not row["whole_word_mask"]]
        if mine:
            summary[name] = {
                "mean_reworded_top1": round(statistics.mean(r["reworded_top1"] for r in mine), 4),
                "min_reworded_top1": min(r["reworded_top1"] for r in mine),
                "mean_pipeline_top1": round(statistics.mean(r["pipeline_top1"] for r in mine), 4),
                "min_pipeline_top1": min(r["pipeline_top1"] for r in mine),
                "max_minutes": max(r["minutes"] for r in mine),
            }
    return {"rows": rows, "summary": summary, "machine": machine(), "busy": busy}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=300)
    p.add_argument(
        "--defaults", action="store_true", help="only the default-flags table over bench/prose/ and bench/corpora/"
    )
    p.add_argument("--set", choices=["all", *SETS], default="all", help="--defaults: which corpora")
    p.add_argument("--corpora", help="comma-separated corpus names for --defaults (default: all)")
    p.add_argument("--busy", action="store_true", help="--defaults: a second training process beside each run")
    p.add_argument("--compare-wwm", action="store_true", help="--defaults: each corpus with --whole-word-mask too")
    p.add_argument("--flags", default="", help="--defaults: extra flags for every run (tuning), e.g. '--seed 1'")
    a = p.parse_args()
    quiet_libraries()
    if a.defaults:
        with tempfile.TemporaryDirectory() as tmp:
            result = {
                "bench": "cloze.defaults",
                **defaults_table(
                    Path(tmp),
                    list(SETS) if a.set == "all" else [a.set],
                    a.corpora.split(",") if a.corpora else None,
                    a.busy,
                    a.compare_wwm,
                    a.flags.split(),
                ),
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
