"""Fine-tune BERT (or a small model from scratch) to sort texts into your own labels; write a text-classification
checkpoint folder.

    python training/classify.py --data data/samples/reviews.csv --output checkpoints/classify

The recipe (options, labelled files, class weights, the baseline, report) is training/tasks/classify/; the steps
every task shares are training/pipeline.py.
"""

from __future__ import annotations

import sys

if __package__ in (None, ""):
    import _repo_root  # noqa: F401  (training/_repo_root.py: the repo root on sys.path, not training/)

from training.cli import guarded
from training.tasks.classify import TRAINING

main = TRAINING.main

if __name__ == "__main__":
    sys.exit(guarded(main))
