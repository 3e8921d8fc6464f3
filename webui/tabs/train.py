"""训练 Train: pick a task and data, preview what the script will read, start the real training
script, watch its loss, stop (Ctrl-C: resumable) and resume. Off where the page is public."""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import shutil

import gradio as gr

from chat.tasks import TASKS, task_named
from training.args import TRACKERS
from webui.jobs import PRESETS, TrainingJobs, preview, public_reason

STATES = {
    "starting": "启动中 starting",
    "training": "训练中 training",
    "saving": "保存中 saving",
    "done": "✓ 完成 done",
    "stopped": "已停止 stopped (可继续 resumable)",
    "failed": "✗ 失败 failed",
}


def _data_path(trainer: TrainingJobs, task: str, upload, use_sample: bool) -> str:
    """The file to train on: the task's sample, or the upload copied into the app's private folder."""
    from data.errors import InputError

    if use_sample or not upload:
        if not use_sample:
            raise InputError("请上传数据文件，或勾选“用样例数据” Upload a data file, or tick 'use the sample data'")
        training = task_named(task).training
        return training.path(training.sample)
    source = upload if isinstance(upload, str) else getattr(upload, "name", str(upload))
    kept = os.path.join(trainer.uploads, os.path.basename(source))
    if os.path.abspath(source) != os.path.abspath(kept):
        shutil.copyfile(source, kept)
    return kept


def checked(trainer: TrainingJobs, task: str, path: str) -> dict:
    """`preview` of the file, its refusal in Chinese and English without the app's temporary path (issue
    #38); a refused upload (our copy, in the upload folder the app made) is removed at once."""
    from data.errors import InputError

    try:
        return preview(task, path)
    except InputError as e:
        if os.path.dirname(os.path.abspath(path)) == os.path.abspath(trainer.uploads):
            with contextlib.suppress(OSError):
                os.remove(path)
        raise InputError(bilingual_refusal(str(e), path))


REFUSALS = (  # the readers' English reasons, and what a Chinese user reads first
    ("looks like a binary file", "这不是文本文件（像是二进制文件），请另存为 UTF-8 文本"),
    ("is empty", "文件是空的"),
    ("is neither UTF-8 nor GB18030", "认不出文件的编码，请另存为 UTF-8"),
    ("does not decode as it", "文件编码有误，请另存为 UTF-8"),
    ("holds no usable", "文件里没有能用的数据"),
    ("no usable", "文件里没有能用的数据"),
    ("is not valid JSON", "文件不是有效的 JSON"),
    ("cannot be read", "文件读不出来"),
)


def bilingual_refusal(message: str, path: str) -> str:
    """`message` with the app's temporary path replaced by the file's name, after a Chinese sentence."""
    name = os.path.basename(path)
    english = message.replace(path, name).replace(os.path.dirname(path) + os.sep, "")
    chinese = next((zh for en, zh in REFUSALS if en in message), "这个文件不能用来训练")
    return english if english.startswith(chinese) else f"{chinese}：{name}。 {english}"


def call(fn, *args):
    """fn(*args), its one-sentence InputError shown as the page's error (and API clients' message)."""
    from data.errors import InputError

    try:
        return fn(*args)
    except InputError as e:
        raise gr.Error(str(e), print_exception=False)


def _curve(progress: dict, which: str = "train"):
    """One loss curve ("train" or "valid") of the run's progress, for its own plot."""
    import pandas as pd

    rows = [(s, v) for s, v in (progress.get("curve") or {}).get(which, [])]
    if not rows:
        # no plot rather than an empty one: after an empty frame the browser drew the later points'
        # axes but never their lines (Gradio 6 LinePlot, Chromium)
        return None
    return pd.DataFrame(rows, columns=["step", "loss"])


def status_text(trainer: TrainingJobs) -> tuple[str, str, str]:
    """(status line, command, last log lines) of the app's training job."""
    job = trainer.status()
    if job is None:
        return "没有训练任务 No training run yet.", "", ""
    p = job.progress
    line = f"**{STATES.get(job.state, job.state)}** · {task_named(job.task).title} → `{job.output}`"
    if p.get("max_steps"):
        line += f" · 第 step {p.get('step', 0):,}/{p['max_steps']:,} 步"
        if job.first_plan and job.first_plan != p["max_steps"] and not p.get("final"):
            line += (
                f"（计划从 {job.first_plan:,} 步调整为 {p['max_steps']:,} 步：按实测速度重算 "
                f"plan changed from {job.first_plan:,} to {p['max_steps']:,} steps at the measured speed）"
            )
        if p.get("eta_s") is not None and job.state == "training":
            line += f" · 约 about {p['eta_s']:.0f} s left"
        if p.get("loss") is not None:
            line += f" · loss {p['loss']:.3f}"
    bar = trainer.last_bar()
    if bar:  # before training starts: downloading the base, say
        line += f"\n\n下载中 Downloading: `{bar}`"
    if job.reason:
        line += f"\n\n{job.reason}"
    if job.state == "done":
        line += "\n\n模型已可在其他标签页使用 The model is now listed in its tab (reload the page or pick it)."
    return line, job.shown_command, trainer.log_tail()


