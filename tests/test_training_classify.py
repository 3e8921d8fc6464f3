"""文本分类 Classify: labelled files as people have them, training/classify.py end to end on tiny models, the
predictor, a plain transformers pipeline over the folder, and bad files refused in one line."""

from __future__ import annotations

import csv
import json
import random

import pytest

from data import InputError
from data.labelled import read_labelled
from tests.conftest import SAMPLES, write
from training import classify as classify_script
from training.cli import guarded
from training.tasks.classify.metrics import baseline_line
from training.tasks.classify.recipe import class_weights, label_order, stratified_split

TINY = ["--model", "scratch", "--n-layer", "1", "--n-embd", "32", "--n-head", "2", "--max-len", "32", "--seed", "0"]


def reviews(n: int = 120, seed: int = 0) -> list[tuple[str, str]]:
    """Three classes, each told apart by its own words around shared ones (a tiny model learns it in seconds)."""
    rng = random.Random(seed)
    words = {
        "好评": ["味道很棒", "非常满意", "下次还来", "强烈推荐"],
        "差评": ["难吃极了", "再也不买", "太失望了", "退款了"],
        "中评": ["还行吧", "一般般", "凑合", "马马虎虎"],
    }
    shared = ["这家店", "今天的外卖", "这次点的饭", "老板做的菜"]
    rows = []
    for i in range(n):
        label = list(words)[i % 3]
        rows.append((f"{rng.choice(shared)}{rng.choice(words[label])}", label))
    return rows


def csv_text(rows, header=("评论", "标签")) -> str:
    lines = [",".join(header)] + [f"{t},{y}" for t, y in rows]
    return "\n".join(lines) + "\n"


# -- reading ------------------------------------------------------------------------------------------


def test_a_csv_is_read_by_its_column_names_with_quotes_newlines_a_bom_and_extra_columns(tmp_path):
    text = '\ufeffid,评论,打分,标签\n1,"好吃, 量大",5,好评\n2,"第一行\n第二行",1,差评\n3,,3,中评\n4,还行,3,中评\n'
    found = read_labelled(write(tmp_path / "r.csv", text))
    assert found.columns == ("评论", "标签")
    assert found.texts == ["好吃, 量大", "第一行 第二行", "还行"] and found.labels == ["好评", "差评", "中评"]
    # the empty text is on line 5: the quoted line break before it counts
    assert found.bad.count == 1 and found.bad.examples[0] == "r.csv:5: the text is empty"


def test_named_columns_headerless_tsv_gbk_json_lines_and_a_folder_per_class(tmp_path):
    three = write(tmp_path / "three.csv", "编号,内容摘要,分类名\n1,股市大涨,财经\n2,球队夺冠,体育\n")
    found = read_labelled(three, text_column="内容摘要", label_column="分类名")
    assert found.rows == [("股市大涨", "财经"), ("球队夺冠", "体育")]
    with pytest.raises(InputError, match="no column '正文'.*编号, 内容摘要, 分类名"):
        read_labelled(three, text_column="正文", label_column="分类名")
    with pytest.raises(InputError, match="cannot tell which column holds the text"):
        read_labelled(three)

    tsv = write(tmp_path / "t.tsv", "登录不了\tlogin\n扣了两次钱\tbilling\n", encoding="gb18030")
    found = read_labelled(tsv)
    assert found.encoding == "gb18030" and found.rows == [("登录不了", "login"), ("扣了两次钱", "billing")]

    jsonl = write(
        tmp_path / "n.jsonl", '{"text": "新品发布", "label": "科技"}\nnot json\n{"text": "进球", "label": 1}\n'
    )
    found = read_labelled(jsonl)
    assert found.rows == [("新品发布", "科技"), ("进球", "1")] and found.bad.examples == [
        "n.jsonl:2: not a JSON object"
    ]

    for label, texts in (("开心", ["考试过了", "收到礼物"]), ("难过", ["猫走丢了"])):
        for i, t in enumerate(texts):
            write(tmp_path / "moods" / label / f"{i}.txt", t)
    write(tmp_path / "moods" / "开心" / "notes.md", "not a text of the class")
    found = read_labelled(tmp_path / "moods")
    assert found.format == "folder" and sorted(found.rows) == [
        ("收到礼物", "开心"),
        ("猫走丢了", "难过"),
        ("考试过了", "开心"),
    ]


def test_a_label_seen_once_or_twice_is_reported_as_a_likely_typo(tmp_path):
    rows = reviews(60) + [("味道很棒", "好坪")]
    found = read_labelled(write(tmp_path / "r.csv", csv_text(rows)))
    assert found.rare() == ["好坪"]
    assert any("好坪" in line and "typo" in line for line in found.describe())


def test_split_weights_order_and_the_baseline_line():
    train, dev = stratified_split([0] * 40 + [1] * 20 + [2] * 2, 0.25, seed=0)
    held = [([0] * 40 + [1] * 20 + [2] * 2)[i] for i in dev]
    assert held.count(0) == 10 and held.count(1) == 5 and held.count(2) == 0  # a class of 2 stays whole
    assert sorted(train + dev) == list(range(62))
    assert class_weights([100, 100], "auto") is None and class_weights([300, 100], "none") is None
    assert class_weights([300, 100], "balanced") == pytest.approx([2 / 3, 2.0])
    assert class_weights([300, 100], "auto") == pytest.approx([(2 / 3) ** 0.5, 2**0.5])
    assert label_order(["10", "2", "1"]) == ["1", "2", "10"] and label_order(["差评", "好评"]) == ["好评", "差评"]
    line, weak = baseline_line(0.80, 0.90, 0.5)
    assert weak and "does not beat the simple baseline" in line and "10.0 points below" in line
    line, weak = baseline_line(0.92, 0.90, 0.5)
    assert not weak and "beats the simple baseline" in line and "by 2.0 points" in line
    assert baseline_line(0.5, 0.9, 0.5)[1] and "no better than always answering" in baseline_line(0.5, 0.9, 0.5)[0]


