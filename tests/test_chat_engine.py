"""ChatEngine on a tiny checkpoint: streaming, seeds, history, spacing, special tokens, bad input."""

from __future__ import annotations

import logging

import pytest
import torch

from chat import ChatEngine
from chat.engine import normalize_history
from data import InputError


@pytest.fixture(scope="module")
def engine(chat_checkpoint):
    return ChatEngine.from_pretrained(str(chat_checkpoint), max_history=4)


HISTORY = [{"role": "user", "content": "你好"}, {"role": "assistant", "content": "你好呀"}]


@pytest.mark.parametrize("message", ["今天天气怎么样？", "你喜欢吃什么", "hello"])
def test_stream_equals_reply_under_greedy(engine, message):
    pieces = list(engine.stream(HISTORY, message, do_sample=False, max_new_tokens=24))
    assert "".join(pieces) == engine.reply(HISTORY, message, do_sample=False, max_new_tokens=24)


def test_streamer_sends_text_as_it_grows_and_holds_partial_english(engine):
    from chat.engine import _Streamer

    tok = engine.tokenizer
    streamer = _Streamer(engine)
    streamer.put(torch.tensor([[tok.cls_token_id]]))  # the prompt comes first and is skipped
    sent = []
    for token in tok("你好hello，再见", add_special_tokens=False)["input_ids"]:
        streamer.put(torch.tensor([token]))
        while not streamer.queue.empty():
            sent.append(streamer.queue.get())
    streamer.end()
    sent += [p for p in iter(streamer.queue.get, None)]
    assert sent == ["你", "好", "hello，", "再", "见"]


def test_same_seed_same_reply_and_seeds_matter(engine):
    a = engine.reply(HISTORY, "吃了吗", seed=7, do_sample=True, temperature=1.5, top_k=0, top_p=1.0)
    b = engine.reply(HISTORY, "吃了吗", seed=7, do_sample=True, temperature=1.5, top_k=0, top_p=1.0)
    assert a == b
    others = {
        engine.reply(HISTORY, "吃了吗", seed=s, do_sample=True, temperature=1.5, top_k=0, top_p=1.0) for s in range(5)
    }
    assert len(others) > 1


def test_special_tokens_are_never_generated(engine):
    tok = engine.tokenizer
    banned = {tok.pad_token_id, tok.unk_token_id, tok.cls_token_id, tok.mask_token_id}
    seen = []
    for seed in range(6):
        seen += engine.generate_ids(
            [], "你好", seed=seed, do_sample=True, temperature=5.0, top_k=0, top_p=1.0, max_new_tokens=50
        )
    assert seen and not banned & set(seen)


def test_history_truncation_keeps_latest_turns(engine):
    history = ["第一句话", "第二句话", "第三句话", "第四句话", "第五句话"]
    ids = engine.build_prompt(history, "最后一句", max_new_tokens=10)
    text = engine.tokenizer.decode(ids).replace(" ", "")
    assert text == "[CLS]第三句话[SEP]第四句话[SEP]第五句话[SEP]最后一句[SEP]"  # max_history=4 turns
    long_history = ["很长的一句话" * 20] * 6
    ids = engine.build_prompt(long_history, "最后一句", max_new_tokens=20)
    assert len(ids) <= engine.max_len - 20 and engine.tokenizer.decode(ids).replace(" ", "").endswith("最后一句[SEP]")


def test_decoding_reads_as_written_chinese(engine):
    tok = engine.tokenizer
    ids = tok("你好，hello world！今天 3 点见？", add_special_tokens=False)["input_ids"]
    assert engine.decode(ids) == "你好，hello world！今天3点见？"


def test_history_shapes():
    assert normalize_history(["a", "b"]) == ["a", "b"]
    assert normalize_history([["你好", "你好呀"], ["在吗", None]]) == ["你好", "你好呀", "在吗"]
    assert normalize_history(HISTORY) == ["你好", "你好呀"]
    for bad in ("not a list", [{"role": "system", "content": "x"}], [{"role": "user"}], [42]):
        with pytest.raises(InputError):
            normalize_history(bad)


