"""Cloze corpus and prompt readers, windows, jieba word offsets and the masking rates."""

from __future__ import annotations

import json

import pytest

from data import InputError, build_char_vocab, make_tokenizer
from data.corpus import jieba_word_offsets, normalize_masks, read_corpus, read_prompts, windows
from tests.conftest import SAMPLES, write


def test_plain_and_jsonl_corpus(tmp_path):
    c = read_corpus(write(tmp_path / "c.txt", "第一段文字。\n\n 第二段  文字。\n好\n"))
    assert c.passages == ["第一段文字。", "第二段 文字。"]
    assert c.bad.examples == ["c.txt:4: shorter than 2 characters"]
    rows = [json.dumps({"text": "三国人物诸葛涛"}, ensure_ascii=False), "{bad", json.dumps({"body": "x"})]
    j = read_corpus(write(tmp_path / "c.jsonl", "\n".join(rows)))
    assert j.passages == ["三国人物诸葛涛"] and j.bad.count == 2
    assert "c.jsonl:2: not valid JSON" in j.bad.examples and "c.jsonl:3: no 'text' field" in j.bad.examples


def test_unusable_corpus_files(tmp_path):
    with pytest.raises(InputError, match="no passage long enough"):
        read_corpus(write(tmp_path / "one.txt", "字\n"))
    with pytest.raises(InputError, match="is empty"):
        read_corpus(write(tmp_path / "empty.txt", "\n"))


def test_prompts_normalise_masks_and_skip_bad_lines(tmp_path):
    text = "# comment\n三国人物诸[mask]［MASK］\t葛涛\n没有掩码的句子\t涛\n诸[MASK][MASK]\t涛\n只有文字\n"
    prompts, bad = read_prompts(write(tmp_path / "p.tsv", text))
    assert [(p.text, p.answer) for p in prompts] == [("三国人物诸[MASK][MASK]", "葛涛")]
    assert bad.count == 3
    joined = "\n".join(bad.examples)
    assert "p.tsv:3: the text has no [MASK]" in joined and "p.tsv:4: 2 [MASK] but the answer" in joined
    with pytest.raises(InputError, match="no usable prompt"):
        read_prompts(write(tmp_path / "none.tsv", "没有掩码\t答\n"))
    assert normalize_masks("a[ mask ]b［mask］") == "a[MASK]b[MASK]"


def test_windows_overlap_and_cover_the_end():
    ids = list(range(10))
    assert windows(ids, 4, 1) == [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9]]
    assert windows(ids, 20, 5) == [ids]
    assert windows(list(range(11)), 4, 1)[-1] == [7, 8, 9, 10]


def test_jieba_words_become_touching_offsets():
    import jieba

    jieba.add_word("诸葛涛")
    text = "三国人物诸葛涛"
    offsets = jieba_word_offsets(text, [(i, i + 1) for i in range(len(text))])
    words, current = [], [text[0]]
    for k in range(1, len(text)):
        if offsets[k][0] == offsets[k - 1][1]:
            current.append(text[k])
        else:
            words.append("".join(current))
            current = [text[k]]
    words.append("".join(current))
    assert "诸葛涛" in words and "三国" in words


def _collator(tmp, **kw):
    from training.tasks.cloze.masking import ClozeCollator
    from training.tasks.cloze.options import ClozeArguments

    corpus = str(SAMPLES / "cloze_corpus.txt")
    args = ClozeArguments(data=corpus, **kw)
    tok = make_tokenizer(build_char_vocab(read_corpus(corpus).passages))
    return tok, args, ClozeCollator(tok, args, seed=0)


