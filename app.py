"""Gradio app over the checkpoints (Chat, Fill-Mask, Similarity tabs) — not built yet.

The app lands with its own issue; until then this entry point says so instead of failing
with an import error.
"""

import sys

if __name__ == "__main__":
    print("app.py: the web app is not built yet; train a chat model with `python training/chat.py --data data/samples/dialogs.txt`", file=sys.stderr)
    sys.exit(2)
