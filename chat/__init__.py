"""Serving checkpoint folders: the chat engine (and, later, fill-mask and similarity predictors).

    from chat import ChatEngine
    engine = ChatEngine.from_pretrained("checkpoints/chat")
    for piece in engine.stream([], "你好"):
        print(piece, end="", flush=True)

Terminal chat: `python -m chat --model checkpoints/chat`.
"""

from chat.engine import ChatEngine, GenerationSettings
from chat.loading import load_chat_model

__all__ = ["ChatEngine", "GenerationSettings", "load_chat_model"]
