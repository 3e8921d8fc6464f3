"""What the command line (or, on Spaces, the environment) can set: `python app.py --help`."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field

from chat.tasks import TASKS

MAX_UPLOAD = "1mb"  # the app has no upload box; Gradio's upload route still exists, so keep it small
CSS = """
.verdict { display: inline-block; padding: 1px 10px; border-radius: 6px; font-weight: 600; }
.verdict-same { background: #dcfce7; color: #166534; }
.verdict-different { background: #fee2e2; color: #991b1b; }
.model-about { overflow-y: auto; }
"""
# Keyword arguments of the page's launch() (webui.blocks builds the page; app.py launches it).
SERVE_OPTIONS = dict(show_error=False, footer_links=["api", "gradio"], max_file_size=MAX_UPLOAD, css=CSS)


@dataclass
class Settings:
    checkpoints: str = "checkpoints"
    models: dict = field(default_factory=dict)  # task -> folder or Hub id given explicitly
    host: str = "127.0.0.1"
    port: int = 7860
    share: bool = False
    concurrency: int = 16
    demo: bool = True
    fast: bool = False  # chat model with int8 weights
    demo_minutes: float | None = None  # time budget per demo model (None: each task's demo_minutes)
    allow_training: bool = False  # the Train tab even where the page is public (--share, a public host, Spaces)
    batching: bool = True  # concurrent chat replies share decode steps (chat/batching.py)
    api_key: str | None = None  # /v1 needs `Authorization: Bearer KEY` when set
    auth: tuple[str, str] | None = None  # Gradio's own login for the page


def predictor_options(settings: Settings) -> dict:
    """Per-task keyword arguments of the predictors' from_pretrained that the flags set."""
    chat = {"batching": settings.batching}
    if settings.fast:
        chat["precision"] = "int8"
    return {"chat": chat, "write": dict(chat)}  # a writer decodes as chat does, through the same batcher


def env_names() -> dict[str, str]:
    """flag -> environment variable (Spaces sets variables, not flags); one --<task>-model per task."""
    return {
        "checkpoints": "APP_CHECKPOINTS",
        **{f"{t}_model": f"APP_{t.upper()}_MODEL" for t in TASKS},
        "host": "APP_HOST",
        "port": "APP_PORT",
        "share": "APP_SHARE",
        "concurrency": "APP_CONCURRENCY",
        "no_demo": "APP_NO_DEMO",
        "demo_minutes": "APP_DEMO_MINUTES",
        "allow_training": "APP_ALLOW_TRAINING",
        "fast": "APP_FAST",
        "no_batching": "APP_NO_BATCHING",
        "api_key": "APP_API_KEY",
        "auth": "APP_AUTH",
    }


def _env_bool(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _add_access_flags(p: argparse.ArgumentParser) -> None:
    """Who can reach the page and the API: address, port, public link, training, keys."""
    env = os.environ.get
    p.add_argument(
        "--host",
        default=env("APP_HOST") or env("GRADIO_SERVER_NAME") or "127.0.0.1",
        help="address to listen on (0.0.0.0: every interface)",
    )
    p.add_argument(
        "--port",
        type=int,
        default=int(env("APP_PORT") or env("GRADIO_SERVER_PORT") or 7860),
        help="port (default 7860; 0: the first free one from 7860)",
    )
    p.add_argument(
        "--share",
        action="store_true",
        default=_env_bool("APP_SHARE"),
        help="ask Gradio's share server for a public link",
    )
    p.add_argument(
        "--allow-training",
        action="store_true",
        default=_env_bool("APP_ALLOW_TRAINING"),
        help="keep the 训练 Train tab on where the page is public (--share, --host other than loopback, Spaces): "
        "every visitor could then start training runs on this machine",
    )
    p.add_argument(
        "--api-key",
        default=env("APP_API_KEY"),
        help="the key the OpenAI-compatible API (/v1/chat/completions) asks for (Authorization: Bearer KEY); "
        "without one, /v1 is as open as the page",
    )
    p.add_argument(
        "--auth",
        default=env("APP_AUTH"),
        metavar="USER:PASSWORD",
        help="a login for the page (Gradio's own); /v1 is guarded by --api-key instead",
    )


def _parser() -> argparse.ArgumentParser:
    """`python app.py`'s flags, each with its environment variable as the default."""
    env = os.environ.get
    titles = ", ".join(t.title.split(" ", 1)[-1] for t in TASKS.values())
    p = argparse.ArgumentParser(
        prog="python app.py",
        description=f"网页演示 Web demo: {titles} over your checkpoints.",
        epilog="Every flag can also come from an environment variable: "
        + ", ".join(f"--{k.replace('_', '-')}={v}" for k, v in env_names().items()),
    )
    p.add_argument(
        "--checkpoints",
        default=env("APP_CHECKPOINTS", "checkpoints"),
        help="folder searched for checkpoint folders (default: checkpoints)",
    )
    for t in TASKS.values():
        p.add_argument(
            f"--{t.name}-model",
            dest=f"{t.name}_model",
            default=env(f"APP_{t.name.upper()}_MODEL"),
            help=f"{t.title} model folder or Hub id (default: found under --checkpoints)",
        )
    p.add_argument(
        "--concurrency",
        type=int,
        default=int(env("APP_CONCURRENCY") or 16),
        help="requests a tab runs at once; the rest wait in the queue (default 16)",
    )
    p.add_argument(
        "--no-demo",
        action="store_true",
        default=_env_bool("APP_NO_DEMO"),
        help="do not build demo models for tabs without a checkpoint",
    )
    budgets = ", ".join(f"{t.training.demo_minutes:g} {t.name}" for t in TASKS.values() if t.has_demo)
    p.add_argument(
        "--demo-minutes",
        type=float,
        default=float(env("APP_DEMO_MINUTES") or 0) or None,
        help=f"time budget per demo model on this CPU (default: {budgets}); smaller trains a weaker demo sooner",
    )
    p.add_argument(
        "--fast",
        action="store_true",
        default=_env_bool("APP_FAST"),
        help="chat model with int8 weights: about 2x faster replies on CPU",
    )
    p.add_argument(
        "--no-batching",
        action="store_true",
        default=_env_bool("APP_NO_BATCHING"),
        help="one generate() per chat reply, one reply at a time, instead of batching concurrent replies into "
        "shared decode steps (to compare; batching serves many visitors several times faster)",
    )
    _add_access_flags(p)
    return p


def parse_settings(argv: list[str] | None = None) -> Settings:
    p = _parser()
    a = p.parse_args(argv)
    auth = None
    if a.auth:
        user, _, password = a.auth.partition(":")
        if not user or not password:
            p.error("--auth must look like USER:PASSWORD")
        auth = (user, password)
    if a.api_key is not None and not a.api_key.strip():
        p.error("--api-key is empty")
    if not 1 <= a.concurrency <= 64:
        p.error(f"--concurrency must be between 1 and 64, got {a.concurrency}")
    if not 0 <= a.port < 65536:
        p.error(f"--port must be between 0 (any free port) and 65535, got {a.port}")
    if a.demo_minutes is not None and not 0.05 <= a.demo_minutes <= 60:
        p.error(f"--demo-minutes must be between 0.05 and 60, got {a.demo_minutes:g}")
    if os.path.exists(a.checkpoints) and not os.path.isdir(a.checkpoints):
        p.error(f"--checkpoints {a.checkpoints} is a file, not a folder")
    models = {t: getattr(a, f"{t}_model") for t in TASKS if getattr(a, f"{t}_model")}
    return Settings(
        a.checkpoints,
        models,
        a.host,
        a.port,
        a.share,
        a.concurrency,
        not a.no_demo,
        a.fast,
        a.demo_minutes,
        a.allow_training,
        batching=not a.no_batching,
        api_key=a.api_key,
        auth=auth,
    )
