"""The masked-LM side of a cloze run: a Trainer that scores the vocabulary only at masked
positions, masked accuracy, and the quiz (your prompts or the self-quiz) with its progress callback.
Used by training/cloze.py."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel, TrainerCallback

from data import InputError
from data.corpus import MASK
from training.cli import say
from training.sampling import GroupedTrainer


def masked_lm_loss(outputs, labels, num_items_in_batch=None):
    """Cross-entropy over the masked positions; `outputs.logits` holds either every position or
    only the masked ones (MaskedLMTrainer in training). Summed, then divided by the masked tokens
    of the whole (accumulated) batch as the Trainer counts them, so gradient accumulation weighs
    every masked token alike."""

    keep = labels != -100
    logits = outputs.logits[keep] if outputs.logits.dim() == 3 else outputs.logits
    loss = F.cross_entropy(logits.float(), labels[keep], reduction="sum")
    count = num_items_in_batch if num_items_in_batch is not None else keep.sum()
    return loss / max(count, 1)


class _AtMasked:
    """Stands in for the model's MLM head during one training forward: the head runs on the
    masked positions only."""

    def __init__(self, head, keep):
        self.head, self.keep = head, keep

    def __call__(self, hidden):
        return self.head(hidden[self.keep])


def _mlm_head_owner(model):
    """(module, attribute) of the output head of a BERT-style masked LM (`cls`, or RoBERTa's `lm_head`)."""

    if hasattr(model, "get_base_model"):  # peft
        model = model.get_base_model()
    if not isinstance(model, PreTrainedModel):
        return None
    for name in ("cls", "lm_head"):
        if isinstance(getattr(model, name, None), torch.nn.Module):
            return model, name
    return None


class MaskedLMTrainer(GroupedTrainer):
    """A Trainer whose training forward scores the vocabulary at the masked positions only.

    Written by hand because `*ForMaskedLM` scores every position: with 15% masked, 85% of the
    output-layer work (hidden x vocabulary, the largest matrix of a small model) is thrown
    away. Measured on a 4x256 BERT with a 4,700-character vocabulary, batch 32x32, bf16 on 2
    CPU cores: 175-190 -> 137-143 ms per training step (1.3x). The forward still goes through
    the wrapped model (accelerate's autocast, DDP, peft), only the head's input is narrowed;
    evaluation (which needs every position for masked accuracy) is the library's path.
    """

    def __init__(self, *args, **kw):
        super().__init__(*args, compute_loss_func=masked_lm_loss, **kw)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        owner = _mlm_head_owner(self.accelerator.unwrap_model(model))
        if return_outputs or not model.training or owner is None or "labels" not in inputs:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        module, name = owner
        # nn.Module keeps a child in `_modules` and would register any Module assigned to it; the
        # stand-in is a plain callable set in the instance __dict__ (object.__setattr__), so the state
        # dict, parameters() and hooks never see it, and the real head leaves `_modules` for this one
        # forward (popping the registered entry is the only way to swap a child without nn.Module's
        # __setattr__/__delattr__). Both are put back in `finally`. This relies on the head being a
        # registered child named `cls` or `lm_head`: test_the_masked_lm_head_is_where_the_trainer_looks
        # fails loudly if a transformers release moves it (training would silently lose the 1.3x).
        head = module._modules.pop(name)
        object.__setattr__(module, name, _AtMasked(head, inputs["labels"] != -100))
        try:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        finally:
            object.__delattr__(module, name)
            module._modules[name] = head


def masked_accuracy(eval_pred) -> dict:
    preds, labels = eval_pred.predictions, eval_pred.label_ids
    keep = labels != -100
    return {"masked_accuracy": float((preds[keep] == labels[keep]).mean()) if keep.any() else 0.0}


def argmax_logits(logits, labels):
    return logits.argmax(-1)  # keep only the predictions: full logits would be vocab x tokens floats


def same_answer(top1: str, expected: str, tokenizer) -> bool:
    """Whether a filled-in word is the expected one as the model can write it: BERT's Chinese vocab
    (and the scratch one built like it) lowercases, so a model that learned `Q-19` answers `q-19`;
    spaces that decoding puts between pieces are ignored too."""
    a, b = top1.replace(" ", ""), expected.replace(" ", "")
    if getattr(tokenizer, "do_lower_case", False):
        a, b = a.lower(), b.lower()
    return a == b


def quiz(model, tokenizer, prompts, top_k: int = 5) -> list[dict]:
    """Top-k answers per prompt through `transformers.pipeline("fill-mask")`; a hit is the top-1 per mask."""
    from transformers import pipeline

    model.eval()
    fill = pipeline("fill-mask", model=model, tokenizer=tokenizer, device=model.device, top_k=top_k)
    rows = []
    for p in prompts:
        text = p.text.replace(MASK, tokenizer.mask_token)
        result = fill(text)
        per_mask = result if p.text.count(MASK) > 1 else [result]
        candidates = [
            [(c["token_str"].replace(" ", ""), round(float(c["score"]), 4)) for c in mask] for mask in per_mask
        ]
        # decoded together, so word pieces join up (`q`, `-`, `1`, `##9` -> `q-19`, not `q-1##9`)
        top1 = tokenizer.decode([mask[0]["token"] for mask in per_mask]).replace(" ", "")
        rows.append(
            {
                "prompt": p.text,
                "expected": p.answer,
                "top1": top1,
                "hit": same_answer(top1, p.answer, tokenizer),
                "top_k": candidates,
            }
        )
    return rows


def joint_quiz(model, tokenizer, prompts) -> list[dict]:
    """The self-quiz: each run of masks filled as one word (`FillMaskPredictor`, joint, as the app
    answers), a hit when the whole word is right."""
    from chat.fill_mask import FillMaskPredictor

    model.eval()
    fill = FillMaskPredictor(model, tokenizer)
    rows = []
    for p in prompts:
        try:
            top1 = "".join(
                slot.candidates[0].text if slot.candidates else "?" for slot in fill.predict(p.text, top_k=1)
            )
        except InputError:  # longer than the model reads
            top1 = ""
        hit = same_answer(top1, p.answer, tokenizer)
        rows.append({"prompt": p.text, "expected": p.answer, "top1": top1, "hit": hit})
    return rows


def hit_rate(rows: list[dict]) -> float:
    return round(sum(r["hit"] for r in rows) / len(rows), 4) if rows else 0.0


def print_quiz(before: list[dict], after: list[dict]) -> None:
    say(f"{'prompt':<28} {'answer':<6} {'before':<18} {'after':<18}")

    def cell(r: dict) -> str:  # mark, the top-1 answer, then runners-up for the first mask
        return f"{'✓' if r['hit'] else '✗'} {r['top1']} / {','.join(c[0] for c in r['top_k'][0][1:4])}"

    for b, a in zip(before, after):
        say(f"{b['prompt']:<28} {b['expected']:<6} {cell(b):<18} {cell(a):<18}")
    say(f"prompt top-1 accuracy: before {hit_rate(before):.0%}, after {hit_rate(after):.0%}")


QUIZ_PATIENCE = 4  # evaluations without a better quiz score before a default-length run stops
# ... and not before this share of the planned steps. The self-quiz fills up long before the same facts are
# answered in new words: at 0.6 most default runs stopped at exactly 60% (4,800 of 8,000 steps), and
# island150 answered 41 of 66 reworded prompts there, 54 in a run that went 400 steps further.
QUIZ_STOP_AFTER = 0.8


class QuizProgress(TrainerCallback):
    """A callback that runs the quiz (your prompts, or the self-quiz) at every evaluation, prints the
    score, and with `patience` stops training once it has not improved for that many evaluations."""

    def __init__(self, tokenizer, items, ask, patience: int | None):
        self.tokenizer, self.items, self.ask, self.patience = tokenizer, items, ask, patience
        self.curve, self.best, self.waited = [], -1.0, 0

    def on_evaluate(self, args, state, control, model=None, **kw):
        # every process runs the quiz (same weights, same answers), so all of them stop at the same step
        if model is None:
            return
        was = model.training
        score = hit_rate(self.ask(model, self.tokenizer, self.items))
        model.train(was)
        self.curve.append({"step": state.global_step, "recall": score})
        say(f"  quiz at step {state.global_step}: {score:.0%} of {len(self.items)}")
        if score > self.best + 1e-9:
            self.best, self.waited = score, 0
        else:
            self.waited += 1
        # Not before most of the run: the self-quiz fills up (9 of 9) long before the same facts are
        # answered in new words (town15: 6/8 reworded at 1,200 steps, 8/8 at 3,000).
        # and never on a quiz that is still at nothing: there is no plateau before it starts to rise
        if (
            self.patience
            and self.best > 0
            and self.waited >= self.patience
            and state.global_step >= QUIZ_STOP_AFTER * state.max_steps
        ):
            say(f"  the quiz has not improved for {self.patience} evaluations; stopping here")
            control.should_training_stop = True


def general_accuracy(trainer, general_ds) -> float:
    metrics = trainer.evaluate(eval_dataset=general_ds, metric_key_prefix="general")
    return round(float(metrics["general_masked_accuracy"]), 4)


def facts_learned(rows: list[dict]) -> dict:
    """The self-quiz by fact: a name or word of the text is learned when every held-out line that asks
    for it is answered right; the others are what to state more often (or in more ways)."""
    by_answer: dict[str, list[bool]] = {}
    for r in rows:
        by_answer.setdefault(r["expected"], []).append(bool(r["hit"]))
    return {
        "learned": [a for a, hits in by_answer.items() if all(hits)],
        "not_learned": [a for a, hits in by_answer.items() if not all(hits)],
    }


def facts_line(facts: dict, shown: int = 12) -> str:
    def names(words):
        return "、".join(words[:shown]) + (f" (+{len(words) - shown})" if len(words) > shown else "")

    line = f"learned {len(facts['learned'])} of {len(facts['learned']) + len(facts['not_learned'])} facts"
    if facts["learned"]:
        line += f": {names(facts['learned'])}"
    if facts["not_learned"]:
        line += f"; not yet: {names(facts['not_learned'])} (state these more often, in other words)"
    return line
