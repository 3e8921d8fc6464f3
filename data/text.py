"""Small text rules shared by readers and by decoding in `chat/`.

Written Chinese has no spaces between characters; LCCC and BERT's `decode` put one
between every character. `despace` removes every space that is not between two
ASCII letters/digits, so "打 包 2 斤 ， 谢 谢" becomes "打包2斤，谢谢" while
"I love NLP 2 much" keeps its spaces.
"""

from __future__ import annotations

import re

MAX_LINE_CHARS = 20_000  # one passage/utterance/sentence; longer is a file without line breaks, not a sentence
_WS = re.compile(r"\s+")
# A space goes unless both neighbours are ASCII letters or digits.
_DROP_SPACE = re.compile(r"(?<=[^A-Za-z0-9 ]) | (?=[^A-Za-z0-9 ])")
_CJK = re.compile(r"[\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef]")


def despace(text: str) -> str:
    """Join characters that were split by spaces, keeping spaces inside English and numbers."""
    return _DROP_SPACE.sub("", _WS.sub(" ", text).strip())


def looks_char_spaced(samples: list[str]) -> bool:
    """True when most CJK characters in the samples are followed by a space (LCCC layout)."""
    cjk = spaced = 0
    for s in samples:
        for i, ch in enumerate(s[:-1]):
            if _CJK.match(ch):
                cjk += 1
                spaced += s[i + 1] == " "
    return cjk >= 10 and spaced / cjk > 0.6


def normalize_utterance(text: str, char_spaced: bool = False) -> str:
    """Collapse whitespace; with `char_spaced`, also remove the spaces between characters."""
    return despace(text) if char_spaced else _WS.sub(" ", text).strip()
