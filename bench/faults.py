"""Fault injection: kill the training scripts at random moments, feed them bad files, count what survives.

    python bench/faults.py [--kills 20] [--seed 0] [--only chat,cloze,similarity]

1. Kills. For each script, a finished model is in `out`. Then, `--kills` times: a tiny run
   (one of two data variants, chosen at random, started with --overwrite) is stopped at a
   random moment of its life (start-up, training, evaluation, writing the model) by SIGKILL,
   or by SIGTERM/SIGINT, or at the two riskiest points of the publish step by the test hook
   (after the weights, between the renames). Then the same command runs again with --resume.
   Counted: a folder lost (no loadable model in `out` after that), a traceback (any run), and a
   wrong-model resume: the resumed model's vocabulary is not the one its data makes (a clean
   run of each variant is the reference), i.e. it continued another run's state.
2. Bad inputs: the bad-file corpus (deep JSON, YAML alias bombs, wrong config types, nan and
   huge labels, device files, over-long lines, binary, empty, missing, folders, wrong formats),
   each run under a 4 GiB memory limit and a 120 s cap. Counted: one-line refusals (exit 2),
   runs that skipped the bad rows and trained (exit 0), tracebacks, runaways (memory or time).
   Round 2 (issue #34) adds lone surrogates, out-of-range seeds, user dictionaries in GBK, binary
   or a FIFO, absurd model sizes, a model folder with its own code, an empty --output.
3. User files (`files`): a folder of the user's named like the publish step's aside folder, through a
   refused and an --overwrite run, and a data file inside the output folder: none may be lost. Round 3
   (issue #50) adds --output-file onto the data, --resume over a notes file, --predict inside the output,
   a user's own <output>.partial (with a states/ folder, and empty), --overwrite on a model folder from
   elsewhere; and to the bad inputs, non-finite and absurd option values, argparse's complaints, output
   files that are folders, and a run that diverges (it must fail in one line and publish nothing).

Prints one JSON line per category.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "data" / "samples"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "false"}
TINY = [
    "--model",
    "scratch",
    "--n-layer",
    "1",
    "--n-embd",
    "32",
    "--n-head",
    "2",
    "--max-len",
    "32",
    "--batch-size",
    "16",
    "--seed",
    "0",
    "--valid-ratio",
    "0.1",
]


def variants(tmp: Path) -> dict[str, tuple[list[str], list[str]]]:
    """Per script: the data flags of variant A (the whole sample) and B (a part: another vocabulary)."""

    def head(name: str, n: int, sep: str = "\n") -> Path:
        text = (SAMPLES / name).read_text(encoding="utf-8")
        path = tmp / f"part-{name}"
        path.write_text(sep.join(text.split(sep)[:n]) + "\n", encoding="utf-8")
        return path

    return {
        "chat": (["--data", str(SAMPLES / "dialogs.txt")], ["--data", str(head("dialogs.txt", 40, "\n\n"))]),
        "cloze": (["--data", str(SAMPLES / "cloze_corpus.txt")], ["--data", str(head("cloze_corpus.txt", 30))]),
        "similarity": (["--train", str(SAMPLES / "pairs.tsv")], ["--train", str(head("pairs.tsv", 80))]),
    }


EPOCHS = {"chat": "6", "cloze": "20", "similarity": "6"}


def command(script: str, data: list[str], out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        str(ROOT / "training" / f"{script}.py"),
        *data,
        *TINY,
        "--epochs",
        EPOCHS[script],
        "--output",
        str(out),
        *extra,
    ]


def loads(script: str, folder: Path) -> bool:
    code = {
        "chat": "from chat import ChatEngine as P",
        "cloze": "from chat.fill_mask import FillMaskPredictor as P",
        "similarity": "from chat.similarity import SimilarityPredictor as P",
    }[script]
    r = subprocess.run(
        [sys.executable, "-c", f"{code}; P.from_pretrained({str(folder)!r})"], env=ENV, capture_output=True, timeout=120
    )
    return r.returncode == 0


def vocab(folder: Path) -> str | None:
    try:
        return (folder / "vocab.txt").read_text(encoding="utf-8")
    except OSError:
        return None


def kills(script: str, n: int, rng: random.Random, tmp: Path) -> dict:
    work = tmp / script
    work.mkdir()
    a, b = variants(tmp)[script]
    reference = {}
    for name, data in (("A", a), ("B", b)):  # clean runs: their duration and their vocabulary
        t = time.perf_counter()
        r = subprocess.run(
            command(script, data, work / f"ref-{name}"), env=ENV, capture_output=True, text=True, timeout=600
        )
        assert r.returncode == 0, r.stderr[-2000:]
        reference[name] = (time.perf_counter() - t, vocab(work / f"ref-{name}"))
    out = work / "out"
    shutil.copytree(work / "ref-A", out)
    counts = {
        "bench": "faults.kills",
        "script": script,
        "cases": 0,
        "recovered": 0,
        "tracebacks": 0,
        "folders_lost": 0,
        "wrong_model_resumes": 0,
        "resumed": 0,
        "refused_in_one_line": 0,
        "ways": {},
    }
    for _ in range(n):
        name = rng.choice("AB")
        data = a if name == "A" else b
        how = rng.choice(["SIGKILL"] * 5 + ["SIGTERM", "SIGINT", "after_weights", "between_renames"])
        env = {**ENV, "TRAINING_TEST_CRASH_AT": how} if how in ("after_weights", "between_renames") else ENV
        proc = subprocess.Popen(
            command(script, data, out, "--overwrite"),
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        if how.startswith("SIG"):
            time.sleep(rng.uniform(0.3, 1.1) * reference[name][0])
            proc.send_signal(getattr(signal, how))
        try:
            _, err = proc.communicate(timeout=600)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        counts["cases"] += 1
        counts["ways"][how] = counts["ways"].get(how, 0) + 1
        r = subprocess.run(command(script, data, out, "--resume"), env=ENV, capture_output=True, text=True, timeout=600)
        for stage, text in (("killed run", err), ("resume", r.stderr)):
            if "Traceback" in text:
                counts["tracebacks"] += 1
                counts.setdefault("traceback_tails", []).append(
                    f"{how}, {stage}: {text.strip().splitlines()[-1][:200]}"
                )
        if r.returncode == 0:
            counts["resumed"] += 1
            counts["wrong_model_resumes"] += vocab(out) != reference[name][1]
        elif r.returncode == 2 and r.stderr.count("error:") == 1:
            counts["refused_in_one_line"] += 1
            # why, in a few words: a refusal that names our own files would be a fault, not a fine outcome
            reason = next(ln for ln in r.stderr.splitlines() if ln.startswith("error:")).split(str(out))[-1][:70]
            counts.setdefault("refusals", {})[reason] = counts.get("refusals", {}).get(reason, 0) + 1
        if out.is_dir() and loads(script, out):
            counts["recovered"] += 1
        else:
            counts["folders_lost"] += 1
            shutil.rmtree(out, ignore_errors=True)
            shutil.copytree(work / "ref-A", out)
        shutil.rmtree(work / "out.partial", ignore_errors=True)  # a refused resume leaves the other run: start clean
    return counts


def bad_inputs(tmp: Path) -> list[tuple[str, list[str]]]:
    """(name, command) for each bad input."""
    d = tmp / "bad"
    d.mkdir()

    def f(name: str, content: str | bytes) -> str:
        path = d / name
        path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
        return str(path)

    deep = "[" * 200_000 + "\n"
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefg", "bcdefgh")
    )
    folder = d / "a-folder"
    folder.mkdir()
    surrogates = '{"dialogue": ["\\ud800你好", "好\\udfff呀"]}\n' * 3
    fifo = str(d / "fifo.dict")
    os.mkfifo(fifo)
    # absurd sizes: the scratch chat model, without the tiny flags the other cases get
    scratch_chat = [
        sys.executable,
        str(ROOT / "training" / "chat.py"),
        "--data",
        str(SAMPLES / "dialogs.txt"),
        "--output",
        str(d / "out"),
        "--overwrite",
        "--model",
        "scratch",
    ]
    custom = d / "custom"  # a model folder that asks to run its own code
    custom.mkdir()
    (custom / "config.json").write_text('{"model_type": "bert", "auto_map": {"AutoModelForMaskedLM": "evil.M"}}')
    (custom / "evil.py").write_text("raise SystemExit('ran the code')\n")
    out = str(d / "out")
    chat, cloze, sim = (str(ROOT / "training" / f"{s}.py") for s in ("chat", "cloze", "similarity"))
    py = sys.executable
    cases = [
        ("chat deep jsonl", [py, chat, "--data", f("deep.jsonl", deep)]),
        ("chat deep json", [py, chat, "--data", f("deep.json", deep)]),
        ("cloze deep jsonl", [py, cloze, "--data", f("deep2.jsonl", deep)]),
        ("cloze --pairs deep", [py, cloze, "--pairs", "--data", f("deep3.jsonl", deep)]),
        ("similarity deep", [py, sim, "--train", f("deep4.jsonl", deep)]),
        (
            "similarity --predict deep",
            [py, sim, "--train", str(SAMPLES / "pairs.tsv"), "--predict", f("deep5.jsonl", deep)],
        ),
        (
            "config alias bomb",
            [py, cloze, "--config", f("bomb.yaml", bomb), "--data", str(SAMPLES / "cloze_corpus.txt")],
        ),
        ("config data list", [py, cloze, "--config", f("t1.yaml", "data: [1, 2]\n")]),
        (
            "config seed list",
            [py, chat, "--config", f("t2.yaml", "seed: [1, 2]\n"), "--data", str(SAMPLES / "dialogs.txt")],
        ),
        (
            "config epochs dict",
            [py, sim, "--config", f("t3.json", '{"epochs": {"a": 1}}'), "--train", str(SAMPLES / "pairs.tsv")],
        ),
        (
            "config deep yaml",
            [py, cloze, "--config", f("deep.yaml", deep), "--data", str(SAMPLES / "cloze_corpus.txt")],
        ),
        (
            "config not a mapping",
            [py, cloze, "--config", f("list.yaml", "- 1\n- 2\n"), "--data", str(SAMPLES / "cloze_corpus.txt")],
        ),
        ("labels nan/inf/1e400", [py, sim, "--train", f("nan.tsv", "a\tb\tnan\nc\td\tinf\ne\tf\t1e400\n")]),
        ("label 2000000000", [py, sim, "--train", f("huge.tsv", "今天\t明天\t2000000000\n今天\t昨天\t0\n")]),
        ("chat /dev/zero", [py, chat, "--data", "/dev/zero"]),
        ("cloze /dev/zero", [py, cloze, "--data", "/dev/zero"]),
        ("cloze 50 MB one line", [py, cloze, "--data", f("oneline.txt", "字" * 17_000_000)]),
        ("binary file", [py, cloze, "--data", f("bin.txt", bytes(range(256)) * 100)]),
        ("empty file", [py, chat, "--data", f("empty.txt", "")]),
        ("missing file", [py, chat, "--data", str(d / "nope.txt")]),
        ("a folder", [py, sim, "--train", str(folder)]),
        ("broken json lines", [py, chat, "--data", f("broken.jsonl", '{"dialogue": ["a", "b"\n[1, 2\n')]),
        ("one-utterance dialogues", [py, chat, "--data", f("one.txt", "你好\n\n在吗\n")]),
        ("bad yaml corpus", [py, chat, "--data", f("bad.yaml", "conversations: [[a, b]\n")]),
        ("yaml bomb corpus", [py, chat, "--data", f("bomb2.yaml", bomb)]),
        (
            "output under a file",
            [py, cloze, "--data", str(SAMPLES / "cloze_corpus.txt"), "--output", f("afile", "x") + "/m"],
        ),
        ("negative epochs", [py, chat, "--data", str(SAMPLES / "dialogs.txt"), "--epochs", "-1"]),
        ("truncated model for chat", [py, "-m", "chat", "--model", str(d / "trunc")]),
        (
            "prompts without masks",
            [py, cloze, "--data", str(SAMPLES / "cloze_corpus.txt"), "--eval-prompts", f("p.txt", "没有空位\t答\n")],
        ),
        ("GBK dialogue file", [py, chat, "--data", f("gbk.txt", "你好\n你好呀\n\n在吗\n在的\n".encode("gb18030"))]),
        # round 2 (issue #34)
        ("chat lone surrogates", [py, chat, "--data", f("sur.jsonl", surrogates)]),
        ("cloze lone surrogates", [py, cloze, "--data", f("sur2.jsonl", '{"text": "\\ud800你好你好你好你好"}\n' * 3)]),
        (
            "similarity lone surrogates",
            [py, sim, "--train", f("sur3.jsonl", '{"sentence1": "\\ud800你好", "sentence2": "好", "label": 1}\n' * 3)],
        ),
        ("seed -1", [py, chat, "--data", str(SAMPLES / "dialogs.txt"), "--seed", "-1"]),
        ("seed 2**40", [py, chat, "--data", str(SAMPLES / "dialogs.txt"), "--seed", "1099511627776"]),
        (
            "30-digit seed in a config",
            [
                py,
                cloze,
                "--config",
                f("seed.yaml", "seed: " + "9" * 30 + "\n"),
                "--data",
                str(SAMPLES / "cloze_corpus.txt"),
            ],
        ),
        (
            "user dict GBK",
            [
                py,
                cloze,
                "--data",
                str(SAMPLES / "cloze_corpus.txt"),
                "--user-dict",
                f("gbk.dict", "云栖岛 5\n".encode("gb18030")),
            ],
        ),
        (
            "user dict binary",
            [
                py,
                cloze,
                "--data",
                str(SAMPLES / "cloze_corpus.txt"),
                "--user-dict",
                f("bin.dict", bytes(range(256)) * 8),
            ],
        ),
        ("user dict FIFO", [py, cloze, "--data", str(SAMPLES / "cloze_corpus.txt"), "--user-dict", fifo]),
        ("n-embd 200000", [*scratch_chat, "--n-embd", "200000", "--n-head", "1"]),
        ("max-len 300000000", [*scratch_chat, "--max-len", "300000000"]),
        ("empty --output", [py, chat, "--data", str(SAMPLES / "dialogs.txt"), *TINY, "--epochs", "1", "--output", ""]),
        (
            "model folder with its own code",
            [
                py,
                cloze,
                "--data",
                str(SAMPLES / "cloze_corpus.txt"),
                "--model",
                str(custom),
                "--output",
                out,
                "--overwrite",
                "--epochs",
                "1",
            ],
        ),
        # round 3 (issue #50): non-finite and absurd values, argparse's complaints, output files, divergence
        *round3_cases(d, f, out),
    ]
    trunc = d / "trunc"
    trunc.mkdir()
    (trunc / "config.json").write_text('{"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}')
    (trunc / "model.safetensors").write_bytes(b'\x10\x00\x00\x00\x00\x00\x00\x00{"a":')
    return [
        (
            name,
            [
                *cmd,
                *(
                    ["--output", out, "--overwrite", *TINY, "--epochs", "1"]
                    if cmd[1] != "-m" and "--output" not in cmd
                    else []
                ),
            ],
        )
        for name, cmd in cases
    ]


def round3_cases(d: Path, f, out: str) -> list[tuple[str, list[str]]]:
    """Issue #50's bad inputs. Cases that name --output themselves get no tiny flags appended (bad_inputs)."""
    py = sys.executable
    chat, cloze, sim = (str(ROOT / "training" / f"{s}.py") for s in ("chat", "cloze", "similarity"))
    pairs, dialogs, corpus = (str(SAMPLES / n) for n in ("pairs.tsv", "dialogs.txt", "cloze_corpus.txt"))
    rows = [line.split("\t")[:2] for line in (SAMPLES / "pairs.tsv").read_text(encoding="utf-8").splitlines()[:60]]
    cycle = ["1e308", "-1", "nan", "2", "0", "1", "1.5", "99999999999999999999"]
    weird = f("weird.tsv", "".join(f"{a}\t{b}\t{cycle[i % 8]}\n" for i, (a, b) in enumerate(rows)))
    tiny_out = [*TINY, "--output", out, "--overwrite"]
    no_len = [a for a in TINY if a not in ("--max-len", "32")]
    cases = [
        ("similarity labels 1e308/-1/nan/1e20", [py, sim, "--train", weird]),
        ("pair file with text labels, 2 rows", [py, sim, "--train", f("foo.tsv", "a\tb\tfoo\nc\td\tbar\n")]),
        ("epochs inf", [py, chat, "--data", dialogs, *tiny_out, "--epochs", "inf"]),
        ("epochs 1e308", [py, chat, "--data", dialogs, *tiny_out, "--epochs", "1e308"]),
        (
            "batch size 1e12",
            [py, chat, "--data", dialogs, *tiny_out, "--batch-size", "1000000000000", "--max-steps", "5"],
        ),
        (
            "batch_size 1e12 in a config",
            [py, cloze, "--data", corpus, "--config", f("b.yaml", "batch_size: 1e12\n"), "--output", out],
        ),
        ("lora alpha -5", [py, cloze, "--data", corpus, "--lora", "--lora-alpha", "-5"]),
        ("logging steps -1", [py, cloze, "--data", corpus, "--logging-steps", "-1"]),
        ("format xml", [py, chat, "--data", dialogs, "--format", "xml"]),
        ("lr without a value", [py, chat, "--data", dialogs, "--lr"]),
        ("max-steps 1.5", [py, chat, "--data", dialogs, "--max-steps", "1.5"]),
        ("symmetric maybe", [py, sim, "--train", pairs, "--symmetric", "maybe"]),
        ("unknown flag", [py, sim, "--train", pairs, "--bogus", "3"]),
        (
            "output-file a folder",
            [py, sim, "--train", pairs, *tiny_out, "--max-steps", "3", "--predict", pairs, "--output-file", str(d)],
        ),
        (
            "output-file in a missing folder (made)",
            [
                py,
                sim,
                "--train",
                pairs,
                *tiny_out,
                "--max-steps",
                "3",
                "--predict",
                pairs,
                "--output-file",
                str(d / "new" / "p.jsonl"),
            ],
        ),
        *[
            (f"{name} max-len 20000000", [py, script, flag, data, *no_len, "--max-len", "20000000", "--output", out])
            for name, script, flag, data in (
                ("chat", chat, "--data", dialogs),
                ("similarity", sim, "--train", pairs),
                ("cloze", cloze, "--data", corpus),
            )
        ],
        (
            "chat n-layer 100000",
            [
                py,
                chat,
                "--data",
                dialogs,
                "--model",
                "scratch",
                "--n-layer",
                "100000",
                "--n-embd",
                "32",
                "--n-head",
                "2",
                "--output",
                out,
            ],
        ),
        (
            "weight decay 1e30 (diverges)",
            [py, cloze, "--data", corpus, *tiny_out, "--max-steps", "3", "--weight-decay", "1e30"],
        ),
    ]
    return cases


