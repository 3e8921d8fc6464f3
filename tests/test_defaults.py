"""Defaults that learn a new user's data (issue #15): the schedule rule, the convergence check, the
recurring-span finder and self-quiz, span masking, and a tiny scratch cloze run whose self-quiz rises."""

from __future__ import annotations

import json

import pytest

from data.spans import recurring_spans, self_quiz
from tests.conftest import ROOT, write
from training.cli import guarded
from training.schedule import Rule, amount, convergence_note, describe

RULE = Rule(min_steps=2000, min_passes=100, max_minutes=5, unit="lines")


@pytest.mark.parametrize(
    "items, per_epoch, seconds, steps, capped",
    [
        (30, 2, 0.01, 2000, False),  # tiny corpus: the step minimum decides (1,000 passes)
        (4000, 250, 0.02, 25000, True),  # large corpus: 100 passes are wanted, the 5-minute cap wins
        (4000, 250, 0.001, 25000, False),  # a fast machine does them all
    ],
)
def test_schedule_rule_sizes_by_data_and_machine(items, per_epoch, seconds, steps, capped):
    p = amount(RULE, items, per_epoch, seconds, None, None, None)
    assert p.capped == capped
    if capped:
        assert p.steps == int(5 * 60 / seconds) and p.steps < steps and "--max-minutes 5 caps it" in p.reason
    else:
        assert p.steps == steps
    assert p.epochs == pytest.approx(p.steps / per_epoch)
    line = describe(p, items, "lines")
    assert line.startswith(f"{items:,} lines -> {p.steps:,} steps") and "--max-steps/--epochs/--max-minutes" in line


def test_explicit_epochs_and_steps_win_over_the_rule():
    assert amount(RULE, 30, 2, 0.01, None, 3.0, None).steps == 6
    assert amount(RULE, 30, 2, 0.01, None, None, 50).epochs == 25
    assert (
        amount(Rule(10, 1, 5, max_passes=5), 1000, 100, None, None, None, None).steps == 100
    )  # max_passes caps passes


class _Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def _linear_schedule(total: int, warmup: int):
    import torch
    from transformers import get_linear_schedule_with_warmup

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    return get_linear_schedule_with_warmup(optimizer, warmup, total)


def _train(cap, state, seconds_per_step: float, steps: int, clock: _Clock, scheduler) -> None:
    from types import SimpleNamespace

    from transformers import TrainerControl

    args = SimpleNamespace(world_size=1, eval_strategy="no")
    cap.on_train_begin(args, state, TrainerControl())
    for _ in range(steps):
        clock.t += seconds_per_step
        state.global_step += 1
        cap.on_step_end(args, state, TrainerControl(), lr_scheduler=scheduler)


def test_a_time_capped_plan_is_fitted_to_the_real_step_time(monkeypatch):
    """The probe said 1,000 steps fit 10 s; real steps take 0.05 s: at 8% of the time the plan becomes the
    ~196 steps that fit, and the learning rate now falls to zero there. Faster steps than the probe said
    never raise it past what was asked for; another schedule is left alone."""
    from types import SimpleNamespace

    import training.callbacks as callbacks
    from training.callbacks import TimeCap

    clock = _Clock()
    monkeypatch.setattr(callbacks.time, "perf_counter", clock)
    monkeypatch.setattr(callbacks, "REPLAN_MIN_S", 0)
    state = SimpleNamespace(global_step=0, max_steps=1000, is_world_process_zero=True)
    scheduler = _linear_schedule(1000, 50)
    cap = TimeCap(100, budget_s=10, most_steps=1000)
    _train(cap, state, 0.05, 20, clock, scheduler)
    assert 190 <= state.max_steps <= 200 and cap.limited and not cap.hit
    lam = scheduler.lr_lambdas[0]
    assert lam(state.max_steps) == 0 and abs(lam(state.max_steps // 2) - 0.5) < 0.05
    assert lam.keywords["num_warmup_steps"] == round(50 * state.max_steps / 1000)

    clock.t, state = 0.0, SimpleNamespace(global_step=0, max_steps=1000, is_world_process_zero=True)
    cap = TimeCap(100, budget_s=10, most_steps=1000)
    _train(cap, state, 0.001, 900, clock, _linear_schedule(1000, 50))  # 10x faster than needed
    assert state.max_steps == 1000 and not cap.limited

    import torch

    clock.t, state = 0.0, SimpleNamespace(global_step=0, max_steps=1000, is_world_process_zero=True)
    constant = torch.optim.lr_scheduler.LambdaLR(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))]), lambda s: 1)
    cap = TimeCap(100, budget_s=10, most_steps=1000)
    _train(cap, state, 0.05, 20, clock, constant)
    assert state.max_steps == 1000  # the cap itself still stops it


