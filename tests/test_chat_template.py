"""Chat checkpoints speak the ecosystem's language (issue #36): a chat template that builds the engine's
own prompt, a decoder that writes Chinese without BERT's spaces, a reply that is never empty."""

from __future__ import annotations

import json
import random
import shutil

import pytest
import torch

from chat.engine import ChatEngine
from chat.settings import MAX_HISTORY, MAX_MESSAGE_CHARS
from data.chat_template import chat_template

ODD = [
    "你好",
    "hello world",
    "２０２６年",
    "[SEP]",
    "  空格  ",
    "😀表情",
    "a\tb",
    "！？。",
    "x" * 9,
    "C++ 和 Go",
    "##",
    "Ü",
]


def conversation(rng: random.Random, turns: int) -> list[dict]:
    messages = []
    if rng.random() < 0.3:
        messages.append({"role": "system", "content": "你是一个乐于助人的助手。"})
    for i in range(turns):
        text = "".join(rng.choice(ODD) for _ in range(rng.randint(1, 2)))
        messages.append({"role": "user" if i % 2 == 0 else "assistant", "content": text})
    if messages[-1]["role"] != "user":
        messages.append({"role": "user", "content": rng.choice(ODD)})
    return messages


@pytest.fixture(scope="module")
def engine(chat_checkpoint):
    return ChatEngine.from_pretrained(str(chat_checkpoint))


def test_the_template_gives_the_engines_ids_for_random_conversations(engine):
    rng = random.Random(0)
    checked, long = 0, 0
    for _ in range(300):
        messages = conversation(rng, rng.randint(1, 12))
        history = [m for m in messages[:-1] if m["role"] != "system"]
        want = engine.build_prompt(history, messages[-1]["content"], 16)
        got = engine.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        got = got["input_ids"] if isinstance(got, dict) or hasattr(got, "keys") else got
        if len(got) + 16 > engine.max_len:  # too long for the positions: the engine shortens, a template cannot
            continue
        assert got == want, messages
        checked += 1
        long += len(messages) > MAX_HISTORY + 1
    assert checked >= 200 and long >= 30  # many within the positions, some past the history window


def test_the_template_keeps_the_engines_history_window_and_message_limit():
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    template = ImmutableSandboxedEnvironment().from_string(chat_template(MAX_HISTORY, MAX_MESSAGE_CHARS))
    turns = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"第{i}句"} for i in range(11)]
    text = template.render(messages=turns, add_generation_prompt=True, raise_exception=None)
    # 11 turns, 8 kept at most, dropped 4 at a time from the start: turns 4..10, as the engine keeps them
    assert text == "[CLS]" + "".join(f"第{i}句[SEP]" for i in range(4, 11))
    long = [{"role": "user", "content": "一" + "二" * 2000}]
    assert template.render(messages=long, add_generation_prompt=True) == "[CLS]" + "二" * MAX_MESSAGE_CHARS + "[SEP]"


