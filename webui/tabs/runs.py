"""历史 Runs: every run under the checkpoints folder (the app's and the command line's; finished, stopped,
failed, interrupted), newest first. Pick one for its curves, report, card and command (Resume when it
stopped); pick two to overlay their curves and list the options that differ; delete a run this program made
(after a tick to confirm). `/runs` gives the list to API clients (gradio_client)."""

from __future__ import annotations

import os

import gradio as gr

from chat.tasks import TASKS
from training import history
from webui.widgets import RunPicker

COLUMNS = ["名称 name", "任务 task", "状态 status", "数据 data", "基座 base", "开始 started", "用时 time", "步 steps"]
COLUMNS += ["指标 metric"]


def _key(record: history.RunRecord, root: str) -> str:
    return os.path.relpath(record.folder, root)


def _minutes(seconds) -> str:
    if seconds is None:
        return ""
    return f"{seconds:.0f} s" if seconds < 60 else f"{seconds / 60:.1f} min"


def _status(record: history.RunRecord) -> str:
    return f"{history.STATUS_ZH.get(record.status, record.status)} {record.status}"


def table_rows(runs: list[history.RunRecord]) -> list[list]:
    return [
        [
            r.name,
            TASKS[r.task].title if r.task in TASKS else r.task,
            _status(r),
            os.path.basename(r.data) if r.data else "",
            r.base or "",
            (r.started_at or "").replace("T", " ")[:16],
            _minutes(r.duration_s),
            r.steps if r.steps is not None else "",
            r.metric or "",
        ]
        for r in runs
    ]


def details(record: history.RunRecord) -> str:
    """One run's summary: status, figures, the verdict against the usual range, the report's own lines."""
    report = record.report
    lines = [f"### {record.name} · {_status(record)}"]
    facts = [
        f"任务 task: {record.task}",
        f"数据 data: `{record.data}`" if record.data else "",
        f"基座 base: {record.base}" if record.base else "",
        f"开始 started: {(record.started_at or '').replace('T', ' ')[:19]}",
        f"用时 time: {_minutes(record.duration_s)}" if record.duration_s is not None else "",
        f"步 steps: {record.steps:,}" if record.steps is not None else "",
    ]
    lines.append(" · ".join(f for f in facts if f))
    if record.metric:
        lines.append(f"**{record.metric}**")
    if record.verdict:
        lines.append(f"常见范围 Usual range: {record.verdict}")
    for key in ("warning", "metrics_line", "convergence", "fallback_reason"):
        if report.get(key) and report.get(key) != report.get("warning" if key != "warning" else None):
            lines.append(f"- {report[key]}")
    if record.reason:
        lines.append(f"原因 Reason: {record.reason}")
    if record.status == history.INTERRUPTED:
        lines.append("进程已不在（被杀或断电）The process is gone (killed, or the machine went down).")
    if record.resumable:
        lines.append("可以继续 It can be resumed (Resume below, or the command with --resume).")
    return "\n\n".join(lines)


