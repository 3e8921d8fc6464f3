"""Continuous batching of chat replies: requests that arrive at any time share one decode step.

A cached decode step of a GPT-2 reads every weight once whatever the number of rows, so 16 rows
cost a few times one, not 16 times: `ContinuousBatcher` takes turns on the process's compute thread
(chat/compute.py) while it has requests. A turn admits waiting requests (their prompts run together,
left-padded as `generate` pads a batch; a prompt that continues a cached conversation runs only its new
tokens), gives each its first token at once, then decodes every running request in one forward pass over
a right-aligned KV cache, and retires a request when it writes [SEP], reaches its token limit or its
reader goes away.

Written here rather than taken from transformers: its continuous batching
(`init_continuous_batching` / `generate_batch`, transformers 5.23) was evaluated first. It drops
`RepetitionPenaltyLogitsProcessor` as unsupported (our chat default is 1.2), has one random
generator for all requests (a seeded reply could not equal `generate`'s), and its paged
attention and graphs are built for GPUs. This scheduler keeps each request's own
GenerationConfig and uses the logits processors `generate` itself builds for it
(`_get_logits_processor`), and a seeded request samples from its own `torch.Generator`, so a
reply equals `model.generate`'s with the same settings (tests/test_chat_batching.py; padded and
batched products can differ from unbatched ones in the last float bits, as in any batched serving).
"""

from __future__ import annotations

import collections
import inspect
import logging
import threading
import time

import torch
from transformers.cache_utils import Cache

from chat.compute import COMPUTE, ComputeThread
from chat.decode_step import lean_step
from chat.kv_cache import PrefixCache, SlabLayer
from chat.requests import Request, logits_processors, row_scores, sample

log = logging.getLogger("chat")

MAX_BATCH = 16  # rows decoded together; more requests wait for a free row
PREFIX_CACHE_MIB = 256  # keys and values of recent conversations, reused when the next message continues one
PREFILL_TOKENS = 512  # prompt tokens run per loop turn before the running rows get their next token
HEADROOM = 32  # spare cache columns allocated at a time


