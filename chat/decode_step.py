"""One batched decode step of a GPT-2, written out: the batcher's hot loop (chat/batching.py).

Written by hand because it is faster and the arithmetic is the same: transformers' GPT-2 forward builds
its attention mask, position handling, cache bookkeeping and output objects through several layers of
Python on every call, which costs as much as the matrix products on a small model. Measured on 2 cores
(AMD EPYC, AVX2), one row, 60 tokens of context: the demo's 4x256 GPT-2 in int8 took 2.7-5.5 ms a step
through `model(...)` and 1.9-2.9 ms here; the default base's 12x768 12.1 -> 10.0 ms (int8), 23.5 -> 19.8 ms
(fp32), and 15.4 -> 12.6 ms with 4 rows. The logits equal `model(...)`'s with the same slab cache (bit for bit
when measured; tests/test_chat_batching.py allows 1e-5): the same modules (int8, prepacked fp32 or bf16 layers
alike) in the same order, and the same `scaled_dot_product_attention` over the same keys, padding masked out.

Only a plain GPT-2 takes this path (`lean_step` returns None otherwise, and the batcher calls the model).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def lean_step(model):
    """A function (ids, mask, positions, slabs, width) -> logits (rows, 1, vocab) for `model`, or None when
    it is not a GPT-2 whose attention this reproduces exactly (cross-attention, per-layer scaling,
    upcast reordering, an attention other than sdpa, an unknown activation)."""
    from transformers import GPT2LMHeadModel
    from transformers.activations import ACT2FN

    config = model.config
    if (
        type(model) is not GPT2LMHeadModel
        or getattr(config, "_attn_implementation", "sdpa") != "sdpa"
        or not config.scale_attn_weights
        or config.scale_attn_by_inverse_layer_idx
        or config.reorder_and_upcast_attn
        or config.add_cross_attention
        or config.activation_function not in ACT2FN
    ):
        return None
    act = ACT2FN[config.activation_function]
    t = model.transformer
    heads, hidden = config.n_head, config.n_embd
    size = hidden // heads

    def step(ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, slabs: list, width: int):
        """Each row's last token (ids, positions: (rows, 1)) over slabs (2, rows, heads, capacity, dim) whose
        first `width` columns hold the context; its keys and values go to column `width`. `mask`: (rows,
        width + 1), 0 for the left padding."""
        rows = ids.shape[0]
        x = t.wte(ids) + t.wpe(positions)
        bias = torch.zeros(rows, 1, 1, width + 1, dtype=x.dtype, device=x.device)
        bias.masked_fill_(mask[:, None, None, :] == 0, torch.finfo(x.dtype).min)
        for layer, slab in zip(t.h, slabs):
            q, k, v = layer.attn.c_attn(layer.ln_1(x)).view(rows, 3, heads, size).unbind(1)
            slab[0, :, :, width] = k
            slab[1, :, :, width] = v
            keys, values = slab[0, :, :, : width + 1], slab[1, :, :, : width + 1]
            out = F.scaled_dot_product_attention(q.unsqueeze(2), keys, values, attn_mask=bias)
            x = x + layer.attn.c_proj(out.reshape(rows, 1, hidden))
            x = x + layer.mlp.c_proj(act(layer.mlp.c_fc(layer.ln_2(x))))
        return model.lm_head(t.ln_f(x))

    return step