def test_the_saved_folder_loads_as_written_through_auto_tokenizer(chat_checkpoint, engine):
    from transformers import AutoTokenizer

    assert (chat_checkpoint / "chat_template.jinja").is_file()
    tok = AutoTokenizer.from_pretrained(str(chat_checkpoint))
    ids = engine.tokenizer("今天天气不错，我们去 park 玩吧！", add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == "今天天气不错，我们去park玩吧！" == engine.decode(ids)
    assert "token_type_ids" not in tok("你好")  # GPT-2 would add the [PAD] embedding for them
    generation = json.loads((chat_checkpoint / "generation_config.json").read_text())
    assert generation["begin_suppress_tokens"] == [engine.tokenizer.sep_token_id]


def test_a_plain_pipeline_given_messages_answers_as_the_engine(chat_checkpoint, engine):
    from transformers import pipeline

    generate = pipeline("text-generation", model=str(chat_checkpoint))
    for messages in (
        [{"role": "user", "content": "你好"}],
        [
            {"role": "user", "content": "你好"},
            {"role": "assistant", "content": "你好呀"},
            {"role": "user", "content": "周末干嘛？"},
        ],
    ):
        out = generate(messages, do_sample=False, max_new_tokens=12)[0]["generated_text"][-1]
        want = engine.reply(messages[:-1], messages[-1]["content"], temperature=0, max_new_tokens=12)
        assert out["role"] == "assistant" and out["content"] == want and want


def test_a_checkpoint_written_before_templates_gets_one_when_loaded(chat_checkpoint, tmp_path, engine):
    old = tmp_path / "old"
    shutil.copytree(chat_checkpoint, old)
    (old / "chat_template.jinja").unlink()
    config = json.loads((old / "tokenizer_config.json").read_text())
    config["tokenizer_class"] = "BertTokenizer"
    (old / "tokenizer_config.json").write_text(json.dumps(config))
    before = sorted(p.name for p in old.iterdir())
    loaded = ChatEngine.from_pretrained(str(old))
    ids = loaded.tokenizer.apply_chat_template([{"role": "user", "content": "你好"}], add_generation_prompt=True)
    ids = ids["input_ids"] if hasattr(ids, "keys") else ids
    assert ids == engine.build_prompt([], "你好", 16)
    assert sorted(p.name for p in old.iterdir()) == before  # the user's folder is not written to


@pytest.mark.parametrize("batching", [False, True])
def test_a_model_whose_likeliest_first_token_is_sep_still_replies(chat_checkpoint, tmp_path, batching):
    old = shutil.copytree(chat_checkpoint, tmp_path / "old")  # a folder written before the rule
    generation = json.loads((old / "generation_config.json").read_text())
    del generation["begin_suppress_tokens"]
    (old / "generation_config.json").write_text(json.dumps(generation))
    engine = ChatEngine.from_pretrained(str(old), batching=batching)
    model, sep = engine.model, engine.tokenizer.sep_token_id
    head = torch.nn.Linear(model.config.n_embd, model.config.vocab_size, bias=True)
    with torch.no_grad():
        head.weight.copy_(model.transformer.wte.weight)
        head.bias.zero_()
        head.bias[sep] = 1e4  # [SEP] first, whatever the prompt
    model.lm_head = head
    reply = engine.generate_ids([], "你好", temperature=0, max_new_tokens=8)
    assert len(reply) == 1 and reply[0] != sep  # one token, then [SEP] ends it
    assert engine.reply([], "你好", temperature=0.7, seed=1)


@pytest.mark.slow
def test_transformers_serve_answers_as_the_engine_through_the_openai_client(chat_checkpoint, engine):
    """`transformers serve FOLDER`: the OpenAI-compatible server of transformers itself, our checkpoint as
    it is written, the official client, streaming and not."""
    import os
    import socket
    import subprocess
    import sys
    import time

    from openai import OpenAI

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cli = os.path.join(os.path.dirname(sys.executable), "transformers")
    server = subprocess.Popen(
        [cli, "serve", str(chat_checkpoint), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    try:
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="not-needed", max_retries=0, timeout=60)
        deadline = time.monotonic() + 120
        while True:
            try:
                assert [m.id for m in client.models.list().data] == [str(chat_checkpoint)]
                break
            except Exception:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"transformers serve did not start: {server.stdout.read()[-2000:]}")
                time.sleep(1)
        for messages in (
            [{"role": "user", "content": "你好"}],
            [
                {"role": "user", "content": "你好"},
                {"role": "assistant", "content": "你好呀"},
                {"role": "user", "content": "在干嘛"},
            ],
        ):
            want = engine.reply(messages[:-1], messages[-1]["content"], temperature=0, max_new_tokens=16)
            kw = dict(model=str(chat_checkpoint), messages=messages, temperature=0, max_tokens=16)
            whole = client.chat.completions.create(**kw).choices[0].message.content
            streamed = "".join(
                c.choices[0].delta.content or "" for c in client.chat.completions.create(**kw, stream=True) if c.choices
            )
            assert whole == streamed == want and want
    finally:
        server.terminate()
        server.wait(30)