def _training_off(reason: str | None) -> None:
    why = (
        f"{reason}: 任何拿到链接的人都能在这台机器上训练 anyone with the link could start runs on this machine"
        if reason
        else "in this app"
    )
    gr.Markdown(
        f"⚠ 训练已关闭 Training is off {why}. 在本机使用 Run it locally (`python app.py`), or start the app with "
        "`--allow-training` if you trust every visitor. "
        f"命令行训练 From a terminal: `{next(t for t in TASKS.values() if t.training).how_to_train}`",
        elem_id="train-off",
    )


def _progress_widgets():
    """The run's status line, its command, its two loss curves and its log."""
    status = gr.Markdown(elem_id="train-status")
    command = gr.Code(
        label="命令 Command (the same run from a terminal)",
        language="shell",
        interactive=False,
        elem_id="train-command",
    )
    # Two plots, one curve each: in a plot coloured by series, Gradio 6 never drew a series that first
    # appeared after the first frame (the validation loss, after the first evaluation), and its legend
    # showed only its title (Chromium, tried with color_map and colors_in_legend)
    with gr.Row():
        curves = (("训练损失 Training loss", "train-plot"), ("验证损失 Validation loss", "train-plot-valid"))
        plot, plot_valid = (
            gr.LinePlot(x="step", y="loss", label=name, x_title="步 step", y_title="损失 loss", height=260, elem_id=key)
            for name, key in curves
        )
    gr.Markdown(
        "验证损失是模型在没训练过的行上的损失。它上升表示模型在背它的训练文本（过拟合）：记事实的完形填空模型本该如此，"
        "请看自测记住了几个事实。The validation loss is measured on lines the model does not train on; when it "
        "rises the model is memorising its training text (overfitting): expected of a fact (fill-mask) model, "
        "judge that one by the self-quiz facts it recalls.",
        elem_id="train-plot-note",
    )
    log = gr.Textbox(label="日志 Log", lines=8, max_lines=12, interactive=False, elem_id="train-log")
    return status, command, plot, plot_valid, log


def show_preview(trainer: TrainingJobs, task_name, file, sample) -> str:
    """The preview area's text: what the script will read from the file, or why it cannot."""
    from data.errors import InputError

    try:  # the reason in the preview area itself, not a bare "Error" there and the reason in a toast
        path = _data_path(trainer, task_name, file, sample)
        p = checked(trainer, task_name, path)
    except InputError as e:
        return f"⚠ {e}"
    text = (
        f"**{os.path.basename(path)}**: {p['format']}, {p['encoding']}, "
        f"{p['rows']:,} {p['unit']} 可用 usable, {p['skipped']} 行跳过 skipped"
    )
    if p.get("notes"):
        text += "\n\n" + "\n".join(f"- {n}" for n in p["notes"])
    if p["reasons"]:
        text += "\n\n" + "\n".join(f"- `{r}`" for r in p["reasons"])
    return text


def _advanced(n_epochs, rate, batch_size, length, use_lora, report) -> dict:
    """The Advanced options by the scripts' option names (empty or 0: the script's default)."""
    return {
        "epochs": n_epochs,
        "lr": rate,
        "batch_size": int(batch_size) if batch_size else None,
        "max_len": int(length) if length else None,
        "lora": use_lora,
        "report_to": None if report in (None, "none") else report,
    }


