"""Gradio components the app needs that differ from the stock ones in how they check a value.

Kept in their own module because Gradio writes a `.pyi` stub beside the source file of every
component subclass (`gradio.component_meta.create_or_modify_pyi`); beside app.py that stub
would shadow the app for type checkers. `*.pyi` is git-ignored. Imported only when the UI is
built, so `import app` stays cheap.
"""

from __future__ import annotations

import gradio as gr


class CheckedSlider(gr.Slider):
    """gr.Slider that answers a value of the wrong type or out of range with a clear message
    (the stock one raises a TypeError that API clients see as "upstream Gradio app has raised an
    exception"). The browser renders it as a plain slider."""

    def get_block_name(self):
        return "slider"

    def preprocess(self, payload):
        try:
            value = float(payload)
            if isinstance(payload, bool) or value != value:
                raise ValueError
        except (TypeError, ValueError):
            raise gr.Error(
                f"{self.label}: 需要一个数 must be a number, got {str(payload)[:40]!r}", print_exception=False
            )
        if not self.minimum <= value <= self.maximum:
            raise gr.Error(
                f"{self.label}: must be between {self.minimum:g} and {self.maximum:g} (应在此范围内), got {value:g}",
                print_exception=False,
            )
        return super().preprocess(value)


class ModelPicker(gr.Dropdown):
    """gr.Dropdown whose value is checked by the handler (which rescans the checkpoint folders on
    an unknown name) rather than against the choices it was built with, so a model trained after
    the app started can be used at once, by the page after a reload and by API clients."""

    def get_block_name(self):
        return "dropdown"

    def preprocess(self, payload):
        return None if payload is None else str(payload)


class RunPicker(gr.Dropdown):
    """Multiselect gr.Dropdown of runs whose values are checked by the handler against the runs found now (a run
    started after the page loaded can be picked by API clients, which skip the page load that lists them)."""

    def get_block_name(self):
        return "dropdown"

    def preprocess(self, payload):
        if payload is None:
            return []
        return [str(x) for x in (payload if isinstance(payload, list) else [payload])]