def test_a_run_slowed_at_its_start_grows_its_plan_back_and_uses_its_time(monkeypatch):
    """Another program holds the CPU for the first second (0.2 s per step), then steps take 0.01 s: the
    8% check plans ~49 steps, which would end the run at 1.5 s of its 10; the plan is re-grown from the
    speed since that check (when it is about to run out, and at the later checks) and the run ends near
    the budget, never past what was asked for."""
    from types import SimpleNamespace

    from transformers import TrainerControl

    import training.callbacks as callbacks
    from training.callbacks import TimeCap

    clock = _Clock()
    monkeypatch.setattr(callbacks.time, "perf_counter", clock)
    monkeypatch.setattr(callbacks, "REPLAN_MIN_S", 0)
    state = SimpleNamespace(global_step=0, max_steps=1000, is_world_process_zero=True)
    scheduler = _linear_schedule(1000, 50)
    cap = TimeCap(100, budget_s=10, most_steps=1000)
    args = SimpleNamespace(world_size=1, eval_strategy="no")
    cap.on_train_begin(args, state, TrainerControl())
    low = state.max_steps
    while state.global_step < state.max_steps:  # the Trainer stops at state.max_steps
        clock.t += 0.2 if clock.t < 1.0 else 0.01
        state.global_step += 1
        cap.on_step_end(args, state, TrainerControl(), lr_scheduler=scheduler)
        low = min(low, state.max_steps)
    assert low < 60 and len(cap.replanned) >= 3  # cut at the 8% check, then grown back
    assert 8.5 <= clock.t <= 10 and state.max_steps <= 1000
    assert scheduler.lr_lambdas[0].keywords["num_training_steps"] == state.max_steps


@pytest.mark.slow
def test_a_run_whose_probe_was_wrong_is_re_planned_and_says_so(tmp_path, monkeypatch):
    """The probe claims steps 100x faster than they are: the run re-plans from its real steps, ends
    within its cap, and training_report.json records the start plan and the re-plan."""
    import training.callbacks as callbacks
    import training.plan as plan
    from training import cloze as cloze_script

    monkeypatch.setattr(callbacks, "REPLAN_MIN_S", 0)
    monkeypatch.setattr(plan, "measure_step", lambda *a, **k: 1e-4)
    corpus = write(tmp_path / "facts.txt", "\n".join(FACTS) + "\n")
    out = tmp_path / "out"
    argv = ["--data", str(corpus), "--output", str(out), "--model", "scratch", "--n-layer", "1", "--n-embd", "64"]
    assert guarded(cloze_script.main, argv + ["--n-head", "2", "--max-len", "32", "--max-minutes", "0.1"]) == 0
    s = json.loads((out / "training_report.json").read_text(encoding="utf-8"))["schedule"]
    assert s["probed_seconds_per_step"] == 1e-4 and s["planned_steps"] >= 8000 and s["budget_s"] == 6
    assert s["replanned"] and s["replanned"][0]["steps"] < s["planned_steps"]
    assert s["steps_trained"] <= s["replanned"][-1]["steps"] and s["time_cap_s"] == 6


