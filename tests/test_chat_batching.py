"""ContinuousBatcher: concurrent replies share decode steps and equal the unbatched replies."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from chat import ChatEngine
from chat.batching import ContinuousBatcher
from chat.compute import ComputeThread

HISTORY = [{"role": "user", "content": "你好"}, {"role": "assistant", "content": "你好呀"}]
MESSAGES = ["今天天气怎么样？", "你喜欢吃什么", "hello", "周末去哪儿玩", "我今天好累啊，想早点睡觉", "在吗"]
# per request: its own sampling settings and seed (greedy, seeded samples, the checkpoint's defaults)
SETTINGS = [
    dict(do_sample=False, max_new_tokens=24),
    dict(seed=7, do_sample=True, temperature=1.5, top_k=0, top_p=1.0, max_new_tokens=30),
    dict(seed=3, max_new_tokens=16),
    dict(seed=11, do_sample=True, temperature=0.9, top_k=5, top_p=0.8, repetition_penalty=1.5, max_new_tokens=40),
    dict(do_sample=False, repetition_penalty=1.3, max_new_tokens=8),
    dict(seed=5, do_sample=True, temperature=1.2, top_k=20, top_p=0.95, no_repeat_ngram_size=2, max_new_tokens=32),
]


@pytest.fixture(scope="module")
def engines(chat_checkpoint):
    plain = ChatEngine.from_pretrained(str(chat_checkpoint), max_history=4)
    batched = ChatEngine.from_pretrained(str(chat_checkpoint), max_history=4, batching=True)
    return plain, batched


def concurrently(fn, n: int) -> list:
    out, errors = [None] * n, []

    def run(i):
        try:
            out[i] = fn(i)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    if errors:
        raise errors[0]
    return out


def history(i: int) -> list:
    return HISTORY if i % 2 else []


def test_concurrent_replies_equal_the_unbatched_ones_and_share_steps(engines):
    plain, batched = engines
    expected = [plain.reply(history(i), m, **SETTINGS[i]) for i, m in enumerate(MESSAGES)]
    batched.batcher.step_times.clear()
    got = concurrently(lambda i: batched.reply(history(i), MESSAGES[i], **SETTINGS[i]), len(MESSAGES))
    assert got == expected
    assert max(batched.batcher.step_times) > 1, "the replies were never decoded together"
    # streamed pieces add up to the same replies
    streamed = concurrently(lambda i: "".join(batched.stream(history(i), MESSAGES[i], **SETTINGS[i])), len(MESSAGES))
    assert streamed == expected


def test_unseeded_samples_differ_and_greedy_is_stable(engines):
    _, batched = engines
    greedy = concurrently(lambda i: batched.reply(HISTORY, "吃了吗", do_sample=False, max_new_tokens=20), 4)
    assert len(set(greedy)) == 1
    sampled = concurrently(
        lambda i: batched.reply(HISTORY, "吃了吗", do_sample=True, temperature=1.5, top_k=0, max_new_tokens=20), 6
    )
    assert len(set(sampled)) > 1


def endless(folder, batching: bool = True) -> ChatEngine:
    """An engine whose replies never end before their token limit ([SEP] is never written)."""
    engine = ChatEngine.from_pretrained(str(folder), batching=batching)
    engine.defaults.eos_token_id = None
    engine.defaults.suppress_tokens = [*engine.defaults.suppress_tokens, engine.tokenizer.sep_token_id]
    return engine


def test_a_cancelled_stream_frees_its_row_and_others_go_on(chat_checkpoint):
    engine = endless(chat_checkpoint)
    batcher = engine.batcher
    expected = endless(chat_checkpoint, batching=False).reply([], "你好", do_sample=False, max_new_tokens=40)
    other = {}
    long_stream = engine.stream([], "说个长故事", do_sample=False, max_new_tokens=200)
    next(long_stream)  # the long reply is running
    worker = threading.Thread(
        target=lambda: other.setdefault("text", engine.reply([], "你好", do_sample=False, max_new_tokens=40))
    )
    worker.start()
    long_stream.close()  # the reader goes away (a closed browser tab)
    worker.join(timeout=60)
    assert other["text"] == expected
    assert batcher.stats()["running"] == 0 and batcher.stats()["waiting"] == 0
    deadline = time.time() + 10
    while batcher.stats()["kv_mib"] and time.time() < deadline:  # the slabs go at the loop's next turn
        time.sleep(0.05)
    assert batcher.stats()["kv_mib"] == 0


def test_a_failing_request_does_not_break_the_others(engines, monkeypatch):
    """One request fails where its first token is picked (in the shared prefill), another at its second
    (in a shared decode step): each gets its error, the others' replies are unchanged."""
    plain, batched = engines
    batcher = batched.batcher
    import chat.batching

    real = chat.batching.logits_processors
    fail_at = {13: 0, 14: 1}  # max_new_tokens -> tokens it writes before failing

    def processors(model, config, prompt):
        chain = real(model, config, prompt)
        if config.max_new_tokens not in fail_at:
            return chain

        def boom(ids, scores):
            if ids.shape[1] >= len(prompt) + fail_at[config.max_new_tokens]:
                raise RuntimeError("planted failure")
            return chain(ids, scores)

        return boom

    hot = dict(do_sample=True, temperature=1.5, top_k=0, top_p=1.0)  # long replies from the tiny model
    assert len(plain.generate_ids([], MESSAGES[0], seed=1, max_new_tokens=14, **hot)) >= 2
    monkeypatch.setattr(chat.batching, "logits_processors", processors)
    expected = [plain.reply([], m, seed=i, max_new_tokens=20, **hot) for i, m in enumerate(MESSAGES[:3])]

    def run(i):
        if i >= 3:
            with pytest.raises(RuntimeError, match="planted failure"):
                batched.reply([], MESSAGES[0], seed=1, max_new_tokens=10 + i, **hot)
            return "failed"
        return batched.reply([], MESSAGES[i], seed=i, max_new_tokens=20, **hot)

    assert concurrently(run, 5) == expected + ["failed", "failed"]
    assert batcher.stats()["running"] == 0


