"""Fine-tune GPT-2 (Chinese) on your own prose so it writes on in its style; write a text-generation checkpoint
folder.

    python training/write.py --data data/samples/story.txt --output checkpoints/write

The recipe (options, prose and paragraphs, blocks, the n-gram baseline, samples) is training/tasks/write/; the
steps every task shares are training/pipeline.py.
"""

from __future__ import annotations

import sys

if __package__ in (None, ""):
    import _repo_root  # noqa: F401  (training/_repo_root.py: the repo root on sys.path, not training/)

from training.cli import guarded
from training.tasks.write import TRAINING

main = TRAINING.main

if __name__ == "__main__":
    sys.exit(guarded(main))