def test_a_time_cap_hit_evaluates_and_saves_its_last_step_once(tmp_path, monkeypatch):
    """Per-epoch evaluation: the cap evaluates and saves the step it stops at, and the Trainer then ends the
    epoch it broke out of, whose default flow asked for the same evaluation and save again."""
    import time

    from transformers import TrainerCallback

    import training.plan as plan
    from tests.conftest import SAMPLES
    from training import similarity as sim_script

    class Slow(TrainerCallback):  # steps of 50 ms or more: the 1.2 s cap hits before three epochs of 27 steps
        evals, saves = [], []

        def on_step_end(self, args, state, control, **kw):
            time.sleep(0.05)

        def on_evaluate(self, args, state, control, **kw):
            self.evals.append(state.global_step)

        def on_save(self, args, state, control, **kw):
            self.saves.append(state.global_step)

    monkeypatch.setattr(plan, "measure_step", lambda *a, **k: 1e-4)  # the plan keeps its 3 epochs
    out = tmp_path / "out"
    argv = ["--train", str(SAMPLES / "pairs.tsv"), "--output", str(out), "--no-mlm-stage", "--epochs", "3"]
    argv += ["--model", "scratch", "--n-layer", "1", "--n-embd", "32", "--n-head", "2", "--max-len", "32"]
    assert guarded(lambda a: sim_script.main(a, callbacks=[Slow()]), argv + ["--max-minutes", "0.02"]) == 0
    s = json.loads((out / "training_report.json").read_text(encoding="utf-8"))["schedule"]
    assert s["ended_by_time_cap"] and Slow.evals and Slow.saves
    assert len(Slow.evals) == len(set(Slow.evals)) and len(Slow.saves) == len(set(Slow.saves))


def test_the_progress_bar_follows_a_re_plan():
    from types import SimpleNamespace

    from transformers import TrainerControl

    from training.callbacks import QuietProgress

    bar = QuietProgress()
    state = SimpleNamespace(is_world_process_zero=True, max_steps=1000, global_step=0)
    bar.on_train_begin(None, state, TrainerControl())
    state.global_step, state.max_steps = 10, 200
    bar.on_step_end(None, state, TrainerControl())
    assert bar.training_bar.total == 200 and bar.training_bar.n == 10
    bar.training_bar.close()


def test_convergence_note_says_when_a_run_learned_nothing_or_needs_more():
    log = lambda losses: [{"loss": v, "step": i} for i, v in enumerate(losses)]  # noqa: E731
    assert "learned nothing" in convergence_note(log([0.70] * 40), 40, False)
    falling = [5.0 - 0.1 * i for i in range(40)]
    assert "still falling" in convergence_note(log(falling), 40, True) and "--max-minutes" in convergence_note(
        log(falling), 40, True
    )
    assert convergence_note(log(falling), 40, False, valid_improving=False) is None  # overfitting, not unfinished
    settled = [5.0 * 0.8**i + 1.0 for i in range(60)]
    assert convergence_note(log(settled), 60, False) is None


FACTS = [
    "万俟小禾是栗子坡的铁匠。",
    "栗子坡的铁匠叫万俟小禾，手艺很好。",
    "大家都说万俟小禾打的刀最锋利。",
    "万俟小禾每天清早生火打铁。",
    "雾凇岭出产一种叫冰晶梨的水果。",
    "冰晶梨只长在雾凇岭的山坡上。",
    "每年十月，雾凇岭的冰晶梨成熟了。",
    "游客来雾凇岭就为了吃冰晶梨。",
    "今天天气不错，我们去散步。",
    "晚饭吃了面条。",
    "栗子坡在一条小河边。",
]


def test_recurring_spans_are_the_names_not_their_pieces_or_function_words():
    spans = recurring_spans(FACTS)
    for name in ("万俟小禾", "栗子坡", "雾凇岭", "冰晶梨"):
        assert name in spans, spans
    assert not any(piece in spans for piece in ("万俟", "小禾", "冰晶", "晶梨", "凇岭"))
    assert not any(s[0] in "的是了" or s[-1] in "的是了" for s in spans)
    assert spans["冰晶梨"] == 4