def test_a_failed_decode_step_fails_its_rows_and_the_batcher_goes_on(chat_checkpoint, monkeypatch):
    engine = endless(chat_checkpoint)
    batcher = engine.batcher
    assert batcher._lean is not None  # a plain GPT-2: the written-out step (chat/decode_step.py)
    calls = {"n": 0}
    step = batcher._lean

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("planted step failure")
        return step(*args, **kwargs)

    monkeypatch.setattr(batcher, "_lean", flaky)
    with pytest.raises(RuntimeError, match="planted step failure"):
        engine.reply([], "你好", do_sample=False, max_new_tokens=10)
    assert len(engine.generate_ids([], "你好", do_sample=False, max_new_tokens=10)) == 10  # the next one works


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_the_written_out_decode_step_equals_the_models_forward(chat_checkpoint, precision):
    """chat/decode_step.py runs the batcher's decode step without transformers' forward: the same logits and the
    same keys and values in the slab, for left-padded rows, in fp32 (prepacked layers) and int8."""
    from transformers.cache_utils import Cache

    from chat.decode_step import lean_step
    from chat.kv_cache import SlabLayer

    model = ChatEngine.from_pretrained(str(chat_checkpoint), precision=precision).model
    step = lean_step(model)
    assert step is not None
    torch.manual_seed(0)
    with torch.inference_mode():
        ids = torch.randint(5, 200, (3, 9))
        mask = torch.ones(3, 9, dtype=torch.long)
        mask[1, :4], mask[2, :2] = 0, 0  # left padding, as the batcher pads prompts
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        past = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True).past_key_values
        kv = [torch.nn.functional.pad(torch.stack([k, v]), (0, 0, 0, 4)) for k, v, *_ in past]
        slabs_a, slabs_b = [s.clone() for s in kv], [s.clone() for s in kv]
        new = torch.tensor([[7], [8], [9]])
        mask = torch.cat([mask, torch.ones(3, 1, dtype=torch.long)], dim=1)
        at = positions[:, -1:] + 1
        theirs = model(
            input_ids=new,
            attention_mask=mask,
            position_ids=at,
            past_key_values=Cache(layers=[SlabLayer(s, 9) for s in slabs_a]),
            use_cache=True,
        ).logits
        ours = step(new, mask, at, slabs_b, 9)
    assert torch.allclose(ours, theirs, atol=1e-5, rtol=0), (ours - theirs).abs().max()
    assert all(torch.equal(a, b) for a, b in zip(slabs_a, slabs_b))


def test_other_models_take_their_own_forward():
    from transformers import GPT2Config, GPT2LMHeadModel

    from chat.decode_step import lean_step

    model = GPT2LMHeadModel(
        GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=50, scale_attn_by_inverse_layer_idx=True)
    )
    assert lean_step(model) is None  # an attention it does not reproduce: the batcher calls the model


