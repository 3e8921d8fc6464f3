"""续写 Write: GPT-2 that continues the user's own prose (a novel, essays, a diary) in its style."""

from training.tasks import Training, Usual

TRAINING = Training(
    task="write",
    script="training/write.py",
    options="training.tasks.write.options:WriteArguments",
    recipe="training.tasks.write.recipe:WriteRecipe",
    reader="data.prose:read_prose",
    items="paragraphs",
    sample="data/samples/story.txt",
    your_file="你的小说.txt",
    demo="training/tasks/write/demo.yaml",
    demo_minutes=1.5,
    metric=("held_out_perplexity", "best.valid_perplexity"),
    metric_name="困惑度 perplexity",
    usual=Usual(
        "better_than_ngram_percent",
        "比 n-gram 好 better than n-grams by (%)",
        -32,
        1,
        "from scratch with the n-gram teacher: hand-written fables -32, Lu Xun +1",
    ),
    plenty=(
        80_000,
        "from scratch expect a model no better than counting n-grams of the text (the report says "
        "which); a book or more, or a pretrained base (--model uer/gpt2-chinese-cluecorpussmall) help",
    ),
    description="Fine-tune GPT-2 (Chinese) on your own prose so it writes on in its style; write a text-generation "
    "checkpoint folder.",
)
