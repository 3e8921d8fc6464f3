"""续写 Write: prose as people have it, the Kneser-Ney baseline, training/write.py end to end on a tiny model, the
writer, a plain transformers pipeline over the folder, and /v1/completions through the official openai client."""

from __future__ import annotations

import json
import math
import random
import re
import shutil

import openai
import pytest

from data import InputError
from data.prose import PARAGRAPH, paragraphs, read_prose
from tests.conftest import write
from training import write as write_script
from training.cli import guarded
from training.tasks.write.ngram import KneserNey, SoftTargets, best_ngram
from training.tasks.write.recipe import ScratchWriterTrainer, WithTextPositions, blocks, split_tail

TINY = ["--model", "scratch", "--n-layer", "1", "--n-embd", "48", "--n-head", "2", "--max-len", "64", "--seed", "0"]


def story(n: int = 120, seed: int = 0) -> str:
    """A hard-wrapped story: chapter headings, indented paragraphs broken every 20 characters."""
    rng = random.Random(seed)
    people, places = ["阿岚", "小舟", "老周"], ["渡口", "山脚的茶铺", "河边的柳树下"]
    out = []
    for chapter in range(3):
        out.append(f"第{'一二三'[chapter]}章　{rng.choice(places)}")
        for _ in range(n // 3):
            p = f"{rng.choice(people)}走到{rng.choice(places)}，看见{rng.choice(people)}正在等船。天快黑了。"
            lines = [p[i : i + 20] for i in range(0, len(p), 20)]
            out.append("　　" + "\n".join(lines))
    return "\n".join(out) + "\n"


# -- reading ------------------------------------------------------------------------------------------


def test_hard_wrapped_lines_join_back_into_paragraphs_with_headings_apart():
    text = (
        "第一章　渡口\n　　阿岚走到渡口，看\n见小舟正在等船。\n　　天快黑了。⑴\n一、狐狸和月亮\n　　狐狸〔１〕抬头。\n"
    )
    found, headings, joined = paragraphs(text)
    assert found == ["第一章渡口", "阿岚走到渡口，看见小舟正在等船。", "天快黑了。", "一、狐狸和月亮", "狐狸抬头。"]
    assert (headings, joined) == (2, 1)
    # blank lines between paragraphs, lines inside one joined; one paragraph per line when a text has neither
    assert paragraphs("一段的第一行\n和第二行\n\n第二段\n")[0] == ["一段的第一行和第二行", "第二段"]
    assert paragraphs("第一句话在这里\n第二句话在这里\n第三句\n")[0] == ["第一句话在这里", "第二句话在这里", "第三句"]
    assert paragraphs("He said\nhello there\n\n")[0] == ["He said hello there"]  # English keeps its space


def test_prose_files_folders_encodings_and_what_is_refused(tmp_path):
    gbk = write(tmp_path / "gbk.txt", story(30), encoding="gb18030")
    found = read_prose(gbk)
    assert found.encoding == "gb18030" and found.headings == 3 and found.joined_lines > 0
    assert found.text.count(PARAGRAPH) == len(found.paragraphs) - 1
    write(tmp_path / "book" / "02.txt", "　　第二个文件里的一段，" * 20)
    write(tmp_path / "book" / "01.txt", "　　第一个文件里的一段，" * 20)
    folder = read_prose(tmp_path / "book")
    assert folder.format == "folder" and folder.paragraphs[0].startswith("第一个")
    with pytest.raises(InputError, match="only 5 characters"):
        read_prose(write(tmp_path / "short.txt", "一行短文字"))


@pytest.mark.parametrize(
    "name, content, reason",
    [
        ("empty.txt", b"", "is empty"),
        ("bin.txt", b"\x00\x01\x89PNG\x00" * 200, "binary"),
        ("short.txt", "就这一行。".encode(), "only 5 characters"),
    ],
)
def test_bad_files_get_one_line_and_exit_2(tmp_path, capsys, name, content, reason):
    path = tmp_path / name
    path.write_bytes(content)
    assert guarded(write_script.main, ["--data", str(path), "--output", str(tmp_path / "o"), *TINY]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and reason in errors[0] and "Traceback" not in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "flags, reason",
    [
        (["--ngram-teacher", "1"], "--ngram-teacher must be in [0, 1), got 1.0"),
        (["--average-weights", "-0.5"], "--average-weights must be in [0, 1), got -0.5"),
    ],
)
def test_out_of_range_scratch_flags_get_one_line_and_exit_2(tmp_path, capsys, flags, reason):
    data = write(tmp_path / "story.txt", story(30))
    assert guarded(write_script.main, ["--data", str(data), "--output", str(tmp_path / "o"), *TINY, *flags]) == 2
    assert reason in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_the_teacher_is_said_and_left_out_for_a_text_too_long_to_count(tmp_path, capsys, monkeypatch):
    from training.tasks.write import recipe

    data = write(tmp_path / "story.txt", story(30))
    argv = ["--data", str(data), *TINY, "--max-steps", "2", "--valid-ratio", "0"]
    assert guarded(write_script.main, [*argv, "--output", str(tmp_path / "a")]) == 0
    said = capsys.readouterr()
    assert "n-gram teacher: 70% of the loss" in said.out + said.err and "moving average" in said.out + said.err
    monkeypatch.setattr(recipe, "TEACHER_MAX_TOKENS", 100)
    assert guarded(write_script.main, [*argv, "--output", str(tmp_path / "b")]) == 0
    said = capsys.readouterr()
    assert "n-gram teacher: off for a text of" in said.out + said.err and "70% of the loss" not in said.out + said.err


def test_a_file_over_the_limit_is_refused_before_reading(tmp_path, capsys, monkeypatch):
    import data.prose

    monkeypatch.setattr(data.prose, "MAX_PROSE_BYTES", 1000)
    big = write(tmp_path / "big.txt", story(60))
    assert guarded(write_script.main, ["--data", str(big), "--output", str(tmp_path / "o"), *TINY]) == 2
    assert "train on a part of it" in capsys.readouterr().err


# -- the n-gram baseline and blocks ----------------------------------------------------------------------


def test_kneser_ney_is_a_distribution_and_beats_uniform_on_repeated_text():
    rng = random.Random(0)
    train = [rng.choice([1, 2, 3, 4, 5]) for _ in range(300)] + [1, 2, 3] * 50
    for order in (2, 3, 5):
        kn = KneserNey(train, order, vocab_size=12)
        for history in [(), (1,), (1, 2), (9, 9), (2, 3, 1, 2)]:
            assert sum(kn.prob(history, w) for w in range(12)) == pytest.approx(1.0, abs=1e-9)
    held = [[1, 2, 3] * 10]
    scores = best_ngram(train, held, vocab_size=12)
    assert scores["best"] < 3 < 12  # repeated 1 2 3 is easy; uniform over 12 tokens is perplexity 12
    assert set(scores) == {"order_3", "order_5", "best", "best_order"}


def test_the_teachers_targets_are_kneser_ney_counted_without_the_positions_own_part():
    import torch

    rng = random.Random(1)
    tokens = [rng.choice(range(5)) if rng.random() < 0.6 else rng.choice(range(30)) for _ in range(1500)]
    teacher = SoftTargets(tokens, vocab_size=40, order=5, folds=3)
    positions = torch.tensor([0, 1, 3, 499, 500, 501, 1200, 1498])
    got = teacher(positions)
    assert got.shape == (8, 40) and torch.allclose(got.sum(1), torch.ones(8))
    for row, t in enumerate(positions.tolist()):
        lo = t // 500 * 500  # three folds of 500 tokens
        held_out = KneserNey(tokens[:lo] + tokens[lo + 500 :], 5, 40)
        want = [held_out.prob(tuple(tokens[max(0, t - 3) : t + 1]), w) for w in range(40)]
        assert got[row].tolist() == pytest.approx(want, abs=1e-6)
    # counted on the whole text the next token would get more of the mass than the other parts give it
    whole = KneserNey(tokens, 5, 40)
    t = 1200
    assert got[6, tokens[t + 1]] < whole.prob(tuple(tokens[t - 3 : t + 1]), tokens[t + 1])


def test_the_teacher_trainers_loss_mixes_the_next_token_with_the_teachers_distribution(tmp_path):
    import torch
    import torch.nn.functional as F
    from transformers import (
        BertTokenizerFast,
        DataCollatorForLanguageModeling,
        GPT2Config,
        GPT2LMHeadModel,
        TrainingArguments,
    )

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = write(tmp_path / "vocab.txt", "\n".join([*specials, *"甲乙丙丁戊己庚辛"]))
    tokenizer = BertTokenizerFast(vocab_file=str(vocab))
    rng = random.Random(0)
    text = [rng.choice(range(5, 13)) for _ in range(300)]
    teacher = SoftTargets(text, vocab_size=13, order=3, folds=3)
    torch.manual_seed(0)
    no_dropout = dict(resid_pdrop=0, embd_pdrop=0, attn_pdrop=0)  # two forwards in training mode must agree
    model = GPT2LMHeadModel(GPT2Config(vocab_size=13, n_positions=32, n_embd=16, n_layer=1, n_head=2, **no_dropout))
    rows = [{"input_ids": text[s : s + 32], "start": s} for s in (0, 50, 268)]
    batch = WithTextPositions(DataCollatorForLanguageModeling(tokenizer, mlm=False))(rows)
    assert batch["text_positions"][1].tolist() == list(range(50, 82))
    args = TrainingArguments(output_dir=str(tmp_path / "out"), use_cpu=True, report_to=[])
    for share in (0.0, 0.7):
        trainer = type("T", (ScratchWriterTrainer,), {"teacher": teacher, "share": share})(model=model, args=args)
        model.train()
        loss = trainer.compute_loss(model, dict(batch)).item()
        logq = F.log_softmax(model(input_ids=batch["input_ids"]).logits[:, :-1].float(), -1).reshape(-1, 13)
        soft = teacher(batch["text_positions"][:, :-1].reshape(-1))
        hard = F.nll_loss(logq, batch["input_ids"][:, 1:].reshape(-1))
        assert loss == pytest.approx(((1 - share) * hard - share * (soft * logq).sum(-1).mean()).item(), rel=1e-4)
    model.eval()  # evaluation: the next token alone, whatever the share
    plain = model(input_ids=batch["input_ids"], labels=batch["labels"]).loss.item()
    assert trainer.compute_loss(model, dict(batch)).item() == pytest.approx(plain, rel=1e-4)


def test_the_average_of_the_weights_is_what_is_evaluated_saved_and_kept(tmp_path):
    import torch
    from safetensors.torch import load_file
    from transformers import GPT2Config, GPT2LMHeadModel, TrainingArguments

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=13, n_positions=16, n_embd=16, n_layer=1, n_head=2))
    rows = [{"input_ids": [random.Random(i).randrange(13) for _ in range(16)]} for i in range(8)]
    args = TrainingArguments(output_dir=str(tmp_path / "out"), use_cpu=True, report_to=[], per_device_eval_batch_size=8)
    trainer_class = type("T", (ScratchWriterTrainer,), {"decay": 0.9})
    trainer = trainer_class(model=model, args=args, eval_dataset=[{**r, "labels": r["input_ids"]} for r in rows])
    trained = {n: p.detach().clone() for n, p in model.named_parameters()}
    before = trainer.evaluate()["eval_loss"]  # nothing averaged yet: the weights themselves
    trainer.update_average(0)  # the first update copies the weights
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.5)  # an optimizer step, say
    trainer.update_average(100)  # decay 0.9 after step 100: the average moves a tenth of the way
    want = {n: trained[n] + 0.05 for n in trained}
    with trainer.averaged():
        assert all(torch.allclose(p, want[n], atol=1e-6) for n, p in model.named_parameters())
    averaged = trainer.evaluate()["eval_loss"]
    assert all(torch.allclose(p, trained[n] + 0.5, atol=1e-6) for n, p in model.named_parameters())  # swapped back
    trainer.save_model(str(tmp_path / "saved"))
    saved = load_file(tmp_path / "saved" / "model.safetensors")
    assert torch.allclose(saved["transformer.h.0.mlp.c_fc.weight"], want["transformer.h.0.mlp.c_fc.weight"], atol=1e-6)
    trainer.end_average(loaded_best=False)  # no best checkpoint loaded: the model ends as the last average
    assert trainer.average is None and all(torch.allclose(p, want[n], atol=1e-6) for n, p in model.named_parameters())
    assert trainer.evaluate()["eval_loss"] == pytest.approx(averaged) and averaged != pytest.approx(before)