def curve_figure(records: list[history.RunRecord]):
    """The loss curves of one or two runs on one matplotlib figure (solid: training, dots: validation), or None.
    Drawn here rather than with gr.LinePlot: coloured by series, Gradio 6 drew the axes and no line (Chromium)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from training.checkpoint import drawable

    found = [(r, history.curves(r)) for r in records]
    if not any(points for _, c in found for points in c.values()):
        return None
    fig, ax = plt.subplots(figsize=(8, 3.6), dpi=100)
    for i, (r, c) in enumerate(found):
        color = f"C{i}"
        name, family = drawable(r.name)
        prefix = f"{name}: " if len(records) > 1 else ""
        if c["train"]:
            ax.plot(*zip(*c["train"]), color=color, linewidth=1.2, label=prefix + "train loss")
        if c["valid"]:
            ax.plot(*zip(*c["valid"]), "o--", color=color, linewidth=1.2, label=prefix + "valid loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    plt.close(fig)  # gr.Plot draws the figure object; pyplot need not keep it
    return fig


def _card(record: history.RunRecord) -> str:
    path = os.path.join(record.folder, "README.md")
    if record.folder.endswith(".partial") or not os.path.isfile(path):
        return "（没有模型卡 No card: the run did not finish）"
    with open(path, encoding="utf-8", errors="replace") as f:
        text = f.read()
    if text.startswith("---"):  # the YAML metadata block is for the Hub, not for reading
        end = text.find("\n---", 3)
        text = text[end + 4 :] if end > 0 else text
    return text


def build(ctx, trainer=None):
    from webui.jobs import publicly_reachable

    root = ctx.settings.checkpoints
    # --allow-training on a public page lets visitors train; deleting runs and pushing them with this machine's
    # Hub token stay off there
    locked = publicly_reachable(ctx.settings)
    gr.Markdown(
        f"`{root}` 下的每一次训练（网页和命令行的都在），最新的在前。选一个看曲线和报告，选两个对比。"
        f" Every run under `{root}` (from this page and from the command line), newest first. Pick one for its "
        "curves and report, two to compare them. `tensorboard --logdir "
        f"{root}` shows the runs trained with `--report-to tensorboard`."
    )
    with gr.Row():
        refresh = gr.Button("刷新 Refresh", scale=0, elem_id="runs-refresh")
        pick = RunPicker(
            choices=[],
            multiselect=True,
            max_choices=2,
            label="选择 Pick (one: details; two: compare)",
            elem_id="runs-pick",
            scale=4,
        )
    table = gr.Dataframe(headers=COLUMNS, interactive=False, wrap=True, elem_id="runs-table")
    about = gr.Markdown(elem_id="runs-details")
    plot = gr.Plot(label="损失 Loss (solid: training, dots: validation)", elem_id="runs-plot")
    diff = gr.Dataframe(
        headers=["选项 option", "A", "B"],
        interactive=False,
        visible=False,
        label="不同的选项 Options that differ",
        elem_id="runs-diff",
    )
    command = gr.Code(label="命令 Command (trains it again)", language="shell", interactive=False)
    with gr.Accordion("模型卡 Card", open=False):
        card = gr.Markdown(elem_id="runs-card")
    with gr.Row():
        resume = gr.Button("继续 Resume", interactive=False, elem_id="runs-resume")
        sure = gr.Checkbox(value=False, label="确认删除 Yes, delete it", elem_id="runs-sure", visible=not locked)
        delete = gr.Button("删除 Delete", variant="stop", interactive=False, elem_id="runs-delete", visible=not locked)
    with gr.Accordion("推送到 Hugging Face Hub · Push to the Hub", open=False, visible=not locked):
        with gr.Row():
            repo = gr.Textbox(label="仓库 Repository (USER/NAME)", elem_id="runs-repo", scale=3)
            private = gr.Checkbox(value=True, label="私有 Private", scale=1)
            push = gr.Button("推送 Push", elem_id="runs-push", scale=1)
        gr.Markdown(
            "需要写权限的令牌：`hf auth login` 或环境变量 HF_TOKEN。A token with write access (`hf auth login` or "
            "HF_TOKEN). Only the model files go (as `training/push.py`): no training state, no local paths."
        )
    done = gr.Markdown(elem_id="runs-done")

    def listing():
        return history.list_runs(root)

    def by_key() -> dict[str, history.RunRecord]:
        return {_key(r, root): r for r in listing()}

    def load(picked):
        runs = listing()
        keys = {_key(r, root) for r in runs}
        choices = [(f"{r.name} · {_status(r)} · {(r.started_at or '')[:16]}", _key(r, root)) for r in runs]
        picked = [k for k in (picked or []) if k in keys]
        return table_rows(runs), gr.update(choices=choices, value=picked)

    def show(picked):
        found = by_key()
        records = [found[k] for k in picked or [] if k in found]
        if not records:
            return (
                "",
                None,
                gr.update(visible=False),
                "",
                "",
                gr.update(interactive=False),
                gr.update(interactive=False),
            )
        frame = curve_figure(records)
        if len(records) == 1:
            r = records[0]
            can_resume = r.resumable and bool(r.command) and trainer is not None and not trainer.busy()
            return (
                details(r),
                frame,
                gr.update(visible=False),
                r.command or "",
                _card(r),
                gr.update(interactive=can_resume),
                gr.update(interactive=r.status != history.RUNNING),
            )
        a, b = records[:2]
        rows = [list(x) for x in history.differences(a, b)] or [["（没有不同 no difference）", "", ""]]
        summary = "\n\n".join(f"**{x}**: {r.name} · {_status(r)} · {r.metric or '—'}" for x, r in (("A", a), ("B", b)))
        return (
            summary,
            frame,
            gr.update(value=rows, headers=["选项 option", f"A {a.name}", f"B {b.name}"], visible=True),
            f"# A\n{a.command or ''}\n# B\n{b.command or ''}",
            "",
            gr.update(interactive=False),
            gr.update(interactive=False),
        )

    def remove(picked, confirmed):
        if locked:
            raise gr.Error(f"删除已关闭 Delete is off {locked}", print_exception=False)
        found = by_key()
        records = [found[k] for k in picked or [] if k in found]
        if len(records) != 1:
            raise gr.Error("请只选一个要删除的训练 Pick exactly one run to delete", print_exception=False)
        if not confirmed:  # said beside the button: an error would cover the tick box it asks for
            return "⚠ 请先勾选“确认删除” Tick 'Yes, delete it' first", gr.update(), gr.update(), gr.update()
        if trainer is not None and trainer.owns(records[0]):
            return "⚠ 它正在训练，先停止 It is training: stop it first", gr.update(), gr.update(), gr.update()
        try:
            said = history.delete_run(records[0])
        except (ValueError, OSError) as e:
            raise gr.Error(f"没有删除 Not deleted: {e}", print_exception=False)
        rows, update = load([])
        return f"已删除 {said}", rows, update, False

    def go_on(picked):
        found = by_key()
        records = [found[k] for k in picked or [] if k in found]
        if trainer is None:
            raise gr.Error("训练在这个页面上已关闭 Training is off on this page", print_exception=False)
        if len(records) != 1 or not records[0].resumable:
            raise gr.Error("请选一个可以继续的训练 Pick one stopped run to resume", print_exception=False)
        from data.errors import InputError

        try:
            job = trainer.resume_run(records[0])
        except InputError as e:
            raise gr.Error(str(e), print_exception=False)
        return f"继续训练中，进度在“训练”页 Resumed: follow it in the Train tab (`{job.output}`)"

    def publish(picked, repo_id, is_private):
        from data.errors import InputError
        from training.push import push as push_folder

        if locked:
            raise gr.Error(f"推送已关闭 Push is off {locked}", print_exception=False)
        found = by_key()
        records = [found[k] for k in picked or [] if k in found]
        if len(records) != 1 or records[0].status not in (history.FINISHED, history.WEAK):
            raise gr.Error("请选一个已完成的训练 Pick one finished run to push", print_exception=False)
        said: list[str] = []
        try:
            url = push_folder(records[0].folder, (repo_id or "").strip(), bool(is_private), say=said.append)
        except InputError as e:
            raise gr.Error(f"没有推送 Not pushed: {e}", print_exception=False)
        return f"已推送 Pushed: {url}"

    outputs = [about, plot, diff, command, card, resume, delete]
    refresh.click(load, pick, [table, pick], api_visibility="private").then(
        show, pick, outputs, api_visibility="private"
    )
    pick.change(show, pick, outputs, api_name="run_details")
    delete.click(remove, [pick, sure], [done, table, pick, sure], api_name="run_delete")
    resume.click(go_on, pick, done, api_name="run_resume")
    push.click(publish, [pick, repo, private], done, api_name="run_push")
    api = gr.JSON(visible=False)
    gr.Button(visible=False).click(lambda: [r.row() for r in listing()], None, api, api_name="runs")
    return load, pick, table