def test_self_quiz_probes_recurring_words_in_held_out_lines():
    spans = recurring_spans(FACTS)
    held, probes = self_quiz(FACTS, spans, hold_share=0.3)
    assert probes and {p.answer for p in probes} <= set(spans)
    for p in probes:
        assert "[MASK]" * len(p.answer) in p.text and p.answer not in p.text
        line = int(p.where.split()[1]) - 1
        assert FACTS[line].replace(p.answer, "[MASK]" * len(p.answer), 1) == p.text
        if p.held_out:
            assert line in held
            assert sum(p.answer in f for i, f in enumerate(FACTS) if i not in held) >= 2  # still taught twice
    assert any(p.held_out for p in probes) and len(held) <= 0.3 * len(FACTS)


def _masked_runs(row: list[str]) -> list[tuple[int, int]]:
    runs, start = [], None
    for i, token in enumerate(row + ["x"]):
        if token == "[MASK]" and start is None:
            start = i
        elif token != "[MASK]" and start is not None:
            runs.append((start, i))
            start = None
    return runs


def test_span_masking_masks_one_recurring_name_whole_or_from_a_prefix():
    from data import build_char_vocab, make_tokenizer
    from training.tasks.cloze.masking import ClozeCollator, encode_passages
    from training.tasks.cloze.options import ClozeArguments

    tokenizer = make_tokenizer(build_char_vocab(FACTS))
    args = ClozeArguments(data="x", span_probability=1.0, mlm_probability=1e-9)
    spans = recurring_spans(FACTS)
    line = FACTS[1]  # 栗子坡的铁匠叫万俟小禾，手艺很好。: two recurring spans, 栗子坡的铁匠 and 万俟小禾
    collator = ClozeCollator(tokenizer, args, seed=0)
    seen = set()
    for _ in range(40):
        batch = collator(encode_passages(tokenizer, [line], 64, 16, False, spans))
        row = tokenizer.convert_ids_to_tokens(batch["input_ids"][0])
        masked = "".join(ch for ch, label in zip(line, batch["labels"][0][1:-1].tolist()) if label != -100)
        runs = _masked_runs(row)
        assert len(runs) == 1, row  # one span per example, never two: the other is the context that states the fact
        a, b = runs[0]
        span = next(s for s in ("万俟小禾", "栗子坡的铁匠") if masked and s.endswith(masked))
        assert (
            line[a - 1 : b - 1] == masked and line.index(span) + len(span) == b - 1
        )  # a suffix of the span, up to its end
        seen.add((span, len(masked) == len(span)))
    assert seen == {("万俟小禾", True), ("万俟小禾", False), ("栗子坡的铁匠", True), ("栗子坡的铁匠", False)}


def test_recombined_views_keep_the_names_and_vary_the_words_between():
    from data import build_char_vocab, make_tokenizer
    from training.tasks.cloze.masking import TrainingViews, encode_passages

    tokenizer = make_tokenizer(build_char_vocab(FACTS))
    spans = recurring_spans(FACTS)
    views = TrainingViews(
        encode_passages(tokenizer, FACTS, 64, 16, False, spans), seed=0, recombine=1.0, unk_id=tokenizer.unk_token_id
    )
    line = 1  # 栗子坡的铁匠叫万俟小禾，手艺很好。
    texts, orders = set(), set()
    for _ in range(60):
        v = views[line]
        assert v["mask_span"] in set(v["span_ids"]) - {0}
        text = "".join(tokenizer.convert_ids_to_tokens(v["input_ids"][1:-1]))
        assert "万俟小禾" in text and "栗子坡" in text  # names whole, whatever happens around them
        assert len(v["input_ids"]) == len(v["span_ids"]) == len(v["special_tokens_mask"])
        texts.add(text)
        orders.add(text.index("万俟小禾") < text.index("栗子坡"))
    assert orders == {True, False} and len(texts) > 30 and any("[UNK]" in t for t in texts)
    plain = FACTS.index("晚饭吃了面条。")  # no recurring span: left as written or cropped, never recombined
    assert all("mask_span" not in views[plain] for _ in range(20))


