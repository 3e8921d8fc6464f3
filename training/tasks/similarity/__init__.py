"""语义相似度 Similarity: do two sentences mean the same? (or a 0-5 score), on BERT/ERNIE or from scratch."""

from training.tasks import Training, Usual

TRAINING = Training(
    task="similarity",
    script="training/similarity.py",
    options="training.tasks.similarity.options:SimilarityArguments",
    recipe="training.tasks.similarity.recipe:SimilarityRecipe",
    reader="data.pairs:read_pairs",
    items="pairs",
    sample="data/samples/pairs.tsv",
    your_file="你的句对.tsv",
    demo="training/tasks/similarity/demo.yaml",
    demo_minutes=1.0,
    metric=("dev_accuracy_at_threshold", "best.accuracy", "best.spearman"),
    metric_name="准确率 accuracy",
    percent=True,
    usual=Usual(
        "dev_accuracy_at_threshold",
        "准确率 accuracy",
        0.658,
        0.807,
        "from scratch on 6,000-12,500 LCQMC pairs, 15-30 min",
        percent=True,
    ),
    plenty=(
        6_000,
        "from scratch a model beat a rule that counts shared characters only from 6,000 LCQMC pairs on; "
        "a pretrained base (--model bert-base-chinese) or more pairs help",
    ),
    description='Fine-tune BERT/ERNIE on sentence pairs: "do these two sentences mean the same?".',
)
