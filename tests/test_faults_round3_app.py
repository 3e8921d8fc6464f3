"""Fault-injection round 3 (issue #50), the app's side: `/v1` bodies that are not what they should be
(stream_options of the wrong type, JSON nested 100,000 deep, 30 MB), unknown model names that rescanned the
checkpoints folder on every call, and failed Train-tab runs that left their NAME.log among the models.
Real HTTP requests to the real app on a tiny trained chat model."""

from __future__ import annotations

import http.client
import select
import shutil
import socket
import time
import urllib.parse

import httpx
import pytest

CHAT = {"model": "chat", "messages": [{"role": "user", "content": "你好"}], "max_tokens": 4}


@pytest.fixture(scope="module")
def served(chat_checkpoint, tmp_path_factory):
    """(the app's URL, its checkpoints folder): the page and `/v1` on one port, no key."""
    import app
    from webui.blocks import build_demo
    from webui.openai_api import mount_openai
    from webui.settings import predictor_options
    from webui.store import ModelStore

    root = tmp_path_factory.mktemp("round3") / "checkpoints"
    shutil.copytree(chat_checkpoint, root / "chat")
    settings = app.Settings(checkpoints=str(root), concurrency=4, demo=False)
    store = ModelStore(predictor_options(settings))
    demo = build_demo(settings, store)
    demo.launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True, **app.SERVE_OPTIONS)
    mount_openai(demo.app, settings, store)
    yield demo.local_url.rstrip("/"), root
    demo.close()


def openai_error(r: httpx.Response | http.client.HTTPResponse, status: int, body: bytes | None = None) -> dict:
    """The error of an OpenAI-shaped error response with this status."""
    import json

    assert r.status == status if isinstance(r, http.client.HTTPResponse) else r.status_code == status
    error = json.loads(body if body is not None else r.content)["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["type"] == "invalid_request_error"
    return error


def still_serving(url: str) -> None:
    r = httpx.post(url + "/v1/chat/completions", json=CHAT, timeout=60)
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["role"] == "assistant"


# -- 1. fields of the wrong type: a 400 before any generation -----------------------------------------------


@pytest.mark.parametrize(
    "extra,param",
    [
        ({"stream": True, "stream_options": "yes"}, "stream_options"),
        ({"stream": True, "stream_options": [1]}, "stream_options"),
        ({"stream": True, "stream_options": 1}, "stream_options"),
        ({"stream": True, "stream_options": {"include_usage": "yes"}}, "stream_options"),
        ({"messages": [{"role": "user", "content": [{"type": "text", "text": {"a": 1}}]}]}, "messages"),
    ],
)
def test_fields_of_the_wrong_type_are_a_400_before_any_generation(served, monkeypatch, extra, param):
    import webui.openai_api as api

    replies = []
    real = api._pieces
    monkeypatch.setattr(api, "_pieces", lambda *a, **k: replies.append(1) or real(*a, **k))
    r = httpx.post(served[0] + "/v1/chat/completions", json={**CHAT, **extra}, timeout=60)
    assert openai_error(r, 400)["param"] == param  # was a 500, AttributeError, after the first piece
    assert replies == []
    still_serving(served[0])


def test_stream_options_null_or_with_usage_still_streams(served):
    for options, usage in ((None, False), ({}, False), ({"include_usage": True}, True)):
        body = {**CHAT, "stream": True, "stream_options": options}
        with httpx.stream("POST", served[0] + "/v1/chat/completions", json=body, timeout=60) as r:
            assert r.status_code == 200
            lines = [line for line in r.iter_lines() if line.startswith("data: ")]
        assert lines[-1] == "data: [DONE]" and ('"usage"' in lines[-2]) == usage


# -- 2. JSON nested too deeply ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body", [b"[" * 100_000 + b"]" * 100_000, b'{"model": ' + b"[" * 100_000, b"\xff\xfe{", b'{"model": "chat"']
)
def test_a_body_that_does_not_parse_is_a_400(served, body):
    r = httpx.post(
        served[0] + "/v1/chat/completions", content=body, headers={"Content-Type": "application/json"}, timeout=60
    )
    assert "not valid JSON" in openai_error(r, 400)["message"]  # was a 500 (RecursionError) for the first two
    still_serving(served[0])


# -- 3. a body over the cap is a 413 before it is read ------------------------------------------------------


def raw_post(url: str, headers: str, pieces) -> tuple[http.client.HTTPResponse, bytes]:
    """POST /v1/chat/completions over a socket, sending `pieces` until the server answers (it may answer
    before the body is all sent, which an HTTP library would not wait to read)."""
    where = urllib.parse.urlsplit(url)
    with socket.create_connection((where.hostname, where.port), timeout=60) as s:
        head = f"POST /v1/chat/completions HTTP/1.1\r\nHost: {where.netloc}\r\nContent-Type: application/json\r\n"
        s.sendall((head + headers + "\r\n").encode())
        for piece in pieces:
            if select.select([s], [], [], 0)[0]:
                break
            s.sendall(piece)
        response = http.client.HTTPResponse(s)
        response.begin()
        return response, response.read()