class ContinuousBatcher:
    def __init__(
        self,
        model,
        max_batch: int = MAX_BATCH,
        prefill_tokens: int = PREFILL_TOKENS,
        prefix_cache_mib: float = PREFIX_CACHE_MIB,
        compute: ComputeThread | None = None,
    ):
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self.model, self.max_batch, self.prefill_tokens = model, max_batch, prefill_tokens
        # the thread that runs the turns: the process's one compute thread (chat/compute.py says why)
        self.compute = compute or COMPUTE
        # transformers 5.25 renamed `past_key_values` to `cache` (the old name logs a deprecation on every chat
        # message); earlier 5.x releases know only the old one
        self._cache_name = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
        self.max_len = int(model.config.n_positions)
        # the decode step written out for a plain GPT-2 (chat/decode_step.py: same logits, less Python); None for
        # another model, which runs its own forward
        self._lean = lean_step(model)
        element = next(p for p in model.parameters() if p.is_floating_point()).element_size()
        # keys and values of every layer, per token of a request's context
        self.kv_bytes_per_token = 2 * model.config.n_layer * model.config.n_embd * element
        self._cond = threading.Condition()
        self._waiting: collections.deque[Request] = collections.deque()
        self._rows: list[Request] = []
        # per layer a slab (2 for keys and values, rows, heads, capacity, dim); columns < _width are filled
        self._slabs: list[torch.Tensor] | None = None
        self._width = 0
        self._mask: torch.Tensor | None = None  # (rows, _width): 0 where a row is left-padded
        self.step_times: dict[int, collections.deque] = collections.defaultdict(lambda: collections.deque(maxlen=500))
        self.peak_kv_bytes = 0
        self.prefixes = PrefixCache(int(prefix_cache_mib * 2**20))

    # -- the caller's side -------------------------------------------------------
    def submit(self, prompt: list[int], config, seed: int | None = None) -> Request:
        """Queue a reply to `prompt` under `config` (a GenerationConfig, as for generate)."""
        processors = logits_processors(self.model, config, prompt)
        eos = config.eos_token_id
        eos = set(eos if isinstance(eos, (list, tuple)) else [] if eos is None else [eos])
        limit = min(config.max_new_tokens or 20, self.max_len - len(prompt))
        request = Request(prompt, config, seed, processors, eos, limit)
        with self._cond:
            self._waiting.append(request)
        self.compute.attach(self)  # after the append: the compute thread lets go of a batcher only when idle
        return request

    def release(self, request: Request) -> None:
        """The reader is gone: free its row at the next step and wait until the loop has let go of it."""
        request.cancel()
        with self._cond:
            if request in self._waiting:  # never admitted: nothing to free
                self._waiting.remove(request)
                self._end(request)
        self.compute.wake()
        if not self.compute.in_thread():  # there (a reader collected by a job) the next turn frees it: no waiting
            request.done.wait()

    def stats(self) -> dict:
        """Rows running and waiting, and the KV cache they hold (bounded by max_batch x the model's length)."""
        # replies that ended leave their rows at the loop's next turn: counted as gone already
        rows, waiting, kv = sum(not r.done.is_set() for r in self._rows), len(self._waiting), self._kv_bytes()
        return {
            "running": rows,
            "waiting": waiting,
            "kv_mib": round(kv / 2**20, 2),
            "peak_kv_mib": round(self.peak_kv_bytes / 2**20, 2),
            "kv_mib_per_request_max": round(self.kv_bytes_per_token * self.max_len / 2**20, 2),
            "prefix_cache_mib": round(self.prefixes.bytes / 2**20, 2),
            "prefix_hits": self.prefixes.hits,
            "prefix_tokens_reused": self.prefixes.tokens_reused,
        }

    # -- the loop (its turns run on the compute thread) ------------------------------
    def has_work(self) -> bool:
        return bool(self._waiting or self._rows)

    def turn(self) -> None:
        """Admit waiting requests, prefill them and take one decode step for every running row."""
        admitted = []
        try:
            with self._cond:
                admitted = self._admit()
            with torch.inference_mode():
                self._turn(admitted)
        except Exception as e:  # a bug or out of memory outside one request: fail what is held, go on
            log.exception("chat batcher turn failed")
            for r in self._rows + admitted:
                self._end(r, e)
            self._rows, self._slabs, self._mask, self._width = [], None, None, 0

    def _admit(self) -> list[Request]:
        """Waiting requests that join at this turn: as many as there are free rows, within the prefill budget
        (a prompt that continues a cached conversation costs only its new tokens)."""
        budget, admitted = self.prefill_tokens, []
        running = sum(not r.done.is_set() for r in self._rows)
        while self._waiting and running + len(admitted) < self.max_batch:
            r = self._waiting[0]
            cost = len(r.prompt) - self.prefixes.match(r.prompt)
            if admitted and cost > budget:
                break
            budget -= cost
            admitted.append(self._waiting.popleft())
        return admitted

    def _turn(self, admitted: list[Request]) -> None:
        fresh = [r for r in admitted if not self._ended_early(r)]
        groups = [g for g in self._prefill_all(fresh) if g is not None]
        for r in self._rows:
            if r.cancelled.is_set():
                self._end(r)
        keep = [i for i, r in enumerate(self._rows) if not r.done.is_set()]
        if groups or len(keep) < len(self._rows):
            self._rebuild(keep, groups)
        if self._rows:
            self._step()

    def _ended_early(self, r: Request) -> bool:
        if r.cancelled.is_set():
            self._end(r)
        return r.done.is_set()

    def _prefill_all(self, fresh: list[Request]) -> list:
        """Prompts that continue a cached conversation run only their new tokens, one by one; the others
        run together."""
        groups, cold = [], []
        for r in fresh:
            hit = self.prefixes.take(r.prompt)
            if hit is None:
                cold.append(r)
            else:
                groups.append(self._prefill([r], hit))
        groups.append(self._prefill(cold))
        return groups

    def _prefill(self, group: list[Request], prefix=None):
        """Run the new prompts together (left-padded, as generate pads a batch) and pick each one's first
        token: (requests that go on, their keys and values per layer, their mask), or None. With `prefix`
        (a cached conversation the one prompt continues: its length and keys and values) only the rest of
        the prompt is run."""
        if not group:
            return None
        device = self.model.device
        past, skip = None, 0
        if prefix is not None:
            from transformers import DynamicCache

            skip, cached = prefix
            past = DynamicCache(ddp_cache_data=[(kv[0:1], kv[1:2]) for kv in cached])  # update() copies: kept intact
        width = max(len(r.prompt) for r in group)
        ids = torch.tensor([[0] * (width - len(r.prompt)) + r.prompt[skip:] for r in group], device=device)
        mask = torch.tensor([[0] * (width - len(r.prompt)) + [1] * len(r.prompt) for r in group], device=device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, skip:]
        try:
            out = self.model(  # logits for the last position only, as generate's prefill: 11-15% of a base-size prefill
                input_ids=ids,
                attention_mask=mask,
                position_ids=positions,
                **{self._cache_name: past},
                use_cache=True,
                logits_to_keep=1,
            )
        except Exception as e:  # e.g. out of memory: these requests fail, the running ones go on
            log.exception("prefill failed")
            for r in group:
                self._end(r, e)
            return None
        self._choose(group, out.logits[:, -1])
        going = [i for i, r in enumerate(group) if not r.done.is_set()]
        if not going:
            return None
        index = torch.tensor(going, device=device)
        cache = getattr(out, "cache", None) or out.past_key_values
        kv = [(k.index_select(0, index), v.index_select(0, index)) for k, v, *_ in cache]
        return [group[i] for i in going], kv, mask.index_select(0, index)

    def _rebuild(self, keep: list[int], groups: list) -> None:
        """New slabs holding the kept rows and the joining groups, right-aligned: every row's next token goes
        to the same column. Leading columns that no row needs any more are dropped. One copy per change of
        the running set (new requests, a finished reply), not per token."""
        device = self.model.device
        old = self._width if self._rows else 0
        mask = self._mask[keep] if keep else None
        used = mask.any(0).nonzero() if keep else None
        start = int(used[0]) if keep and len(used) else old
        kept = old - start
        width = max([kept] + [m.shape[1] for _, _, m in groups])
        rows = len(keep) + sum(len(g[0]) for g in groups)
        if not rows:
            self._rows, self._slabs, self._mask, self._width = [], None, None, 0
            return
        cap = width + HEADROOM
        full_mask = torch.zeros(rows, width, dtype=torch.long, device=device)
        if keep:
            full_mask[: len(keep), width - kept :] = mask[:, start:]
        at = len(keep)
        for g_rows, _, g_mask in groups:
            full_mask[at : at + len(g_rows), width - g_mask.shape[1] :] = g_mask
            at += len(g_rows)
        index = torch.tensor(keep, device=device)
        shapes = [s[0] for s in self._slabs] if self._slabs else [k for k, _ in groups[0][1]]
        slabs = []
        for layer, like in enumerate(shapes):
            slab = torch.zeros(2, rows, like.shape[1], cap, like.shape[3], dtype=like.dtype, device=device)
            if keep:
                slab[:, : len(keep), :, width - kept : width] = self._slabs[layer][:, :, :, start:old].index_select(
                    1, index
                )
            at = len(keep)
            for g_rows, g_kv, _ in groups:
                k, v = g_kv[layer]
                slab[0, at : at + len(g_rows), :, width - k.shape[2] : width] = k
                slab[1, at : at + len(g_rows), :, width - v.shape[2] : width] = v
                at += len(g_rows)
            slabs.append(slab)
        self._rows = [self._rows[i] for i in keep] + [r for g_rows, _, _ in groups for r in g_rows]
        self._slabs, self._mask, self._width = slabs, full_mask, width

    def _grow(self) -> None:
        """More spare columns (HEADROOM at a time) once the slabs are full."""
        # (2, rows, heads, time, dim): zeros on the right of time
        self._slabs = [torch.nn.functional.pad(s, (0, 0, 0, HEADROOM)) for s in self._slabs]

    def _step(self) -> None:
        """One decode step for every running row: each row's last token in, one new token out."""
        rows = self._rows
        started = time.perf_counter()
        device = self.model.device
        if self._width == self._slabs[0].shape[3]:
            self._grow()
        ids = torch.tensor([[r.seq[-1]] for r in rows], device=device)
        mask = torch.cat([self._mask, torch.ones(len(rows), 1, dtype=torch.long, device=device)], dim=1)
        positions = torch.tensor([[len(r.seq) - 1] for r in rows], device=device)
        try:
            if self._lean is not None:
                logits = self._lean(ids, mask, positions, self._slabs, self._width)
            else:
                logits = self.model(
                    input_ids=ids,
                    attention_mask=mask,
                    position_ids=positions,
                    **{self._cache_name: Cache(layers=[SlabLayer(s, self._width) for s in self._slabs])},
                    use_cache=True,
                ).logits
        except Exception as e:  # the shared pass failed: every running request gets the error, the loop goes on
            log.exception("batched decode step failed")
            for r in rows:
                self._end(r, e)
            self._rows, self._slabs, self._mask, self._width = [], None, None, 0
            return
        self._mask, self._width = mask, self._width + 1
        self.peak_kv_bytes = max(self.peak_kv_bytes, self._kv_bytes())
        self._choose(rows, logits[:, -1])
        for i, r in enumerate(rows):  # a reply that ended now leaves its keys and values for its next message
            if r.finished and r.done.is_set() and not r.kept:
                r.kept = True
                used = len(r.seq) - 1  # the last token was never run
                self.prefixes.put(r.seq[:used], [s[:, i, :, self._width - used : self._width] for s in self._slabs])
        self.step_times[len(rows)].append(time.perf_counter() - started)

    def _kv_bytes(self) -> int:
        slabs = self._slabs  # a snapshot: the loop swaps the list whole
        return sum(s.numel() * s.element_size() for s in slabs) if slabs else 0

    def _choose(self, rows: list[Request], logits: torch.Tensor) -> None:
        """Each live row's next token. Rows with the same settings go through their logits processors
        together (one call instead of one per row: 0.75 of ~8 ms per token at 16 rows); a group whose
        processing fails is retried row by row, so only the failing request ends."""
        groups: dict = {}
        for i, r in enumerate(rows):
            if not (r.done.is_set() or r.cancelled.is_set()):
                groups.setdefault(r.group_key if r.group_key is not None else id(r), []).append(i)
        for members in groups.values():
            group = [rows[i] for i in members]
            try:
                scores = row_scores(group, logits[members])
                pairs = [(r, scores[j : j + 1]) for j, r in enumerate(group)]
            except Exception:
                pairs = []
                for i in members:
                    try:
                        pairs.append((rows[i], row_scores([rows[i]], logits[i : i + 1])))
                    except Exception as e:  # this request fails alone
                        self._end(rows[i], e)
            for r, chosen in pairs:
                try:
                    token = sample(r, chosen)
                except Exception as e:
                    self._end(r, e)
                    continue
                self._emit(r, token)

    def _emit(self, r: Request, token: int) -> None:
        r.seq.append(token)
        r.new.append(token)
        r.tokens.put(token)
        if token in r.eos or len(r.new) >= r.limit or len(r.seq) >= self.max_len:
            r.finished = True
            self._end(r)

    def _end(self, r: Request, error: BaseException | None = None) -> None:
        if not r.done.is_set():
            r.tokens.put(error)  # None: the reply is complete
            r.done.set()
