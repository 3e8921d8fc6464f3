"""The 训练 Train tab, driven through gradio_client: preview, start, busy, stop, resume, the new model in its tab."""

from __future__ import annotations

import contextlib
import json
import os
import re
import time

import pytest

from tests.conftest import SAMPLES, write


def launch(settings, trainer):
    import app

    demo = app.build_demo(settings, trainer=trainer)
    demo.launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True, **app.SERVE_OPTIONS)
    return demo


@pytest.fixture
def served(tmp_path):
    import app
    from webui.jobs import TrainingJobs

    root = tmp_path / "checkpoints"
    trainer = TrainingJobs(str(root))
    demo = launch(app.Settings(checkpoints=str(root), demo=False), trainer)
    yield demo, trainer, root
    trainer.close()
    demo.close()


def client(demo):
    from gradio_client import Client

    return Client(demo.local_url, verbose=False)


def start_args(**kw):
    """The /train_start inputs: task, upload, use the sample, base, amount, epochs, lr, batch, max len,
    LoRA, output name, overwrite, the tracker."""
    args = dict(
        task_name="chat",
        file=None,
        sample=True,
        base_name="scratch",
        amount="快速 quick",
        n_epochs=None,
        rate=None,
        batch_size=None,
        length=64,
        use_lora=False,
        out="mine",
        replace=False,
        report="none",
    )
    args.update(kw)
    return list(args.values())


def wait_for(c, states: tuple[str, ...], timeout: float = 300) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = c.predict(api_name="/train_status")[0]
        if any(s in line for s in states):
            return line
        time.sleep(1)
    raise AssertionError(f"no {states} within {timeout} s: {line}")


def test_preview_reads_the_file_as_the_script_will_and_refuses_what_it_cannot_train(served, tmp_path):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    demo, _, _ = served
    c = client(demo)
    dialogs = write(tmp_path / "mine.txt", "你好\n你好呀\n\n在吗\n在的\n\n" + "只有一句\n\n")
    text = c.predict("chat", handle_file(str(dialogs)), False, api_name="/train_preview")
    assert "text" in text and "2 dialogues" in text and "1 行跳过 skipped" in text and "mine.txt:" in text
    binary = tmp_path / "photo.txt"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 20)
    assert "pairs" in c.predict("similarity", None, True, api_name="/train_preview")  # the sample pairs
    # refusals in the preview area, Chinese first, with the file's own name and no temporary path (issue #38)
    empty = write(tmp_path / "empty.txt", "")
    weights = tmp_path / "model.bin"
    weights.write_bytes(bytes(range(256)) * 40)
    for bad, chinese in ((binary, "这不是文本文件"), (empty, "文件是空的"), (weights, "这不是文本文件")):
        text = c.predict("chat", handle_file(str(bad)), False, api_name="/train_preview")
        assert (
            text.startswith(f"⚠ {chinese}") and bad.name in text and "/tmp" not in text and "train-uploads" not in text
        )
    assert os.listdir(served[1].uploads) == ["mine.txt"]  # refused uploads are gone at once
    with pytest.raises(AppError, match="这不是文本文件"):  # and Start refuses them the same way
        c.predict(*start_args(file=handle_file(str(binary)), sample=False), api_name="/train_start")


@pytest.mark.slow
def test_an_uploaded_file_is_kept_beside_the_run_so_its_command_still_runs(served, tmp_path):
    from gradio_client import handle_file

    demo, trainer, root = served
    c = client(demo)
    mine = write(tmp_path / "我的对话.txt", (SAMPLES / "dialogs.txt").read_text(encoding="utf-8"))
    _, command, *_ = c.predict(
        *start_args(file=handle_file(str(mine)), sample=False, n_epochs=50), api_name="/train_start"
    )
    kept = root / "mine.data" / "我的对话.txt"
    assert f"--data {kept}" in command and kept.read_text(encoding="utf-8") == mine.read_text(encoding="utf-8")
    assert os.listdir(trainer.uploads) == []  # moved, not copied: no second copy in the temporary folder
    wait_for(c, ("训练中 training", "完成 done", "失败 failed"))
    with contextlib.suppress(Exception):
        c.predict(api_name="/train_stop")
    wait_for(c, ("已停止 stopped", "完成 done"), timeout=120)
    assert kept.is_file()  # still there for the command (and --resume) after the run


def test_bad_output_names_and_an_existing_model_are_refused(served):
    from gradio_client.exceptions import AppError

    demo, _, root = served
    c = client(demo)
    for name in ("../escape", "a/b", "", ".hidden", "x.partial"):
        with pytest.raises(AppError, match="Bad output name"):
            c.predict(*start_args(out=name), api_name="/train_start")
    (root / "taken").mkdir(parents=True)
    with pytest.raises(AppError, match="already exists"):
        c.predict(*start_args(out="taken"), api_name="/train_start")
    assert [p.name for p in root.iterdir()] == ["taken"]  # nothing started, nothing written