def test_masking_rates_match_the_flags(tmp_path):
    from training.tasks.cloze.masking import encode_passages

    tok, args, collator = _collator(tmp_path)
    assert args.mlm_probability == 0.4  # the default for a fact corpus (0.15 with --pairs)
    tok, args, collator = _collator(tmp_path, mlm_probability=0.15)
    examples = encode_passages(tok, read_corpus(SAMPLES / "cloze_corpus.txt").passages * 20, 128, 32, False)
    masked = replaced = random_or_kept = total = 0
    for i in range(0, len(examples), 64):
        chunk = examples[i : i + 64]
        batch = collator([dict(e) for e in chunk])
        originals = [
            e["input_ids"] + [tok.pad_token_id] * (batch["input_ids"].shape[1] - len(e["input_ids"])) for e in chunk
        ]
        for row, labels, orig, ex in zip(batch["input_ids"].tolist(), batch["labels"].tolist(), originals, chunk):
            total += sum(1 for m in ex["special_tokens_mask"] if m == 0)
            for token, label, o in zip(row, labels, orig):
                if label != -100:
                    masked += 1
                    assert label == o
                    replaced += token == tok.mask_token_id
                    random_or_kept += token != tok.mask_token_id
    assert total > 10_000
    assert abs(masked / total - 0.15) < 0.015
    assert abs(replaced / masked - 0.8) < 0.03 and abs(random_or_kept / masked - 0.2) < 0.03


def test_whole_word_masking_keeps_jieba_words_whole(tmp_path):
    import jieba

    from training.tasks.cloze.masking import encode_passages

    words_file = write(tmp_path / "dict.txt", "诸葛涛\n林小溪\n")
    jieba.load_userdict(str(words_file))
    tok, args, collator = _collator(tmp_path, whole_word_mask=True, mlm_probability=0.3)
    passages = ["三国人物诸葛涛擅长天文和水利。", "林小溪是青柠镇最有名的面包师。"] * 200
    examples = encode_passages(tok, passages, 64, 16, True)
    batch = collator([dict(e) for e in examples])
    name_masks = {"诸葛涛": set(), "林小溪": set()}
    for text, labels in zip(passages, batch["labels"].tolist()):
        for name in name_masks:
            at = text.find(name)
            if at >= 0:
                # token i of the text sits at position i+1 (after [CLS])
                name_masks[name].add(tuple(labels[1 + at + k] != -100 for k in range(len(name))))
    for name, patterns in name_masks.items():
        assert patterns == {(True, True, True), (False, False, False)}, name  # all or nothing, both seen


def test_pair_windows_match_the_pair_task_and_keep_words_in_their_sentence(tmp_path):
    import jieba

    from training.tasks.cloze.masking import encode_pairs

    jieba.load_userdict(str(write(tmp_path / "dict.txt", "诸葛涛\n林小溪\n")))
    tok, args, collator = _collator(tmp_path, whole_word_mask=True, mlm_probability=0.5)
    pairs = [("诸葛涛擅长天文", "林小溪是面包师")] * 300
    examples = encode_pairs(tok, pairs, 64, True)
    plain = tok(*pairs[0])  # what training/similarity.py feeds the model
    assert examples[0]["input_ids"] == plain["input_ids"] and examples[0]["token_type_ids"] == plain["token_type_ids"]
    batch = collator([dict(e) for e in examples])
    special = [i for i, s in enumerate(examples[0]["special_tokens_mask"]) if s]
    assert len(special) == 3  # [CLS], the [SEP] between the sentences, the last [SEP]
    first, second = 1, 1 + len(pairs[0][0]) + 1  # where each sentence's first character sits
    patterns = set()
    for labels in batch["labels"].tolist():
        assert all(labels[i] == -100 for i in special)  # special tokens are never masked
        patterns.add(
            (tuple(labels[first + k] != -100 for k in range(3)), tuple(labels[second + k] != -100 for k in range(3)))
        )
    # Each name is masked whole or not at all, independently of the name in the other sentence.
    assert {p for p, _ in patterns} == {(True,) * 3, (False,) * 3} and {q for _, q in patterns} == {
        (True,) * 3,
        (False,) * 3,
    }
    assert len(patterns) == 4
