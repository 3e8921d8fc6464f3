"""Terminal chat with a chat checkpoint folder.

    python -m chat --model checkpoints/chat
    echo 你好 | python -m chat --model checkpoints/chat --seed 0

Commands: /reset (forget the conversation), /save FILE (write the transcript), /exit.
Ctrl-C or Ctrl-D leave; a conversation in progress is saved as a transcript first.
Transcripts use the blank-line dialogue format, so they can be trained on directly.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from dataclasses import dataclass, field

from chat.settings import MAX_HISTORY, GenerationSettings
from data import InputError
from data.errors import EXIT_BAD_INPUT


@dataclass
class TerminalArguments:
    model: str = field(
        default=os.path.join("checkpoints", "chat"),
        metadata={"help": "chat checkpoint folder (default: checkpoints/chat)"},
    )
    greedy: bool = field(default=False, metadata={"help": "always pick the likeliest token (no sampling)"})
    max_history: int = field(
        default=MAX_HISTORY,
        metadata={
            "help": f"turns of history the model sees (default: {MAX_HISTORY}; 0: no limit); a longer conversation "
            "drops its oldest turns half this many at a time"
        },
    )
    precision: str = field(
        default="fp32",
        metadata={
            "choices": ["fp32", "bf16", "bf16-force", "int8"],
            "help": "weights: fp32 (exact), bf16 (where it is fast: GPU, CPU with AMX or AVX512-BF16; else fp32 with a "
            "note; bf16-force insists), or int8 (about 2x faster replies on CPU; default: fp32)",
        },
    )
    fast: bool = field(default=False, metadata={"help": "same as --precision int8"})
    transcripts: str = field(
        default="transcripts",
        metadata={
            "help": "folder where an interactive chat is saved when it ends (default: transcripts/, git-ignored)"
        },
    )


def parse_args(argv) -> tuple[TerminalArguments, GenerationSettings]:
    """The terminal's own flags, then one flag per GenerationSettings field (one definition of the sampling flags)."""
    from transformers import HfArgumentParser

    parser = HfArgumentParser(
        (TerminalArguments, GenerationSettings),
        prog="python -m chat",
        description="Chat with a trained model in the terminal. 终端聊天。",
        formatter_class=argparse.HelpFormatter,  # the help strings say their defaults
    )
    for action in parser._actions:  # `--max-new-tokens` first in usage and help (`--max_new_tokens` still works)
        action.option_strings.sort(key=lambda o: "_" in o)
    try:
        args, settings = parser.parse_args_into_dataclasses(argv)
    except ValueError as e:  # unknown flags: argparse's usage line and exit code 2, not a traceback
        parser.error(str(e).replace("Some specified arguments are not used by the HfArgumentParser", "unknown flags"))
    if args.max_history < 0:
        parser.error(f"--max-history must be 0 (no limit) or more, got {args.max_history}")
    if args.fast:
        args.precision = "int8"
    if args.greedy:
        settings.do_sample = False
    return args, settings


def save_transcript(turns: list[str], path: str, overwrite: bool = False) -> str:
    if os.path.exists(path) and not overwrite:
        raise InputError(f"{path} already exists; choose another file name")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(turns) + "\n")
    return path


def autosave_path(folder: str) -> str:
    """A new file in `folder` (created) for the conversation in progress when the chat ends."""
    os.makedirs(folder, exist_ok=True)
    stem = os.path.join(folder, time.strftime("chat-%Y%m%d-%H%M%S"))
    path, n = stem + ".txt", 1
    while os.path.exists(path):
        n += 1
        path = f"{stem}-{n}.txt"
    return path


def main(argv=None) -> int:
    args, settings = parse_args(argv)
    logging.basicConfig(format="note: %(message)s", level=logging.WARNING)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    from chat.engine import ChatEngine

    try:
        settings.check()
        precision = args.precision
        if precision == "bf16":
            from data.precision import bf16_fast_here

            fast, why = bf16_fast_here()
            if not fast:  # measured without bf16 instructions: 626 vs 39 ms per token (bench/decode.py, 12x768)
                print(
                    f"note: --precision bf16 ignored: {why}; using fp32 (--precision bf16-force to insist)",
                    file=sys.stderr,
                )
                precision = "fp32"
        engine = ChatEngine.from_pretrained(
            args.model, precision=precision.replace("-force", ""), max_history=args.max_history
        )
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    interactive = sys.stdin.isatty()
    if interactive:
        print(
            f"已加载 loaded {args.model}. 输入消息开始聊天；/reset 清空，/save 文件 保存，/exit 退出。", file=sys.stderr
        )
    history: list[str] = []
    try:
        while True:
            try:
                line = input("你 You> ") if interactive else sys.stdin.readline()
            except EOFError:
                break
            if not interactive and line == "":
                break
            line = line.strip()
            if not line:
                continue
            if line in ("/exit", "/quit"):
                break
            if line == "/reset":
                history.clear()
                print("(对话已清空 conversation cleared)", file=sys.stderr)
                continue
            if line.startswith("/save"):
                path = line[5:].strip()
                try:
                    if not path:
                        raise InputError("usage: /save FILE")
                    print(f"(saved to {save_transcript(history, path)})", file=sys.stderr)
                except (InputError, OSError) as e:
                    print(f"error: {e}", file=sys.stderr)
                continue
            if interactive:
                print("机器人 Bot> ", end="", flush=True)
            try:
                reply = ""
                for piece in engine.stream(history, line, settings):
                    reply += piece
                    print(piece, end="", flush=True)
                print(flush=True)
            except InputError as e:
                print(f"error: {e}", file=sys.stderr)
                continue
            history += [line, reply]
    except KeyboardInterrupt:
        print(file=sys.stderr)
    if history and interactive:
        try:
            path = save_transcript(history, autosave_path(args.transcripts))
            print(f"(transcript saved to {path})", file=sys.stderr)
        except OSError as e:
            print(f"error: the transcript could not be saved in {args.transcripts}: {e.strerror or e}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
