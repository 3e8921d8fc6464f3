"""The dialogue encoder and the character vocab, plus the transformers 5 tokenizer pitfalls."""

from __future__ import annotations

import pytest

from data import SPECIAL_TOKENS, DialogueEncoder, build_char_vocab, make_tokenizer, write_vocab


@pytest.fixture(scope="module")
def tok():
    return make_tokenizer(build_char_vocab(["你好呀，今天吃了吗？还没呢 hello 123", "我们去吃面吧"]))


def test_layout_cls_u1_sep_u2_sep(tok):
    enc = DialogueEncoder(tok, 64).encode(["你好", "吃了吗"])
    text = tok.convert_ids_to_tokens(enc.input_ids)
    assert text == ["[CLS]", "你", "好", "[SEP]", "吃", "了", "吗", "[SEP]"]
    assert enc.labels[0] == -100 and enc.labels[1:] == enc.input_ids[1:]


def test_loss_on_replies_and_last(tok):
    e = DialogueEncoder(tok, 64)
    ids = e.encode(["你好", "好", "吃了吗", "还没"], "replies")
    tokens = tok.convert_ids_to_tokens(ids.input_ids)
    learned = [t for t, label in zip(tokens, ids.labels) if label != -100]
    assert learned == ["好", "[SEP]", "还", "没", "[SEP]"]
    last = e.encode(["你好", "好", "吃了吗"], "last")
    assert [t for t, label in zip(tok.convert_ids_to_tokens(last.input_ids), last.labels) if label != -100] == [
        "吃",
        "了",
        "吗",
        "[SEP]",
    ]
    with pytest.raises(ValueError):
        e.encode(["a", "b"], "everything")


def test_long_dialogue_drops_earliest_turns_first(tok):
    e = DialogueEncoder(tok, 12)
    enc = e.encode(["你好呀", "今天吃了吗", "还没呢", "去吃面吧"])
    assert len(enc.input_ids) <= 12
    assert tok.decode(enc.input_ids, skip_special_tokens=True).replace(" ", "") == "还没呢去吃面吧"
    assert enc.dropped_turns == 2
    # the speaker of each kept turn is still known: "还没呢" is the first speaker (turn 3)
    replies = e.encode(["你好呀", "今天吃了吗", "还没呢", "去吃面吧"], "replies")
    kept = [t for t, label in zip(tok.convert_ids_to_tokens(replies.input_ids), replies.labels) if label != -100]
    assert kept == ["去", "吃", "面", "吧", "[SEP]"]


def test_single_overlong_utterance_is_cut_to_fit(tok):
    e = DialogueEncoder(tok, 16)
    enc = e.encode(["你好", "好" * 10_000])
    assert len(enc.input_ids) == 16 and enc.cut_turns == 1
    assert enc.input_ids[-1] == tok.sep_token_id


def test_prompt_keeps_latest_turns_and_ends_with_sep(tok):
    e = DialogueEncoder(tok, 32)
    ids = e.encode_prompt(["你好", "好", "吃了吗", "还没呢"], max_history=2)
    assert tok.convert_ids_to_tokens(ids) == ["[CLS]", "吃", "了", "吗", "[SEP]", "还", "没", "呢", "[SEP]"]
    long_ids = e.encode_prompt(["你好" * 100 + "吃面"], reserve=10)
    assert len(long_ids) <= 22 and tok.convert_ids_to_tokens(long_ids)[-3:] == ["吃", "面", "[SEP]"]


def test_a_growing_conversation_drops_its_oldest_turns_a_step_at_a_time(tok):
    """With step 4 the window's start moves 4 turns at once: the prompts between two moves each continue
    the one before (what a prefix cache reuses); with step 1 every prompt past the limit starts anew."""
    e = DialogueEncoder(tok, 256)
    said = [f"hello {i}" for i in range(15)]

    def prompts(step):
        return [e.encode_prompt(said[:n], max_history=8, step=step) for n in range(1, 16, 2)]

    stepped, sliding = prompts(4), prompts(1)

    def continued(seq):
        return [seq[i][:-1] == seq[i + 1][: len(seq[i]) - 1] for i in range(len(seq) - 1)]

    assert continued(stepped) == [True, True, True, False, True, False, True]
    assert continued(sliding) == [True, True, True, False, False, False, False]
    seen = [tok.decode(p).replace(" ", "").count("[SEP]") for p in stepped]
    assert seen == [1, 3, 5, 7, 5, 7, 5, 7]  # never more than 8 turns, never fewer than 5
    assert tok.decode(stepped[4]).startswith("[CLS] hello 4 [SEP]")
    # too long for the length: the start moves by whole steps too, and the message always stays
    short, said = DialogueEncoder(tok, 30), ["我们去吃面吧"] * 6 + ["你好"]
    by_two, by_one = (short.encode_prompt(said, max_history=8, step=s, reserve=4) for s in (2, 1))
    assert tok.decode(by_two).replace(" ", "") == "[CLS]" + "我们去吃面吧[SEP]" * 2 + "你好[SEP]"  # from turn 4
    assert tok.decode(by_one).replace(" ", "") == "[CLS]" + "我们去吃面吧[SEP]" * 3 + "你好[SEP]"  # from turn 3


def test_vocab_specials_first_then_by_frequency():
    vocab = build_char_vocab(["好好好你你他", "Hello"], min_freq=2)
    assert vocab[:5] == SPECIAL_TOKENS
    assert vocab[5] == "好" and "你" in vocab and "他" not in vocab  # 好 x3 first; 他 x1 is under min_freq
    assert "h" in vocab and "##e" in vocab  # ASCII letters always, so English never becomes [UNK]


def test_tokenizer_knows_the_characters_and_english(tok):
    ids = tok("你好 hello", add_special_tokens=False)["input_ids"]
    assert tok.unk_token_id not in ids
    assert tok.convert_ids_to_tokens(ids) == ["你", "好", "h", "##e", "##l", "##l", "##o"]


def test_transformers5_pitfalls(tmp_path):
    """Guards for the documented transformers 5 behaviour the project relies on."""
    from transformers import BertTokenizerFast

    vocab = build_char_vocab(["你好世界"])
    path = write_vocab(vocab, str(tmp_path / "v"))
    # vocab_file= (the blog idiom) silently knows only the special tokens: never use it.
    wrong = BertTokenizerFast(vocab_file=path)
    assert wrong("你好", add_special_tokens=False)["input_ids"] == [wrong.unk_token_id] * 2
    right = BertTokenizerFast(vocab=path)
    assert right.unk_token_id not in right("你好", add_special_tokens=False)["input_ids"]
    # from_pretrained on a folder holding vocab.txt works; save_pretrained writes tokenizer.json
    loaded = BertTokenizerFast.from_pretrained(str(tmp_path / "v"))
    assert loaded("世界")["input_ids"] == right("世界")["input_ids"]
    right.save_pretrained(str(tmp_path / "saved"))
    assert (tmp_path / "saved" / "tokenizer.json").exists()
    # decode puts spaces between CJK characters (chat/ removes them with data.despace)
    assert right.decode(right("你好", add_special_tokens=False)["input_ids"]) == "你 好"
