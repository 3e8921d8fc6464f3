"""A fourth trainable task is one declaration (issues #37, #44): its training facts, options, recipe (reader, model,
metric) and a registry entry, in a file of its own. It trains through the same pipeline from the command line and
from the app's Train tab, and the app then serves the model it wrote, with no edit anywhere else."""

from __future__ import annotations

import json
import random
import sys

import pytest

from tests.conftest import write
from tests.test_train_tab import client, launch, start_args, wait_for

# The whole declaration, as a user would write it (tmp/sentiment_task.py): nothing else is edited.
DECLARATION = '''
"""单句情感 Sentiment: is a sentence positive or negative? A fourth task of this project, declared here."""

import os
import sys
from dataclasses import dataclass, field

if __package__ in (None, ""):
    sys.path.insert(0, {root!r})

from transformers import BertConfig, BertForSequenceClassification, DataCollatorWithPadding, pipeline

from chat.tasks import Task, register
from data.errors import BadRows
from data.textio import read_text
from training.args import ScratchArguments
from training.cli import guarded
from training.pipeline import Data, Recipe
from training.runner import TrainingSetup
from training.tasks import TRAIN_FILE, Training

HERE = os.path.dirname(os.path.abspath(__file__))
TRAINING = Training(
    task="sentiment",
    script=os.path.abspath(__file__),
    options="sentiment_task:SentimentArguments",
    recipe="sentiment_task:SentimentRecipe",
    reader="sentiment_task:read_rows",
    sample=os.path.join(HERE, "sentiment.tsv"),
    description="Train a sentence sentiment classifier.",
)


@dataclass
class SentimentArguments(ScratchArguments):
    data: str = field(default=None, metadata={{"role": TRAIN_FILE, "help": "sentence<TAB>1 or 0 per line"}})
    model: str = field(default="scratch", metadata={{"help": "scratch only"}})
    max_len: int = field(default=32, metadata={{"help": "tokens per sentence"}})


@dataclass
class Rows:
    format: str
    encoding: str
    bad: BadRows
    rows: list


def read_rows(path):
    text, encoding = read_text(path)
    bad, rows = BadRows(), []
    for n, line in enumerate(text.splitlines(), 1):
        parts = line.split("\\t")
        if len(parts) == 2 and parts[1].strip() in ("0", "1") and parts[0].strip():
            rows.append((parts[0].strip(), int(parts[1])))
        elif line.strip():
            bad.add(f"{{path}}:{{n}}", "not sentence<TAB>0/1")
    return Rows("tsv", encoding, bad, rows)


def accuracy(eval_pred):
    return {{"accuracy": float((eval_pred.predictions.argmax(-1) == eval_pred.label_ids).mean())}}


class SentimentRecipe(Recipe):
    training = TRAINING

    def read(self, run):
        found = read_rows(run.args.data)
        train, valid = self.holdout(run, found.rows)
        report = {{"train": {{"path": os.path.abspath(run.args.data), "rows": len(train)}}}}
        report["valid"] = {{"rows": len(valid)}}
        return Data(train, valid, len(found.rows), [t for t, _ in found.rows], report)

    def scratch_model(self, run, tokenizer):
        a = run.args
        config = BertConfig(
            vocab_size=len(tokenizer), hidden_size=a.n_embd, num_hidden_layers=a.n_layer, num_attention_heads=a.n_head,
            intermediate_size=2 * a.n_embd, max_position_embeddings=a.max_len, num_labels=2,
            id2label={{0: "negative", 1: "positive"}}, label2id={{"negative": 0, "positive": 1}},
        )
        return BertForSequenceClassification(config)

    def encode(self, run):
        def rows(items):
            enc = run.tokenizer([t for t, _ in items], truncation=True, max_length=run.max_len)
            return [{{"input_ids": i, "labels": y}} for i, (_, y) in zip(enc["input_ids"], items)]

        return TrainingSetup(
            rows(run.data.train), rows(run.data.valid), DataCollatorWithPadding(run.tokenizer),
            metric="accuracy", greater_is_better=True, compute_metrics=accuracy,
        )


class SentimentPredictor:
    def __init__(self, classify):
        self.classify = classify

    @classmethod
    def from_pretrained(cls, folder, **options):
        return cls(pipeline("text-classification", model=folder))

    def predict(self, text):
        return self.classify(text)[0]["label"]


register(
    Task(
        name=TRAINING.task,
        title="情感 Sentiment",
        architectures=("BertForSequenceClassification",),
        predictor="sentiment_task:SentimentPredictor",
        training=TRAINING,
    )
)

if __name__ == "__main__":
    sys.exit(guarded(TRAINING.main))
'''