@pytest.mark.parametrize("message", ["", "   \n\t"])
def test_empty_message_is_refused(engine, message):
    with pytest.raises(InputError, match="empty"):
        engine.reply([], message)


def test_huge_message_is_cut_from_the_left_with_a_warning(engine, caplog):
    with caplog.at_level(logging.WARNING, logger="chat"):
        out = engine.reply([], "废话" * 5000 + "你好", do_sample=False, max_new_tokens=8)
    assert out == engine.reply([], "废话" * 500, do_sample=False, max_new_tokens=8)  # what the kept end gives
    assert "cut to its last" in caplog.text
    ids = engine.build_prompt([], "废话" * 5000 + "你好", max_new_tokens=8)
    assert engine.tokenizer.decode(ids).replace(" ", "").endswith("你好[SEP]")


def test_emoji_and_unknown_characters_are_handled(engine):
    ids = engine.build_prompt([], "😀😀 ☃ 𠀀 ok", 8)
    unk = engine.tokenizer.unk_token_id
    assert ids[0] == engine.tokenizer.cls_token_id and ids[-1] == engine.tokenizer.sep_token_id and unk in ids
    reply = engine.generate_ids([], "😀😀 ☃ 𠀀 ok", do_sample=False, max_new_tokens=8)
    assert reply and unk not in reply  # an answer, and [UNK] is never written
    assert engine.reply([], "😀😀 ☃ 𠀀 ok", do_sample=False, max_new_tokens=8) == engine.decode(reply)


@pytest.mark.parametrize(
    "bad", [dict(temperature=-1), dict(top_p=0), dict(max_new_tokens=0), dict(repetition_penalty=0.5), dict(top_k=-3)]
)
def test_bad_settings_are_refused(engine, bad):
    with pytest.raises(InputError):
        engine.reply([], "你好", **bad)


def test_temperature_zero_means_greedy(engine):
    assert engine.reply([], "你好", temperature=0, max_new_tokens=12) == engine.reply(
        [], "你好", do_sample=False, max_new_tokens=12
    )


def test_each_setting_reaches_generate_and_the_checkpoint_fills_the_rest(engine, monkeypatch):
    """What the engine hands to model.generate: the caller's settings over the checkpoint's
    generation_config.json (GPT2-chitchat's own penalty divided negative logits, making repeats more
    likely; transformers' processor, which generate builds from this config, multiplies them)."""
    seen = []
    real = engine.model.generate

    def spy(**kwargs):
        seen.append(kwargs["generation_config"])
        return real(**kwargs)

    monkeypatch.setattr(engine.model, "generate", spy)
    engine.reply([], "你好", repetition_penalty=2.0, top_k=3, max_new_tokens=5)
    engine.reply([], "你好", temperature=0, max_new_tokens=5)
    tuned, greedy = seen
    assert (tuned.repetition_penalty, tuned.top_k, tuned.max_new_tokens, tuned.do_sample) == (2.0, 3, 5, True)
    assert (
        tuned.top_p == engine.defaults.top_p and tuned.temperature == engine.defaults.temperature
    )  # not given: the checkpoint's
    assert greedy.do_sample is False and greedy.repetition_penalty == engine.defaults.repetition_penalty
    assert engine.defaults.repetition_penalty == 1.2  # training/chat.py wrote data.encoder.CHAT_SAMPLING


