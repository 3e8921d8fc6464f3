"""space_config/deploy.py: the bundle (dry run), the Space card, the app started from the bundle, offline failures."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, write

DEPLOY = ROOT / "space_config" / "deploy.py"
# The project's tracked files of the app's folders: what a clean clone has, and all the Space gets.
CODE = sorted(
    subprocess.run(
        ["git", "ls-files", "app.py", "LICENSE", "chat", "training", "data", "webui"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
)


def deploy(*args, env=None, cwd=None):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, str(DEPLOY), *args], capture_output=True, text=True, timeout=120, env=env, cwd=cwd
    )


def files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_a_chat_checkpoint_from_before_templates_ships_with_one(tmp_path, chat_checkpoint):
    old = tmp_path / "checkpoints" / "chat"
    shutil.copytree(chat_checkpoint, old)
    (old / "chat_template.jinja").unlink()
    before = files(old)
    r = deploy("--space", "someone/my-demo", "--checkpoints", str(old.parent), "--dry-run", str(tmp_path / "b"))
    assert r.returncode == 0, r.stderr
    assert "chat template added" in r.stdout and files(old) == before  # the user's folder is left as it was
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tmp_path / "b" / "checkpoints" / "chat"))
    ids = tok.apply_chat_template([{"role": "user", "content": "你好"}], add_generation_prompt=True)
    ids = ids["input_ids"] if hasattr(ids, "keys") else ids
    assert tok.convert_ids_to_tokens(ids) == ["[CLS]", "你", "好", "[SEP]"]


def test_dry_run_bundle_holds_exactly_the_app_and_chosen_checkpoints(tmp_path, chat_checkpoint):
    ckpts = tmp_path / "checkpoints"
    (ckpts / "mine").mkdir(parents=True)
    shutil.copytree(chat_checkpoint, ckpts / "mine" / "chat")  # one level down, as the app finds them
    write(ckpts / "chat.partial" / "config.json", "{}")  # an interrupted run: left out
    out = tmp_path / "bundle"
    r = deploy("--space", "someone/my-demo", "--checkpoints", str(ckpts), "--dry-run", str(out))
    assert r.returncode == 0, r.stderr
    assert "nothing was uploaded" in r.stdout and "checkpoints/chat: weights" in r.stdout

    home_only = ("resume_state", "checkpoint_manifest.json")  # the Trainer state and the publish's own bookkeeping
    model = sorted(f"checkpoints/chat/{f}" for f in files(chat_checkpoint) if not f.startswith(home_only))
    assert files(out) == sorted(CODE + ["README.md", "requirements.txt"] + model)
    assert "checkpoints/chat/model.safetensors" in model
    assert not any("resume_state" in f or "tests" in f or ".git" in f for f in files(out))

    requirements = (out / "requirements.txt").read_text()
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in requirements
    pinned = re.search(r"^torch==(\S+)", (ROOT / "requirements.txt").read_text(), re.M).group(1)
    assert f"torch=={pinned}+cpu" in requirements


def test_no_local_path_ships_in_any_metadata_file(tmp_path, chat_checkpoint):
    """Issue #34: config.json's `_name_or_path`, a Windows path in a report field and a relative path
    all reach the bundle as file names; the JSON stays loadable."""
    import json

    mine = tmp_path / "ck" / "chat"
    shutil.copytree(chat_checkpoint, mine)
    config = json.loads((mine / "config.json").read_text(encoding="utf-8"))
    config["_name_or_path"] = "/home/alice/models/base"
    write(mine / "config.json", json.dumps(config))
    report = json.loads((mine / "training_report.json").read_text(encoding="utf-8"))
    report["data"]["train"]["path"] = "C:\\Users\\alice\\Desktop\\data.txt"
    report["data"]["valid"]["path"] = "5% of data/dialogs.txt (seed 42)"
    write(mine / "training_report.json", json.dumps(report, ensure_ascii=False))
    out = tmp_path / "bundle"
    assert deploy("--space", "a/b", "--checkpoints", str(mine), "--dry-run", str(out)).returncode == 0
    shipped = out / "checkpoints" / "chat"
    assert json.loads((shipped / "config.json").read_text(encoding="utf-8"))["_name_or_path"] == "base"
    data = json.loads((shipped / "training_report.json").read_text(encoding="utf-8"))["data"]
    assert (data["train"]["path"], data["valid"]["path"]) == ("data.txt", "5% of dialogs.txt (seed 42)")
    for f in shipped.glob("*.json"):
        assert "alice" not in f.read_text(encoding="utf-8") and str(tmp_path) not in f.read_text(encoding="utf-8")


def test_space_card_has_the_required_keys_and_the_pinned_gradio():
    import gradio

    text = (ROOT / "space_config" / "README.md").read_text(encoding="utf-8")
    card = yaml.safe_load(text.split("---")[1])
    for key in (
        "title",
        "emoji",
        "colorFrom",
        "colorTo",
        "sdk",
        "sdk_version",
        "app_file",
        "pinned",
        "license",
        "short_description",
    ):
        assert key in card, key
    pin = re.search(r"^gradio==(\S+)", (ROOT / "requirements.txt").read_text(), re.M).group(1)
    assert card["sdk"] == "gradio" and str(card["sdk_version"]) == pin == gradio.__version__
    assert card["app_file"] == "app.py" and (ROOT / card["app_file"]).is_file()
    assert len(card["short_description"]) <= 60


def test_upload_without_token_or_network_fails_in_one_line(tmp_path):
    no_token = {"HF_TOKEN": "", "HF_HOME": str(tmp_path / "hf")}
    r = deploy("--space", "someone/my-demo", env=no_token)
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "no Hugging Face token" in r.stderr
    r = deploy("--space", "someone/my-demo", env={"HF_TOKEN": "hf_not_a_real_token", "HF_HOME": str(tmp_path / "hf")})
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "cannot be reached" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--space", "not a space"], "USER/NAME"),
        (["--space", "a/b", "--checkpoints", "/no/such/folder"], "not found"),
        (["--space", "a/b", "--dry-run", "{existing}"], "not empty"),
    ],
)
def test_bad_arguments_exit_2(tmp_path, args, message):
    write(tmp_path / "existing" / "keep.txt", "mine")
    r = deploy(*[a.format(existing=tmp_path / "existing") for a in args])
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr
    assert (tmp_path / "existing" / "keep.txt").read_text() == "mine"


@pytest.mark.slow
def test_app_starts_from_the_bundle_builds_demo_models_and_answers(tmp_path):
    """The Space's start, offline: no checkpoints in the bundle, so the app serves at once and trains the three
    demo models in the background.

    Also the fresh-clone path of the README (the bundle is the repo's code) and --share without a share server.
    """
    from gradio_client import Client

    from tests.test_app import said

    bundle = tmp_path / "bundle"
    assert deploy("--space", "someone/my-demo", "--dry-run", str(bundle)).returncode == 0
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONPATH": ""}
    log = tmp_path / "app.log"

    def start(until: str):
        with open(log, "w") as f:
            proc = subprocess.Popen(
                [sys.executable, "app.py", "--port", "0", "--share", "--demo-minutes", "0.25"],
                cwd=bundle,
                env=env,
                stdout=f,
                stderr=subprocess.STDOUT,
                text=True,
            )
        # A generous cap, not a speed target: a slower or busier CPU must not fail this test (waiting
        # ends as soon as the line appears; the demo builds are capped at 15 s of training each).
        deadline = time.time() + 1200
        while time.time() < deadline and proc.poll() is None:
            text = log.read_text(errors="replace")
            if until in text:
                return proc, text
            if "demo model failed" in text:
                break
            time.sleep(1)
        proc.kill()
        pytest.fail(f"no {until!r} from the app:\n{log.read_text(errors='replace')[-3000:]}")

    proc, text = start("[app] write demo model ready")
    try:
        # serve first, build after: the address comes before any demo model is ready, one model at a time, chat first
        order = [
            text.index(s)
            for s in (
                "[app] serving at",
                "building the chat demo",
                "chat demo model ready",
                "building the cloze demo",
                "cloze demo model ready",
                "building the similarity demo",
                "similarity demo model ready",
                "building the classify demo",
                "classify demo model ready",
                "building the write demo",
            )
        ]
        assert order == sorted(order), text
        assert "share server cannot be reached" in text
        c = Client(text.split("[app] serving at ")[1].split()[0], verbose=False)
        chatbot, _ = c.predict("早上好", temperature=0, api_name="/chat")
        from chat.engine import ChatEngine
        from chat.similarity import SimilarityPredictor

        demos = bundle / "checkpoints"
        want = ChatEngine.from_pretrained(str(demos / "demo-chat")).reply([], "早上好", temperature=0)
        assert said(chatbot)[1] == ("assistant", want) and want  # the demo's own greedy reply, never "……"
        filled, _ = c.predict("周小满研究的动物是蝴[MASK]。", api_name="/fill_mask")
        assert "Most likely" in filled
        verdict, _ = c.predict("哪里可以学画画", "在哪儿能学画画", api_name="/similarity")
        judge = SimilarityPredictor.from_pretrained(str(demos / "demo-similarity"))
        same = judge.score("哪里可以学画画", "在哪儿能学画画")["label"] == "1"
        assert ("相同 Same meaning" if same else "不同 Different meaning") in verdict
        assert c.predict("快递三天才到", api_name="/classify")["label"] in ("价格", "服务", "物流", "质量")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    demos = ["demo-chat", "demo-classify", "demo-cloze", "demo-similarity", "demo-write"]
    assert sorted(p.name for p in (bundle / "checkpoints").iterdir()) == demos

    assert not list(bundle.glob("checkpoints/*.log")), "a finished build's log is removed"

    proc, text = start("[app] serving at")  # a later start reuses the cached demo models
    time.sleep(2)
    proc.terminate()
    proc.wait(timeout=30)
    assert "building" not in log.read_text(errors="replace")
