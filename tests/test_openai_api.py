"""The app's OpenAI-compatible `/v1` (issue #36), through the official `openai` client: the engine's
greedy reply streamed and not, OpenAI-shaped errors, the key, concurrent streams that never cross."""

from __future__ import annotations

import concurrent.futures
import shutil

import openai
import pytest
import requests
import torch
from transformers import GPT2LMHeadModel

from chat.engine import ChatEngine

KEY = "sk-test-key"


@pytest.fixture(scope="module")
def api(chat_checkpoint, tmp_path_factory):
    import app
    from webui.blocks import build_demo
    from webui.openai_api import mount_openai
    from webui.settings import predictor_options
    from webui.store import ModelStore

    root = tmp_path_factory.mktemp("api")
    shutil.copytree(chat_checkpoint, root / "chat")
    # the tiny trained model answers "？" to nearly everything; with its weights shaken (seeded) the greedy
    # replies differ from prompt to prompt, so crossed streams would show
    model = GPT2LMHeadModel.from_pretrained(str(root / "chat"))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn(param.shape, generator=generator) * 0.3)
    model.save_pretrained(str(root / "chat"))
    settings = app.Settings(checkpoints=str(root), concurrency=4, demo=False, api_key=KEY)
    store = ModelStore(predictor_options(settings))
    demo = build_demo(settings, store)
    demo.launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True, **app.SERVE_OPTIONS)
    mount_openai(demo.app, settings, store, settings.api_key)
    yield demo.local_url.rstrip("/") + "/v1", root / "chat"
    demo.close()


@pytest.fixture(scope="module")
def engine(api):
    return ChatEngine.from_pretrained(str(api[1]))


def client(api, key=KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=api[0], api_key=key, max_retries=0, timeout=60)


CONVERSATIONS = [
    [{"role": "user", "content": "你好"}],
    [
        {"role": "system", "content": "You are a helpful assistant."},  # left out: the format has none
        {"role": "user", "content": "你好"},
        {"role": "assistant", "content": "你好呀"},
        {"role": "user", "content": "周末有什么打算？"},
    ],
]


def test_models_lists_the_chat_checkpoints(api):
    assert [m.id for m in client(api).models.list().data] == ["chat"]


