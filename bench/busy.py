"""A competing CPU load for the `--busy` benches: a second PyTorch training process.

    python bench/busy.py             # trains a small masked-LM until killed (the load itself)

Users' machines are busy: a browser, an IDE, or a second training job. The worst everyday case
for a PyTorch run on 2 cores is another PyTorch process with as many threads as cores (each
spins on the cores the other needs: 10-50x slower steps were seen, not 2x), so that is the load:
default thread settings, a model of the cloze default's size, steps without pause.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time


@contextlib.contextmanager
def competing_load(enabled: bool = True):
    """Run bench/busy.py beside the block; yields its pid (None when not enabled)."""
    if not enabled:
        yield None
        return
    proc = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        proc.stdout.readline()  # "training": the load is on the CPU before the measured run starts
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


def main() -> None:
    import torch
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=3000, hidden_size=128, num_hidden_layers=2, num_attention_heads=4, intermediate_size=512
    )
    model = BertForMaskedLM(config)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randint(5, 3000, (16, 64))
    print("training", flush=True)
    started = time.time()
    while time.time() - started < 6 * 3600:  # never outlives a forgotten bench by more than a few hours
        model(input_ids=x, labels=x).loss.backward()
        opt.step()
        opt.zero_grad()


if __name__ == "__main__":
    main()