def test_rows_are_bounded_and_memory_is_reported(chat_checkpoint):
    engine = ChatEngine.from_pretrained(str(chat_checkpoint), batching=True)
    compute = ComputeThread(idle_s=0.3)
    engine.batcher = ContinuousBatcher(engine.model, max_batch=2, compute=compute)
    plain = ChatEngine.from_pretrained(str(chat_checkpoint))
    expected = [plain.reply([], m, do_sample=False, max_new_tokens=20) for m in MESSAGES]
    got = concurrently(lambda i: engine.reply([], MESSAGES[i], do_sample=False, max_new_tokens=20), len(MESSAGES))
    assert got == expected
    assert max(engine.batcher.step_times) <= 2
    stats = engine.batcher.stats()
    config = engine.model.config
    per_token = 2 * config.n_layer * config.n_embd * 4  # fp32 keys and values
    assert stats["kv_mib_per_request_max"] == round(per_token * config.n_positions / 2**20, 2)
    assert 0 < stats["peak_kv_mib"] <= 2 * (stats["kv_mib_per_request_max"] + per_token * 32 / 2**20)
    deadline = time.time() + 10  # idle for 0.3 s: the compute thread lets go of the batcher and ends, and a
    while compute.alive and time.time() < deadline:  # new request starts it again
        time.sleep(0.05)
    assert not compute.alive and not compute._loops
    assert engine.reply([], MESSAGES[0], do_sample=False, max_new_tokens=20) == expected[0]


def test_cache_rows_are_right_aligned_without_nans(chat_checkpoint):
    """Prompts of different lengths prefilled together: each row's keys end in the same column, padding is
    masked and finite (a NaN there would spread into every row's attention)."""
    engine = ChatEngine.from_pretrained(str(chat_checkpoint), batching=True)
    batcher = engine.batcher
    config, _ = engine._config(None, {"do_sample": False, "max_new_tokens": 5})
    from chat.requests import Request, logits_processors

    prompts = [[engine.tokenizer.cls_token_id] + [10 + i for i in range(n)] for n in (2, 17, 6)]
    group = [Request(p, config, None, logits_processors(engine.model, config, p), set(), 5) for p in prompts]
    with torch.inference_mode():
        rows, kv, mask = batcher._prefill(group)
        batcher._rebuild([], [(rows, kv, mask)])
    assert batcher._mask.sum(1).tolist() == [len(p) for p in prompts]
    assert batcher._mask[:, -1].tolist() == [1, 1, 1]
    assert all(torch.isfinite(slab).all() for slab in batcher._slabs)


def test_a_prefill_scores_the_vocabulary_at_the_last_position_only(chat_checkpoint):
    """The output layer (hidden x vocabulary) is 11-15% of a base-size prefill; only the last position's
    scores pick the first token, as in generate's own prefill."""
    engine = ChatEngine.from_pretrained(str(chat_checkpoint), batching=True)
    batcher = engine.batcher
    config, _ = engine._config(None, {"do_sample": False, "max_new_tokens": 5})
    from chat.requests import Request, logits_processors

    seen = []
    engine.model.lm_head.register_forward_hook(lambda module, args, out: seen.append(tuple(out.shape[:2])))
    prompts = [[engine.tokenizer.cls_token_id] + [10 + i for i in range(n)] for n in (2, 17)]
    group = [Request(p, config, None, logits_processors(engine.model, config, p), set(), 5) for p in prompts]
    with torch.inference_mode():
        batcher._prefill(group)
    assert seen == [(2, 1)]


def test_app_batches_chat_by_default_and_no_batching_turns_it_off(chat_checkpoint):
    from webui.settings import parse_settings, predictor_options
    from webui.store import ModelStore

    on, off = parse_settings([]), parse_settings(["--no-batching"])
    assert predictor_options(on) == {"chat": {"batching": True}, "write": {"batching": True}}  # a writer too
    assert predictor_options(parse_settings(["--fast"]))["chat"] == {"batching": True, "precision": "int8"}
    assert ModelStore(predictor_options(on)).get("chat", str(chat_checkpoint)).batcher is not None
    assert ModelStore(predictor_options(off)).get("chat", str(chat_checkpoint)).batcher is None


def test_a_continued_conversation_reuses_its_cached_prefix(chat_checkpoint):
    """The second message's prompt starts with the first prompt and its reply: only the new tokens run,
    and the reply is the one a fresh generate() gives."""
    plain = ChatEngine.from_pretrained(str(chat_checkpoint))
    batched = ChatEngine.from_pretrained(str(chat_checkpoint), batching=True)
    hot = dict(do_sample=True, temperature=1.5, top_k=0, top_p=1.0, max_new_tokens=12)
    first = batched.reply([], "你好", seed=1, **hot)
    assert first == plain.reply([], "你好", seed=1, **hot)
    turns = [{"role": "user", "content": "你好"}, {"role": "assistant", "content": first}]
    deadline = time.time() + 10
    while not batched.batcher.prefixes.bytes and time.time() < deadline:  # kept at the loop's next turn
        time.sleep(0.05)
    assert batched.batcher.prefixes.bytes > 0 and batched.batcher.stats()["prefix_hits"] == 0
    second = batched.reply(turns, "今天做什么", seed=2, **hot)
    after = batched.batcher.stats()
    assert after["prefix_hits"] == 1
    assert after["prefix_tokens_reused"] >= len(batched.build_prompt([], "你好", 12))
    assert second == plain.reply(turns, "今天做什么", seed=2, **hot)