# -- bad files: one line, exit 2 -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, content, reason",
    [
        ("one.csv", "text,label\n好吃,好评\n不错,好评\n", "only one class"),
        ("cols.csv", "a,b,c\n1,2,3\n", "cannot tell which column holds the text"),
        ("empty.csv", "text,label\n,好评\n  ,差评\n", "no usable labelled text"),
        ("bin.csv", b"\x00\x01\x02\x89PNG" * 100, "binary"),
    ],
)
def test_bad_files_get_one_line_and_exit_2(tmp_path, capsys, name, content, reason):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    assert guarded(classify_script.main, ["--data", str(path), "--output", str(tmp_path / "o"), *TINY]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and reason in errors[0] and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_a_file_over_the_size_limit_is_refused_before_reading(tmp_path, capsys, monkeypatch):
    import data.labelled

    monkeypatch.setattr(data.labelled, "MAX_DATA_BYTES", 1000)
    big = write(tmp_path / "big.csv", csv_text(reviews(200)))
    assert guarded(classify_script.main, ["--data", str(big), "--output", str(tmp_path / "o"), *TINY]) == 2
    assert "train on a sample of it" in capsys.readouterr().err


# -- training end to end --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def classify_checkpoint(tmp_path_factory):
    work = tmp_path_factory.mktemp("classify")
    data = write(work / "reviews.csv", csv_text(reviews(150)))
    out = work / "model"
    argv = ["--data", str(data), "--output", str(out), "--epochs", "8", "--lr", "3e-3", "--valid-ratio", "0.2", *TINY]
    assert guarded(classify_script.main, argv) == 0
    return out


@pytest.mark.slow
def test_the_checkpoint_holds_the_users_labels_and_a_report_that_says_whether_it_learned(classify_checkpoint):
    config = json.loads((classify_checkpoint / "config.json").read_text(encoding="utf-8"))
    assert sorted(config["id2label"].values()) == ["中评", "好评", "差评"]  # the user's strings, never LABEL_0
    report = json.loads((classify_checkpoint / "training_report.json").read_text(encoding="utf-8"))
    assert report["task"] == "classify" and report["data"]["train"]["columns"] == ["评论", "标签"]
    assert report["data"]["valid"]["rows"] == 30 and sum(report["class_counts"].values()) == 120
    assert report["dev_accuracy"] >= 0.9 and report["tfidf_baseline"] is not None  # one word decides each class
    assert set(report["per_class"]) == {"中评", "好评", "差评"} and len(report["confusion"]) == 3
    assert "simple baseline" in report["metrics_line"] and report["majority_baseline"] == pytest.approx(1 / 3, abs=1e-3)
    assert (classify_checkpoint / "confusion.png").stat().st_size > 1000
    assert "confusion.png" in json.loads((classify_checkpoint / "checkpoint_manifest.json").read_text())["files"]


@pytest.mark.slow
def test_the_predictor_and_a_plain_pipeline_read_the_folder_for_any_length(classify_checkpoint, tmp_path):
    from transformers import pipeline

    from chat.classify import ClassifyPredictor

    predictor = ClassifyPredictor.from_pretrained(str(classify_checkpoint))
    result = predictor.predict("这家店强烈推荐")
    assert result["label"] == "好评" and sum(result["probabilities"].values()) == pytest.approx(1, abs=1e-3)
    with pytest.raises(InputError):
        predictor.predict("   ")
    classify = pipeline("text-classification", model=str(classify_checkpoint), truncation=True)
    assert classify("太失望了" * 2000)[0]["label"] in ("中评", "好评", "差评")  # cut to the model's positions
    texts = write(tmp_path / "in.csv", 'id,评论\n1,难吃极了再也不买\n2,"一般般, 凑合"\n')
    out = tmp_path / "labels.csv"
    assert predictor.predict_file(str(texts), str(out)) == 2
    rows = list(csv.reader(out.open(encoding="utf-8-sig")))
    want = predictor.predict("难吃极了再也不买")
    assert rows[0] == ["text", "label", "probability"] and rows[1] == [
        "难吃极了再也不买",
        want["label"],
        str(want["probability"]),
    ]
    assert rows[2][0] == "一般般, 凑合"


@pytest.mark.slow
def test_the_sample_reviews_train_from_scratch_in_the_demo_recipe(tmp_path):
    """The demo's own recipe (training/tasks/classify/demo.yaml) on the sample: it learns (beats the majority
    class by far) in its budget."""
    from training.tasks.classify import TRAINING

    out = tmp_path / "demo"
    argv = ["--data", str(SAMPLES / "reviews.csv"), "--config", TRAINING.path(TRAINING.demo), "--model", "scratch"]
    assert guarded(classify_script.main, [*argv, "--output", str(out), "--max-minutes", "1", "--seed", "0"]) == 0
    report = json.loads((out / "training_report.json").read_text(encoding="utf-8"))
    assert report["labels"] == ["价格", "服务", "物流", "质量"] and report["dev_accuracy"] >= 0.6