def test_bag_views_keep_one_name_whole_masked_and_some_of_its_words_in_any_order():
    from data import build_char_vocab, make_tokenizer
    from training.tasks.cloze.masking import TrainingViews, encode_passages

    tokenizer = make_tokenizer(build_char_vocab(FACTS))
    spans = recurring_spans(FACTS)
    views = TrainingViews(encode_passages(tokenizer, FACTS, 64, 16, False, spans), seed=0, crop=0.0, bag=1.0)
    line = 1  # 栗子坡的铁匠叫万俟小禾，手艺很好。
    whole = "".join(tokenizer.convert_ids_to_tokens(views.examples[line]["input_ids"][1:-1]))
    texts, masked = set(), set()
    for _ in range(80):
        v = views[line]
        if "mask_span" not in v:  # too little left around the name: the line as written instead
            continue
        ids, span_ids = v["input_ids"][1:-1], v["span_ids"][1:-1]
        target = [t for t, k in zip(ids, span_ids) if k == v["mask_span"]]
        name = "".join(tokenizer.convert_ids_to_tokens(target))
        masked.add(name)
        text = "".join(tokenizer.convert_ids_to_tokens(ids))
        assert name in whole and name in text and len(text) < len(whole)  # the name whole, words left out
        assert len(v["input_ids"]) == len(v["span_ids"]) == len(v["special_tokens_mask"])
        texts.add(text)
    assert len(masked) >= 2 and len(texts) > 40  # each name of the line in turn, the rest shuffled and thinned
    plain = FACTS.index("晚饭吃了面条。")  # no recurring span: left as written
    assert all("mask_span" not in views[plain] for _ in range(20))


def test_a_fact_corpus_trains_a_rotary_model_and_pairs_stay_bert():
    from training.tasks.cloze.options import ClozeArguments

    assert ClozeArguments(data="x").scratch_architecture == "roformer"
    assert ClozeArguments(data="x", pairs=True).scratch_architecture == "bert"


@pytest.mark.slow
def test_a_tiny_scratch_cloze_run_raises_its_self_quiz_recall(tmp_path):
    # 1,000 steps: at 600, one seed in two or four recalled nothing (5 probes; seeds 0-3, before and after the
    # batched masking of 2026-12-07), at 1,000 all four recalled 1-5 of them
    from training import cloze as cloze_script

    corpus = write(tmp_path / "facts.txt", "\n".join(FACTS) + "\n")
    out = tmp_path / "out"
    assert (
        guarded(
            cloze_script.main,
            [
                "--data",
                str(corpus),
                "--output",
                str(out),
                "--model",
                "scratch",
                "--n-layer",
                "1",
                "--n-embd",
                "128",
                "--n-head",
                "4",
                "--max-len",
                "32",
                "--max-steps",
                "1000",
                "--lr",
                "2e-3",
                "--seed",
                "0",
            ],
        )
        == 0
    )
    r = json.loads((out / "training_report.json").read_text(encoding="utf-8"))
    quiz = r["self_quiz"]
    assert quiz["probes"] >= 4 and quiz["recall_before"] == 0
    assert quiz["recall_after"] > quiz["recall_before"] and quiz["curve"]
    assert r["metrics_line"].startswith(f"recalls {quiz['recalled']} of {quiz['probes']} probed facts")


@pytest.mark.parametrize("folder", ["corpora", "prose"])
def test_corpora_written_for_the_bench_hold_their_facts_and_ask_in_other_words(folder):
    """Every bench corpus has a prompt file whose rows read cleanly, each answer said in the corpus, each
    prompt (issue #35, prose) sharing no 6-character run with it."""
    from data.corpus import read_corpus, read_prompts

    corpora = sorted(p for p in (ROOT / "bench" / folder).glob("*.txt") if not p.name.endswith(".prompts.txt"))
    assert len(corpora) >= 5
    for corpus in corpora:
        text = "\n".join(read_corpus(corpus).passages)
        prompts, bad = read_prompts(corpus.with_name(corpus.stem + ".prompts.txt"))
        assert bad.count == 0 and len(prompts) >= 8, corpus.name
        for item in prompts:
            assert item.answer in text, (corpus.name, item.answer)
            if folder == "prose":
                words = item.text.replace("[MASK]", "\x00")
                runs = {words[i : i + 6] for i in range(len(words) - 5) if "\x00" not in words[i : i + 6]}
                assert not any(run in text for run in runs), (corpus.name, item.text)


