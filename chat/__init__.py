"""Serving checkpoint folders: chat engine, fill-mask and similarity predictors, terminal chat.

The chat engine arrives with its own issue; it will encode prompts with
`data.DialogueEncoder`, the same encoder training uses.
"""
