"""Reading a user's text file: existence, emptiness, binary content and encoding checks.

Chinese files saved on Windows are often GB18030/GBK rather than UTF-8, so that encoding
is tried before giving up; the caller is told which one was used.
"""

from __future__ import annotations

import json
import os
import re
import stat

import yaml

_ENCODINGS = ("utf-8-sig", "gb18030")
# UTF-32 before UTF-16: its little-endian mark begins with UTF-16's
_BOMS = (
    (b"\xff\xfe\x00\x00", "utf-32"),
    (b"\x00\x00\xfe\xff", "utf-32"),
    (b"\xff\xfe", "utf-16"),
    (b"\xfe\xff", "utf-16"),
)
MAX_FILE_BYTES = 2 * 2**30  # LCCC-base is ~1 GB; beyond this a file is a mistake, not a corpus


NOT_UTF8 = "not valid UTF-8 (the file was cut mid-character or damaged here)"


def _damaged_lines(raw: bytes) -> tuple[str, list[int]] | None:
    """UTF-8 text with a few broken lines (a download or copy cut mid-character): the text with those lines
    blanked, and their numbers; None when too much is broken to call it UTF-8 with damage."""
    lines = raw.split(b"\n")
    out, broken, cut = [], [], False
    for no, line in enumerate(lines, 1):
        try:
            out.append(line.decode("utf-8-sig" if no == 1 else "utf-8"))
        except UnicodeDecodeError as e:
            out.append("")
            broken.append(no)
            cut = e.reason == "unexpected end of data"
    if len(broken) > max(1, len(lines) // 100):
        return None
    if not (cut and broken == [len(lines) - (lines[-1] == b"")]):  # not a cut last line: GBK with few Chinese lines?
        try:
            raw.decode("gb18030")
            return None
        except UnicodeDecodeError:
            pass
    return "\n".join(out), broken


def read_text(path: str | os.PathLike, bad=None) -> tuple[str, str]:
    """Return (text, encoding) of a text file, or raise `InputError` with one clear sentence.

    With `bad` (a `BadRows`), a UTF-8 file with a line or two that do not decode (cut mid-character) is
    read with those lines blank, each reported there with its `file:line`; without it, refused whole."""
    from data.errors import InputError

    path = os.fspath(path)
    if not os.path.exists(path):
        raise InputError(f"file not found: {path}")
    if os.path.isdir(path):
        raise InputError(f"{path} is a folder, not a file")
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode):  # /dev/zero, a pipe, a socket: endless or not a file
            raise InputError(f"{path} is not a regular file (a device or pipe?); give a text file")
        if info.st_size > MAX_FILE_BYTES:
            raise InputError(
                f"{path} is {info.st_size / 2**30:.1f} GiB; files over {MAX_FILE_BYTES // 2**30} GiB are refused, "
                "split it"
            )
        with open(path, "rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)
    except PermissionError:
        raise InputError(f"{path} cannot be read (permission denied)")
    except OSError as e:
        raise InputError(f"{path} cannot be read: {e.strerror or e}")
    if not raw.strip():
        raise InputError(f"{path} is empty")
    for bom, encoding in (
        (b"\xff\xfe\x00\x00", "utf-32"),
        (b"\x00\x00\xfe\xff", "utf-32"),
        (b"\xff\xfe", "utf-16"),
        (b"\xfe\xff", "utf-16"),
    ):
        if raw.startswith(bom):  # Windows Notepad's "Unicode": NUL bytes, but text
            try:
                text = raw.decode(encoding)
            except UnicodeDecodeError:
                raise InputError(
                    f"{path} starts as {encoding.upper()} text but does not decode as it; save it as UTF-8"
                )
            if len(raw) > 256 and "\n" not in text:  # bytes that merely start like a mark: no line ends
                raise InputError(f"{path} looks like a binary file, not text (save it as UTF-8 text)")
            return text.replace("\r\n", "\n").replace("\r", "\n"), encoding
    if b"\x00" in raw[:8192]:
        raise InputError(f"{path} looks like a binary file, not text (save it as UTF-8 text)")
    for encoding in _ENCODINGS:
        try:
            text = raw.decode(encoding)
        except UnicodeDecodeError:
            # UTF-8 but for a line or two: read it as UTF-8 (GB18030 would decode it, as nonsense)
            damaged = _damaged_lines(raw) if bad is not None and encoding == "utf-8-sig" else None
            if damaged:
                for no in damaged[1]:
                    bad.add(f"{os.path.basename(path)}:{no}", NOT_UTF8)
                return damaged[0].replace("\r\n", "\n").replace("\r", "\n"), "utf-8"
            continue
        # GB18030 decodes some binary junk without error: refuse text full of control characters.
        controls = sum(1 for ch in text[:20000] if ord(ch) < 32 and ch not in "\t\n\r\f")
        if controls > max(3, len(text[:20000]) // 100):
            raise InputError(f"{path} looks like a binary file, not text (save it as UTF-8 text)")
        return text.replace("\r\n", "\n").replace("\r", "\n"), "utf-8" if encoding == "utf-8-sig" else encoding
    raise InputError(f"{path} is neither UTF-8 nor GB18030 text; save it as UTF-8 and try again")


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
LONE_SURROGATE = "holds half a character (a lone \\ud800-\\udfff escape)"


def loads_json(text: str):
    """`json.loads` that reports absurd nesting (`[[[[...`) and lone surrogate escapes (`"\\ud800"`, which
    json accepts but no text encoding can write) as a ValueError, not a traceback further on."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise ValueError("nested too deeply")
    if _SURROGATE_ESCAPE.search(text):  # pairs decode to one character; only lone halves fail here
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(LONE_SURROGATE)
    return value


def read_json_dict(path: str | os.PathLike) -> dict:
    """A JSON object from a small file we wrote (a report, a config), or {} when it is missing,
    unreadable, not JSON or not an object: callers treat those alike, as "nothing recorded"."""
    try:
        with open(path, encoding="utf-8") as f:
            value = loads_json(f.read())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


class NoAliases(yaml.SafeLoader):
    """YAML's safe loader without aliases."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not allowed here", event.start_mark)
        return super().compose_node(parent, index)


def load_yaml(text: str):
    """`yaml.safe_load` without aliases (a few hundred bytes of `*a` references can expand to
    gigabytes) and without absurd nesting; raises `yaml.YAMLError` or ValueError."""
    try:
        return yaml.load(text, Loader=NoAliases)
    except RecursionError:
        raise ValueError("nested too deeply")


def json_lines(text: str, name: str, bad):
    """Yield (`file:line`, object) for each non-blank JSON Lines row; broken rows go to `bad`."""
    for no, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            yield f"{name}:{no}", loads_json(line)
        except ValueError as e:
            reason = str(e) if str(e) in ("nested too deeply", LONE_SURROGATE) else "not valid JSON"
            bad.add(f"{name}:{no}", reason)


def write_atomic(path: str, text: str) -> None:
    """Write `text` to `path` whole or not at all: a temporary file beside it, renamed over it (a kill or a full
    disk never leaves half a file, and a reader never sees one)."""
    import tempfile

    # a new name of our own (created exclusively): never a file of the user's that happened to be called so
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".tmp-", dir=os.path.dirname(path) or ".")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        # the mode of the file it replaces, else a plain file's (not mkstemp's 0600; reading the umask would set it)
        os.chmod(tmp, stat.S_IMODE(os.stat(path).st_mode) if os.path.isfile(path) else 0o644)
        os.replace(tmp, path)
    except BaseException:
        os.remove(tmp)
        raise
