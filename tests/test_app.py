"""The Gradio app, launched for real and driven through gradio_client (and a browser in test_app_browser)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.conftest import ROOT, SAMPLES, write
from training import classify as classify_script
from training import cloze as cloze_script
from training import similarity as sim_script
from training.cli import guarded

TINY_BERT = [
    "--model",
    "scratch",
    "--n-layer",
    "1",
    "--n-embd",
    "64",
    "--n-head",
    "2",
    "--max-len",
    "48",
    "--seed",
    "0",
]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, chat_checkpoint) -> Path:
    """checkpoints/ with one tiny model per tab, written by the real training scripts."""
    root = tmp_path_factory.mktemp("app") / "checkpoints"
    shutil.copytree(chat_checkpoint, root / "chat")
    assert (
        guarded(
            cloze_script.main,
            [
                "--data",
                str(SAMPLES / "cloze_corpus.txt"),
                "--output",
                str(root / "mine" / "cloze"),
                *TINY_BERT,
                "--epochs",
                "2",
            ],
        )
        == 0
    )
    assert (
        guarded(
            sim_script.main,
            ["--train", str(SAMPLES / "pairs.tsv"), "--output", str(root / "similarity"), *TINY_BERT, "--epochs", "2"],
        )
        == 0
    )
    reviews = str(SAMPLES / "reviews.csv")
    argv = ["--data", reviews, "--output", str(root / "classify"), *TINY_BERT, "--epochs", "3", "--valid-ratio", "0.2"]
    assert guarded(classify_script.main, argv) == 0
    config = json.loads((root / "similarity" / "config.json").read_text())
    config["decision_threshold"] = 0.7  # a tuned threshold away from 0.5: verdict and chart must still agree
    (root / "similarity" / "config.json").write_text(json.dumps(config))
    (root / "notes").mkdir()  # not a model: ignored
    write(root / "notes" / "todo.txt", "train a bigger model\n")
    shutil.copytree(root / "chat", root / "old.partial")  # an interrupted run: ignored
    return root


def launch(settings):
    import app

    demo = app.build_demo(settings)
    demo.launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True, **app.SERVE_OPTIONS)
    return demo


@pytest.fixture(scope="module")
def served(checkpoints):
    import app

    demo = launch(app.Settings(checkpoints=str(checkpoints), concurrency=4))
    yield demo
    demo.close()


def client(demo):
    from gradio_client import Client

    return Client(demo.local_url, verbose=False)


def said(chatbot) -> list[tuple[str, str]]:
    """(role, text) per message of a Chatbot value as the client receives it."""
    return [(m["role"], "".join(part.get("text", "") for part in m["content"])) for m in chatbot]


def test_import_is_cheap_and_loads_nothing():
    code = "import sys, app; print(sorted(m for m in ('torch', 'transformers', 'gradio') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


@pytest.mark.slow
def test_checkpoints_are_found_per_task(checkpoints):
    from webui.store import find_checkpoints

    found = find_checkpoints(str(checkpoints))
    assert [c.label for c in found["chat"]] == ["chat"]
    assert [c.label for c in found["cloze"]] == [os.path.join("mine", "cloze")]
    assert [c.label for c in found["similarity"]] == ["similarity"]
    assert [c.label for c in found["classify"]] == ["classify"]  # a sequence classifier, told apart by its report
    missing = find_checkpoints(str(checkpoints / "missing"))
    assert missing == {"chat": [], "cloze": [], "similarity": [], "classify": [], "write": []}


def test_each_tab_answers(served, checkpoints):
    from chat.engine import ChatEngine

    c = client(served)
    chatbot, box = c.predict("你好", temperature=0, api_name="/chat")
    turns = said(chatbot)
    # the model's own greedy reply, not the tab's "……" for an empty one (a reply is never empty now)
    want = ChatEngine.from_pretrained(str(checkpoints / "chat")).reply([], "你好", temperature=0)
    assert turns == [("user", "你好"), ("assistant", want)] and want
    assert box == ""

    filled, table = c.predict("周小满研究的动物是蝴[MASK]。", top_k=3, joint=True, api_name="/fill_mask")
    assert "Most likely" in filled and len(table["data"]) == 3
    assert all(0 <= row[2] <= 1 for row in table["data"])

    verdict, label = c.predict("花呗怎么还款", "花呗如何还钱", api_name="/similarity")
    assert "p(相同 same)" in verdict
    assert {x["label"] for x in label["confidences"]} == {"相同 same", "不同 different"}
    assert abs(sum(x["confidence"] for x in label["confidences"]) - 1) < 1e-3


def test_model_work_runs_on_the_one_compute_thread(served, checkpoints, monkeypatch):
    """Loads, predictions and decode steps all run on chat/compute.py's thread: a second thread that runs torch
    slows every step of the first (a second OpenMP team)."""
    from chat.batching import ContinuousBatcher
    from chat.fill_mask import FillMaskPredictor
    from chat.similarity import SimilarityPredictor
    from webui.store import ModelStore

    seen = []

    def spy(original):
        def wrapped(*args, **kwargs):
            seen.append(threading.current_thread().name)
            return original(*args, **kwargs)

        return wrapped

    monkeypatch.setattr(FillMaskPredictor, "predict", spy(FillMaskPredictor.predict))
    monkeypatch.setattr(ContinuousBatcher, "turn", spy(ContinuousBatcher.turn))
    monkeypatch.setattr(SimilarityPredictor, "from_pretrained", spy(SimilarityPredictor.from_pretrained))
    c = client(served)
    c.predict("你好", temperature=0, api_name="/chat")
    c.predict("周小满研究的动物是蝴[MASK]。", top_k=3, joint=True, api_name="/fill_mask")
    ModelStore().get("similarity", str(checkpoints / "similarity"))
    assert len(seen) >= 3 and set(seen) == {"compute"}


def test_the_classify_tab_labels_a_text_and_a_file_of_them(served, tmp_path):
    from gradio_client import handle_file

    c = client(served)
    label = c.predict("快递三天才到，盒子都压扁了", api_name="/classify")
    assert {x["label"] for x in label["confidences"]} <= {"价格", "服务", "物流", "质量"}  # the sample's own labels
    assert label["label"] in {"价格", "服务", "物流", "质量"}
    texts = write(tmp_path / "texts.txt", "快递太慢\n\n客服态度很差\n")
    out = c.predict(handle_file(str(texts)), "classify", api_name="/classify_file")
    rows = open(out, encoding="utf-8-sig").read().splitlines()
    assert rows[0] == "text,label,probability" and len(rows) == 3 and rows[1].startswith("快递太慢,")


@pytest.mark.slow
def test_the_similarity_verdict_and_its_chart_agree_on_every_sample_pair(served):
    """One scale (issue #38): the chart's top class is the verdict's class, with a tuned threshold of 0.7."""
    import csv

    c = client(served)
    rows = list(csv.reader(open(SAMPLES / "pairs.tsv", encoding="utf-8"), delimiter="\t"))[:50]
    verdicts = []
    for a, b, *_ in rows:
        verdict, label = c.predict(a, b, api_name="/similarity")
        said_same = "相同 Same meaning" in verdict
        assert said_same != ("不同 Different meaning" in verdict)
        assert label["label"] == ("相同 same" if said_same else "不同 different"), (a, b, verdict, label)
        assert "0.70" in verdict  # the threshold is shown where it is not 0.5
        verdicts.append(said_same)
    assert len(verdicts) == 50


def test_consecutive_masks_fill_as_one_word(served):
    c = client(served)
    _, joint = c.predict("三国人物诸[MASK][MASK]懂得治水。", top_k=4, joint=True, api_name="/fill_mask")
    _, apart = c.predict("三国人物诸[MASK][MASK]懂得治水。", top_k=4, joint=False, api_name="/fill_mask")
    assert {row[0] for row in joint["data"]} == {1} and all(len(row[1]) == 2 for row in joint["data"])
    assert {row[0] for row in apart["data"]} == {1, 2}


def test_chat_history_is_per_session_and_clear_resets_it(served):
    alice, bob = client(served), client(served)
    alice.predict("你好", temperature=0, api_name="/chat")
    bob.predict("早上好", temperature=0, api_name="/chat")
    chatbot, _ = alice.predict("在吗？", temperature=0, api_name="/chat")
    assert [t for r, t in said(chatbot) if r == "user"] == ["你好", "在吗？"]
    chatbot, _ = bob.predict("我今天好累", temperature=0, api_name="/chat")
    assert [t for r, t in said(chatbot) if r == "user"] == ["早上好", "我今天好累"]

    assert alice.predict(api_name="/clear") == []
    chatbot, _ = alice.predict("你好", temperature=0, api_name="/chat")
    assert [t for r, t in said(chatbot) if r == "user"] == ["你好"]  # the model no longer sees the old turns
    chatbot, _ = bob.predict("嗯", temperature=0, api_name="/chat")
    assert len(said(chatbot)) == 6


def test_greedy_replies_do_not_depend_on_other_sessions(served):
    a, b = client(served), client(served)
    first, _ = a.predict("你好", temperature=0, api_name="/chat")
    b.predict("周末去哪儿玩？", temperature=0, api_name="/chat")
    again, _ = client(served).predict("你好", temperature=0, api_name="/chat")
    assert said(first) == said(again)


def test_bad_inputs_get_messages_not_errors(served, checkpoints):
    from gradio_client.exceptions import AppError

    c = client(served)
    chatbot, box = c.predict("   ", api_name="/chat")  # an empty box: a note in the page, nothing sent
    assert chatbot == [] and box == "   "
    with pytest.raises(AppError, match="too long"):  # past 20,000 characters: refused
        c.predict("好" * 30_000, max_new_tokens=8, api_name="/chat")
    chatbot, _ = c.predict("开头" + "好" * 3000, max_new_tokens=8, api_name="/chat")  # sent: its last 1,000
    assert said(chatbot)[0] == ("user", "好" * 1000) and said(chatbot)[1][0] == "assistant"
    for text, message in (("没有空位的句子", "MASK"), ("", "MASK"), ("[MASK]" * 11, "10")):
        with pytest.raises(AppError, match=message):
            c.predict(text, api_name="/fill_mask")
    with pytest.raises(AppError, match="both sentences"):
        c.predict("只有一句", "  ", api_name="/similarity")
    verdict, label = c.predict("同一句话", "同一句话", api_name="/similarity")
    from chat.similarity import SimilarityPredictor

    same = (
        SimilarityPredictor.from_pretrained(str(checkpoints / "similarity")).score("同一句话", "同一句话")["label"]
        == "1"
    )
    assert ("相同 Same meaning" if same else "不同 Different meaning") in verdict


def test_sixteen_simultaneous_chat_users_are_served(served):
    errors, replies = [], []

    def user(i):
        try:
            chatbot, _ = client(served).predict(["你好", "早上好", "在吗？", "周末去哪儿玩？"][i % 4], api_name="/chat")
            replies.append(said(chatbot)[-1][1])
        except Exception as e:  # collected: the assertion below shows them
            errors.append(repr(e))

    threads = [threading.Thread(target=user, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == [] and len(replies) == 16 and all(replies)


def test_a_broken_checkpoint_disables_only_its_tab(tmp_path, checkpoints):
    from gradio_client.exceptions import AppError

    import app

    root = tmp_path / "checkpoints"
    shutil.copytree(checkpoints / "mine" / "cloze", root / "cloze")
    write(root / "broken" / "config.json", json.dumps({"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"}))
    write(root / "broken" / "model.safetensors", "not really weights")
    demo = launch(app.Settings(checkpoints=str(root)))
    try:
        c = client(demo)
        with pytest.raises(AppError, match="failed to load"):
            c.predict("你好", api_name="/chat")
        filled, _ = c.predict("周小满研究的动物是蝴[MASK]。", api_name="/fill_mask")
        assert "Most likely" in filled
        with pytest.raises(AppError, match="training/similarity.py"):  # no model: the error says how to get one
            c.predict("一", "二", model=None, api_name="/similarity")
    finally:
        demo.close()


def test_explicit_model_flag_comes_first_and_bad_flags_exit_2(checkpoints, monkeypatch):
    import app
    from webui.store import catalogue

    s = app.parse_settings(["--checkpoints", str(checkpoints), "--chat-model", str(checkpoints / "chat"), "--no-demo"])
    assert not s.demo and s.models == {"chat": str(checkpoints / "chat")}
    models = catalogue(s)
    assert [c.label for c in models["chat"]] == [str(checkpoints / "chat")]  # listed once, first
    monkeypatch.setenv("APP_CONCURRENCY", "8")
    monkeypatch.setenv("APP_FAST", "1")
    monkeypatch.setenv("APP_CLOZE_MODEL", str(checkpoints / "mine" / "cloze"))
    s = app.parse_settings([])
    assert s.concurrency == 8 and s.fast and s.models == {"cloze": str(checkpoints / "mine" / "cloze")}
    assert app.ModelStore({"chat": {"precision": "int8"}}).get("chat", str(checkpoints / "chat")).precision == "int8"
    for argv in (["--concurrency", "0"], ["--port", "70000"], ["--bogus"]):
        with pytest.raises(SystemExit) as e:
            app.parse_settings(argv)
        assert e.value.code == 2


CHROMIUM = "/usr/bin/chromium"


@pytest.mark.slow
def test_in_a_real_browser(served):
    """Debian's Chromium driven by Playwright: type into each tab and read the answer off the page."""
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"browser test skipped: Chromium is not installed at {CHROMIUM} (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="browser test skipped: pip install playwright")

    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.goto(served.local_url)
            expect = sync_api.expect

            # Chat: a streamed reply appears; an empty message gets a gentle warning; clear empties the box.
            box = page.locator("#chat-input textarea")
            box.fill("你好")
            box.press("Enter")
            bot = page.locator('#chatbot [data-testid="bot"]')
            expect(bot.first).not_to_be_empty(timeout=30_000)
            expect(page.locator('#chatbot [data-testid="user"]').first).to_have_text("你好")
            page.locator("#chat-send").click()
            expect(page.get_by_text("Please type a message first").first).to_be_visible(timeout=10_000)
            box.fill("早上好")
            box.press("Enter")
            expect(bot).to_have_count(2, timeout=30_000)
            page.locator("#chat-clear").click()
            expect(bot).to_have_count(0, timeout=10_000)

            # Fill-Mask
            page.get_by_role("tab", name="完形填空 Fill-Mask").click()
            page.locator("#cloze-input textarea").fill("周小满研究的动物是蝴[MASK]。")
            page.locator("#cloze-fill").click()
            expect(page.locator("#cloze-filled")).to_contain_text("Most likely", timeout=30_000)

            # Similarity
            page.get_by_role("tab", name="语义相似度 Similarity").click()
            page.locator("#sim-first textarea").fill("花呗怎么还款")
            page.locator("#sim-second textarea").fill("花呗如何还钱")
            page.locator("#sim-compare").click()
            expect(page.locator("#sim-verdict")).to_contain_text("p(相同 same)", timeout=30_000)
            expect(page.locator("#sim-verdict .verdict")).to_have_count(
                1
            )  # a styled text verdict: no emoji font needed

            # a tab's toast closes when you switch tabs
            page.get_by_role("tab", name="聊天 Chat").click()
            page.locator("#chat-send").click()
            expect(page.get_by_text("Please type a message first").first).to_be_visible(timeout=10_000)
            page.get_by_role("tab", name="完形填空 Fill-Mask").click()
            expect(page.get_by_text("Please type a message first")).to_have_count(0, timeout=5_000)
        finally:
            browser.close()


def test_chat_sliders_start_at_the_checkpoint_generation_settings():
    from transformers import GenerationConfig

    from webui.tabs.chat import slider_values

    config = GenerationConfig(
        do_sample=True, temperature=0.5, top_k=20, top_p=0.7, repetition_penalty=1.1, max_new_tokens=100
    )
    assert slider_values(config) == [0.5, 20, 0.7, 1.1, 100]
    greedy = GenerationConfig(do_sample=False, repetition_penalty=9.0, max_new_tokens=1000)
    assert slider_values(greedy)[0] == 0 and slider_values(greedy)[3:] == [2, 256]  # clamped to the sliders
    assert slider_values(GenerationConfig(do_sample=True)) == [0.8, 8, 0.9, 1.2, 64]  # unset: the project's defaults


def test_about_line_warns_when_a_similarity_model_is_weak_or_no_better_than_the_majority():
    from webui.store import Checkpoint, about

    report = {
        "base_model": "scratch",
        "metric": "accuracy",
        "best": {"accuracy": 0.69},
        "majority_baseline": 0.69,
        "data": {"train": {"path": "train.json", "rows": 100}},
    }
    ok = about(Checkpoint("similarity", "p", "afqmc", False, dict(report, warning=None)), "similarity")
    bad = about(Checkpoint("similarity", "p", "afqmc", False, dict(report, warning="warning: ...")), "similarity")
    assert "no better than always answering the commonest label (69%)" in bad and "rough guesses" not in bad
    assert "right 69% of the time: treat its answers as rough guesses" in ok and "commonest label" not in ok
    good = about(
        Checkpoint("similarity", "p", "lcqmc", False, dict(report, best={"accuracy": 0.86}, warning=None)), "similarity"
    )
    assert "⚠" not in good
    # one accuracy figure: the verdicts' own (threshold applied), not the epoch's accuracy at 0.5 beside it
    tuned = about(
        Checkpoint(
            "similarity",
            "p",
            "lcqmc",
            False,
            dict(report, best={"accuracy": 0.63}, dev_accuracy_at_threshold=0.67, majority_baseline=0.5, warning=None),
        ),
        "similarity",
    )
    assert "dev accuracy 67%" in tuned and "63" not in tuned and "right 67% of the time" in tuned


@pytest.mark.slow
def test_a_demo_build_that_fails_says_why_in_its_tab(tmp_path):
    from webui.demos import DemoBuilder

    write(tmp_path / "demo-chat", "a file where the demo folder should go")
    lines = []
    builder = DemoBuilder(str(tmp_path), ["chat"], say=lines.append, minutes=0.1).start()
    assert builder.wait(timeout=300)
    message = builder.message("chat")
    assert message.startswith("⚠") and "is a file, not a folder" in message and "(exit 2;" in message
    assert any("chat demo model failed" in line for line in lines)
    assert builder.message("cloze") is None  # no build for it


def test_a_fact_models_about_line_counts_the_lines_held_out_for_its_quiz():
    from webui.store import Checkpoint, about

    report = {
        "base_model": "scratch",
        "data": {"train": {"path": "/x/my_facts.txt", "rows": 24}},
        "self_quiz": {"probes": 20, "recalled": 12, "held_out_lines": 6},
    }
    line = about(Checkpoint("cloze", "p", "mine", False, report), "cloze")
    assert "my_facts.txt (24 rows + 6 行留作自测 held out for the self-quiz)" in line  # 30, as the preview said


def test_a_queued_demo_names_only_the_builds_before_it(tmp_path):
    from webui.demos import DemoBuilder

    builder = DemoBuilder(str(tmp_path), ["chat", "cloze", "similarity"], say=lambda line: None)
    assert "first chat" in builder.message("cloze") and "similarity" not in builder.message("cloze")
    assert "first chat, cloze" in builder.message("similarity")
    assert "about to start" in builder.message("chat")


def test_an_undertrained_demo_says_so_and_is_built_again_at_the_next_start(tmp_path, checkpoints):
    """Issue #38: a demo whose time budget ran out well short of its plan (a busy machine) is not kept forever."""
    import app
    from webui.store import about, find_checkpoints, missing_demos

    root = tmp_path / "checkpoints"
    shutil.copytree(checkpoints / "chat", root / "demo-chat")
    shutil.copytree(checkpoints / "similarity", root / "demo-similarity")
    # the chat demo's plan was cut to 120 of 390 steps by its budget; the similarity demo had its whole plan
    # and stopped early on its own (patience): only the first is undertrained
    schedules = {
        "demo-chat": {"wanted_steps": 390, "planned_steps": 120, "steps_trained": 120, "ended_by_time_cap": False},
        "demo-similarity": {"wanted_steps": 810, "planned_steps": 810, "steps_trained": 246, "replanned": []},
    }
    for name, schedule in schedules.items():
        write(root / name / "demo_build.json", "{}")  # built by the app's DemoBuilder
        path = root / name / "training_report.json"
        report = json.loads(path.read_text())
        report["schedule"] = schedule
        path.write_text(json.dumps(report))
    # similarity's demo is fine
    assert missing_demos(app.Settings(checkpoints=str(root))) == ["chat", "cloze", "classify", "write"]
    small = app.Settings(checkpoints=str(root), demo_minutes=0.25)
    assert missing_demos(small) == ["cloze", "classify", "write"]  # as asked
    (root / "demo-chat" / "demo_build.json").unlink()  # a folder of yours that is merely named like a demo
    assert missing_demos(app.Settings(checkpoints=str(root))) == ["cloze", "classify", "write"]  # never rebuilt over
    demos = {c.task: c for items in find_checkpoints(str(root)).values() for c in items}
    assert "训练不足" in about(demos["chat"], "chat") and "120 of the 390 steps" in about(demos["chat"], "chat")
    assert "训练不足" not in about(demos["similarity"], "similarity")


@pytest.mark.slow
def test_predictors_print_no_loading_bars(checkpoints):
    code = (
        "import sys; from chat import ChatEngine; from chat.fill_mask import FillMaskPredictor; "
        "from chat.similarity import SimilarityPredictor; root = sys.argv[1]; "
        "ChatEngine.from_pretrained(root + '/chat'); FillMaskPredictor.from_pretrained(root + '/mine/cloze'); "
        "SimilarityPredictor.from_pretrained(root + '/similarity')"
    )
    r = subprocess.run(
        [sys.executable, "-c", code, str(checkpoints)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert r.returncode == 0, r.stderr
    assert "Loading weights" not in r.stderr and "%|" not in r.stderr, r.stderr


class ReversePredictor:
    """The trivial predictor of a made-up fourth task: the text backwards, plus the folder's suffix."""

    def __init__(self, suffix: str):
        self.suffix = suffix

    @classmethod
    def from_pretrained(cls, folder: str, **options):
        return cls((Path(folder) / "suffix.txt").read_text(encoding="utf-8").strip())

    def predict(self, text: str) -> str:
        return text[::-1] + self.suffix


def test_a_fourth_task_is_one_declaration(tmp_path, monkeypatch):
    """Registering a task is all it takes: its folders are found, the page gets its tab, the API answers."""
    import gradio as gr

    import app
    from chat import tasks
    from chat.loading import task_of
    from webui.store import find_checkpoints

    monkeypatch.setitem(
        tasks.TASKS,
        "reverse",
        tasks.Task(
            name="reverse",
            title="倒读 Reverse",
            architectures=("ReverseModel",),
            predictor="tests.test_app:ReversePredictor",
        ),
    )
    root = tmp_path / "checkpoints"
    write(root / "backwards" / "config.json", json.dumps({"architectures": ["ReverseModel"]}))
    write(root / "backwards" / "suffix.txt", "!")
    assert task_of(str(root / "backwards")) == "reverse"
    assert [c.label for c in find_checkpoints(str(root))["reverse"]] == ["backwards"]
    demo = launch(app.Settings(checkpoints=str(root), demo=False))
    try:
        tabs = [b.label for b in demo.blocks.values() if isinstance(b, gr.Tab)]
        titles = ["聊天 Chat", "完形填空 Fill-Mask", "语义相似度 Similarity", "文本分类 Classify", "续写 Write"]
        assert tabs == [*titles, "倒读 Reverse", "训练 Train", "历史 Runs"]
        assert client(demo).predict("你好吗", api_name="/reverse") == "吗好你!"
    finally:
        demo.close()


def test_a_recorded_task_wins_over_the_architecture(tmp_path, monkeypatch):
    from chat import tasks
    from chat.loading import task_of

    write(tmp_path / "config.json", json.dumps({"architectures": ["BertForSequenceClassification"]}))
    assert task_of(str(tmp_path)) == "similarity"
    monkeypatch.setitem(
        tasks.TASKS,
        "intent",
        tasks.Task(
            name="intent",
            title="意图 Intent",
            architectures=("*ForSequenceClassification",),
            predictor="chat.similarity:SimilarityPredictor",
        ),
    )
    write(tmp_path / "training_report.json", json.dumps({"task": "intent"}))
    assert task_of(str(tmp_path)) == "intent"


def test_compare_answers_with_a_second_model_beside_the_first(served):
    """对比 Compare: the second endpoint answers the same input with the second model; off, it leaves its side alone."""
    c = client(served)
    first, _ = c.predict("你好", temperature=0, max_new_tokens=8, api_name="/chat")
    second = c.predict("你好", True, "chat", temperature=0, max_new_tokens=8, api_name="/chat_compare")
    assert said(second) == said(first)  # the same model, greedy: the same reply on both sides
    again = c.predict("在吗？", True, "chat", temperature=0, max_new_tokens=8, api_name="/chat_compare")
    assert [t for r, t in said(again) if r == "user"] == ["你好", "在吗？"]  # the second side keeps its own history
    assert c.predict(api_name="/clear_compare") == []
    again = c.predict("在吗？", True, "chat", temperature=0, max_new_tokens=8, api_name="/chat_compare")
    assert [t for r, t in said(again) if r == "user"] == ["在吗？"]
    off = client(served).predict("你好", False, "chat", api_name="/chat_compare")
    assert off == {"__type__": "update"}  # gr.skip(): the second side is left as it was

    cloze = os.path.join("mine", "cloze")
    filled, table = c.predict("周小满研究的动物是蝴[MASK]。", True, cloze, 3, True, api_name="/fill_mask_compare")
    assert (filled, table) == tuple(c.predict("周小满研究的动物是蝴[MASK]。", cloze, 3, True, api_name="/fill_mask"))
    verdict, _ = c.predict("花呗怎么还款", "花呗如何还钱", True, "similarity", api_name="/similarity_compare")
    assert "p(相同 same)" in verdict
    off = c.predict("花呗怎么还款", "花呗如何还钱", False, "similarity", api_name="/similarity_compare")
    assert off == ({"__type__": "update"}, {"__type__": "update"})


@pytest.mark.slow
def test_compare_starts_with_the_base_the_model_was_fine_tuned_from(tmp_path, checkpoints):
    import app
    from webui.blocks import TabContext
    from webui.compare import second_choices
    from webui.store import Checkpoint, ModelStore, base_of

    root = tmp_path / "checkpoints"
    shutil.copytree(checkpoints / "mine" / "cloze", root / "before")
    shutil.copytree(checkpoints / "mine" / "cloze", tmp_path / "elsewhere" / "base")
    shutil.copytree(checkpoints / "similarity", root / "pairs")
    corpus = str(SAMPLES / "cloze_corpus.txt")
    for base, out in ((root / "before", root / "after"), (tmp_path / "elsewhere" / "base", root / "moved")):
        code = guarded(
            cloze_script.main, ["--data", corpus, "--model", str(base), "--output", str(out), "--epochs", "1"]
        )
        assert code == 0
    ctx = TabContext(app.Settings(checkpoints=str(root), demo=False), ModelStore(), None)
    labels, default = second_choices(ctx, "cloze", "after")
    assert default == "before" and sorted(labels) == ["after", "before", "moved"]  # before vs after fine-tuning
    # trained from scratch: no "before"; no unrelated model either (issue #38), unless one was picked
    assert second_choices(ctx, "cloze", "before") == (labels, None)
    assert second_choices(ctx, "cloze", "before", "after")[1] == "after"
    labels, default = second_choices(ctx, "cloze", "moved")  # a base outside --checkpoints joins the list
    assert default == f"基座 base: {tmp_path / 'elsewhere' / 'base'}" and labels[0] == default
    assert ctx.pick("cloze", default).predict("周小满研究的动物是蝴[MASK]。", top_k=1)

    def ckpt(task, **report):
        return Checkpoint(task, str(root / "x"), "x", report=report)

    assert base_of(ckpt("cloze", base_model="scratch", base_model_source="scratch")) is None
    assert base_of(ckpt("cloze", base_model="nobody/not-cached-here", base_model_source="hub")) is None  # no download
    assert base_of(ckpt("cloze", base_model=str(tmp_path / "gone"), base_model_source="folder")) is None
    # a similarity model fine-tuned from a masked-LM folder: that base is no similarity model
    assert base_of(ckpt("similarity", base_model=str(root / "before"), base_model_source="folder")) is None
    assert base_of(ckpt("similarity", base_model=str(root / "pairs"), base_model_source="folder")).label.endswith(
        "pairs"
    )


def test_the_temperature_slider_samples_even_over_a_greedy_checkpoint(tmp_path, chat_checkpoint):
    """A checkpoint whose generation_config.json says do_sample=false: temperature > 0 from the page (or the
    API) samples, temperature 0 is greedy. It stayed greedy whatever the slider said."""
    from transformers import GenerationConfig

    import app

    folder = tmp_path / "checkpoints" / "greedy"
    shutil.copytree(chat_checkpoint, folder)
    GenerationConfig(do_sample=False, max_new_tokens=24).save_pretrained(folder)
    demo = launch(app.Settings(checkpoints=str(tmp_path / "checkpoints"), demo=False))
    try:
        c = client(demo)

        def replies(temperature: float) -> set[str]:
            # message, model, temperature, top-k, top-p, repetition penalty, max new tokens
            args = ("你好", "greedy", temperature, 0, 1.0, 1.0, 24)
            return {said(c.predict(*args, api_name="/chat")[0])[-1][1] for _ in range(5)}

        assert len(replies(0)) == 1
        assert len(replies(1.5)) > 1
    finally:
        demo.close()


def test_each_models_try_examples_come_from_its_own_data():
    """Task.examples: a fact model's own quiz prompts (the ones it answers first), a similarity model's
    pairs with the labels taking turns, a chat model's opening lines; none in the report: the tab's own."""
    from chat.tasks import TASKS
    from training.tasks.chat.recipe import opening_lines
    from training.tasks.similarity.pairs import example_pairs

    quiz = {
        "self_quiz": {
            "after": [{"prompt": "秒针是一只[MASK]猫。", "hit": False}, {"prompt": "桐[MASK]镇", "hit": True}]
        }
    }
    assert TASKS["cloze"].examples(quiz) == [["桐[MASK]镇"]]
    assert TASKS["cloze"].examples({"self_quiz": {"after": [{"prompt": "a[MASK]", "hit": False}]}}) == [["a[MASK]"]]
    assert TASKS["cloze"].examples({}) == []
    pairs = [("甲", "乙"), ("丙", "丁"), ("戊", "己"), ("x" * 50, "y" * 20)]
    rows = example_pairs(pairs, [1, 1, 0, 0])
    assert rows == [["甲", "乙"], ["戊", "己"], ["丙", "丁"]]  # same, different, same; a long pair left out
    assert TASKS["similarity"].examples({"examples": rows}) == rows
    assert opening_lines([["你好", "嗨"], ["你好", "在"], ["吃了吗", "吃了"], ["长" * 40, "x"]]) == [
        ["你好"],
        ["吃了吗"],
    ]
    assert TASKS["chat"].examples({"examples": [["你好"]]}) == [["你好"]]
    assert TASKS["chat"].examples({"examples": "not a list of rows"}) == []