def test_a_max_minutes_given_with_epochs_caps_them():
    p = amount(RULE, 30, 2, 1.0, 0.5, 100.0, None)  # 200 steps at 1 s would take 200 s; 30 s allowed
    assert p.steps == 30 and p.capped and "capped by --max-minutes 0.5" in p.reason
    assert amount(RULE, 30, 2, 1.0, 10, 100.0, None).steps == 200  # fits: the epochs as given


def test_bf16_is_used_only_where_it_is_fast(monkeypatch, tmp_path):
    from data import precision

    epyc = write(tmp_path / "cpuinfo-epyc", "flags\t\t: fpu avx2 avx512f avx512bw avx512_vnni\n")
    zen4 = write(tmp_path / "cpuinfo-zen4", "flags\t\t: fpu avx2 avx512f avx512_bf16 avx512_vnni\n")
    sapphire = write(tmp_path / "cpuinfo-spr", "flags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8\n")
    assert [precision.cpu_bf16_support(str(p)) for p in (epyc, zen4, sapphire)] == [None, "AVX512-BF16", "AMX"]
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    for cpuinfo, amx in ((epyc, False), (zen4, True), (sapphire, True)):
        monkeypatch.setattr(precision.cpu_bf16_support, "__defaults__", (str(cpuinfo),))
        said = []
        assert precision.resolve_bf16("auto", said.append) is amx
        assert len(said) == (0 if amx else 1)  # one note, only when falling back to fp32
        assert amx or ("no bf16 instructions" in said[0] and "--bf16 force" in said[0])
        assert precision.resolve_bf16("force", said.append) and not precision.resolve_bf16("no", said.append)
    assert [precision.bf16_mode(v) for v in (None, True, "true", "", "force", "no")] == [
        "no",
        "auto",
        "auto",
        "no",
        "force",
        "no",
    ]
    with pytest.raises(ValueError):
        precision.bf16_mode("maybe")


def test_help_shows_dashed_flags_and_one_default_each():
    import re
    import subprocess
    import sys

    for script in ("chat", "cloze", "similarity", "classify", "write"):
        out = subprocess.run(
            [sys.executable, f"training/{script}.py", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120
        ).stdout
        usage, options = out.split("\n\n")[0], out.split("options:")[1]
        assert "--max-len" in usage and "--max_len" not in usage
        blocks = re.split(r"\n  (?=-)", options)  # one block per option
        assert len(blocks) > 20 and all(b.count("(default") <= 1 for b in blocks), [
            b for b in blocks if b.count("(default") > 1
        ]
        assert "(default: None)" not in out


def test_step_time_is_probed_on_a_batch_of_typical_length():
    """Training batches group similar lengths, so the probe must not pad a random batch to its longest item."""
    import torch

    from training.schedule import measure_step

    widths = []

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(1))

        def forward(self, input_ids):
            widths.append(input_ids.shape[1])
            return type("Out", (), {"loss": (self.w * input_ids.float()).mean()})()

    lengths = [8] * 180 + [120] * 20  # mostly short, a few long ones
    dataset = [{"input_ids": [1] * n} for n in lengths]

    def collate(items):
        longest = max(len(x["input_ids"]) for x in items)
        return {"input_ids": torch.tensor([e["input_ids"] + [0] * (longest - len(e["input_ids"])) for e in items])}

    measure_step(Model(), collate, dataset, batch_size=8)
    assert widths and set(widths) == {8}