def _finite_weights(folder: Path) -> bool:
    import numpy as np
    from safetensors.numpy import load_file

    path = folder / "model.safetensors"
    return not path.is_file() or all(np.isfinite(t).all() for t in load_file(str(path)).values())


def _digest(path: Path) -> str | None:
    import hashlib

    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def round3_files(script: str, data: list[str], base: Path, counts: dict) -> None:
    """Issue #50's five ways to lose a file: --output-file onto the data, --resume over a notes file, an input inside
    the output (--predict), a user's own <output>.partial, --overwrite on a model folder from elsewhere."""
    out = base / "model"

    def attempt(path: Path, *extra: str, output: Path = out, argv: list[str] | None = None) -> None:
        before = {
            p: _digest(p) for p in ([path] if path.is_file() else sorted(path.rglob("*")) if path.is_dir() else [])
        }
        r = subprocess.run(
            argv or command(script, data, output, *extra), env=ENV, capture_output=True, text=True, timeout=600
        )
        counts["cases"] += 1
        counts["tracebacks"] += "Traceback" in r.stderr
        counts["not_refused"] += r.returncode != 2
        counts["user_files_lost"] += any(_digest(p) != h for p, h in before.items())

    notes = out / "my_notes.txt"
    notes.write_text("notes\n")
    attempt(notes, "--resume")
    notes.unlink()
    theirs = base / "theirs"
    (theirs / "states").mkdir(parents=True)
    (theirs / "states" / "ca.csv").write_text("1,2\n")
    partial = base / "mine.partial"
    shutil.copytree(theirs, partial)
    attempt(partial, "--overwrite", output=base / "mine")
    empty = base / "empty.partial"
    empty.mkdir()
    attempt(empty, "--overwrite", output=base / "empty")
    counts["user_files_lost"] += not empty.is_dir()
    foreign = base / "m8"
    foreign.mkdir()
    (foreign / "config.json").write_text("{}")
    (foreign / "thesis.docx").write_text("chapter 1\n")
    attempt(foreign, "--overwrite", output=foreign)
    if script == "similarity":
        mine = base / "mine.tsv"
        shutil.copy(data[1], mine)
        predict = ["--max-steps", "3", "--overwrite", "--predict", str(SAMPLES / "pairs.tsv")]
        attempt(mine, argv=command(script, ["--train", str(mine)], base / "m5", *predict, "--output-file", str(mine)))
        inside = out / "to_predict.tsv"
        shutil.copy(SAMPLES / "pairs.tsv", inside)
        attempt(inside, argv=command(script, data, out, "--overwrite", "--predict", str(inside)))