def test_the_tail_is_held_out_at_a_paragraph_and_blocks_cover_the_stream():
    from data.prose import ProseFile

    prose = ProseFile("x", "text", "utf-8", ["甲" * 300, "乙" * 300, "丙" * 300, "丁" * 300])
    train, held = split_tail(prose, 0.05)
    assert held == "丁" * 300 and train == PARAGRAPH.join(["甲" * 300, "乙" * 300, "丙" * 300])
    assert [b[0] for b in blocks(list(range(100)), 32, 16)] == [0, 16, 32, 48, 64]  # 4 tokens left: too few
    ids = list(range(90))
    assert [b[0] for b in blocks(ids, 32, 32)] == [0, 32, 58]  # 26 left over: the last 32 tokens, a block too
    assert all(len(b) == 32 for b in blocks(ids, 32, 32)) and blocks([1, 2, 3], 32, 32) == [[1, 2, 3]]


# -- end to end ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def writer_checkpoint(tmp_path_factory):
    work = tmp_path_factory.mktemp("write")
    data = write(work / "story.txt", story(150))
    out = work / "writer"
    # 128 positions: a plain pipeline's prompt and its 80 new tokens must fit in them
    argv = ["--data", str(data), "--output", str(out), "--max-steps", "150", "--lr", "3e-3", *TINY, "--max-len", "128"]
    assert guarded(write_script.main, argv) == 0
    return out


