"""Entry-point wrapper: bad input becomes one line on stderr and exit code 2, never a traceback."""

from __future__ import annotations

import logging
import os
import sys
import warnings
from typing import Callable

from data.errors import EXIT_BAD_INPUT

EXIT_INTERRUPTED = 130


def process_count() -> int:
    """Processes in this run: WORLD_SIZE under `torchrun` / `accelerate launch`, else 1."""
    return max(1, int(os.environ.get("WORLD_SIZE", "1")))


def is_main_process() -> bool:
    """Rank 0 under `torchrun` / `accelerate launch` (which set RANK), or a plain single process."""
    return os.environ.get("RANK", "0") == "0"


def from_the_app() -> bool:
    """This run was started by the web app (a demo build, the Train tab): its log is read in the page, where
    the controls are buttons, not flags and Ctrl-C (webui.demos.spawn_training sets TRAINING_FROM_APP)."""
    return os.environ.get("TRAINING_FROM_APP") == "1"


def say(message: str, error: bool = False) -> None:
    """Progress and notes for the person at the terminal (stderr keeps stdout clean for data).
    While a progress bar is on screen the line goes above it (tqdm.write), not into it.
    With several processes only the main one talks; the others print errors only."""
    if not error and not is_main_process():
        return
    tqdm = sys.modules.get("tqdm")
    if tqdm is not None and getattr(tqdm.tqdm, "_instances", None):
        tqdm.tqdm.write(message, file=sys.stderr)
        sys.stderr.flush()
        return
    print(message, file=sys.stderr, flush=True)


def quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    logging.getLogger("transformers").setLevel(logging.ERROR)
    logging.getLogger("accelerate").setLevel(logging.ERROR)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()  # "Writing model shards" and load bars; the training bar stays
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*torch.utils.checkpoint.*")


def _terminate(signum, frame):
    raise KeyboardInterrupt


def _leave_process_group() -> None:
    """Several processes: wait until the main one has written the model, then leave the process group.
    A worker that simply exited first aborted ("terminate called without an active exception", exit -6),
    and torchrun then stopped the main process in the middle of writing the model."""
    if "torch" not in sys.modules:
        return
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def guarded(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> int:
    """Call `main(argv)`; turn `InputError` into `error: ...` + exit 2 (1 for a run that failed: data.errors.RunFailed)
    and Ctrl-C into exit 130."""
    import signal
    import threading

    from data.errors import InputError
    from training.output import NothingToDo

    quiet_libraries()
    previous = None
    if threading.current_thread() is threading.main_thread():
        # SIGTERM (docker stop, systemd, Spaces) ends the run like Ctrl-C, never mid-write without a word;
        # while training, StopOnInterrupt turns either into "save a resumable state, then stop".
        previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        code = int(main(argv) or 0)
        _leave_process_group()
        return code
    except NothingToDo as e:
        say(str(e))
        return 0
    except InputError as e:
        from data.errors import RunFailed
        from training.output import abandon_unstarted

        if isinstance(e, RunFailed):  # said by the main process after training: the others wait for it there
            _leave_process_group()

        abandon_unstarted()  # a .partial this run made and saved nothing in would block the name
        # one line, whatever the message quotes (a file name may hold a newline)
        say(f"error: {str(e).replace(chr(10), chr(92) + 'n').replace(chr(13), chr(92) + 'r')}", error=True)
        return getattr(e, "exit_code", EXIT_BAD_INPUT)
    except KeyboardInterrupt:
        say("interrupted.")
        return EXIT_INTERRUPTED
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
