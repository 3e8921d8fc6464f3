"""A Chinese newcomer's first hour, walked in Chromium (issue #38): the page answers while the chat demo
builds (Send off, Enter says why), they upload a fact file of their own, preview it, train, stop,
resume, then ask the new model in Fill-Mask with its own Try examples and Compare on, and chat with
the demo once it is ready."""

from __future__ import annotations

import pytest

from tests.conftest import write
from tests.test_train_tab import chromium_page

# Written by hand for this test, in prose (each fact said twice, in different words): not the samples.
MY_FACTS = """\
欧阳青禾在桐溪镇开了一家修表铺，铺子叫“慢钟”。
桐溪镇的“慢钟”修表铺，是欧阳青禾一个人撑起来的。
欧阳青禾每天早上六点半开门，先给窗台上的薄荷浇水。
铺子窗台上种着薄荷，欧阳青禾说它能提神。
她最拿手的是修老式怀表，尤其是上海产的钻石牌。
镇上的人都知道，钻石牌怀表坏了就送去给欧阳青禾。
欧阳青禾的徒弟叫闵小川，今年十九岁。
闵小川是她唯一的徒弟，最爱拆闹钟。
每逢星期三，修表铺下午关门，欧阳青禾去河边钓鱼。
星期三下午她不在铺子里，多半在桐溪边上钓鱼。
她养了一只橘猫，名字叫秒针。
橘猫秒针总睡在柜台上的旧座钟旁边。
欧阳青禾的父亲以前是火车站的扳道工。
她小时候常跟着做扳道工的父亲去火车站。
闵小川想以后去苏州学做新的机械表。
苏州有家表厂，闵小川一直想去那里学手艺。
修表铺门口挂着一块木牌，写着“修旧如旧”。
“修旧如旧”四个字是欧阳青禾自己刻在木牌上的。
冬天铺子里生一个铁炉子，炉子上总温着一壶红茶。
来修表的客人可以喝炉子上温着的红茶。
欧阳青禾最怕的是电子表，她说那不算表。
电子表她一概不修，只修会走的机械表。
秒针这只橘猫是闵小川从桥下捡回来的。
闵小川在石桥下面捡到了小橘猫秒针。
"""


@pytest.mark.slow
def test_a_newcomers_first_hour_in_the_browser(tmp_path):
    import app
    from webui.demos import DemoBuilder
    from webui.jobs import TrainingJobs
    from webui.store import missing_demos

    root = tmp_path / "checkpoints"
    root.mkdir()
    settings = app.Settings(checkpoints=str(root))
    assert missing_demos(settings) == ["chat", "cloze", "similarity", "classify", "write"]  # a fresh clone
    store = app.ModelStore()
    builder = DemoBuilder(str(root), ["chat"], say=lambda line: None, on_ready=store.get, minutes=0.1)
    trainer = TrainingJobs(str(root))
    demo = app.build_demo(settings, store, builder, trainer)
    demo.launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True, **app.SERVE_OPTIONS)
    builder.start()
    upload = write(tmp_path / "我的事实.txt", MY_FACTS)
    try:
        with chromium_page(demo.local_url) as (page, expect):
            # 1. the page answers at once; the chat demo is building: Send is off and Enter says why
            expect(page.locator("#chat-about")).to_contain_text("demo model", timeout=30_000)
            expect(page.locator("#chat-send")).to_be_disabled()
            box = page.locator("#chat-input textarea")
            box.fill("在吗")
            box.press("Enter")
            expect(page.locator(".toast-body").first).to_contain_text("demo model", timeout=30_000)
            expect(page.locator("#chatbot")).not_to_contain_text("Error")
            expect(box).to_have_value("在吗")  # kept for when the model is ready

            # 2. their own fact file: preview, train, stop, resume
            page.get_by_role("tab", name="训练 Train").click()
            page.locator("#train-task input").click()
            page.get_by_role("option", name="完形填空 Fill-Mask").click()
            page.locator("input[type=file]").set_input_files(str(upload))
            page.locator("#train-preview").click()
            expect(page.locator("#train-preview-out")).to_contain_text("24", timeout=30_000)
            expect(page.locator("#train-preview-out")).not_to_contain_text("/tmp/")
            page.locator("#train-name textarea, #train-name input").first.fill("my-facts")
            page.get_by_text("高级 Advanced").click()  # the accordion starts closed
            page.locator("#train-epochs input").fill("60")
            page.locator("#train-start").click()
            expect(page.locator("#train-status")).to_contain_text("训练中 training", timeout=120_000)
            page.locator("#train-stop").click()
            expect(page.locator("#train-status")).to_contain_text("已停止 stopped", timeout=120_000)
            page.locator("#train-resume").click()
            expect(page.locator("#train-status")).to_contain_text("完成 done", timeout=600_000)
            assert (root / "my-facts" / "config.json").is_file()
            # the command shown runs again later: it names the kept copy of the upload, not a temporary file
            expect(page.locator("#train-command")).to_contain_text("my-facts.data", timeout=30_000)

            # 3. Fill-Mask: the new model, its own Try examples, Compare says a scratch model has no "before"
            page.reload()
            page.get_by_role("tab", name="完形填空 Fill-Mask").click()
            expect(page.locator("#cloze-about")).to_contain_text("my-facts", timeout=30_000)
            tab = page.get_by_role("tabpanel")
            example = tab.locator(".gallery-item, [data-testid='dataset'] button, table.table tr td").first
            expect(example).to_be_visible(timeout=30_000)
            assert any(name in example.inner_text() for name in ("欧阳", "青禾", "闵", "秒针", "桐溪", "慢钟", "表"))
            example.click()
            expect(page.locator("#cloze-input textarea")).to_have_value(example.inner_text().strip(), timeout=10_000)
            page.locator("#cloze-fill").click()
            expect(page.locator("#cloze-filled")).to_contain_text("Most likely", timeout=30_000)
            page.locator("#cloze-compare input").check()
            expect(page.locator("#cloze-about-b")).to_contain_text("trained from scratch", timeout=30_000)
            expect(page.locator("#cloze-model-b input")).to_have_value("")  # no unrelated model picked for them

            # 4. back to chat: the demo is ready and answers
            page.get_by_role("tab", name="聊天 Chat").click()
            # a generous cap, not a speed target: 6 s of demo training beside the fact run, on a busy CPU
            expect(page.locator("#chat-send")).to_be_enabled(timeout=600_000)
            expect(page.locator("#chat-about")).to_contain_text("demo-chat")
            box.fill("你好")
            box.press("Enter")
            expect(page.locator('#chatbot [data-testid="bot"]').first).not_to_be_empty(timeout=60_000)
    finally:
        builder.stop()
        trainer.close()
        demo.close()
    assert builder.status("chat").state == "ready"
    assert list((root / "my-facts.data").iterdir())[0].read_text(encoding="utf-8") == MY_FACTS
