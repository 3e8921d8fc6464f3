"""Fine-tune BERT/ERNIE on sentence pairs: "do these two sentences mean the same?".

    python training/similarity.py --train data/samples/pairs.tsv --output checkpoints/similarity

The recipe (options, pairs, the masked-LM stage, calibration, baselines, report) is
training/tasks/similarity/; the steps every task shares are training/pipeline.py.
"""

from __future__ import annotations

import sys

if __package__ in (None, ""):
    import _repo_root  # noqa: F401  (training/_repo_root.py: the repo root on sys.path, not training/)

from training.cli import guarded
from training.tasks.similarity import TRAINING

main = TRAINING.main

if __name__ == "__main__":
    sys.exit(guarded(main))
