"""文本分类 Classify: short texts sorted into the user's own labels (reviews -> 好评/差评, tickets -> topic)."""

from training.tasks import Training, Usual

TRAINING = Training(
    task="classify",
    script="training/classify.py",
    options="training.tasks.classify.options:ClassifyArguments",
    recipe="training.tasks.classify.recipe:ClassifyRecipe",
    reader="data.labelled:read_labelled",
    items="rows",
    sample="data/samples/reviews.csv",
    your_file="你的数据.csv",
    demo="training/tasks/classify/demo.yaml",
    demo_minutes=1.0,
    metric=("dev_accuracy", "best.accuracy"),
    metric_name="准确率 accuracy",
    percent=True,
    usual=Usual(
        "dev_accuracy",
        "准确率 accuracy",
        0.733,
        0.897,
        "from scratch on 150-12,000 texts of 2-5 classes, default flags",
        percent=True,
    ),
    plenty=(
        1_000,
        "from scratch expect about what counting words gives (the TF-IDF baseline the report sets beside "
        "it); more texts or a pretrained base (--model bert-base-chinese) help",
    ),
    description="Fine-tune BERT (or a small model from scratch) to sort texts into your own labels; write a "
    "text-classification checkpoint folder.",
)
