"""Gradio app: one tab per task (Chat, Fill-Mask, Similarity) over the checkpoint folders.

    python app.py                      # serve checkpoints/ (demo models are built if a tab has none)
    python app.py --share              # also ask Gradio for a public link
    python app.py --chat-model checkpoints/chat --port 7861

This file is the entry point (`python app.py`, Spaces' `app_file`); the UI is in webui/ (one
module per tab, the page built from the task registry in chat/tasks.py). `import app` is
cheap: nothing is loaded until `main()` runs or a tab is used.
"""

from __future__ import annotations

import os
import sys
import time

from data.errors import EXIT_BAD_INPUT
from data.hub import can_connect
from webui.demos import DemoBuilder
from webui.jobs import MAX_UPLOAD_BYTES, TrainingJobs, public_reason
from webui.settings import SERVE_OPTIONS, Settings, parse_settings, predictor_options
from webui.store import ModelStore, missing_demos, warm_up

__all__ = ["main", "build_demo", "Settings", "parse_settings", "ModelStore", "SERVE_OPTIONS"]


def build_demo(settings=None, store=None, builder=None, trainer=None):
    """The page (webui.blocks.build_demo); Gradio is imported here, on first use, not by `import app`."""
    from webui.blocks import build_demo as build

    return build(settings, store, builder, trainer)


def share_server_reachable(timeout: float = 3.0) -> bool:
    """Gradio asks api.gradio.app for a share server; offline that fails after a long wait."""
    return can_connect("api.gradio.app", 443, timeout)


def patient_localhost_check(seconds: float = 60.0) -> None:
    """Gradio's launch asks its own server for the page once (3 s timeout) and, on a timeout, raises
    "When localhost is not accessible, a shareable link must be created": on a busy machine (another
    training process beside the app) that killed one start in three (issue #34). Gradio has no option
    for it, so its check is replaced by one that keeps asking for up to a minute; a server that never
    answers still fails the same way."""
    import time

    import httpx
    from gradio import networking

    def url_ok(url: str) -> bool:
        deadline = time.monotonic() + seconds
        while True:
            try:
                r = httpx.head(url, timeout=5, verify=False)
                if r.status_code in (200, 401, 301, 302, 303, 307, 308):
                    return True
            except (httpx.TimeoutException, httpx.TransportError):
                pass
            if time.monotonic() > deadline:
                return False
            time.sleep(0.5)

    networking.url_ok = url_ok


def main(argv: list[str] | None = None) -> int:
    settings = parse_settings(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from data import InputError

    started = time.perf_counter()
    try:
        store = ModelStore(predictor_options(settings))
        # Tabs without a model get a demo model, trained in the background while the page already answers.
        builder = DemoBuilder(
            settings.checkpoints,
            missing_demos(settings) if settings.demo else [],
            on_ready=store.get,
            minutes=settings.demo_minutes,
        )
        # the Train tab runs training scripts: only where the page is not public (or --allow-training)
        trainer = None if public_reason(settings) else TrainingJobs(settings.checkpoints)
        demo = build_demo(settings, store, builder, trainer)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    share = settings.share and not os.environ.get("SPACE_ID")
    if share and not share_server_reachable():
        print(
            "note: Gradio's share server cannot be reached (offline?), so there is no public link; serving locally "
            "only.",
            file=sys.stderr,
        )
        share = False
    patient_localhost_check()
    try:
        # quiet: Gradio's own lines advise `launch(share=True)`; the app prints its own address and link
        demo.launch(
            server_name=settings.host,
            server_port=settings.port or None,
            share=share,
            prevent_thread_lock=True,
            quiet=True,
            auth=settings.auth,
            **{**SERVE_OPTIONS, **({"max_file_size": f"{MAX_UPLOAD_BYTES // 2**20}mb"} if trainer else {})},
        )
    except OSError as e:
        busy = "port" in str(e).lower()
        reason = "the port is in use" if busy else (str(e).splitlines() or [""])[0].split(". You can")[0]
        print(
            f"error: cannot serve on {settings.host}:{settings.port}: {reason} (try --port {settings.port + 1}, "
            "or --port 0 for the first free one)",
            file=sys.stderr,
        )
        return EXIT_BAD_INPUT
    from webui.openai_api import mount_openai

    mount_openai(demo.app, settings, store, settings.api_key)  # the OpenAI-compatible API on the same port
    if share and demo.share_url:
        print(f"[app] public link: {demo.share_url} (works while this app runs, up to a week)", flush=True)
    elif share:
        print("note: no public link: Gradio's share server did not answer; serving locally only.", file=sys.stderr)
    print(
        "[app] serving at "
        f"http://{'localhost' if settings.host in ('127.0.0.1', '0.0.0.0') else settings.host}:{demo.server_port} "
        f"({time.perf_counter() - started:.0f} s after start); Ctrl-C stops it",
        flush=True,
    )
    print(
        f"[app] OpenAI-compatible API: http://localhost:{demo.server_port}/v1 (chat models; "
        f"{'key required' if settings.api_key else 'no key: as open as the page'})",
        flush=True,
    )
    warm_up(settings, store)
    builder.start()
    try:
        demo.block_thread()
    except KeyboardInterrupt:
        pass
    finally:
        builder.stop()
        if trainer is not None:
            trainer.close()  # Ctrl-C to a running job (it saves a resumable state); uploads removed
        demo.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
