"""training/similarity.py end to end on tiny models, and the similarity predictor."""

from __future__ import annotations

import json

import pytest

from chat.similarity import SimilarityPredictor
from data import InputError
from tests.conftest import SAMPLES, write
from training import similarity as sim_script
from training.cli import guarded
from training.tasks.similarity.metrics import baseline_line, logistic_baseline, majority_class, no_better_than_majority

PAIRS = str(SAMPLES / "pairs.tsv")
TINY = ["--model", "scratch", "--n-layer", "1", "--n-embd", "64", "--n-head", "2", "--max-len", "48", "--seed", "0"]


@pytest.fixture(scope="module")
def sim_checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim") / "similarity"
    # lengths vary on purpose: predictions must come back in file order, not grouped by length
    predict = write(
        out.parent / "q.tsv",
        "花呗怎么还款\t花呗如何还钱\n你几点下班\t你几点上班\n"
        "周末我们一起去公园散步然后吃晚饭好吗\t周末一起去公园走走再吃饭吧\n好\t行\n",
    )
    argv = [
        "--train",
        PAIRS,
        "--output",
        str(out),
        "--valid-ratio",
        "0.2",
        "--epochs",
        "3",
        "--predict",
        str(predict),
        *TINY,
    ]
    assert guarded(sim_script.main, argv) == 0
    return out