def user_files(tmp: Path) -> dict:
    """Issue #34's two ways to lose a user's files, for each script: a folder of the user's named like the
    publish step's aside folder (<output>.old-backup), through a refused run and an --overwrite run; and a
    data file inside the output folder (--overwrite). Counted: user files lost, runs not refused."""
    counts = {"bench": "faults.user_files", "cases": 0, "user_files_lost": 0, "not_refused": 0, "tracebacks": 0}
    data_a = variants(tmp)
    for script in ("chat", "cloze", "similarity"):
        base = tmp / f"files-{script}"
        out = base / "model"
        data = data_a[script][0]
        subprocess.run(command(script, data, out), env=ENV, capture_output=True, timeout=600)
        backup = base / "model.old-backup"
        shutil.copytree(out, backup)
        (backup / "notes.txt").write_text("mine\n")
        for extra in ([], ["--overwrite"]):
            counts["cases"] += 1
            r = subprocess.run(command(script, data, out, *extra), env=ENV, capture_output=True, text=True, timeout=600)
            counts["tracebacks"] += "Traceback" in r.stderr
            counts["user_files_lost"] += not (backup / "notes.txt").is_file()
        counts["cases"] += 1
        inside = out / f"mydata{Path(data[1]).suffix}"
        shutil.copy(data[1], inside)
        r = subprocess.run(
            command(script, [data[0], str(inside), *data[2:]], out, "--overwrite"),
            env=ENV,
            capture_output=True,
            text=True,
            timeout=600,
        )
        counts["tracebacks"] += "Traceback" in r.stderr
        counts["not_refused"] += r.returncode != 2
        counts["user_files_lost"] += not inside.is_file()
        inside.unlink(missing_ok=True)
        round3_files(script, data, base, counts)
    return counts