@pytest.mark.slow
def test_start_busy_stop_resume_finish_then_chat_with_it(served):
    from gradio_client.exceptions import AppError

    demo, trainer, root = served
    c = client(demo)
    status, command, *_ = c.predict(*start_args(n_epochs=15, batch_size=8), api_name="/train_start")
    assert "training/chat.py --data" in command and "--output" in command and "--epochs 15" in command
    with pytest.raises(AppError, match="Busy"):  # one run at a time, for every visitor
        client(demo).predict(*start_args(out="second"), api_name="/train_start")
    wait_for(c, ("训练中 training",))
    c.predict(api_name="/train_stop")
    wait_for(c, ("已停止 stopped",), timeout=120)
    assert trainer.job.state == "stopped" and "resumable" in trainer.job.reason
    assert (root / "mine.partial").is_dir() and not (root / "mine").exists()  # resumable state, no model yet
    _, command, *_ = c.predict(api_name="/train_resume")
    assert command.endswith("--resume")
    wait_for(c, ("完成 done",), timeout=600)
    status, _, plot, plot_valid, log = c.predict(api_name="/train_status")
    assert (root / "mine" / "config.json").is_file() and "saved to" in log
    step = json.loads((root / "mine" / "training_report.json").read_text())["global_step"]
    assert f"第 step {step:,}/{step:,} 步" in status  # the run's final step, as its log and report say
    assert plot["datatypes"]["step"] == plot["datatypes"]["loss"] == "quantitative"
    assert plot["data"] and plot_valid["data"]  # training and validation loss, both plotted
    assert min(step for step, _ in plot["data"]) < 20  # from the first steps: the resume kept the curve so far
    chatbot, _ = c.predict("你好", model="mine", max_new_tokens=8, api_name="/chat")  # listed in the Chat tab at once
    assert chatbot[-1]["role"] == "assistant"


def test_public_pages_have_no_training_unless_allowed(tmp_path, monkeypatch):
    import app
    from webui.jobs import public_reason

    settings = app.Settings(checkpoints=str(tmp_path), demo=False)
    assert public_reason(settings) is None
    assert "--share" in public_reason(app.Settings(share=True))
    assert "0.0.0.0" in public_reason(app.Settings(host="0.0.0.0"))
    assert public_reason(app.Settings(host="0.0.0.0", allow_training=True)) is None
    monkeypatch.setenv("SPACE_ID", "user/space")
    assert "Spaces" in public_reason(settings)
    assert app.parse_settings(["--allow-training"]).allow_training
    demo = launch(app.Settings(checkpoints=str(tmp_path), demo=False, share=True), None)
    try:
        routes = client(demo).view_api(print_info=False, return_format="dict")["named_endpoints"]
        assert "/train_start" not in routes and "/chat" in routes
    finally:
        demo.close()


def test_the_loss_plot_starts_with_its_first_point_on_numeric_axes():
    import gradio as gr

    from webui.tabs.train import _curve

    plot = gr.LinePlot(x="step", y="loss")
    # before the first point: no plot (after an empty one the browser never drew the lines)
    assert _curve({}) is None and _curve({"curve": {"train": [], "valid": []}}, "valid") is None
    progress = {"curve": {"train": [[1, 2.5]], "valid": []}}
    types = plot.postprocess(_curve(progress)).model_dump()["datatypes"]
    assert types["step"] == types["loss"] == "quantitative" and _curve(progress, "valid") is None


def test_the_sample_files_preview_for_every_task():
    from chat.tasks import TASKS
    from webui.jobs import preview

    for task in TASKS.values():
        p = preview(task.name, task.training.path(task.training.sample))
        assert p["rows"] > 10 and p["unit"] == task.training.items
    classify = preview("classify", str(SAMPLES / "reviews.csv"))  # the columns it picked, the label counts
    assert classify["notes"][:2] == [
        "columns: text = '评论', label = '标签'",
        "4 classes: 服务 60, 价格 60, 质量 60, 物流 60",
    ]


CHROMIUM = "/usr/bin/chromium"


@contextlib.contextmanager
def chromium_page(url: str):
    """(page, expect) of a headless Chromium at `url`; the test is skipped without Chromium or Playwright."""
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"browser test skipped: Chromium is not installed at {CHROMIUM} (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="browser test skipped: pip install playwright")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 1400})
            page.goto(url)
            yield page, sync_api.expect
        finally:
            browser.close()


@pytest.mark.slow
def test_train_in_the_browser_then_chat_with_the_model(served, tmp_path):
    """Chromium: upload a dialogue file, preview it, start a short run, watch it, stop, resume,
    then pick the new model in the Chat tab and get a reply."""
    demo, _, root = served
    dialogs = (SAMPLES / "dialogs.txt").read_text(encoding="utf-8")
    upload = write(tmp_path / "我的对话.txt", dialogs)
    with chromium_page(demo.local_url) as (page, expect):
        page.get_by_role("tab", name="训练 Train").click()
        page.locator("input[type=file]").set_input_files(str(upload))
        page.locator("#train-preview").click()
        expect(page.locator("#train-preview-out")).to_contain_text("dialogues", timeout=30_000)
        page.locator("#train-name textarea, #train-name input").first.fill("browser-chat")
        page.get_by_text("高级 Advanced").click()  # the accordion starts closed
        page.locator("#train-epochs input").fill("15")
        page.locator("#train-start").click()
        expect(page.locator("#train-status")).to_contain_text("训练中 training", timeout=120_000)
        # the loss curve is drawn in colour (after an empty first frame the lines had no stroke)
        line = page.locator("#train-plot .mark-line path").first
        expect(line).to_have_attribute("stroke", re.compile("^#"), timeout=60_000)
        page.locator("#train-stop").click()
        expect(page.locator("#train-status")).to_contain_text("已停止 stopped", timeout=120_000)
        page.locator("#train-resume").click()
        expect(page.locator("#train-status")).to_contain_text("完成 done", timeout=600_000)
        assert (root / "browser-chat" / "config.json").is_file()
        page.reload()
        page.get_by_role("tab", name="聊天 Chat").click()
        expect(page.locator("#chat-about")).to_contain_text("browser-chat", timeout=30_000)
        box = page.locator("#chat-input textarea")
        box.fill("你好")
        box.press("Enter")
        expect(page.locator('#chatbot [data-testid="bot"]').first).not_to_be_empty(timeout=60_000)