def sentences(n: int = 80) -> str:
    """Positive lines say 好/喜欢, negative ones 坏/讨厌, around the same neutral words."""
    rng = random.Random(0)
    things = ["这家店", "今天的饭", "这部电影", "新手机", "那本书", "老师的课", "周末的天气", "这首歌"]
    rows = []
    for i in range(n):
        good = i % 2 == 0
        word = rng.choice(["很好", "真喜欢"] if good else ["很坏", "真讨厌"])
        rows.append(f"{rng.choice(things)}{word}\t{int(good)}")
    return "\n".join(rows) + "\n"


@pytest.fixture
def fourth_task(tmp_path, monkeypatch):
    """The declaration as a module of its own (imported as the app imports a task), registered for the test."""
    from chat.tasks import ROOT, unregister

    write(tmp_path / "sentiment_task.py", DECLARATION.format(root=ROOT))
    write(tmp_path / "sentiment.tsv", sentences())
    monkeypatch.syspath_prepend(str(tmp_path))
    import sentiment_task

    yield sentiment_task
    unregister("sentiment")
    sys.modules.pop("sentiment_task", None)


TINY = ["--n-layer", "1", "--n-embd", "32", "--n-head", "2", "--epochs", "15", "--valid-ratio", "0.25"]


@pytest.mark.slow
def test_a_fourth_task_trains_from_the_command_line_through_the_pipeline(fourth_task, tmp_path):
    from training.cli import guarded

    out = tmp_path / "sentiment-model"
    argv = ["--data", str(tmp_path / "sentiment.tsv"), "--output", str(out), *TINY]
    assert guarded(fourth_task.TRAINING.main, argv) == 0
    report = json.loads((out / "training_report.json").read_text(encoding="utf-8"))
    assert report["task"] == "sentiment" and report["data"]["valid"]["rows"] == 20
    assert report["hyperparameters"]["lr"] == 1e-3  # the pipeline's scratch default, decided once
    assert report["best"]["accuracy"] >= 0.9  # one word decides: a model that learned anything gets it
    from chat.loading import task_of

    assert task_of(str(out)) == "sentiment"  # its report names the task: served by it, not by similarity


@pytest.mark.slow
def test_a_fourth_task_trains_from_the_train_tab_and_its_model_answers_in_its_tab(fourth_task, tmp_path):
    import app
    from webui.jobs import TrainingJobs

    root = tmp_path / "checkpoints"
    trainer = TrainingJobs(str(root))
    demo = launch(app.Settings(checkpoints=str(root), demo=False), trainer)
    try:
        c = client(demo)
        # its sample, read by its own reader
        assert "80 rows 可用 usable" in c.predict("sentiment", None, True, api_name="/train_preview")
        args = start_args(task_name="sentiment", out="mine", n_epochs=15, length=32)
        status, command, *_ = c.predict(*args, api_name="/train_start")
        assert "sentiment_task.py --data" in command
        wait_for(c, ("完成 done", "失败 failed"), timeout=300)
        assert "完成 done" in c.predict(api_name="/train_status")[0]
        label = c.predict("今天的饭真喜欢", "mine", api_name="/sentiment")  # the new tab, by its task's name
        assert label in ("positive", "negative")
        assert json.loads((root / "mine" / "training_report.json").read_text())["task"] == "sentiment"
    finally:
        trainer.close()
        demo.close()
