"""Retake the README's screenshots: the app over a checkpoints folder, driven by Debian's Chromium.

    python docs/take_screenshots.py                       # checkpoints/ (demo models are built if missing)
    python docs/take_screenshots.py --checkpoints other/  # another folder

The Train and Compare shots continue the fill-mask model on bench/corpora/shop30.txt in a temporary
folder (about 3 minutes), so the shot shows a real run and a real before/after.

Needs Playwright (requirements-test.txt), Chromium (apt-get install chromium) and a CJK font
(apt-get install fonts-noto-cjk), else Chinese text shows as empty boxes.
"""

from __future__ import annotations

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHROMIUM = "/usr/bin/chromium"


def building_shot(app, DemoBuilder, expect, sync_playwright, path: str) -> None:
    """A fresh start: the Chat tab while its demo model trains (in an empty temporary folder)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        settings = app.Settings(checkpoints=tmp)
        store = app.ModelStore()
        builder = DemoBuilder(tmp, ["chat"], say=lambda line: None, on_ready=store.get)
        demo = app.build_demo(settings, store, builder)
        demo.launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True, **app.SERVE_OPTIONS)
        builder.start()
        try:
            with sync_playwright() as pw:
                browser = pw.chromium.launch(
                    executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"]
                )
                page = browser.new_page(viewport={"width": 1100, "height": 420})
                page.goto(demo.local_url)
                expect(page.locator("#chat-about")).to_contain_text("step", timeout=120_000)
                page.wait_for_timeout(4000)
                page.evaluate("window.scrollTo(0, 0)")  # the message box's autofocus scrolled down
                page.screenshot(path=path)
                browser.close()
        finally:
            builder.stop()
            demo.close()


def train_and_compare_shots(app, cloze_model: str, expect, sync_playwright, out: str) -> None:
    """The Train tab mid-run (a cloze model continued on new facts), then Fill-Mask with Compare on:
    the continued model beside the one it started from."""
    import shutil
    import tempfile

    from webui.jobs import TrainingJobs

    corpus = os.path.join(ROOT, "bench", "corpora", "shop30.txt")
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copytree(cloze_model, os.path.join(tmp, "cloze-base"))
        trainer = TrainingJobs(tmp)
        demo = app.build_demo(app.Settings(checkpoints=tmp, demo=False), trainer=trainer)
        demo.launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True, **app.SERVE_OPTIONS)
        try:
            with sync_playwright() as pw:
                browser = pw.chromium.launch(
                    executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"]
                )
                page = browser.new_page(viewport={"width": 1100, "height": 1250})
                page.goto(demo.local_url)
                page.get_by_role("tab", name="训练 Train").click()
                page.locator("#train-task input").click()
                page.get_by_role("option", name="完形填空 Fill-Mask").click()
                page.locator("input[type=file]").set_input_files(corpus)
                page.locator("#train-preview").click()
                expect(page.locator("#train-preview-out")).to_contain_text("usable", timeout=30_000)
                page.locator("#train-base input").click()
                page.get_by_role("option", name=os.path.join(tmp, "cloze-base")).click()
                page.locator("#train-name textarea, #train-name input").first.fill("shop-facts")
                page.get_by_text("快速 quick").click()
                page.locator("#train-start").click()
                expect(page.locator("#train-status")).to_contain_text("loss", timeout=120_000)
                page.wait_for_timeout(40_000)  # a few more points on the plot
                page.screenshot(path=os.path.join(out, "screenshot-train.png"))
                expect(page.locator("#train-status")).to_contain_text("完成 done", timeout=900_000)
                page.reload()
                page.get_by_role("tab", name="完形填空 Fill-Mask").click()
                page.locator("#cloze-model input").click()
                page.get_by_role("option", name="shop-facts").click()
                page.locator("#cloze-compare input").check()
                expect(page.locator("#cloze-model-b input")).to_have_value("cloze-base", timeout=30_000)
                page.locator("#cloze-input textarea").fill("海螺的生产商是[MASK][MASK][MASK][MASK]。")
                page.locator("#cloze-fill").click()
                expect(page.locator("#cloze-filled-b")).to_contain_text("Most likely", timeout=30_000)
                expect(page.locator("#cloze-filled")).to_contain_text("Most likely", timeout=30_000)
                page.wait_for_timeout(1000)
                page.screenshot(path=os.path.join(out, "screenshot-compare.png"))
                browser.close()
        finally:
            trainer.close()
            demo.close()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoints", default=os.path.join(ROOT, "checkpoints"))
    p.add_argument("--out", default=os.path.join(ROOT, "docs"))
    a = p.parse_args()
    sys.path.insert(0, ROOT)
    from playwright.sync_api import expect, sync_playwright

    import app
    from webui.demos import DemoBuilder
    from webui.store import catalogue, missing_demos

    building_shot(app, DemoBuilder, expect, sync_playwright, os.path.join(a.out, "screenshot-building.png"))
    settings = app.Settings(checkpoints=a.checkpoints)
    store = app.ModelStore()
    builder = DemoBuilder(a.checkpoints, missing_demos(settings), on_ready=store.get).start()
    if not builder.wait(timeout=1800):
        print("error: the demo models were not ready in 30 minutes", file=sys.stderr)
        return 1
    demo = app.build_demo(settings, store)
    demo.launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True, **app.SERVE_OPTIONS)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1100, "height": 860})
            page.goto(demo.local_url)
            expect(page.locator("#chat-send")).to_be_enabled(timeout=60_000)
            for n, message in enumerate(("你好", "周末有什么打算？"), 1):
                page.locator("#chat-input textarea").fill(message)
                page.locator("#chat-input textarea").press("Enter")
                expect(page.locator('#chatbot [data-testid="bot"]')).to_have_count(n, timeout=30_000)
                expect(page.locator("#chat-send")).to_be_enabled(timeout=30_000)
                page.wait_for_timeout(1500)
            page.screenshot(path=os.path.join(a.out, "screenshot-chat.png"))
            page.get_by_role("tab", name="完形填空 Fill-Mask").click()
            page.locator("#cloze-input textarea").fill("周小满研究的动物是蝴[MASK]。")
            page.locator("#cloze-fill").click()
            expect(page.locator("#cloze-filled")).to_contain_text("Most likely", timeout=30_000)
            page.screenshot(path=os.path.join(a.out, "screenshot-fill-mask.png"))
            page.get_by_role("tab", name="语义相似度 Similarity").click()
            page.locator("#sim-first textarea").fill("我喜欢猫")
            page.locator("#sim-second textarea").fill("今天股市大跌")
            page.locator("#sim-compare").click()
            expect(page.locator("#sim-verdict")).to_contain_text("p(相同 same)", timeout=30_000)
            page.screenshot(path=os.path.join(a.out, "screenshot-similarity.png"))
            browser.close()
    finally:
        demo.close()
    cloze = catalogue(settings)["cloze"]
    train_and_compare_shots(app, cloze[0].path, expect, sync_playwright, a.out)
    print(f"screenshots written to {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
