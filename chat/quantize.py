"""Weights laid out for CPU decoding: int8 (dynamic quantisation) and prepacked fp32.

int8: torch's dynamic quantisation of every linear layer.

Decoding one token reads every weight once, so on a CPU its time is set by memory traffic:
int8 weights are a quarter of fp32's bytes. `torch.ao.quantization.quantize_dynamic` swaps
each `nn.Linear` for one that holds int8 weights (one scale per output channel) and runs
fbgemm's int8 kernels, quantising the activations on the fly. GPT-2's attention and MLP
layers are transformers' `Conv1D` (a linear layer with a transposed weight), so they become
`nn.Linear` first. The output layer is quantised too (its own int8 copy; the input
embedding it is tied to stays fp32 for the lookup).

Which int8 kernels is measured when a model loads (`int8_engine`), not assumed from the CPU's name:
torch has two families on x86, fbgemm (its "x86" default for one-row products) and oneDNN, which
has AMX int8 kernels that fbgemm lacks. On 2 cores of an AMD EPYC (AVX2, no AVX-512, no AMX) a
768x3072 int8 product of one row took 81 us with fbgemm and 270 us with oneDNN (30 vs 9 GB/s of
weights); on an Intel AMX machine CTranslate2 (oneDNN) took less than half our fbgemm decode step
(issue #49). Timing both on the model's own shape at load (about 0.15 s for a 768-wide model) picks
the right one on either.

torch marks `torch.ao.quantization` deprecated in favour of torchao, but it is present and
fast in the pinned torch; its warnings are silenced here.

fp32 prepacked (`pack_fp32`, the default for fp32 chat on CPU): each linear layer's weight is
reordered once into oneDNN's blocked layout and multiplied with `torch.ops.mkldnn._linear_pointwise`,
the kernel torch.compile's CPU freezing pass uses for the same purpose. The default path (MKL's
GEMM through `addmm`) falls off a cliff as soon as a product has more than one row: on 2 cores
(AVX-512) a 768x2304 product takes 0.16 ms for 1 row and 0.51 ms for 4, against 0.19 ms packed.
A batched decode step (chat/batching.py) is exactly such a product: with the default base's shape
(12x768, vocab 21,128) a step of 4 rows took 64 ms stock and 29 ms packed, 16 rows 81 -> 52 ms, and
one reply alone 1.16 -> 0.95 s. Same fp32 arithmetic, summed in another order: outputs differ from
the stock layers at float rounding (~1e-6 relative).
"""

from __future__ import annotations

import contextlib
import os
import time
import warnings

import torch

from data.errors import InputError


def _conv1d_to_linear(model) -> None:
    from transformers.pytorch_utils import Conv1D

    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, Conv1D):
                n_in, n_out = child.weight.shape
                linear = torch.nn.Linear(n_in, n_out, bias=child.bias is not None, dtype=child.weight.dtype)
                with torch.no_grad():
                    linear.weight.copy_(child.weight.t())
                    if child.bias is not None:
                        linear.bias.copy_(child.bias)
                setattr(module, name, linear)


# torch's x86 int8 kernel families; "x86" is fbgemm for the products of a decode step
INT8_ENGINES = ("x86", "onednn")


def _int8_product_seconds(engine: str, n_in: int, n_out: int, rows=(1, 8), reps: int = 20) -> float:
    """Seconds for one int8 product of `rows` rows each, weights packed by `engine` (a decode step's shape)."""
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    with _quantized_engine(engine):
        layer = quantize_dynamic(
            torch.nn.Sequential(torch.nn.Linear(n_in, n_out)), {torch.nn.Linear: per_channel_dynamic_qconfig}
        )
    total = 0.0
    with torch.inference_mode():
        for r in rows:
            x = torch.randn(r, n_in)
            for _ in range(3):
                layer(x)
            start = time.perf_counter()
            for _ in range(reps):
                layer(x)
            total += time.perf_counter() - start
    return total


@contextlib.contextmanager
def _quantized_engine(engine: str):
    """Pack int8 weights with `engine`; the packed weights keep it (they run the same after it is reset)."""
    before = torch.backends.quantized.engine
    torch.backends.quantized.engine = engine
    try:
        yield
    finally:
        torch.backends.quantized.engine = before