@pytest.mark.slow
def test_the_report_sets_perplexity_beside_the_ngram_model_and_shows_continuations(writer_checkpoint):
    report = json.loads((writer_checkpoint / "training_report.json").read_text(encoding="utf-8"))
    assert report["task"] == "write" and report["data"]["train"]["headings"] == 3
    ppl, ngram = report["held_out_perplexity"], report["ngram"]
    assert math.isfinite(ppl) and ngram["best"] == min(ngram["order_3"], ngram["order_5"])
    better = report["better_than_ngram_percent"] > 0
    assert better == (report["warning"] is None) and better == report["metrics_line"].startswith("held-out")
    assert len(report["samples"]) == 3 and all(s["continuation"] for s in report["samples"])
    card = (writer_checkpoint / "README.md").read_text(encoding="utf-8")
    assert "续写示例 Samples" in card and report["samples"][0]["opening"] in card


@pytest.mark.slow
def test_a_plain_pipeline_continues_in_clean_chinese_and_the_writer_repeats_a_seed(writer_checkpoint):
    from transformers import pipeline

    from chat.writer import WriterEngine

    generate = pipeline("text-generation", model=str(writer_checkpoint))
    text = generate("阿岚走到渡口，", max_new_tokens=80)[0]["generated_text"]
    assert text.startswith("阿岚走到渡口，") and len(text) >= 50 + 7
    assert not re.search(r"\[(CLS|SEP|UNK|PAD|MASK)\]", text)
    assert not re.search(r"[\u4e00-\u9fff] [\u4e00-\u9fff]", text)  # no space between Chinese characters
    writer = WriterEngine.from_pretrained(str(writer_checkpoint))
    first = writer.reply([], "小舟", seed=3, max_new_tokens=60)
    assert first == writer.reply([], "小舟", seed=3, max_new_tokens=60) and len(first) >= 30
    assert "".join(writer.stream([], "小舟", seed=3, max_new_tokens=60)) == first
    with pytest.raises(InputError, match="empty"):
        writer.reply([], "   ")


