"""The web UI behind `python app.py`, one module per concern:

    settings.py   flags and environment variables (Settings, parse_settings)
    store.py      checkpoint folders per task, the about line, loaded models (ModelStore)
    demos.py      demo models trained in the background for tabs without a model
    widgets.py    Gradio components with stricter value checks
    blocks.py     the Blocks page: one tab per registered task (chat.tasks), shared helpers
    tabs/         one module per tab, each with build(ctx, task)

Only blocks.py, widgets.py and tabs/ import gradio, and only when the page is built, so
`import app` stays cheap.
"""
