"""The task registry: one declaration per task, read by everything that serves or ships models.

    from chat.tasks import TASKS, task_named
    for task in TASKS.values():
        print(task.name, task.title, task.script)

The app (one tab per task, built by the tab module a task names), `chat.loading.task_of` and
`find_checkpoint_folders` (which folders belong to which task), the demo-model builder (the
recipe) and `space_config/deploy.py` (which folders to ship) all loop over `TASKS`; no other
module lists the tasks. A fourth task is one `register(Task(...))`: a predictor class with
`from_pretrained(folder, **options)`, and either a tab module of its own or `webui.tabs.text`
(a text box in, the predictor's `predict(text) -> str` out).

Nothing heavy is imported here: predictors and tab modules are named by dotted path and
imported when first used, so `import app` stays cheap.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from typing import Callable

from training.tasks import Training
from training.tasks.chat import TRAINING as chat_training
from training.tasks.classify import TRAINING as classify_training
from training.tasks.cloze import TRAINING as cloze_training
from training.tasks.similarity import TRAINING as similarity_training
from training.tasks.write import TRAINING as write_training

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLES = os.path.join(ROOT, "data", "samples")

WEAK_ACCURACY = 0.75  # a similarity model below this on its dev pairs gets a "rough guesses" note


def _nothing(report: dict) -> str:
    return ""


def _no_examples(report: dict) -> list:
    return []


@dataclass(frozen=True)
class Task:
    name: str  # folder-safe id, recorded as "task" in training_report.json
    title: str  # the tab's title, Chinese and English
    architectures: tuple[str, ...]  # config.json "architectures" it serves; "*Suffix" matches any model family
    predictor: str  # "module:Class" with from_pretrained(folder, **options)
    tab: str = "webui.tabs.text"  # module with build(ctx, task) -> webui.blocks.TabParts
    # how it is trained (training/tasks/<task>/__init__.py: script, options, reader, sample, demo); None: not here
    training: Training | None = None
    figures: Callable[[dict], str] = _nothing  # the score shown after "base · data" in the about line
    notes: Callable[[dict], str] = _nothing  # warnings shown under it (empty: none)
    # the tab's Try examples for a model, from its training report (rows of the tab's inputs; []: the tab's own)
    examples: Callable[[dict], list] = _no_examples
    options: dict = field(default_factory=dict)  # default keyword arguments of from_pretrained

    @property
    def how_to_train(self) -> str:
        """One command line, shown where a tab has no model."""
        t = self.training
        return f"python {t.script} {t.data_flag} {t.your_file} --output checkpoints/{self.name}" if t else ""

    @property
    def has_demo(self) -> bool:
        """Its training declares a demo model, and the sample it is trained on."""
        return self.training is not None and bool(self.training.demo and self.training.sample)

    def accepts(self, architecture: str) -> bool:
        return any(architecture.endswith(a[1:]) if a.startswith("*") else architecture == a for a in self.architectures)

    def load(self, folder: str, **options):
        """The task's predictor over `folder` (raises data.InputError with one sentence when it cannot)."""
        module, _, name = self.predictor.partition(":")
        return getattr(importlib.import_module(module), name).from_pretrained(folder, **{**self.options, **options})

    def tab_module(self):
        return importlib.import_module(self.tab)


TASKS: dict[str, Task] = {}  # in tab order


def register(task: Task) -> Task:
    """Add (or replace) a task; the app built afterwards gets its tab."""
    TASKS[task.name] = task
    return task


def unregister(name: str) -> None:
    TASKS.pop(name, None)