@pytest.fixture(scope="module")
def completions_api(writer_checkpoint, tmp_path_factory):
    import app
    from webui.blocks import build_demo
    from webui.openai_api import mount_openai
    from webui.settings import predictor_options
    from webui.store import ModelStore

    root = tmp_path_factory.mktemp("api")
    shutil.copytree(writer_checkpoint, root / "writer")
    settings = app.Settings(checkpoints=str(root), concurrency=4, demo=False)
    store = ModelStore(predictor_options(settings))
    demo = build_demo(settings, store)
    demo.launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True, **app.SERVE_OPTIONS)
    mount_openai(demo.app, settings, store)
    yield openai.OpenAI(base_url=demo.local_url.rstrip("/") + "/v1", api_key="none", max_retries=0, timeout=60)
    demo.close()


@pytest.mark.slow
def test_v1_completions_whole_and_streamed_equal_the_writers_greedy_continuation(completions_api, writer_checkpoint):
    from chat.writer import WriterEngine

    want = WriterEngine.from_pretrained(str(writer_checkpoint)).reply([], "阿岚", temperature=0, max_new_tokens=24)
    assert [m.id for m in completions_api.models.list().data] == ["writer"]
    whole = completions_api.completions.create(model="writer", prompt="阿岚", max_tokens=24, temperature=0)
    assert whole.choices[0].text == want and whole.usage.completion_tokens == 24
    assert whole.choices[0].finish_reason == "length" and whole.object == "text_completion"
    chunks = list(
        completions_api.completions.create(
            model="writer",
            prompt="阿岚",
            max_tokens=24,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert "".join(c.choices[0].text for c in chunks if c.choices) == want
    assert chunks[-1].usage.completion_tokens == 24
    with pytest.raises(openai.BadRequestError, match="prompt must be a non-empty string"):
        completions_api.completions.create(model="writer", prompt="", max_tokens=8)
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        completions_api.completions.create(model="nope", prompt="阿岚", max_tokens=8)