def test_a_long_conversation_keeps_reusing_its_prefix_as_its_window_moves(chat_checkpoint):
    """Seven messages with the default window (8 turns, the oldest dropped 4 at a time): only the first
    prompt and the two where the window moves start anew; the other four continue the cached turn."""
    batched = ChatEngine.from_pretrained(str(chat_checkpoint), batching=True)
    hot = dict(do_sample=True, temperature=1.5, top_k=0, top_p=1.0, max_new_tokens=4)  # never an empty reply
    turns, prompts = [], []
    for k in range(7):
        message = MESSAGES[k % len(MESSAGES)]
        prompts.append(batched.build_prompt(turns, message, 4))
        reply = batched.reply(turns, message, seed=k, **hot)
        assert reply
        turns += [{"role": "user", "content": message}, {"role": "assistant", "content": reply}]
        deadline = time.time() + 10
        while time.time() < deadline and not any(
            len(key) > len(prompts[-1]) for key in batched.batcher.prefixes._entries
        ):
            time.sleep(0.02)  # the finished conversation is kept at the loop's next turn
    starts = [tuple(p[:2]) for p in prompts]  # [CLS] and the first token of the first turn seen
    assert len(set(starts)) == 3  # the window moved twice
    assert batched.batcher.stats()["prefix_hits"] == 4


def test_the_prefix_cache_stays_within_its_budget():
    from chat.kv_cache import PrefixCache

    kv = [torch.zeros(2, 2, 10, 4) for _ in range(3)]  # 3 layers, 10 tokens: 1,920 bytes
    cache = PrefixCache(budget=5_000)  # room for two
    for start in (0, 100, 200):  # the third is over budget: the oldest goes
        cache.put(list(range(start, start + 10)), kv)
    assert cache.bytes == 2 * 1920
    assert cache.take(list(range(12))) is None
    assert cache.take(list(range(100, 110))) is None  # at least one token must be left to run
    length, taken = cache.take(list(range(100, 115)))
    assert length == 10 and torch.equal(taken[0], kv[0])
    assert cache.bytes == 1920 and cache.take(list(range(100, 115))) is None  # taken: the reply brings it back longer
    cache.put(list(range(300, 400)), [torch.zeros(2, 2, 100, 4)])  # larger than the whole budget: not kept
    assert cache.bytes == 1920


def test_a_failure_outside_any_one_request_fails_what_the_loop_holds_and_it_goes_on(chat_checkpoint, monkeypatch):
    """E.g. out of memory while the cache is rebuilt: the requests held get the error instead of waiting for
    ever, and the loop serves the next ones."""
    engine = ChatEngine.from_pretrained(str(chat_checkpoint), batching=True)
    real, calls = ContinuousBatcher._rebuild, {"n": 0}

    def rebuild(self, keep, groups):
        calls["n"] += 1
        if calls["n"] == 1:
            raise MemoryError("planted")
        return real(self, keep, groups)

    monkeypatch.setattr(ContinuousBatcher, "_rebuild", rebuild)
    hot = dict(do_sample=True, temperature=1.5, top_k=0, top_p=1.0, max_new_tokens=12, seed=1)
    with pytest.raises(MemoryError, match="planted"):
        engine.reply([], "你好", **hot)
    expected = ChatEngine.from_pretrained(str(chat_checkpoint)).reply([], "你好", **hot)
    assert engine.reply([], "你好", **hot) == expected


def test_a_job_on_the_compute_thread_that_asks_for_a_reply_gets_it_without_the_batcher(engines):
    """A job waiting for the batcher's turns on the thread that runs them would wait forever: it generates
    directly, with the same tokens."""
    from chat.compute import COMPUTE

    plain, batched = engines
    want = plain.reply([], MESSAGES[0], do_sample=False, max_new_tokens=12)
    assert COMPUTE.run(batched.reply, [], MESSAGES[0], do_sample=False, max_new_tokens=12) == want
    assert COMPUTE.run(lambda: "".join(batched.stream([], MESSAGES[0], do_sample=False, max_new_tokens=12))) == want
