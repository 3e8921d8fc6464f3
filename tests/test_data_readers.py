"""Dialogue readers: every format, every bad-row kind, encodings and unusable files."""

from __future__ import annotations

import json

import pytest

from data import InputError, despace, looks_char_spaced, read_dialogues
from data.textio import read_text
from tests.conftest import SAMPLES, write


def test_blank_line_text(tmp_path):
    p = write(tmp_path / "d.txt", "你好\n你好呀\n\n\n吃了吗\n吃了\n还没呢\n")
    f = read_dialogues(p)
    assert f.format == "text"
    assert f.dialogues == [["你好", "你好呀"], ["吃了吗", "吃了", "还没呢"]]


def test_single_utterance_dialogue_is_skipped_with_line(tmp_path):
    p = write(tmp_path / "d.txt", "你好\n你好呀\n\n孤零零的一句\n\n在吗\n在\n")
    f = read_dialogues(p)
    assert len(f.dialogues) == 2
    assert f.bad.count == 1
    assert f.bad.examples == ["d.txt:4: dialogue has only one utterance"]
    assert "skipped 1 bad dialogues" in f.bad.summary("dialogues")


def test_jsonl_shapes_and_bad_rows(tmp_path):
    rows = [
        json.dumps({"dialogue": ["你好", "你好呀"]}, ensure_ascii=False),
        json.dumps(["在吗", "在的"], ensure_ascii=False),
        json.dumps(
            {"messages": [{"role": "user", "content": "早"}, {"role": "assistant", "content": "早上好"}]},
            ensure_ascii=False,
        ),
        "{not json",
        json.dumps({"text": "no dialogue key"}),
        json.dumps({"dialogue": ["只有一句"]}, ensure_ascii=False),
        json.dumps({"dialogue": ["你好", ""]}, ensure_ascii=False),
        json.dumps({"dialogue": ["你好", {"x": 1}]}, ensure_ascii=False),
    ]
    f = read_dialogues(write(tmp_path / "d.jsonl", "\n".join(rows) + "\n"))
    assert f.format == "jsonl"
    assert f.dialogues == [["你好", "你好呀"], ["在吗", "在的"], ["早", "早上好"]]
    assert f.bad.count == 5
    reasons = "\n".join(f.bad.examples)
    for expected in (
        "d.jsonl:4: not valid JSON",
        "d.jsonl:5: no 'dialogue' field",
        "d.jsonl:6: dialogue has only one utterance",
        "d.jsonl:7: empty utterance",
        "d.jsonl:8: utterance is a dict",
    ):
        assert expected in reasons


def test_lccc_json_joins_spaced_characters_and_keeps_splits(tmp_path):
    obj = {
        "train": [
            ["遭 淋 安 逸 了 ？", "是 哈 ， 你 没 遭 撒 ？"],
            ["打 包 2 斤 牛 油 回 来 ， 谢 谢 。", "I love you 哈 哈 哈"],
            ["一 句"],
        ],
        "valid": [["生 快", "姐 也 要 快 哈"]],
    }
    f = read_dialogues(write(tmp_path / "lccc.json", json.dumps(obj, ensure_ascii=False)))
    assert f.format == "lccc" and f.char_spaced
    assert f.dialogues == [["遭淋安逸了？", "是哈，你没遭撒？"], ["打包2斤牛油回来，谢谢。", "I love you哈哈哈"]]
    assert f.other_splits["valid"] == [["生快", "姐也要快哈"]]
    assert f.bad.examples == ["lccc.json#train[2]: dialogue has only one utterance"]


def test_tsv_single_turn_with_empty_columns(tmp_path):
    p = write(tmp_path / "pairs.tsv", "你好\t你好呀\n在吗\t\t在的\n只有一列\n")
    f = read_dialogues(p)
    assert f.format == "tsv"
    assert f.dialogues == [["你好", "你好呀"], ["在吗", "在的"]]
    assert f.bad.examples == ["pairs.tsv:3: expected `utterance<TAB>reply`"]


