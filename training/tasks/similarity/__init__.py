"""语义相似度 Similarity: do two sentences mean the same? (or a 0-5 score), on BERT/ERNIE or from scratch."""

from training.tasks import Training

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
    description='Fine-tune BERT/ERNIE on sentence pairs: "do these two sentences mean the same?".',
)