def build(ctx, trainer: TrainingJobs | None):
    reason = public_reason(ctx.settings)
    if reason or trainer is None:
        _training_off(reason)
        return
    tasks = [(t.title, t.name) for t in TASKS.values() if t.training]
    with gr.Row():
        task = gr.Dropdown(choices=tasks, value=tasks[0][1], label="任务 Task", scale=1, elem_id="train-task")
        upload = gr.File(
            label="上传数据 Upload data (≤ 50 MB)",
            scale=2,
        )
        use_sample = gr.Checkbox(value=False, label="用样例数据 Use the sample data", scale=1, elem_id="train-sample")
    with gr.Row():
        check = gr.Button("预览 Preview", elem_id="train-preview")
        full_check = gr.Button("检查数据和用时 Check the data and the time (~10 s)", elem_id="train-check")
    previewed = gr.Markdown(elem_id="train-preview-out")
    with gr.Row():
        base = gr.Dropdown(
            choices=["scratch"],
            value="scratch",
            allow_custom_value=True,
            scale=2,
            label="基座 Base: scratch, a Hub id, or one of your checkpoints (continue training)",
            elem_id="train-base",
        )
        preset = gr.Radio(list(PRESETS), value="标准 standard", label="训练量 Amount", scale=2)
        name = gr.Textbox(
            value="my-model", label="输出名称 Output name (under --checkpoints)", scale=1, elem_id="train-name"
        )
    with gr.Accordion("高级 Advanced", open=False):
        with gr.Row():
            epochs = gr.Number(value=None, label="epochs (empty: sized by the data)", elem_id="train-epochs")
            lr = gr.Number(value=None, label="learning rate (empty: default)")
            batch = gr.Number(value=None, precision=0, label="batch size")
            max_len = gr.Number(value=None, precision=0, label="max length")
            lora = gr.Checkbox(value=False, label="LoRA")
            tracker = gr.Dropdown(
                choices=[t for t, module in TRACKERS.items() if module is None or importlib.util.find_spec(module)],
                value="none",
                label="记录到 Report to (TensorBoard: <output>/tensorboard/)",
                elem_id="train-report-to",
            )
            overwrite = gr.Checkbox(value=False, label="覆盖同名模型 Replace a model of that name")
    with gr.Row():
        start = gr.Button("开始 Start", variant="primary", elem_id="train-start")
        stop = gr.Button("停止 Stop", elem_id="train-stop")
        resume = gr.Button("继续 Resume", elem_id="train-resume")
    status, command, plot, plot_valid, log = _progress_widgets()

    def bases(task_name):
        own = [c.path for c in ctx.rescan().get(task_name, []) if not c.demo]
        return gr.update(choices=["scratch", *own], value="scratch")

    def begin(
        task_name, file, sample, base_name, amount, n_epochs, rate, batch_size, length, use_lora, out, replace, report
    ):
        path = call(_data_path, trainer, task_name, file, sample)
        call(checked, trainer, task_name, path)  # refuse a file the script cannot train on, before starting it
        advanced = _advanced(n_epochs, rate, batch_size, length, use_lora, report)
        call(trainer.start, task_name, path, out, base_name or "scratch", PRESETS.get(amount), advanced, bool(replace))
        return refresh()

    def check_all(task_name, file, sample, base_name, amount, n_epochs, rate, batch_size, length, use_lora):
        from data.errors import InputError

        try:
            path = _data_path(trainer, task_name, file, sample)
            checked(trainer, task_name, path)
            advanced = _advanced(n_epochs, rate, batch_size, length, use_lora, None)
            advanced["max_minutes"] = PRESETS.get(amount)
            said = trainer.check(task_name, path, base_name or "scratch", advanced)
        except InputError as e:
            return f"⚠ {e}"
        head = "检查结果（没有训练，也没有建输出文件夹）The check (nothing trained, no output folder)"
        return f"{head}:\n\n```\n{said}\n```"

    def refresh():
        line, cmd, tail = status_text(trainer)
        job = trainer.job
        progress = job.progress if job else {}
        return line, cmd, _curve(progress, "train"), _curve(progress, "valid"), tail

    outputs = [status, command, plot, plot_valid, log]
    check.click(
        functools.partial(show_preview, trainer), [task, upload, use_sample], previewed, api_name="train_preview"
    )
    task.change(bases, task, base, api_visibility="private")
    inputs = [task, upload, use_sample, base, preset, epochs, lr, batch, max_len, lora, name, overwrite, tracker]
    start.click(begin, inputs, outputs, api_name="train_start")
    full_check.click(check_all, inputs[:10], previewed, api_name="train_check")
    stop.click(lambda: (call(trainer.stop), refresh())[1], None, outputs, api_name="train_stop")
    resume.click(lambda: (call(trainer.resume), refresh())[1], None, outputs, api_name="train_resume")
    gr.Timer(2.0).tick(refresh, None, outputs, api_visibility="private", show_progress="hidden", queue=False)
    gr.Button(visible=False).click(refresh, None, outputs, api_name="train_status")