def test_tsv_detected_in_txt(tmp_path):
    p = write(tmp_path / "single.txt", "为 什 么 ？\t因 为 下 雨 了\n好 的\t那 走 吧\n")
    f = read_dialogues(p)
    assert f.format == "tsv"
    assert f.dialogues[0] == ["为什么？", "因为下雨了"]


def test_chatterbot_yaml(tmp_path):
    text = "categories:\n- greetings\nconversations:\n- - 你好\n  - 你好，很高兴认识你\n- - 一句\n- - 1\n  - 2\n"
    f = read_dialogues(write(tmp_path / "greet.yml", text))
    assert f.format == "yaml"
    assert f.dialogues == [["你好", "你好，很高兴认识你"], ["1", "2"]]
    assert f.bad.examples == ["greet.yml#conversations[1]: dialogue has only one utterance"]


@pytest.mark.parametrize(
    "name,content,message",
    [
        ("bad.yaml", "conversations: [unclosed", "not valid YAML"),
        ("bad.yaml", "just: text\n", "`conversations:` list"),
        ("bad.json", '{"train": [', "not valid JSON"),
        ("one.txt", "只有一句\n", "no usable dialogue"),
    ],
)
def test_unusable_files_raise_one_sentence(tmp_path, name, content, message):
    with pytest.raises(InputError, match=message):
        read_dialogues(write(tmp_path / name, content))


def test_missing_empty_binary_files(tmp_path):
    with pytest.raises(InputError, match="file not found"):
        read_text(tmp_path / "nope.txt")
    with pytest.raises(InputError, match="is empty"):
        read_text(write(tmp_path / "empty.txt", "  \n\n"))
    (tmp_path / "bin.dat").write_bytes(bytes(range(256)) * 8)
    with pytest.raises(InputError, match="binary"):
        read_text(tmp_path / "bin.dat")
    with pytest.raises(InputError, match="is a folder"):
        read_text(tmp_path)


def test_gb18030_is_read_and_reported(tmp_path):
    p = write(tmp_path / "gbk.txt", "你好\n今天天气真好\n", encoding="gb18030")
    f = read_dialogues(p)
    assert f.encoding == "gb18030"
    assert f.dialogues == [["你好", "今天天气真好"]]


def test_undecodable_text_is_refused(tmp_path):
    (tmp_path / "latin.txt").write_bytes(b"\xff\xfe\xfd\x81\x30 caf\xe9 \x80\x80\x80\n" * 20)
    with pytest.raises(InputError):
        read_text(tmp_path / "latin.txt")


def test_long_line_is_kept_for_the_encoder(tmp_path):
    long = "长" * 10_000
    f = read_dialogues(write(tmp_path / "d.txt", f"你好\n{long}\n"))
    assert len(f.dialogues[0][1]) == 10_000


def test_despace_rules():
    assert despace("打 包 2 斤 ， 谢 谢 。") == "打包2斤，谢谢。"
    assert despace("I love NLP 2 much") == "I love NLP 2 much"
    assert despace("真 的 瘦 了 . . . .") == "真的瘦了...."
    assert not looks_char_spaced(["我们今天去公园玩吧，天气很好，阳光明媚"])
    assert looks_char_spaced(["我 们 今 天 去 公 园 玩 吧 ， 天 气 很 好"])


def test_sample_dialogues_meet_the_brief():
    f = read_dialogues(SAMPLES / "dialogs.txt")
    assert len(f.dialogues) >= 200 and f.bad.count == 0
    assert all(2 <= len(d) <= 6 for d in f.dialogues)
    assert len({d[0] for d in f.dialogues}) > 180  # varied openers, not one template


@pytest.mark.shared_data
def test_real_lccc_files(shared_data):
    f = read_dialogues(shared_data / "lccc" / "multi_turn.json")
    assert len(f.dialogues) >= 900 and len(f.other_splits["valid"]) >= 150
    assert " " not in f.dialogues[0][0] or any(c.isascii() for c in f.dialogues[0][0])
    single = read_dialogues(shared_data / "lccc" / "single_turn_valid.txt")
    assert single.format == "tsv" and len(single.dialogues) > 1000