def test_the_quiz_stops_a_run_only_late_and_only_once_it_stopped_rising():
    """The self-quiz saturates long before prompts in new words are answered: a flat quiz does not stop
    the run before QUIZ_STOP_AFTER of its planned steps, and does once past it."""
    from types import SimpleNamespace

    from transformers import TrainerControl

    from training.tasks.cloze.mlm import QUIZ_STOP_AFTER, QuizProgress

    progress = QuizProgress(None, ["probe"], lambda model, tok, items: [{"hit": True}], patience=2)
    state = SimpleNamespace(global_step=0, max_steps=1000)
    model = SimpleNamespace(training=True, train=lambda mode=True: None)
    stopped_at = None
    for step in range(100, 1001, 100):
        state.global_step, control = step, TrainerControl()
        progress.on_evaluate(None, state, control, model=model)
        if control.should_training_stop:
            stopped_at = step
            break
    assert stopped_at == int(QUIZ_STOP_AFTER * 1000) and QUIZ_STOP_AFTER >= 0.8


def _model_answering_by_position(tok, answers: dict[int, str]):
    """A real BertForMaskedLM whose top-1 at position p is answers[p]: no layers, each position's
    embedding points at one hidden unit, and the decoder row of the token to answer there reads it."""
    import torch
    from transformers import BertConfig, BertForMaskedLM

    h = 32
    config = BertConfig(
        vocab_size=len(tok), hidden_size=h, num_hidden_layers=0, num_attention_heads=1, intermediate_size=h,
        max_position_embeddings=16, tie_word_embeddings=False,
    )  # fmt: skip
    model = BertForMaskedLM(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        for norm in (model.bert.embeddings.LayerNorm, model.cls.predictions.transform.LayerNorm):
            norm.weight.fill_(1.0)
        model.cls.predictions.transform.dense.weight.copy_(torch.eye(h))
        for pos in range(16):
            model.bert.embeddings.position_embeddings.weight[pos, pos] = 5.0
            model.bert.embeddings.position_embeddings.weight[pos, pos + 16] = -5.0
        for pos, token in answers.items():
            model.cls.predictions.decoder.weight[tok.convert_tokens_to_ids(token), pos] = 10.0
    return model


def test_an_answer_with_latin_letters_counts_as_the_uncased_model_writes_it():
    """BERT's Chinese vocab lowercases: a model that learned 补给船Q-19 answers `q-19` in word pieces
    (q, -, 1, ##9). Both quizzes count that as right; a wrong answer stays wrong."""
    from data.corpus import ClozePrompt
    from data.vocab import make_tokenizer
    from training.tasks.cloze.mlm import joint_quiz, quiz, same_answer

    tok = make_tokenizer(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "补", "给", "船", "是", "q", "-", "1", "##9"])
    assert tok.tokenize("Q-19") == ["q", "-", "1", "##9"]
    assert same_answer("q-19", "Q-19", tok) and same_answer("q - 19", "Q-19", tok)
    assert not same_answer("q-1", "Q-19", tok) and not same_answer("Q-19", "q-19", object())  # cased: exact

    # [CLS] 补 给 船 是 then the masks at positions 5-8
    model = _model_answering_by_position(tok, {5: "q", 6: "-", 7: "1", 8: "##9"})
    prompts = [
        ClozePrompt("补给船是[MASK][MASK][MASK][MASK]", "Q-19", "quiz.txt:1"),
        ClozePrompt("补给船是[MASK][MASK][MASK]", "Q-1", "quiz.txt:2"),
        ClozePrompt("补给船是[MASK][MASK]", "1-", "quiz.txt:3"),  # the model says q-: a miss
    ]
    rows = quiz(model, tok, prompts)
    assert [(r["top1"], r["hit"]) for r in rows] == [("q-19", True), ("q-1", True), ("q-", False)]
    assert [r["hit"] for r in joint_quiz(model, tok, prompts)] == [True, True, False]