def test_a_30_mb_body_is_a_413_read_no_further_than_the_cap(served):
    from webui.openai_api import MAX_BODY_BYTES

    size = 30 * 2**20
    # the whole body, as a client sends it: refused (it was read whole and parsed)
    body = b'{"model": "chat", "messages": []' + b" " * size + b"}"
    r = httpx.post(
        served[0] + "/v1/chat/completions", content=body, headers={"Content-Type": "application/json"}, timeout=120
    )
    assert "request body is over" in openai_error(r, 413)["message"]
    # Content-Length says 30 MB: the answer comes with only 64 KiB sent (it waited for the rest)
    response, text = raw_post(served[0], f"Content-Length: {size}\r\n", [b" " * 2**16])
    assert openai_error(response, 413, text)["code"] == "request_too_large"
    # chunked, no Content-Length: the answer comes soon after the cap, not after 30 MB
    sent = []

    def chunks():
        for _ in range(size // 2**16):
            sent.append(2**16)
            yield f"{2**16:x}\r\n".encode() + b" " * 2**16 + b"\r\n"
        yield b"0\r\n\r\n"

    response, text = raw_post(served[0], "Transfer-Encoding: chunked\r\n", chunks())
    assert openai_error(response, 413, text)["code"] == "request_too_large"
    assert MAX_BODY_BYTES < sum(sent) < size / 2  # soon after the cap, not after 30 MB (sockets buffer a few MB)
    still_serving(served[0])


def test_a_body_under_the_cap_still_reaches_the_checks(served):
    messages = [{"role": "user", "content": "长" * 100_000}]  # 600 KB as the clients escape it
    r = httpx.post(served[0] + "/v1/chat/completions", json={**CHAT, "messages": messages}, timeout=60)
    assert "at most 1,000" in openai_error(r, 400)["message"]


# -- 4. an unknown model name rescans the checkpoints folder at most once per interval -----------------------


@pytest.fixture
def scans(monkeypatch):
    """The checkpoint-folder scans made meanwhile (webui.store.find_checkpoints calls)."""
    import webui.store

    made = []
    real = webui.store.find_checkpoints
    monkeypatch.setattr(webui.store, "find_checkpoints", lambda root: made.append(root) or real(root))
    monkeypatch.setattr(webui.store, "RESCAN_AFTER_S", 60.0, raising=False)
    return made


def test_an_unknown_model_name_in_a_tab_call_rescans_at_most_once(served, scans, monkeypatch, chat_checkpoint):
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    import webui.store

    c = Client(served[0], verbose=False)
    for _ in range(30):
        with pytest.raises(AppError, match="Unknown model"):
            c.predict("你好", model="nope", max_new_tokens=8, api_name="/chat")
    assert len(scans) <= 1  # was 30: every call rescanned the folder
    # a model trained meanwhile is found once the interval has passed
    monkeypatch.setattr(webui.store, "RESCAN_AFTER_S", 0.5, raising=False)
    shutil.copytree(chat_checkpoint, served[1] / "later-tab")
    time.sleep(0.6)
    chatbot, _ = c.predict("你好", model="later-tab", max_new_tokens=8, api_name="/chat")
    assert chatbot[-1]["role"] == "assistant"


def test_an_unknown_model_name_on_v1_rescans_at_most_once(served, scans, monkeypatch, chat_checkpoint):
    import webui.store

    url = served[0] + "/v1/chat/completions"
    for _ in range(30):
        assert openai_error(httpx.post(url, json={**CHAT, "model": "nope"}, timeout=60), 404)["param"] == "model"
    assert len(scans) <= 1  # was 30
    monkeypatch.setattr(webui.store, "RESCAN_AFTER_S", 0.5, raising=False)
    shutil.copytree(chat_checkpoint, served[1] / "later-api")
    time.sleep(0.6)
    r = httpx.post(url, json={**CHAT, "model": "later-api"}, timeout=60)
    assert r.status_code == 200 and r.json()["model"] == "later-api"


# -- 5. a failed Train-tab run's log: shown while it is the page's run, then gone -----------------------------


@pytest.fixture
def trainer_app(tmp_path):
    import app
    from webui.jobs import TrainingJobs

    root = tmp_path / "checkpoints"
    trainer = TrainingJobs(str(root))
    demo = app.build_demo(app.Settings(checkpoints=str(root), demo=False), trainer=trainer)
    demo.launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True, **app.SERVE_OPTIONS)
    yield demo, trainer, root
    trainer.close()
    demo.close()


def fail_a_run(c, name: str) -> str:
    """Start a chat run on the sample data from a base that does not exist; wait for it to fail; the log shown."""
    # task, upload, use the sample, base, amount, epochs, lr, batch, max len, LoRA, output name, overwrite, tracker
    args = ["chat", None, True, "/nonexistent/base", "快速 quick", None, None, None, 64, False, name, False, "none"]
    c.predict(*args, api_name="/train_start")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        status, _, _, _, log = c.predict(api_name="/train_status")
        if "失败 failed" in status:
            return log
        time.sleep(0.5)
    raise AssertionError(f"the run did not fail within 120 s: {status}")


@pytest.mark.slow
def test_a_failed_runs_log_is_shown_then_removed_and_a_log_of_yours_is_kept(trainer_app):
    from gradio_client import Client

    demo, trainer, root = trainer_app
    c = Client(demo.local_url, verbose=False)
    root.mkdir(parents=True)
    (root / "notes.log").write_text("my own notes\n", encoding="utf-8")  # yours, named like a run's log
    assert "model folder not found" in fail_a_run(c, "first")
    assert (root / "first.log").is_file()  # readable while the page shows the run
    assert "model folder not found" in fail_a_run(c, "notes")  # appended to your file
    assert not (root / "first.log").exists()  # the app's own log of a run that left nothing: gone at the next start
    fail_a_run(c, "second")
    assert (root / "notes.log").read_text(encoding="utf-8").startswith("my own notes\n")
    assert (root / "second.log").is_file()
    trainer.close()  # the app closing
    assert sorted(p.name for p in root.iterdir()) == ["notes.log"]  # was first.log, notes.log, second.log
