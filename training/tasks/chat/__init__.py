"""聊天 Chat: GPT-2 (Chinese) fine-tuned on multi-turn dialogues, `[CLS]u1[SEP]u2[SEP]...` with shifted labels."""

from training.tasks import Training, Usual

TRAINING = Training(
    task="chat",
    script="training/chat.py",
    options="training.tasks.chat.options:ChatArguments",
    recipe="training.tasks.chat.recipe:ChatRecipe",
    reader="data.dialogue:read_dialogues",
    items="dialogues",
    sample="data/samples/dialogs.txt",
    your_file="你的对话.txt",
    demo="training/tasks/chat/demo.yaml",
    demo_minutes=1.5,
    metric=("best.valid_perplexity",),
    metric_name="困惑度 perplexity",
    usual=Usual(
        "best.valid_perplexity",
        "困惑度 perplexity",
        180,
        190,
        "from scratch on 2,000 LCCC dialogues, default flags",
        lower_is_better=True,
    ),
    plenty=(
        2_000,
        "from scratch expect the style and short replies, not sense; a pretrained base (--model "
        "uer/gpt2-chinese-cluecorpussmall) or more dialogues help",
    ),
    description="Fine-tune GPT-2 (Chinese) on multi-turn dialogues and write a chat checkpoint folder.",
)