def _next_token_choices(engine, texts):
    ids = [torch.tensor([engine.tokenizer(t)["input_ids"]]) for t in texts]
    with torch.inference_mode():
        return torch.cat([engine.model(input_ids=x).logits.argmax(-1)[0] for x in ids])


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_fast_paths_pick_the_same_tokens_as_fp32(engine, chat_checkpoint, precision):
    fast = ChatEngine.from_pretrained(str(chat_checkpoint), precision=precision, max_history=4)
    assert fast.precision == precision
    if precision == "bf16":
        assert fast.model.dtype == torch.bfloat16
    else:  # every linear layer (GPT-2's Conv1D included) now holds int8 weights
        from torch.ao.nn.quantized.dynamic import Linear as Int8Linear
        from transformers.pytorch_utils import Conv1D

        modules = list(fast.model.modules())
        assert (
            sum(isinstance(m, Int8Linear) for m in modules) == 4 * fast.model.config.n_layer + 1
        )  # (qkv, proj, fc, proj) per layer + lm_head
        assert not any(type(m) in (Conv1D, torch.nn.Linear) for m in modules)
    texts = ["你好呀，今天过得怎么样？", "周末一起去爬山吧", "我最近在学做饭", "hello，你是谁"]
    same = (_next_token_choices(fast, texts) == _next_token_choices(engine, texts)).float().mean().item()
    assert same >= 0.8, f"{precision} agrees with fp32 on only {same:.0%} of next-token choices"
    pieces = list(fast.stream(HISTORY, "你好", do_sample=False, max_new_tokens=10))
    assert "".join(pieces) == fast.reply(HISTORY, "你好", do_sample=False, max_new_tokens=10)


@pytest.mark.parametrize("family", ["x86", "onednn"])
def test_int8_with_either_kernel_family_picks_the_same_tokens(engine, chat_checkpoint, monkeypatch, family):
    """The load times torch's two x86 int8 kernel families and packs with the faster (chat/quantize.py); either
    must answer as fp32 does. CHAT_INT8_ENGINE forces one, here each in turn."""
    if family not in torch.backends.quantized.supported_engines:
        pytest.skip(f"this torch has no {family} int8 kernels")
    monkeypatch.setenv("CHAT_INT8_ENGINE", family)
    before = torch.backends.quantized.engine
    fast = ChatEngine.from_pretrained(str(chat_checkpoint), precision="int8", max_history=4)
    assert fast.model.int8_engine == family
    assert torch.backends.quantized.engine == before  # the process-wide setting is left as it was
    texts = ["你好呀，今天过得怎么样？", "周末一起去爬山吧", "我最近在学做饭"]
    same = (_next_token_choices(fast, texts) == _next_token_choices(engine, texts)).float().mean().item()
    assert same >= 0.8, f"int8 ({family}) agrees with fp32 on only {same:.0%} of next-token choices"


def test_int8_engine_is_timed_here_and_a_bad_forced_one_is_one_line(monkeypatch):
    from chat.quantize import INT8_ENGINES, int8_engine

    picked = int8_engine(64, 256)
    assert picked in torch.backends.quantized.supported_engines
    if all(e in torch.backends.quantized.supported_engines for e in INT8_ENGINES):
        assert picked in INT8_ENGINES
    monkeypatch.setenv("CHAT_INT8_ENGINE", "avx9000")
    with pytest.raises(InputError, match="CHAT_INT8_ENGINE='avx9000': this torch has"):
        int8_engine(64, 256)


def test_fp32_is_prepacked_and_answers_as_the_stock_layers(engine, chat_checkpoint):
    from transformers import GPT2LMHeadModel
    from transformers.pytorch_utils import Conv1D

    if not torch.backends.mkldnn.is_available():
        pytest.skip("this torch has no oneDNN")
    packed = [m for m in engine.model.modules() if type(m).__name__ == "PackedLinear"]
    assert len(packed) == 4 * engine.model.config.n_layer + 1  # (qkv, proj, fc, proj) per layer + lm_head
    assert not any(isinstance(m, Conv1D) for m in engine.model.modules())
    stock = GPT2LMHeadModel.from_pretrained(str(chat_checkpoint)).eval()
    ids = torch.tensor([engine.tokenizer("你好呀，今天过得怎么样？")["input_ids"]] * 3)  # rows, as batching runs
    with torch.inference_mode():
        got, expected = engine.model(input_ids=ids).logits, stock(input_ids=ids).logits
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    stock_engine = ChatEngine(stock, engine.tokenizer, engine.defaults, max_history=4)
    assert engine.reply(HISTORY, "你好", do_sample=False, max_new_tokens=12) == stock_engine.reply(
        HISTORY, "你好", do_sample=False, max_new_tokens=12
    )


