"""The online path, for real (issue #48): a stand-in of the Hub's file-download endpoints on localhost
(HF_ENDPOINT points at it, as a mirror would) serving a replica base (a real BERT config and vocab, small random
weights). The first run downloads it (progress shown) and trains; the second uses the cache and downloads
nothing; a download cut halfway is resumed; a base that does not exist is one line. Offline, the line names both
ways to a base from mainland China."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.conftest import ROOT, SAMPLES

COMMIT = "0123456789abcdef0123456789abcdef01234567"
CORPUS = str(SAMPLES / "cloze_corpus.txt")
SMALL = ["--max-steps", "2", "--batch-size", "8", "--max-len", "32", "--seed", "0"]


def replica(folder) -> None:
    """A stand-in for bert-base-chinese: BERT's real config and special tokens, half the sample corpus's characters
    as its vocab (the run adds the rest), random weights."""
    from transformers import BertConfig, BertForMaskedLM, BertTokenizerFast

    from data import build_char_vocab, make_tokenizer

    text = open(CORPUS, encoding="utf-8").read().splitlines()
    tokenizer: BertTokenizerFast = make_tokenizer(build_char_vocab(text[: len(text) // 2], min_freq=1))
    # 1 layer of BERT-base's width: 31 MB of weights, so that the first 10 MB chunk (huggingface_hub's) arrives
    # before the stand-in cuts the download and the retry has something to resume from
    config = BertConfig(vocab_size=len(tokenizer), num_hidden_layers=1, max_position_embeddings=64)
    BertForMaskedLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)


class StandInHub(BaseHTTPRequestHandler):
    """`/{repo}/resolve/{revision}/{file}` as the Hub answers it: X-Repo-Commit, ETag, Content-Length, byte ranges;
    404 with X-Error-Code RepoNotFound / EntryNotFound. The first GET of the weights is cut halfway."""

    repos: dict = {}  # repo id -> folder
    log: list = []
    cut_once: set = set()

    def log_message(self, *args):  # quiet
        pass

    def _find(self):
        path = self.path.split("?")[0].lstrip("/")
        if "/resolve/" not in path:
            return None, None
        repo, rest = path.split("/resolve/", 1)
        filename = rest.split("/", 1)[1] if "/" in rest else ""
        return repo, filename

    def _api(self, body: bool) -> None:
        """/api/models/{repo}[/revision/{rev}] (its files) and /api/models/{repo}/tree/... (no such folder: [])."""
        import json

        path = self.path.split("?")[0][len("/api/models/") :]
        repo = next((r for r in self.repos if path == r or path.startswith(r + "/")), None)
        self.log.append((self.command, repo or self.path, None, None))
        if repo is None:
            value, code = {"error": "Repository not found"}, 404
        elif "/tree/" in path:
            value, code = [], 200
        else:
            files = sorted(os.listdir(self.repos[repo]))
            value, code = {"id": repo, "sha": COMMIT, "siblings": [{"rfilename": f} for f in files]}, 200
        data = json.dumps(value).encode()
        self.send_response(code)
        if code == 404:
            self.send_header("X-Error-Code", "RepoNotFound")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data)

    def _answer(self, body: bool):
        if self.path.startswith("/api/models/"):
            return self._api(body)
        repo, filename = self._find()
        self.log.append((self.command, repo or self.path, filename, self.headers.get("Range")))
        folder = self.repos.get(repo)
        if folder is None:
            self.send_response(404)
            self.send_header("X-Error-Code", "RepoNotFound")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        path = os.path.join(folder, filename)
        if not filename or not os.path.isfile(path):
            self.send_response(404)
            self.send_header("X-Error-Code", "EntryNotFound")
            self.send_header("X-Repo-Commit", COMMIT)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        data = open(path, "rb").read()
        start = 0
        wanted = self.headers.get("Range")
        if wanted and wanted.startswith("bytes="):
            start = int(wanted[6:].split("-")[0])
        self.send_response(206 if start else 200)
        self.send_header("X-Repo-Commit", COMMIT)
        self.send_header("ETag", '"' + hashlib.sha256(data).hexdigest() + '"')
        self.send_header("Content-Length", str(len(data) - start))
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        if not body:
            return
        if filename.endswith(".safetensors") and filename not in self.cut_once and not start:
            self.cut_once.add(filename)
            self.wfile.write(data[: len(data) // 2])  # the connection drops halfway through the weights
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(data[start:])

    def do_HEAD(self):
        self._answer(body=False)

    def do_GET(self):
        self._answer(body=True)


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    folder = tmp_path_factory.mktemp("replica")
    replica(folder)
    StandInHub.repos = {"bert-base-chinese": str(folder)}
    server = ThreadingHTTPServer(("127.0.0.1", 0), StandInHub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}", tmp_path_factory.mktemp("hf_home")
    server.shutdown()


def run(script: str, endpoint: str, home, *args) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_ENDPOINT": endpoint, "HF_HOME": str(home), "HF_HUB_OFFLINE": "0", "PYTHONPATH": str(ROOT)}
    env.pop("HF_HUB_DISABLE_PROGRESS_BARS", None)
    return subprocess.run(
        [sys.executable, str(ROOT / "training" / script), *args], capture_output=True, text=True, env=env, timeout=300
    )


def gets(name: str) -> list:
    return [entry for entry in StandInHub.log if entry[0] == "GET" and entry[2] == name]


def test_a_base_downloads_once_resumes_a_cut_download_and_then_comes_from_the_cache(hub, tmp_path):
    endpoint, home = hub
    StandInHub.log.clear()
    r = run(
        "cloze.py",
        endpoint,
        home,
        "--data",
        CORPUS,
        "--model",
        "bert-base-chinese",
        "--output",
        str(tmp_path / "a"),
        *SMALL,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "training a small model from scratch" not in r.stderr and (tmp_path / "a" / "model.safetensors").is_file()
    weights = gets("model.safetensors")
    assert len(weights) >= 2 and weights[-1][3], weights  # cut halfway, then asked again from where it stopped
    assert "model.safetensors" in r.stderr  # the download's progress bar
    # the second run: from the cache, no download
    StandInHub.log.clear()
    r = run(
        "cloze.py",
        endpoint,
        home,
        "--data",
        CORPUS,
        "--model",
        "bert-base-chinese",
        "--output",
        str(tmp_path / "b"),
        *SMALL,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert gets("model.safetensors") == [] and gets("config.json") == []


def test_a_base_the_hub_does_not_have_is_one_line(hub, tmp_path):
    endpoint, home = hub
    r = run(
        "cloze.py",
        endpoint,
        home,
        "--data",
        CORPUS,
        "--model",
        "nobody/no-such-model",
        "--output",
        str(tmp_path / "x"),
        *SMALL,
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-3000:]
    (line,) = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert "nobody/no-such-model" in line and not (tmp_path / "x").exists()


def test_offline_the_fallback_names_a_mirror_and_modelscope(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    r = subprocess.run(
        [
            sys.executable,
            str(ROOT / "training" / "cloze.py"),
            "--data",
            CORPUS,
            "--output",
            str(tmp_path / "o"),
            "--check",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    (note,) = [ln for ln in r.stderr.splitlines() if "bert-base-chinese" in ln and "cannot be reached" in ln]
    assert "HF_ENDPOINT" in note and "--hub modelscope" in note and "from scratch" in note


def test_hub_modelscope_without_the_package_is_one_line(tmp_path):
    import importlib.util

    if importlib.util.find_spec("modelscope") is not None:
        pytest.skip("modelscope is installed here")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    r = subprocess.run(
        [
            sys.executable,
            str(ROOT / "training" / "cloze.py"),
            "--data",
            CORPUS,
            "--output",
            str(tmp_path / "o"),
            "--hub",
            "modelscope",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert r.returncode == 2 and "pip install modelscope" in r.stderr and "Traceback" not in r.stderr
