"""Serving checkpoint folders: the chat engine, the fill-mask and similarity predictors, the task registry.

    from chat import ChatEngine
    engine = ChatEngine.from_pretrained("checkpoints/chat")
    for piece in engine.stream([], "你好"):
        print(piece, end="", flush=True)

Terminal chat: `python -m chat --model checkpoints/chat`.
"""

__all__ = ["ChatEngine", "GenerationSettings", "load_chat_model"]


def __getattr__(name: str):
    # imported on first use, so the task registry (chat.tasks) can be read without loading torch
    if name == "ChatEngine":
        from chat.engine import ChatEngine

        return ChatEngine
    if name == "GenerationSettings":
        from chat.settings import GenerationSettings

        return GenerationSettings
    if name == "load_chat_model":
        from chat.loading import load_chat_model

        return load_chat_model
    raise AttributeError(f"module 'chat' has no attribute {name!r}")