def test_codes_with_latin_letters_and_digits_are_recurring_names_and_probed_piece_by_piece():
    """Q-19 and B2 name things as 栗子坡 does; a year's digits alone are no fact. A probe gets one
    [MASK] per word piece of the tokenizer it is asked with."""
    from data.vocab import make_tokenizer
    from training.tasks.cloze.recipe import probe_prompts

    lines = [
        "补给船Q-19每三个月来一次。",
        "大家都在等Q-19带来的信。",
        "上一次Q-19晚到了两天。",
        "仓库在B2层，1987年建成。",
        "备用零件放在B2层。",
        "B2层的灯是1990年换的。",
        "1999年冬天下了大雪。",
        "老周在仓库已经12年了。",
        "小吴在仓库已经15年了。",
    ]
    spans = recurring_spans(lines)
    assert spans.get("Q-19") == 3 and "B2层" in spans, spans
    for s in spans:  # no amounts or dates (12年, 1987), no pieces of them (已经1), no dangling hyphen
        assert s[0] != "-" != s[-1], spans
        assert not any(c.isdigit() for c in s) or any(c.isascii() and c.isalpha() for c in s), spans

    _, probes = self_quiz(lines, {"Q-19": 3})
    assert probes[0].text.count("[MASK]") == 4  # one per character, as written
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = make_tokenizer(specials + ["q", "-", "1", "##9"])
    words = make_tokenizer(specials + ["q", "-", "19"])  # bert-base-chinese reads 19 as one piece
    for tok, masks in ((chars, 4), (words, 3)):
        (prompt,) = probe_prompts(probes, tok)
        assert prompt.text.count("[MASK]") == masks == len(tok.tokenize("Q-19")) and prompt.answer == "Q-19"
        assert prompt.text.replace("[MASK]" * masks, "Q-19") in lines


def test_the_quiz_never_stops_a_run_that_has_not_started_to_recall():
    """A quiz at 0% for many evaluations has no plateau yet (seen: a busy run stopped at 0 of 30)."""
    import types

    from training.tasks.cloze.mlm import QuizProgress

    scores = iter([0.0] * 6 + [0.2] * 6)
    quizzer = QuizProgress(None, ["x"], lambda m, t, items: [{"hit": next(scores) > 0}], patience=2)
    state = types.SimpleNamespace(global_step=90, max_steps=100)
    stops = []
    for _ in range(12):
        control = types.SimpleNamespace(should_training_stop=False)
        model = types.SimpleNamespace(training=True, train=lambda was: None)
        quizzer.on_evaluate(None, state, control, model=model)
        stops.append(control.should_training_stop)
    assert stops[:6] == [False] * 6  # at 0: never
    assert stops[6] is False and any(stops[7:])  # at 20% without improving for 2 evaluations: stops


def test_views_are_grouped_by_the_lengths_drawn_for_the_pass_and_each_pass_draws_anew():
    from transformers.trainer_pt_utils import LengthGroupedSampler

    from data import build_char_vocab, make_tokenizer
    from training.sampling import GroupedBatches
    from training.tasks.cloze.masking import TrainingViews, encode_passages

    lines = [FACTS[i % len(FACTS)] * (1 + i % 3) for i in range(400)]  # windows of three lengths
    tokenizer = make_tokenizer(build_char_vocab(FACTS))
    spans = recurring_spans(FACTS)

    def views():
        return TrainingViews(encode_passages(tokenizer, lines, 64, 16, False, spans), seed=0, crop=0.5, bag=0.5)

    def padding(views, order):  # the share of padding in batches of 8 of the items as the collator gets them
        served = [len(views[i]["input_ids"]) for i in order]
        batches = [served[k : k + 8] for k in range(0, len(served), 8)]
        return sum(max(b) * len(b) - sum(b) for b in batches) / sum(max(b) * len(b) for b in batches)

    library = views()
    drawn_twice = padding(library, list(LengthGroupedSampler(8, dataset=library)))
    ours, passes = views(), []
    sampler = GroupedBatches(ours, batch_size=8)
    for _ in range(2):
        order = list(sampler)
        assert sorted(order) == list(range(len(lines)))  # every window once a pass
        assert padding(ours, order) < min(0.15, drawn_twice / 2), (padding(ours, order), drawn_twice)
        passes.append([ours[i]["input_ids"] for i in order])
    assert passes[0] != passes[1]  # new crops and bags each pass