def test_fp32_keeps_the_stock_layers_where_packing_fails(chat_checkpoint, monkeypatch):
    from transformers import GPT2LMHeadModel
    from transformers.pytorch_utils import Conv1D

    from chat.quantize import pack_fp32

    def broken(*args):
        raise RuntimeError("no oneDNN kernel here")

    model = GPT2LMHeadModel.from_pretrained(str(chat_checkpoint)).eval()
    monkeypatch.setattr(torch.ops.mkldnn, "_linear_pointwise", broken)
    assert pack_fp32(model) is model
    assert sum(isinstance(m, Conv1D) for m in model.modules()) == 4 * model.config.n_layer
    assert isinstance(model.lm_head, torch.nn.Linear)
    model(input_ids=torch.tensor([[1, 2, 3]]))  # still works


def test_unknown_precision_is_one_clear_error(chat_checkpoint):
    with pytest.raises(InputError, match="precision must be one of fp32, bf16, int8"):
        ChatEngine.from_pretrained(str(chat_checkpoint), precision="fp16")


def test_loading_errors(tmp_path):
    from transformers import BertConfig, BertForMaskedLM

    with pytest.raises(InputError, match="not found"):
        ChatEngine.from_pretrained(str(tmp_path / "nope"))
    BertForMaskedLM(
        BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    ).save_pretrained(tmp_path / "bert")
    with pytest.raises(InputError, match="holds a bert model, not a GPT-2 chat model"):
        ChatEngine.from_pretrained(str(tmp_path / "bert"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="is not a chat model folder"):
        ChatEngine.from_pretrained(str(tmp_path / "empty"))


def test_adapter_only_folder_loads_through_peft(chat_checkpoint, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import BertTokenizerFast, GPT2LMHeadModel

    base = GPT2LMHeadModel.from_pretrained(str(chat_checkpoint))
    lora = get_peft_model(
        base,
        LoraConfig(r=2, target_modules=["c_attn"], fan_in_fan_out=True, task_type="CAUSAL_LM", init_lora_weights=False),
    )
    folder = tmp_path / "adapter-only"
    lora.save_pretrained(folder)
    BertTokenizerFast.from_pretrained(str(chat_checkpoint)).save_pretrained(folder)
    engine = ChatEngine.from_pretrained(str(folder))
    merged = lora.merge_and_unload()
    ids = torch.tensor([engine.build_prompt([], "你好", 8)])
    with torch.no_grad():
        assert torch.allclose(engine.model(ids).logits, merged(ids).logits, atol=1e-5)


def test_closing_a_stream_stops_generation(engine, monkeypatch):
    """A reader that goes away (a closed browser tab) must not leave generate() running to max_new_tokens."""
    made = []
    generate = engine.model.generate

    def spy(**kwargs):
        config = kwargs["generation_config"]
        config.min_new_tokens = config.max_new_tokens  # no early [SEP]: only cancellation can stop it early
        out = generate(**kwargs)
        made.append((out.shape[1] - kwargs["input_ids"].shape[1], config.max_new_tokens))
        return out

    monkeypatch.setattr(engine.model, "generate", spy)
    stream = engine.stream([], "你好", do_sample=False, max_new_tokens=300)
    next(stream)
    stream.close()  # joins the generation thread
    ((tokens, limit),) = made
    assert limit >= 40 and tokens < limit // 2
