"""`python training/chat.py` puts training/ first on sys.path, where training/chat.py would shadow the
top-level `chat` package and the repo root is missing. A script imports this module first (found there,
as a top-level module), and the repo root takes training/'s place."""

import os
import sys

sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