def task_named(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        raise KeyError(f"no task {name!r}; known: {', '.join(TASKS)}") from None


# -- the three tasks of this project ----------------------------------------------------------------


def _perplexity(report: dict) -> str:
    best = report.get("best") or {}
    return f" · 困惑度 perplexity {best['valid_perplexity']:.1f}" if "valid_perplexity" in best else ""


def _quiz(report: dict) -> str:
    prompts, quiz = report.get("prompts") or {}, report.get("self_quiz") or {}
    if prompts.get("top1_accuracy_after") is not None:
        return f" · 测验命中 quiz top-1 {prompts['top1_accuracy_after']:.0%}"
    if quiz.get("probes"):
        recalled = f"{quiz['recalled']}/{quiz['probes']}"
        line = f" · 自测 self-quiz: 记住 recalls {recalled} 个你文本里的事实 facts of your text"
        missed = (quiz.get("facts") or {}).get("not_learned") or []
        if missed:  # what to state more often
            more = f" 等 {len(missed)} 个" if len(missed) > 6 else ""
            line += f" · 还没学会 not yet: {'、'.join(missed[:6])}{more}（多写几遍、换种说法 state them more often）"
        return line
    return ""


def _pair_metric(report: dict) -> str:
    best = report.get("best") or {}
    at_threshold = report.get("dev_accuracy_at_threshold")
    if at_threshold is not None:  # the accuracy of the verdicts the tab gives (threshold applied): one figure
        line = f" · 开发集准确率 dev accuracy {at_threshold:.0%}"
    elif report.get("metric") == "accuracy" and "accuracy" in best:
        line = f" · 开发集准确率 dev accuracy {best['accuracy']:.0%}"
    else:
        line = f" · {report['metric']} {best[report['metric']]:.3f}" if report.get("metric") in best else ""
    if report.get("majority_baseline") is not None:  # what needs no model, beside what the model does
        line += f" · 总答多数类 always-majority {report['majority_baseline']:.0%}"
    if report.get("char_overlap_baseline") is not None:
        line += f" · 字面重合 char-overlap {report['char_overlap_baseline']:.0%}"
    return line


def _pair_warnings(report: dict) -> str:
    """training/similarity.py's `warning` (no better than the majority label, or only a few points above
    it or character overlap), else a weak-model note."""
    accuracy = report.get("dev_accuracy_at_threshold") or (report.get("best") or {}).get("accuracy")
    if report.get("warning") and report.get("majority_baseline") is not None:
        share = report["majority_baseline"]
        if accuracy is None or accuracy <= share + 0.005:
            return (
                f"⚠ 这个模型在开发集上不比“总回答最常见的标签”({share:.0%})更准，还没学会这个任务。"
                f"On dev it is no better than always answering the commonest label ({share:.0%}): it has not "
                "learned the task yet."
            )
        overlap = report.get("char_overlap_baseline")
        if overlap is not None and accuracy < overlap - 0.005:
            return (
                f"⚠ 它在开发集上答对 {accuracy:.0%}，比只数两句共有几个字的简单规则（{overlap:.0%}）还低，学到的很少。"
                f"On dev it is right {accuracy:.0%} of the time, below a rule that counts shared characters "
                f"({overlap:.0%}): it has learned little."
            )
        best = max(share, overlap or 0.0)
        return (
            f"⚠ 它在开发集上答对 {accuracy:.0%}，只比不用模型的办法（{best:.0%}）高一点点，学到的很少。"
            f"On dev it is right {accuracy:.0%} of the time, barely above what needs no model ({best:.0%}): "
            "it has learned little."
        )
    if not report.get("warning") and accuracy is not None and accuracy < WEAK_ACCURACY:
        return (
            f"⚠ 它在留出的句对上只答对 {accuracy:.0%}，结果仅供参考。"
            f"On held-out pairs it was right {accuracy:.0%} of the time: treat its answers as rough guesses."
        )
    return ""


def _classify_figures(report: dict) -> str:
    """Dev accuracy and macro-F1, the classes, and the two figures that need no model beside them."""
    line = ""
    if report.get("dev_accuracy") is not None:
        line += f" · 开发集准确率 dev accuracy {report['dev_accuracy']:.0%} · macro-F1 {report.get('macro_f1', 0):.2f}"
    labels = report.get("labels") or []
    if labels:
        more = f" 等 +{len(labels) - 6}" if len(labels) > 6 else ""
        line += f" · {len(labels)} 类 classes: {'、'.join(map(str, labels[:6]))}{more}"
    if report.get("tfidf_baseline") is not None:
        line += f" · 字符 TF-IDF 基线 char TF-IDF baseline {report['tfidf_baseline']:.0%}"
    return line


def _classify_warnings(report: dict) -> str:
    """training/classify.py's `warning`, in the page's two languages."""
    accuracy, baseline = report.get("dev_accuracy"), report.get("tfidf_baseline")
    majority = report.get("majority_baseline")
    if not report.get("warning") or accuracy is None:
        return ""
    if majority is not None and accuracy <= majority + 0.005:
        return (
            f"⚠ 它在开发集上不比“总回答最常见的类别”({majority:.0%})更准，还没学会这个任务。"
            f"On dev it is no better than always answering the commonest class ({majority:.0%}): it has not "
            "learned the task yet; more data or a pretrained base would help."
        )
    return (
        f"⚠ 它在开发集上答对 {accuracy:.0%}，比只数字符的简单基线（{baseline:.0%}）低："
        "更多数据、更长训练或预训练基座会更好。"
        f"On dev it is right {accuracy:.0%} of the time, below a simple character-counting baseline "
        f"({baseline:.0%}): more data, more time or a pretrained base would help."
    )


def _write_figures(report: dict) -> str:
    """Held-out perplexity beside the n-gram model's."""
    ppl, ngram = report.get("held_out_perplexity"), report.get("ngram_perplexity")
    if ppl is None:
        return ""
    line = f" · 留出文本困惑度 held-out perplexity {ppl:.1f}"
    return line + (f" · n-gram 基线 baseline {ngram:.1f}" if ngram is not None else "")


def _write_warnings(report: dict) -> str:
    if not report.get("warning"):
        return ""
    return (
        "⚠ 它在留出的文字上还不如数 n-gram 的简单模型：需要更多文字、更长训练或预训练基座。"
        "On held-out text it does not yet beat counting n-grams: more text, more time or a pretrained base would help."
    )


def _quiz_prompts(report: dict, limit: int = 8) -> list:
    """A fact model's own quiz prompts (--eval-prompts, else the self-quiz), the ones it answers first."""
    rows = (report.get("prompts") or {}).get("after") or (report.get("self_quiz") or {}).get("after") or []
    rows = [r for r in rows if isinstance(r, dict) and r.get("prompt")]
    answered = [r for r in rows if r.get("hit")]
    return [[r["prompt"]] for r in (answered or rows)[:limit]]


def _report_examples(report: dict, limit: int = 8) -> list:
    """The `examples` a training script kept in the report (chat: openers, similarity: pairs of its data)."""
    rows = report.get("examples") or []
    return [list(r) for r in rows if isinstance(r, (list, tuple)) and all(isinstance(x, str) for x in r)][:limit]


register(
    Task(
        name=chat_training.task,
        training=chat_training,
        title="聊天 Chat",
        architectures=("GPT2LMHeadModel",),
        predictor="chat.engine:ChatEngine",
        tab="webui.tabs.chat",
        figures=_perplexity,
        examples=_report_examples,
    )
)
register(
    Task(
        name=cloze_training.task,
        training=cloze_training,
        title="完形填空 Fill-Mask",
        architectures=("*ForMaskedLM",),
        predictor="chat.fill_mask:FillMaskPredictor",
        tab="webui.tabs.fill_mask",
        figures=_quiz,
        examples=_quiz_prompts,
    )
)
register(
    Task(
        name=similarity_training.task,
        training=similarity_training,
        title="语义相似度 Similarity",
        architectures=("*ForSequenceClassification",),
        predictor="chat.similarity:SimilarityPredictor",
        tab="webui.tabs.similarity",
        figures=_pair_metric,
        notes=_pair_warnings,
        examples=_report_examples,
    )
)
register(
    Task(
        name=classify_training.task,
        training=classify_training,
        title="文本分类 Classify",
        architectures=("*ForSequenceClassification",),  # a folder without a report goes to similarity, listed first
        predictor="chat.classify:ClassifyPredictor",
        tab="webui.tabs.classify",
        figures=_classify_figures,
        notes=_classify_warnings,
        examples=_report_examples,
    )
)
register(
    Task(
        name=write_training.task,
        training=write_training,
        title="续写 Write",
        architectures=(),  # a GPT2LMHeadModel without a report is a chat model; a writer's report names its task
        predictor="chat.writer:WriterEngine",
        tab="webui.tabs.write",
        figures=_write_figures,
        notes=_write_warnings,
        examples=_report_examples,
    )
)
