"""Fine-tune GPT-2 (Chinese) on multi-turn dialogues and write a chat checkpoint folder.

    python training/chat.py --data data/samples/dialogs.txt --output checkpoints/chat

The recipe (options, data, model, encoding, report) is training/tasks/chat/; the steps every task
shares are training/pipeline.py.
"""

from __future__ import annotations

import sys

if __package__ in (None, ""):
    import _repo_root  # noqa: F401  (training/_repo_root.py: the repo root on sys.path, not training/)

from training.cli import guarded
from training.tasks.chat import TRAINING

main = TRAINING.main

if __name__ == "__main__":
    sys.exit(guarded(main))
