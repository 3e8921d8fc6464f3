"""What the two sequence-classifier tasks share (similarity: sentence pairs; classify: single texts): a BERT-family
`*ForSequenceClassification` base or a small BERT from scratch, with the head the recipe's data asks for."""

from __future__ import annotations

import os

from transformers import AutoModelForSequenceClassification, AutoTokenizer, BertConfig, BertForSequenceClassification

from data import InputError
from training.pipeline import Recipe, Run


class SequenceClassifierRecipe(Recipe):
    """A recipe over a sequence classifier; subclasses give `head(run)` (num_labels, id2label, problem_type ...)."""

    lora_targets = ("query", "value")
    lora_task_type = "SEQ_CLS"  # peft keeps the head trainable

    def head(self, run: Run) -> dict:
        raise NotImplementedError

    def loader(self, run: Run):
        head = self.head(run)
        return lambda name, **kw: self.load_pretrained(name, head=head, **kw)

    def load_pretrained(self, name: str, dropout: float | None = None, head: dict | None = None, **kw):
        kw = {**kw, "trust_remote_code": False}  # never a model's own code, not even on a "y" typed at a prompt
        tokenizer = AutoTokenizer.from_pretrained(name, **kw)
        if dropout is not None:  # BERT-family config names
            kw = {**kw, "hidden_dropout_prob": dropout, "attention_probs_dropout_prob": dropout}
        try:
            model = AutoModelForSequenceClassification.from_pretrained(
                name, ignore_mismatched_sizes=True, **(head or {}), **kw
            )
        except ValueError as e:  # e.g. a GPT-2 folder
            raise InputError(f"{name} cannot be used as a {self.what} ({str(e).splitlines()[0][:120]})")
        return model, tokenizer

    def scratch_model(self, run: Run, tokenizer):
        args = run.args
        if run.resume_from and os.path.isfile(os.path.join(run.resume_from, "config.json")):
            # the interrupted run's own shape (after similarity's masked-LM stage: that model's positions)
            return BertForSequenceClassification(BertConfig.from_pretrained(run.resume_from))
        config = BertConfig(
            vocab_size=len(tokenizer),
            hidden_size=args.n_embd,
            num_hidden_layers=args.n_layer,
            num_attention_heads=args.n_head,
            intermediate_size=4 * args.n_embd,
            max_position_embeddings=max(args.max_len, 64),
            pad_token_id=tokenizer.pad_token_id,
            **self.head(run),
        )
        return BertForSequenceClassification(config)

    def default_patience(self, run: Run) -> int:
        if run.scratch and not run.options.patience:
            return 3  # a small scratch classifier overfits within a few passes; keep the best and stop
        return run.options.patience
