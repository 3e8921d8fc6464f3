"""Sentence-pair readers: formats, label kinds, bad rows."""

from __future__ import annotations

import json

import pytest

from data import InputError
from data.pairs import read_pairs
from tests.conftest import write


def test_tsv_binary_with_empty_columns_and_bad_rows(tmp_path):
    text = "花呗怎么还款\t花呗如何还钱\t1\n今天天气好\t\t明天下雨吗\t0\n只有一句\t\t1\n没有标签\t另一句\n坏标签\t另一句\tx\n三列以上\t多\t余\t1\n"  # noqa: E501 (one file's rows)
    f = read_pairs(write(tmp_path / "p.tsv", text))
    assert f.format == "tsv" and f.task == "classification" and f.label_names == ["0", "1"]
    assert f.pairs == [("花呗怎么还款", "花呗如何还钱"), ("今天天气好", "明天下雨吗")] and f.labels == [1, 0]
    reasons = "\n".join(f.bad.examples)
    assert f.bad.count == 4
    for expected in (
        "p.tsv:3: a sentence is missing",
        "p.tsv:4: no label",
        "p.tsv:5: label 'x' is not a class number",
        "p.tsv:6: expected `s1<TAB>s2<TAB>label`",
    ):
        assert expected in reasons


def test_afqmc_jsonl_with_string_labels(tmp_path):
    rows = [
        {"sentence1": "借呗能提前还吗", "sentence2": "借呗可以提前还款吗", "label": "1"},
        {"sentence1": "花呗额度", "sentence2": "借呗利息", "label": 0},
        {"sentence1": "缺第二句", "label": "1"},
        "not an object",
    ]
    f = read_pairs(
        write(tmp_path / "afqmc.json", "\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n{bad\n")
    )
    assert f.format == "jsonl" and f.labels == [1, 0] and f.bad.count == 3


def test_sts_scores_are_regression(tmp_path):
    text = "一个男人在跳舞。\t一个男人在跳舞。\t5\n一个小孩在骑马。\t孩子在骑马。\t4\n女人弹吉他。\t一个人弹吉他。\t2\n猫\t狗在跑\t0\n男人切洋葱\t男人切土豆\t1\n两人说话\t他们聊天\t3\n"  # noqa: E501 (one file's rows)
    f = read_pairs(write(tmp_path / "sts.tsv", text))
    assert f.task == "regression" and f.labels == [5.0, 4.0, 2.0, 0.0, 1.0, 3.0] and f.label_names is None
    g = read_pairs(write(tmp_path / "sts2.tsv", "甲\t乙\t3.8\n丙\t丁\t1\n"))
    assert g.task == "regression"
    forced = read_pairs(write(tmp_path / "bin.tsv", "甲\t乙\t1\n丙\t丁\t0\n"), task="regression")
    assert forced.task == "regression"


def test_nli_words_become_classes_and_map_is_reused(tmp_path):
    text = "sentence1,sentence2,label\n他在跑步,他在运动,entailment\n他在睡觉,他在跑步,contradiction\n他在吃饭,他饿了,neutral\n他在唱歌,他在走路,maybe\n"  # noqa: E501 (one file's rows)
    train = read_pairs(write(tmp_path / "nli.csv", text))
    assert train.task == "classification" and train.label_names == ["contradiction", "entailment", "maybe", "neutral"]
    dev = read_pairs(
        write(tmp_path / "dev.csv", "sentence1,sentence2,label\n甲,乙,neutral\n丙,丁,unknown\n"),
        label_names=["contradiction", "entailment", "neutral"],
    )
    assert dev.labels == [2] and "label 'unknown' is not one of" in dev.bad.examples[0]


def test_unlabelled_file_for_prediction(tmp_path):
    f = read_pairs(write(tmp_path / "q.tsv", "你好吗\t你还好吗\n在哪里\t去哪里\n"), require_labels=False)
    assert f.task == "unlabelled" and f.labels is None and len(f.pairs) == 2


@pytest.mark.parametrize(
    "name,content,message",
    [
        ("h.csv", "a,b,c\n1,2,3\n", "header must name the two sentence columns"),
        ("e.tsv", "只有\t\n", "no usable sentence pair"),
        ("l.tsv", "甲\t乙\t-1\n丙\t丁\t-2\n", "no pair with a usable label"),
    ],
)
def test_unusable_files(tmp_path, name, content, message):
    with pytest.raises(InputError, match=message):
        read_pairs(write(tmp_path / name, content))


@pytest.mark.shared_data
def test_real_pair_files(shared_data):
    afqmc = read_pairs(shared_data / "afqmc" / "dev.txt")
    assert afqmc.task == "classification" and len(afqmc.pairs) == 4316
    assert 0.68 < afqmc.class_counts()[0] / len(afqmc.labels) < 0.70
    sts = read_pairs(shared_data / "sts-b" / "dev.txt")
    assert sts.task == "regression" and max(sts.labels) == 5
