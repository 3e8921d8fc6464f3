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

from data import InputError
from data.errors import EXIT_BAD_INPUT


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="python -m chat", description="Chat with a trained model in the terminal. 终端聊天。"
    )
    p.add_argument(
        "--model",
        default=os.path.join("checkpoints", "chat"),
        help="chat checkpoint folder (default: checkpoints/chat)",
    )
    p.add_argument("--max-new-tokens", type=int, help="longest reply in tokens")
    p.add_argument("--temperature", type=float, help="sampling temperature (0: greedy)")
    p.add_argument("--top-k", type=int, help="sample from the k likeliest tokens (0: off)")
    p.add_argument("--top-p", type=float, help="nucleus sampling mass")
    p.add_argument("--repetition-penalty", type=float, help=">1 discourages repeating tokens")
    p.add_argument("--no-repeat-ngram-size", type=int, help="never repeat an n-gram of this size (0: off)")
    p.add_argument("--greedy", action="store_true", help="always pick the likeliest token (no sampling)")
    p.add_argument("--seed", type=int, help="seed for reproducible sampling")
    p.add_argument("--max-history", type=int, default=6, help="turns of history the model sees")
    p.add_argument(
        "--precision",
        choices=("fp32", "bf16", "bf16-force", "int8"),
        default="fp32",
        help="weights: fp32 (exact), bf16 (where it is fast: GPU, CPU with AMX or AVX512-BF16; else fp32 with a note; "
        "bf16-force insists), or int8 (about 3x faster replies on CPU)",
    )
    p.add_argument(
        "--transcripts",
        default="transcripts",
        help="folder where an interactive chat is saved when it ends (default: transcripts/, git-ignored)",
    )
    p.add_argument("--fast", dest="precision", action="store_const", const="int8", help="same as --precision int8")
    return p.parse_args(argv)


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
    args = parse_args(argv)
    logging.basicConfig(format="note: %(message)s", level=logging.WARNING)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    from chat.engine import ChatEngine, GenerationSettings

    try:
        settings = GenerationSettings(
            max_new_tokens=args.max_new_tokens,
            temperature=args.temperature,
            top_k=args.top_k,
            top_p=args.top_p,
            repetition_penalty=args.repetition_penalty,
            no_repeat_ngram_size=args.no_repeat_ngram_size,
            do_sample=False if args.greedy else None,
            seed=args.seed,
        )
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