def int8_engine(n_in: int, n_out: int) -> str:
    """The faster of this torch's x86 int8 kernel families for an `n_in` x `n_out` product, timed here (the
    default engine where neither is available, e.g. qnnpack on ARM). Environment CHAT_INT8_ENGINE forces one."""
    forced = os.environ.get("CHAT_INT8_ENGINE")
    supported = torch.backends.quantized.supported_engines
    if forced:
        if forced not in supported:
            raise InputError(f"CHAT_INT8_ENGINE={forced!r}: this torch has {', '.join(supported)}")
        return forced
    candidates = [e for e in INT8_ENGINES if e in supported]
    if len(candidates) < 2:
        return torch.backends.quantized.engine
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            times = {e: _int8_product_seconds(e, n_in, n_out) for e in candidates}
        except (RuntimeError, NotImplementedError):
            return torch.backends.quantized.engine
    return min(times, key=times.get)


def quantize_int8(model, engine: str | None = None):
    """Return `model` (fp32, eval mode) with int8 linear layers packed for `engine` (default: the faster
    here, `int8_engine`; the choice is in `model.int8_engine`); InputError if this torch cannot."""

    try:
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic
    except ImportError:
        raise InputError(
            f"int8 needs torch.ao.quantization, which torch {torch.__version__} does not have; use bf16 or fp32"
        )
    if torch.backends.quantized.engine not in ("x86", "fbgemm", "onednn", "qnnpack"):
        raise InputError(
            f"this CPU has no int8 kernels in torch (engine {torch.backends.quantized.engine!r}); use bf16 or fp32"
        )
    model = model.float()
    _conv1d_to_linear(model)
    hidden = model.config.hidden_size
    engine = engine or int8_engine(hidden, 4 * hidden)
    with warnings.catch_warnings(), _quantized_engine(engine):
        warnings.simplefilter("ignore")
        try:
            model = quantize_dynamic(
                model, {torch.nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8, inplace=True
            )
            with torch.inference_mode():  # fail here, not in the first reply
                model(input_ids=torch.zeros((1, 2), dtype=torch.long))
        except (RuntimeError, NotImplementedError) as e:
            raise InputError(
                f"int8 quantisation is not supported here ({str(e).splitlines()[0][:120]}); use bf16 or fp32"
            )
    model.int8_engine = engine
    return model


# The row count oneDNN lays the weights out for; measured on 2 cores, a layout for 4 or more rows
# is as fast for 1 row as the 1-row layout and much faster for 4-64 (chat/batching.py runs up to 16).
PACK_ROWS = 16


class PackedLinear(torch.nn.Module):
    """A linear layer (inference only) whose weight is held in oneDNN's blocked layout.

    The packed weight is an opaque tensor outside the state dict: a model with these layers
    serves, it is not saved or trained (ChatEngine only serves)."""

    def __init__(self, weight, bias):  # weight: (out, in), as nn.Linear's
        super().__init__()
        self.in_features, self.out_features = weight.shape[1], weight.shape[0]
        self.packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach().contiguous(), PACK_ROWS)
        self.bias = bias

    def forward(self, x):
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, packed for oneDNN"


def pack_fp32(model):
    """`model` (fp32, CPU, eval) with its linear layers (GPT-2's Conv1D and the output layer)
    prepacked for oneDNN; unchanged where this torch cannot, or where the packed model's logits
    differ from the stock ones by more than float rounding."""
    import logging

    from transformers.pytorch_utils import Conv1D

    weight = next(model.parameters())
    if not torch.backends.mkldnn.is_available() or weight.dtype != torch.float32 or weight.device.type != "cpu":
        return model
    probe = torch.tensor([[1, 2, 3]])
    swaps = []
    try:
        with torch.inference_mode():
            expected = model(input_ids=probe).logits
        for module in list(model.modules()):
            for name, child in list(module.named_children()):
                if isinstance(child, Conv1D):
                    swaps.append((module, name, child, PackedLinear(child.weight.t(), child.bias)))
                elif isinstance(child, torch.nn.Linear) and child.weight.dtype == torch.float32:
                    swaps.append((module, name, child, PackedLinear(child.weight, child.bias)))
        for module, name, _, packed in swaps:
            setattr(module, name, packed)
        with torch.inference_mode():
            got = model(input_ids=probe).logits
        if not torch.allclose(got, expected, rtol=1e-4, atol=1e-4):
            raise RuntimeError(f"packed logits differ by {(got - expected).abs().max().item():.2g}")
    except (RuntimeError, NotImplementedError, AttributeError) as e:
        for module, name, child, _ in swaps:
            setattr(module, name, child)  # back to the stock layers
        logging.getLogger(__name__).info("fp32 weights not prepacked: %s", str(e).splitlines()[0][:120])
        return model
    return model
