"""Weights laid out for CPU decoding: int8 (dynamic quantisation) and prepacked fp32.

int8: torch's dynamic quantisation of every linear layer.

Decoding one token reads every weight once, so on a CPU its time is set by memory traffic:
int8 weights are a quarter of fp32's bytes. `torch.ao.quantization.quantize_dynamic` swaps
each `nn.Linear` for one that holds int8 weights (one scale per output channel) and runs
fbgemm's int8 kernels, quantising the activations on the fly. GPT-2's attention and MLP
layers are transformers' `Conv1D` (a linear layer with a transposed weight), so they become
`nn.Linear` first. The output layer is quantised too (its own int8 copy; the input
embedding it is tied to stays fp32 for the lookup).

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


def quantize_int8(model):
    """Return `model` (fp32, eval mode) with int8 linear layers; InputError if this torch cannot."""

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
    with warnings.catch_warnings():
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
