"""Reading a user's text file: existence, emptiness, binary content and encoding checks.

Chinese files saved on Windows are often GB18030/GBK rather than UTF-8, so that encoding
is tried before giving up; the caller is told which one was used.
"""

from __future__ import annotations

import json
import os

_ENCODINGS = ("utf-8-sig", "gb18030")


def read_text(path: str | os.PathLike) -> tuple[str, str]:
    """Return (text, encoding) of a text file, or raise `InputError` with one clear sentence."""
    from data.errors import InputError

    path = os.fspath(path)
    if not os.path.exists(path):
        raise InputError(f"file not found: {path}")
    if os.path.isdir(path):
        raise InputError(f"{path} is a folder, not a file")
    with open(path, "rb") as f:
        raw = f.read()
    if not raw.strip():
        raise InputError(f"{path} is empty")
    if b"\x00" in raw[:8192]:
        raise InputError(f"{path} looks like a binary file, not text (save it as UTF-8 text)")
    for encoding in _ENCODINGS:
        try:
            text = raw.decode(encoding)
        except UnicodeDecodeError:
            continue
        # GB18030 decodes some binary junk without error: refuse text full of control characters.
        controls = sum(1 for ch in text[:20000] if ord(ch) < 32 and ch not in "\t\n\r\f")
        if controls > max(3, len(text[:20000]) // 100):
            raise InputError(f"{path} looks like a binary file, not text (save it as UTF-8 text)")
        return text.replace("\r\n", "\n").replace("\r", "\n"), "utf-8" if encoding == "utf-8-sig" else encoding
    raise InputError(f"{path} is neither UTF-8 nor GB18030 text; save it as UTF-8 and try again")


def json_lines(text: str, name: str, bad):
    """Yield (`file:line`, object) for each non-blank JSON Lines row; broken rows go to `bad`."""
    for no, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            yield f"{name}:{no}", json.loads(line)
        except ValueError:
            bad.add(f"{name}:{no}", "not valid JSON")