@pytest.mark.parametrize("messages", CONVERSATIONS)
def test_replies_streamed_and_not_equal_the_engines_greedy_reply(api, engine, messages):
    c = client(api)
    history = [m for m in messages[:-1] if m["role"] != "system"]
    want = engine.reply(history, messages[-1]["content"], temperature=0, max_new_tokens=20)
    whole = c.chat.completions.create(model="chat", messages=messages, temperature=0, max_tokens=20)
    assert whole.choices[0].message.content == want and want
    assert whole.choices[0].finish_reason in ("stop", "length")
    assert whole.usage.prompt_tokens == len(engine.build_prompt(history, messages[-1]["content"], 20))
    assert whole.usage.completion_tokens == len(
        engine.generate_ids(history, messages[-1]["content"], temperature=0, max_new_tokens=20)
    )
    chunks = list(
        c.chat.completions.create(
            model="chat",
            messages=messages,
            temperature=0,
            max_tokens=20,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == want
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_a_stop_string_ends_the_reply_before_it(api, engine):
    want = engine.reply([], "你好", temperature=0, max_new_tokens=20)
    assert len(want) >= 2
    r = client(api).chat.completions.create(
        model="chat", messages=[{"role": "user", "content": "你好"}], temperature=0, max_tokens=20, stop=[want[1:]]
    )
    assert r.choices[0].message.content == want[:1] and r.choices[0].finish_reason == "stop"


@pytest.mark.parametrize(
    "kwargs,status,words",
    [
        (dict(model="nope"), openai.NotFoundError, "does not exist"),
        (dict(messages=[]), openai.BadRequestError, "non-empty"),
        (dict(messages=[{"role": "user", "content": "长" * 100_000}]), openai.BadRequestError, "at most 1,000"),
        (dict(max_tokens=-1), openai.BadRequestError, "max_tokens"),
        (dict(n=2), openai.BadRequestError, "n must be 1"),
        (dict(frequency_penalty=0.5), openai.BadRequestError, "repetition_penalty"),
        (dict(messages=[{"role": "assistant", "content": "你好"}]), openai.BadRequestError, "user's"),
    ],
)
def test_bad_requests_get_openais_error_shape_and_the_server_keeps_serving(api, kwargs, status, words):
    c = client(api)
    request = {**dict(model="chat", messages=[{"role": "user", "content": "你好"}], max_tokens=4), **kwargs}
    with pytest.raises(status) as caught:
        c.chat.completions.create(**request)
    assert words in caught.value.body["message"] if isinstance(caught.value.body, dict) else words in str(caught.value)
    assert c.chat.completions.create(model="chat", messages=[{"role": "user", "content": "在吗"}], max_tokens=4)


def test_a_wrong_or_missing_key_is_401(api):
    with pytest.raises(openai.AuthenticationError):
        client(api, key="wrong").models.list()
    r = requests.post(api[0] + "/chat/completions", json={"model": "chat", "messages": []}, timeout=30)
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"


def test_eight_concurrent_streams_get_their_own_replies(api, engine):
    openers = ["你好", "在吗", "早上好", "吃了吗", "周末去哪", "今天好累", "晚安", "你是谁"]
    want = {m: engine.reply([], m, temperature=0, max_new_tokens=16) for m in openers}
    assert len(set(want.values())) >= 5  # different replies, so a crossed stream would show

    def ask(message):
        stream = client(api).chat.completions.create(
            model="chat", messages=[{"role": "user", "content": message}], temperature=0, max_tokens=16, stream=True
        )
        return message, "".join(ch.choices[0].delta.content or "" for ch in stream if ch.choices)

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        got = dict(pool.map(ask, openers))
    assert got == want


@pytest.mark.slow
def test_a_client_that_leaves_mid_stream_frees_its_row_and_the_gate(chat_checkpoint, tmp_path):
    """A disconnect ends the reply at once: its batch row is freed and model loads are not held back."""
    import time

    from transformers import BertTokenizerFast, GPT2Config

    import app
    from webui.blocks import build_demo
    from webui.openai_api import mount_openai
    from webui.settings import predictor_options
    from webui.store import ModelStore

    folder = tmp_path / "checkpoints" / "long"
    shutil.copytree(chat_checkpoint, folder)
    tok = BertTokenizerFast.from_pretrained(str(folder))
    torch.manual_seed(0)  # long replies: 1,024 positions, and [SEP] (its row zeroed) never the likeliest
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=1024, n_embd=256, n_layer=4, n_head=4))
    with torch.no_grad():
        model.transformer.wte.weight[tok.sep_token_id].zero_()
    model.save_pretrained(str(folder))
    settings = app.Settings(checkpoints=str(folder.parent), demo=False)
    store = ModelStore(predictor_options(settings))
    demo = build_demo(settings, store)
    demo.launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True, **app.SERVE_OPTIONS)
    mount_openai(demo.app, settings, store)
    try:
        url = demo.local_url.rstrip("/") + "/v1/chat/completions"
        body = {"model": "long", "messages": [{"role": "user", "content": "你好"}], "max_tokens": 500, "temperature": 0}
        t = time.monotonic()
        whole = requests.post(url, json=body, timeout=120).json()
        full = time.monotonic() - t
        assert whole["usage"]["completion_tokens"] == 500
        engine = store.get("chat", str(folder))
        with requests.post(url, json={**body, "stream": True}, stream=True, timeout=120) as r:
            chunks = (line for line in r.iter_lines() if line.startswith(b"data: "))
            for _ in range(6):  # the role, then a few pieces of the reply
                next(chunks)
            left = time.monotonic()
            assert engine.batcher.stats()["running"] == 1  # mid-reply when the client goes
        while engine.batcher.stats()["running"] or store._gate._readers:
            assert time.monotonic() - left < full / 2, "the reply kept running after its client left"
            time.sleep(0.02)
    finally:
        demo.close()
