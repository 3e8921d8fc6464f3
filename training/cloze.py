"""Teach a masked-LM (BERT, RoBERTa, RoFormer ...) the facts in your own text; write a fill-mask checkpoint folder.

    python training/cloze.py --data data/samples/cloze_corpus.txt --eval-prompts data/samples/cloze_prompts.txt

The recipe (options, corpus and self-quiz, model, masking, report) is training/tasks/cloze/; the
steps every task shares are training/pipeline.py.
"""

from __future__ import annotations

import sys

if __package__ in (None, ""):
    import _repo_root  # noqa: F401  (training/_repo_root.py: the repo root on sys.path, not training/)

from training.cli import guarded
from training.tasks.cloze import TRAINING

main = TRAINING.main

if __name__ == "__main__":
    sys.exit(guarded(main))
