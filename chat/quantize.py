"""int8 weights for CPU decoding: torch's dynamic quantisation of every linear layer.

Decoding one token reads every weight once, so on a CPU its time is set by memory traffic:
int8 weights are a quarter of fp32's bytes. `torch.ao.quantization.quantize_dynamic` swaps
each `nn.Linear` for one that holds int8 weights (one scale per output channel) and runs
fbgemm's int8 kernels, quantising the activations on the fly. GPT-2's attention and MLP
layers are transformers' `Conv1D` (a linear layer with a transposed weight), so they become
`nn.Linear` first. The output layer is quantised too (its own int8 copy; the input
embedding it is tied to stays fp32 for the lookup).

torch marks `torch.ao.quantization` deprecated in favour of torchao, but it is present and
fast in the pinned torch; its warnings are silenced here.
"""

from __future__ import annotations

import warnings

from data.errors import InputError


def _conv1d_to_linear(model) -> None:
    import torch
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
    import torch

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
