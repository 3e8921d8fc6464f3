"""完形填空 Fill-Mask: a masked-LM (BERT, RoFormer ...) taught the facts of your own text."""

from training.tasks import Training, Usual

TRAINING = Training(
    task="cloze",
    script="training/cloze.py",
    options="training.tasks.cloze.options:ClozeArguments",
    recipe="training.tasks.cloze.recipe:ClozeRecipe",
    reader="data.corpus:read_corpus",
    items="passages",
    sample="data/samples/cloze_corpus.txt",
    your_file="你的文本.txt",
    demo="training/tasks/cloze/demo.yaml",
    demo_minutes=2.0,
    metric=("self_quiz.recall_after", "prompts.top1_accuracy_after", "best.masked_accuracy"),
    metric_name="记住的事实 facts recalled",
    percent=True,
    usual=Usual(
        "self_quiz.recall_after",
        "记住的事实 facts recalled",
        0.13,
        0.71,
        "from scratch on hand-written prose of 40-280 lines, default flags",
        percent=True,
    ),
    description="Teach a masked-LM (BERT, RoBERTa, RoFormer ...) the facts in your own text; write a fill-mask "
    "checkpoint folder.",
)