def _limit_memory():
    resource.setrlimit(resource.RLIMIT_AS, (4 * 2**30, 4 * 2**30))


def run_bad(tmp: Path) -> dict:
    counts = {
        "bench": "faults.bad_inputs",
        "cases": 0,
        "refused_in_one_line": 0,
        "trained_skipping_bad_rows": 0,
        "failed_in_one_line": 0,
        "tracebacks": 0,
        "runaways": 0,
        "non_finite_published": 0,
        "other": [],
    }
    out = tmp / "bad" / "out"
    for name, cmd in bad_inputs(tmp):
        counts["cases"] += 1
        try:
            r = subprocess.run(
                cmd, env=ENV, capture_output=True, text=True, timeout=120, input="你好\n", preexec_fn=_limit_memory
            )
        except subprocess.TimeoutExpired:
            counts["runaways"] += 1
            counts["other"].append(f"{name}: over 120 s")
            continue
        if "Traceback" in r.stderr or "MemoryError" in r.stderr:
            counts["tracebacks"] += 1
            counts["other"].append(f"{name}: {r.stderr.strip().splitlines()[-1][:160]}")
        elif r.returncode == 2 and r.stderr.count("error:") == 1:
            counts["refused_in_one_line"] += 1
        elif r.returncode == 1 and r.stderr.count("error:") == 1:  # trained, failed (diverged), published nothing
            counts["failed_in_one_line"] += 1
        elif r.returncode == 0:
            counts["trained_skipping_bad_rows"] += 1
            counts["non_finite_published"] += not _finite_weights(out)
        else:
            counts["runaways" if r.returncode < 0 else "tracebacks"] += 1
            counts["other"].append(f"{name}: exit {r.returncode}")
    return counts


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kills", type=int, default=20, help="kills per script (default 20)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--only", default="chat,cloze,similarity,bad,files", help="comma-separated: chat, cloze, similarity, bad, files"
    )
    a = p.parse_args()
    rng = random.Random(a.seed)
    with tempfile.TemporaryDirectory(prefix="faults_") as tmp:
        for part in a.only.split(","):
            t = time.perf_counter()
            if part == "bad":
                result = run_bad(Path(tmp))
            elif part == "files":
                result = user_files(Path(tmp))
            else:
                result = kills(part, a.kills, rng, Path(tmp))
            result["seconds"] = round(time.perf_counter() - t, 1)
            print(json.dumps(result, ensure_ascii=False), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