@pytest.mark.slow
def test_classification_run_reports_metrics_threshold_and_predictions(sim_checkpoint):
    r = json.loads((sim_checkpoint / "training_report.json").read_text(encoding="utf-8"))
    assert r["problem"] == "classification" and r["labels"] == ["0", "1"] and r["metric"] == "accuracy"
    assert all({"accuracy", "f1", "valid_loss"} <= set(e) for e in r["epochs"])
    assert 0.4 <= r["majority_baseline"] <= 0.7
    # the tuned cut is chosen among cuts that include 0.5 (the argmax): never worse than it on dev
    assert r["dev_accuracy_at_threshold"] >= r["best"]["accuracy"] - 1e-9
    assert r["best"]["accuracy"] == max(e["accuracy"] for e in r["epochs"])
    assert r["data"]["train"]["both_orders"] is True  # two classes: (b, a) is trained as well
    config = json.loads((sim_checkpoint / "config.json").read_text())
    assert config["decision_threshold"] == r["decision_threshold"] and config["id2label"] == {"0": "0", "1": "1"}
    assert config["calibration_temperature"] == r["calibration_temperature"] > 0  # fitted on the 53 dev pairs
    rows = [
        json.loads(line) for line in (sim_checkpoint / "predictions.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    assert len(rows) == 4 and set(rows[0]["probabilities"]) == {"0", "1"}
    judge = SimilarityPredictor.from_pretrained(str(sim_checkpoint))  # the saved model, one pair at a time
    for row in rows:
        assert row["probabilities"]["1"] == pytest.approx(
            judge.score(row["sentence1"], row["sentence2"])["probability"], abs=2e-3
        )


@pytest.mark.slow
def test_both_orders_double_the_training_steps_unless_turned_off(tmp_path):
    steps = {}
    for flag in ("true", "false"):
        out = tmp_path / flag
        assert (
            guarded(
                sim_script.main,
                [
                    "--train",
                    PAIRS,
                    "--output",
                    str(out),
                    "--valid-ratio",
                    "0",
                    "--epochs",
                    "1",
                    "--batch-size",
                    "16",
                    "--symmetric",
                    flag,
                    *TINY,
                ],
            )
            == 0
        )
        r = json.loads((out / "training_report.json").read_text(encoding="utf-8"))
        assert r["data"]["train"]["both_orders"] is (flag == "true")
        steps[flag] = r["global_step"]
    assert steps["true"] in (2 * steps["false"] - 1, 2 * steps["false"])


def test_entailment_labels_keep_one_order_and_their_names(tmp_path):
    rows = [
        ("一个人在弹吉他", "有人在演奏乐器", "entailment"),
        ("一个人在弹吉他", "房间里没有人", "contradiction"),
        ("一个人在弹吉他", "他在为朋友演出", "neutral"),
    ] * 10
    data = write(tmp_path / "nli.tsv", "".join(f"{a}\t{b}\t{y}\n" for a, b, y in rows))
    out = tmp_path / "nli"
    assert (
        guarded(
            sim_script.main, ["--train", str(data), "--output", str(out), "--valid-ratio", "0", "--epochs", "1", *TINY]
        )
        == 0
    )
    r = json.loads((out / "training_report.json").read_text(encoding="utf-8"))
    assert r["data"]["train"]["both_orders"] is False  # "a entails b" does not mean "b entails a"
    assert r["labels"] == ["contradiction", "entailment", "neutral"]


def test_predictions_come_back_in_input_order(tmp_path):
    """Our Trainer batches by length; transformers 5 applies that to evaluation too. Dev
    predictions (threshold tuning) and --predict rows must still line up with their inputs."""
    import torch
    from transformers import (
        BertConfig,
        BertForSequenceClassification,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )

    from data import make_tokenizer
    from training.runner import predict_in_order

    tok = make_tokenizer(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list("天气今明好坏你我他她"))
    torch.manual_seed(0)
    model = BertForSequenceClassification(
        BertConfig(
            vocab_size=len(tok),
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
            num_labels=2,
        )
    ).eval()
    texts = ["天" * n + "气你我"[: n % 3] for n in (3, 17, 1, 9, 25, 5, 12, 2, 20, 7)]  # lengths out of order
    rows = [dict(tok(t, "明天好")) for t in texts]
    args = TrainingArguments(
        output_dir=str(tmp_path),
        report_to=[],
        per_device_eval_batch_size=4,
        train_sampling_strategy="group_by_length",
        use_cpu=True,
    )
    trainer = Trainer(model=model, args=args, data_collator=DataCollatorWithPadding(tok))
    with torch.no_grad():
        expected = torch.cat([model(**{k: torch.tensor([v]) for k, v in r.items()}).logits for r in rows]).numpy()
    assert predict_in_order(trainer, rows) == pytest.approx(expected, abs=1e-5)
    assert trainer.args.train_sampling_strategy == "group_by_length"  # restored for training


@pytest.mark.slow
def test_predictor_matches_plain_pipeline(sim_checkpoint):
    from transformers import pipeline

    judge = SimilarityPredictor.from_pretrained(str(sim_checkpoint))
    pipe = pipeline("text-classification", model=str(sim_checkpoint), top_k=None)
    pairs = [("花呗怎么还款", "花呗如何还钱"), ("今天天气怎么样", "明天天气怎么样"), ("一样的句子", "一样的句子")]
    mine = judge.score_batch(pairs, batch_size=2)
    import torch

    assert judge.temperature != 1.0  # calibrated on dev: the pipeline's raw scores divided by it
    for (a, b), m in zip(pairs, mine):
        raw = {d["label"]: d["score"] for d in pipe({"text": a, "text_pair": b}, function_to_apply="none")}
        theirs = torch.tensor([raw["0"], raw["1"]]).div(judge.temperature).softmax(-1)[1].item()
        assert m["probability"] == pytest.approx(theirs, abs=1e-4)
    assert judge.score("长" * 900, "长" * 900)["label"] in ("0", "1")  # truncated, not an error
    for a, b in (("", "x"), ("x", "   "), ("长" * 1001, "x")):
        with pytest.raises(InputError):
            judge.score(a, b)


@pytest.mark.slow
def test_regression_on_sts_like_scores(tmp_path):
    rows = [
        ("一个男人在跳舞", "一个男人在跳舞", 5),
        ("一个小孩在骑马", "孩子在骑马", 4),
        ("女人在弹吉他", "一个人在弹吉他", 2),
        ("猫在睡觉", "狗在跑步", 0),
        ("男人在切洋葱", "男人在切土豆", 1),
        ("两个人在说话", "他们在聊天", 3),
    ] * 8
    data = write(tmp_path / "sts.tsv", "".join(f"{a}\t{b}\t{y}\n" for a, b, y in rows))
    out = tmp_path / "sts"
    assert guarded(sim_script.main, ["--train", str(data), "--output", str(out), "--epochs", "2", *TINY]) == 0
    r = json.loads((out / "training_report.json").read_text(encoding="utf-8"))
    assert r["problem"] == "regression" and r["metric"] == "spearman" and "pearson" in r["epochs"][-1]
    score = SimilarityPredictor.from_pretrained(str(out)).score("一个男人在跳舞", "一个男人在跳舞")
    assert set(score) == {"score"}


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["texts", "pairs"])
def test_cloze_checkpoint_continues_into_similarity(tmp_path, mode):
    from training import cloze as cloze_script

    if mode == "pairs":  # the recommended path: masked-LM on the pair file itself, then the pair task
        data, extra = PAIRS, ["--pairs"]
    else:
        data, extra = (
            write(tmp_path / "texts.txt", "\n".join(line.split("\t")[0] for line in open(PAIRS, encoding="utf-8"))),
            [],
        )
    cloze = tmp_path / "cloze"
    assert (
        guarded(
            cloze_script.main,
            [
                "--data",
                str(data),
                *extra,
                "--output",
                str(cloze),
                "--model",
                "scratch",
                "--n-layer",
                "1",
                "--n-embd",
                "64",
                "--n-head",
                "2",
                "--max-len",
                "48",
                "--epochs",
                "2",
            ],
        )
        == 0
    )
    report = json.loads((cloze / "training_report.json").read_text(encoding="utf-8"))
    rows = report["data"]["train"]["rows"]
    assert report["windows"]["train"] == (2 * rows if mode == "pairs" else rows)  # pairs: both orders
    out = tmp_path / "sim"
    assert (
        guarded(
            sim_script.main,
            ["--train", PAIRS, "--output", str(out), "--model", str(cloze), "--epochs", "1", "--max-len", "48"],
        )
        == 0
    )
    r = json.loads((out / "training_report.json").read_text(encoding="utf-8"))
    assert r["base_model_source"] == "folder" and r["base_model"] == str(cloze)


@pytest.mark.parametrize(
    "content,message",
    [
        ("甲\t乙\t1\n丙\t丁\t1\n", "has only one class"),
        ("只有一句\t\t1\n", "no usable sentence pair"),
    ],
)
def test_bad_training_files_exit_2(tmp_path, capsys, content, message):
    data = write(tmp_path / "bad.tsv", content)
    assert guarded(sim_script.main, ["--train", str(data), "--output", str(tmp_path / "o"), *TINY]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_missing_predict_file_stops_before_training(tmp_path, capsys):
    argv = ["--train", PAIRS, "--output", str(tmp_path / "o"), "--predict", str(tmp_path / "nope.tsv"), *TINY]
    assert guarded(sim_script.main, argv) == 2
    assert "error: file not found" in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_seeded_split_keeps_pairs_that_share_a_sentence_together():
    from training.steps import split_holdout
    from training.tasks.similarity.pairs import sentence_groups

    pairs = [("a", "b"), ("a", "c"), ("d", "e"), ("f", "e"), ("g", "h"), ("b", "x")]
    groups = sentence_groups(pairs)
    assert groups == [0, 0, 1, 1, 2, 0]
    train, dev = split_holdout(list(range(6)), 0.34, seed=3, groups=groups)
    assert sorted(train + dev) == list(range(6)) and dev
    assert {groups[i] for i in train}.isdisjoint({groups[i] for i in dev})


def test_majority_warning_only_when_accuracy_does_not_beat_always_answering_the_commonest_label():
    top, majority = majority_class([0] * 69 + [1] * 31)
    assert (top, majority) == (0, 0.69)
    warning = no_better_than_majority(0.69, majority, "different")
    assert (
        warning.startswith("warning: dev accuracy 69.0%")
        and '"different" (69.0%)' in warning
        and "cloze.py --pairs" in warning
    )
    assert no_better_than_majority(0.60, majority, "different")  # below it: also no good
    assert no_better_than_majority(0.71, majority, "different") is None


@pytest.mark.slow
def test_a_model_that_learned_nothing_says_so(tmp_path, capsys):
    """A skewed dev set and a learning rate too small to move: the run ends with the one-line warning."""
    rows = "".join(
        f"{'天地人山水火木金土日'[i % 10]}{i}\t{'月星风云雨雪花草树林'[i % 7]}{i}\t{int(i % 4 == 0)}\n"
        for i in range(48)
    )
    train, dev = write(tmp_path / "train.tsv", rows), write(tmp_path / "dev.tsv", rows)
    argv = ["--train", str(train), "--dev", str(dev), "--output", str(tmp_path / "o"), "--lr", "1e-7", *TINY]
    assert guarded(sim_script.main, argv) == 0
    assert "\nwarning: dev accuracy" in capsys.readouterr().err


@pytest.mark.slow
def test_a_scratch_run_pretrains_on_its_pairs_without_dropout_then_trains_the_pairs_with_it(tmp_path):
    """The default path offline: training/cloze.py --pairs first (no dropout, twice the batch, its own
    learning rate), then the pair task on that model with BERT's usual dropout back."""
    from transformers import AutoConfig

    from training.tasks.similarity.stage import MLM_LR

    out = tmp_path / "sim"
    argv = ["--train", PAIRS, "--output", str(out), "--epochs", "1", "--batch-size", "8", *TINY]
    assert guarded(sim_script.main, argv) == 0
    r = json.loads((out / "training_report.json").read_text(encoding="utf-8"))
    stage = r["mlm_stage"]
    assert stage["dropout"] == 0 and stage["batch_size"] == 16 and stage["lr"] == MLM_LR
    assert stage["steps"] >= 1 and r["hyperparameters"]["lr"] == 1e-4
    config = AutoConfig.from_pretrained(out)
    assert config.hidden_dropout_prob == 0.1 and config.attention_probs_dropout_prob == 0.1
    assert not (tmp_path / "sim.partial").exists() and not list(out.glob("mlm_stage*"))


@pytest.mark.slow
def test_scratch_run_on_the_sample_pairs_beats_the_majority_class(tmp_path, capsys):
    """Dev pairs have sentences never seen in training (grouped split), so this is generalisation."""
    out = tmp_path / "sim"
    argv = [
        "--train",
        PAIRS,
        "--output",
        str(out),
        "--valid-ratio",
        "0.25",
        "--epochs",
        "20",
        "--lr",
        "1e-3",
        "--model",
        "scratch",
        "--n-layer",
        "2",
        "--n-embd",
        "128",
        "--n-head",
        "4",
        "--seed",
        "0",
    ]
    assert guarded(sim_script.main, argv) == 0
    r = json.loads((out / "training_report.json").read_text(encoding="utf-8"))
    assert r["data"]["valid"]["rows"] >= 30
    assert r["best"]["accuracy"] >= r["majority_baseline"] + 0.1, (r["best"], r["majority_baseline"])
    assert "no better than always answering" not in capsys.readouterr().err


@pytest.mark.slow
def test_lora_run_writes_adapter_and_merged_weights_that_load_plainly(tmp_path):
    from transformers import AutoModelForSequenceClassification

    base = tmp_path / "base"
    assert guarded(sim_script.main, ["--train", PAIRS, "--output", str(base), "--epochs", "1", *TINY]) == 0
    out = tmp_path / "lora"
    assert (
        guarded(
            sim_script.main,
            [
                "--train",
                PAIRS,
                "--output",
                str(out),
                "--model",
                str(base),
                "--lora",
                "--epochs",
                "2",
                "--lr",
                "5e-3",
                "--max-len",
                "48",
                "--valid-ratio",
                "0.2",
            ],
        )
        == 0
    )
    r = json.loads((out / "training_report.json").read_text(encoding="utf-8"))
    assert r["model"]["trainable_parameters"] < r["model"]["parameters"] / 2
    assert (out / "adapter" / "adapter_config.json").is_file() and (out / "model.safetensors").is_file()
    merged = AutoModelForSequenceClassification.from_pretrained(str(out))
    assert not any("lora" in name for name in merged.state_dict())
    pair = ("花呗怎么还款", "花呗如何还钱")
    tuned, before = SimilarityPredictor.from_pretrained(str(out)), SimilarityPredictor.from_pretrained(str(base))
    assert (
        tuned.score(*pair)["probabilities"] != before.score(*pair)["probabilities"]
    )  # the merged adapter changed the model


def test_temperature_scaling_softens_an_overconfident_model_and_the_predictor_uses_it(tmp_path):
    import numpy as np
    import torch

    from training.tasks.similarity.metrics import fit_temperature

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    right = rng.random(200) < 0.7  # right 70% of the time, always ~99.99% sure
    said = np.where(right, labels, 1 - labels)
    logits = np.stack([np.where(said == 0, 5.0, -5.0), np.where(said == 1, 5.0, -5.0)], 1)
    t = fit_temperature(logits, labels)
    nll = lambda temp: torch.nn.functional.cross_entropy(torch.tensor(logits) / temp, torch.tensor(labels)).item()  # noqa: E731
    assert t > 2 and nll(t) < nll(1.0) / 2
    p_right = torch.softmax(torch.tensor(logits[0]) / t, -1).max().item()
    assert 0.6 < p_right < 0.8  # "70% sure" for a model that is right 70% of the time
    # a well-separated, always-right model is left sharp
    sure = np.stack([np.where(labels == 0, 3.0, -3.0), np.where(labels == 1, 3.0, -3.0)], 1)
    assert fit_temperature(sure, labels) < 1


def test_the_closing_line_compares_with_the_majority_and_character_overlap():
    # the hidden word-order set: 57.2% held out against a 57.4% majority was let through in silence
    line, weak = baseline_line(0.572, 0.574, "0", 0.55)
    assert weak and line.startswith('warning: dev accuracy 57.2%: no better than always answering "0" (57.4%)')
    line, weak = baseline_line(0.736, 0.696, "0", 0.72)  # 4 points over the majority, 1.6 over overlap
    assert weak and "only 1.6 points above a rule that counts shared characters (72.0%)" in line
    # issue #43: "only 13.6 points below" read as good news; each baseline is named and "below" is said plainly
    line, weak = baseline_line(0.584, 0.574, "0", 0.72)
    assert weak and line.startswith(
        'warning: dev accuracy 58.4%: only 1.0 points above always answering "0" (57.4%), and 13.6 points below a '
        "rule that counts shared characters (72.0%)"
    )
    line, weak = baseline_line(0.742, 0.5095, "1", 0.642)
    assert not weak and line == (
        'dev accuracy 74.2%: 23.3 points above always answering "1" (50.9%), and 10.0 points above a rule that '
        "counts shared characters (64.2%)"
    )


def test_character_overlap_baseline_learns_that_shared_characters_mean_the_same():
    from types import SimpleNamespace

    same = [("今天天气很好", "今天天气不错"), ("我喜欢吃苹果", "我爱吃苹果"), ("花呗怎么还款", "花呗如何还款")]
    other = [("今天天气很好", "股市大跌了"), ("我喜欢吃苹果", "火车几点开"), ("花呗怎么还款", "猫在睡觉")]
    train = SimpleNamespace(pairs=same * 4 + other * 4, labels=[1] * 12 + [0] * 12)
    dev = SimpleNamespace(pairs=[("明天天气很好", "明天天气不错"), ("我想吃苹果", "轮船到了")], labels=[1, 0])
    assert logistic_baseline(train, dev) == 1.0
