"""Fill-mask predictor over a cloze checkpoint folder (or any masked-LM folder).

    from chat.fill_mask import FillMaskPredictor
    fill = FillMaskPredictor.from_pretrained("checkpoints/cloze")
    fill.predict("三国人物诸[MASK][MASK]", top_k=5)

Each run of consecutive masks is one slot. Independent mode gives top-k tokens per mask.
Joint mode (the default for runs of 2+) beam-searches the run left to right, filling one
mask at a time and re-reading the sentence, so `诸[MASK][MASK]` returns whole words like
`葛涛` ranked by their joint probability p(w1) * p(w2 | w1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from chat.settings import MAX_SENTENCE_CHARS as MAX_CHARS
from data import InputError
from data.corpus import MASK, normalize_masks
from data.text import despace

MAX_MASKS = 10


@dataclass
class Candidate:
    text: str
    probability: float


@dataclass
class Slot:
    """One run of consecutive masks: where it is and its ranked candidates."""

    start: int  # index of its first [MASK] among all masks in the text
    length: int
    candidates: list[Candidate]


class FillMaskPredictor:
    def __init__(self, model, tokenizer, name: str = "cloze"):
        self.model, self.tokenizer, self.name = model.eval(), tokenizer, name
        self.max_len = int(getattr(model.config, "max_position_embeddings", 512))

    @classmethod
    def from_pretrained(cls, folder: str) -> "FillMaskPredictor":
        from transformers import AutoModelForMaskedLM

        from chat.loading import load_auto_folder

        model, tokenizer = load_auto_folder(folder, AutoModelForMaskedLM, "cloze", "fill-mask")
        if tokenizer.mask_token_id is None:
            raise InputError(f"the tokenizer in {folder} has no [MASK] token")
        return cls(model, tokenizer, folder)

    def _encode(self, text: str) -> tuple[list[int], list[int]]:
        if not isinstance(text, str) or not text.strip():
            raise InputError("the text is empty; write a sentence with [MASK] where a character is missing")
        text = normalize_masks(text.strip())
        if len(text) > MAX_CHARS:
            raise InputError(f"the text is {len(text)} characters long; keep it under {MAX_CHARS}")
        n = text.count(MASK)
        if n == 0:
            raise InputError("the text has no [MASK]; put [MASK] where the missing character goes, e.g. 诸[MASK][MASK]")
        if n > MAX_MASKS:
            raise InputError(f"the text has {n} [MASK]; use at most {MAX_MASKS}")
        ids = self.tokenizer(text.replace(MASK, self.tokenizer.mask_token))["input_ids"]
        if len(ids) > self.max_len:
            raise InputError(f"the text is {len(ids)} tokens long; this model reads at most {self.max_len}")
        positions = [i for i, t in enumerate(ids) if t == self.tokenizer.mask_token_id]
        return ids, positions

    @torch.no_grad()
    def _probs(self, batch: list[list[int]]) -> torch.Tensor:
        ids = torch.tensor(batch, device=self.model.device)
        return self.model(input_ids=ids).logits.float().softmax(-1)  # (batch, seq, vocab)

    def _token_text(self, token_id: int) -> str:
        return despace(self.tokenizer.decode([token_id])).replace("##", "")

    def predict(self, text: str, top_k: int = 5, joint: bool = True, beam: int | None = None) -> list[Slot]:
        """Candidates per slot. joint=False (or a single mask): top-k tokens per mask."""
        if not 1 <= top_k <= 50:
            raise InputError(f"top_k must be between 1 and 50, got {top_k}")
        ids, positions = self._encode(text)
        banned = torch.tensor(self.tokenizer.all_special_ids)
        probs = self._probs([ids])[0]
        probs[:, banned] = 0  # never propose [CLS], [SEP], [MASK], ...
        runs = _runs(positions)
        slots = []
        for first, run in runs:
            if joint and len(run) > 1:
                slots.append(Slot(first, len(run), self._beam(ids, run, top_k, beam or max(top_k, 5), banned)))
            else:
                for k, pos in enumerate(run):
                    p, idx = probs[pos].topk(top_k)
                    slots.append(
                        Slot(
                            first + k,
                            1,
                            [
                                Candidate(self._token_text(i), round(float(q), 5))
                                for q, i in zip(p.tolist(), idx.tolist())
                            ],
                        )
                    )
        return slots

    def _beam(self, ids: list[int], run: list[int], top_k: int, width: int, banned: torch.Tensor) -> list[Candidate]:
        """Fill the run left to right; each step scores all beams in one batch."""
        beams = [(0.0, list(ids), [])]  # (log prob, ids, chosen tokens)
        for pos in run:
            probs = self._probs([b[1] for b in beams])[:, pos]  # (beams, vocab)
            probs[:, banned] = 0
            p, idx = probs.topk(width, dim=-1)
            grown = []
            for (score, seq, chosen), ps, ts in zip(beams, p.tolist(), idx.tolist()):
                for q, t in zip(ps, ts):
                    if q > 0:
                        new = list(seq)
                        new[pos] = t
                        grown.append((score + math.log(q), new, chosen + [t]))
            beams = sorted(grown, key=lambda b: -b[0])[:width]
            if not beams:  # no candidate had a probability (a model whose weights went NaN): nothing to propose
                return []
        return [
            Candidate("".join(self._token_text(t) for t in chosen), round(math.exp(score), 5))
            for score, _, chosen in beams[:top_k]
        ]


def _runs(positions: list[int]) -> list[tuple[int, list[int]]]:
    """Group mask positions into runs of consecutive tokens: [(index of first mask, positions)]."""
    runs: list[tuple[int, list[int]]] = []
    for k, pos in enumerate(positions):
        if runs and runs[-1][1][-1] == pos - 1:
            runs[-1][1].append(pos)
        else:
            runs.append((k, [pos]))
    return runs
