"""The baseline a writer is judged against: an interpolated Kneser-Ney n-gram model over the same tokens.

Written here (about 80 lines) rather than taken from a library: nltk's KneserNeyInterpolated scores one word at
a time through layers of Python objects (minutes for a held-out chapter), and kenlm needs a C++ build. This one
counts the training tokens once and scores a held-out stream in seconds.

For an order-n model, the highest order uses counts, the lower orders continuation counts (how many different
tokens precede a sequence), each discounted by D = n1 / (n1 + 2 n2) of its order and interpolated with the next
lower one; the lowest interpolates with the uniform distribution over the vocabulary, so an unseen token still
has a probability.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict

import torch


class KneserNey:
    def __init__(self, tokens: list[int], order: int, vocab_size: int):
        self.order, self.vocab = order, max(vocab_size, len(set(tokens)) + 1)
        grams = [Counter(tuple(tokens[i : i + k]) for i in range(len(tokens) - k + 1)) for k in range(1, order + 1)]
        # counts[k]: for the highest order the n-gram counts, below it the continuation counts N1+(. g)
        self.counts: list[Counter] = [Counter() for _ in range(order)]
        self.counts[order - 1] = grams[order - 1]
        for k in range(order - 1):
            for gram in grams[k + 1]:
                self.counts[k][gram[1:]] += 1
        self.totals: list[dict] = []  # per order: history -> (sum of counts, distinct next tokens)
        self.discounts: list[float] = []
        for k in range(order):
            total: dict = defaultdict(lambda: [0, 0])
            for gram, c in self.counts[k].items():
                entry = total[gram[:-1]]
                entry[0] += c
                entry[1] += 1
            self.totals.append(dict(total))
            n1 = sum(1 for c in self.counts[k].values() if c == 1)
            n2 = sum(1 for c in self.counts[k].values() if c == 2)
            self.discounts.append(n1 / (n1 + 2 * n2) if n1 and n2 else 0.75)

    def prob(self, history: tuple, token: int) -> float:
        """P(token | the last order-1 tokens of history)."""
        p = 1.0 / self.vocab
        for k in range(self.order):  # from unigrams up, each order interpolated with the one below
            h = tuple(history[len(history) - k :]) if k else ()
            if k and len(history) < k:
                break
            entry = self.totals[k].get(h)
            if not entry:
                continue  # an unseen history: the lower order's estimate stands
            total, types = entry
            d = self.discounts[k]
            p = max(self.counts[k].get(h + (token,), 0) - d, 0) / total + d * types / total * p
        return p

    def perplexity(self, blocks: list[list[int]]) -> float:
        """Per-token perplexity over blocks scored as a causal model scores them: every token after the first of
        its block, given the tokens before it in the block."""
        nll, n = 0.0, 0
        for block in blocks:
            for i in range(1, len(block)):
                nll -= math.log(self.prob(tuple(block[max(0, i - self.order + 1) : i]), block[i]))
                n += 1
        return math.exp(nll / max(n, 1))


def best_ngram(train: list[int], blocks: list[list[int]], vocab_size: int, orders=(3, 5)) -> dict:
    """Held-out perplexity of each order and the best of them."""
    scores = {f"order_{n}": round(KneserNey(train, n, vocab_size).perplexity(blocks), 2) for n in orders}
    best = min(scores, key=scores.get)
    return {**scores, "best": scores[best], "best_order": int(best.split("_")[1])}


class SoftTargets:
    """Kneser-Ney's next-token distribution at every position of the training text, as soft targets for a writer
    trained from scratch (recipe.ScratchWriterTrainer mixes them with the one-hot next token).

    Cross-fitted: the text is cut into `folds` parts and a position's distribution comes from a model counted on
    the other parts, so the teacher predicts it as it would predict new text (counted on the whole text it would
    put most of its mass on the very token it has seen there, and teach nothing a one-hot target does not).

    A distribution is kept as its interpolation terms, not as a vector over the vocabulary: per order k >= 1 the
    row of its history in a sparse [histories x vocabulary] matrix of discounted probabilities, and the weight
    left for the orders below; the unigram and uniform terms are one dense vector. A batch's targets are built
    from those in one scatter (`__call__`).
    """

    def __init__(self, tokens: list[int], vocab_size: int, order: int = 5, folds: int = 10):
        n = len(tokens)
        self.vocab, self.order = vocab_size, order
        self.fold_size = max(1, -(-n // folds))
        self.folds = -(-n // self.fold_size)
        self.rows = torch.full((order - 1, n), -1, dtype=torch.int32)  # per order k >= 1, per position
        self.kept = torch.ones(order, n)  # the share each order leaves to the ones below it
        self.tables: list[list[tuple]] = []  # per fold, per order k >= 1: (crow, col, value) of a CSR matrix
        self.base = torch.zeros(self.folds, vocab_size)  # per fold: the unigram + uniform term
        for f in range(self.folds):
            lo, hi = f * self.fold_size, min(n, (f + 1) * self.fold_size)
            kn = KneserNey(tokens[:lo] + tokens[hi:], order, vocab_size)
            self.tables.append([self._order(kn, k, tokens, lo, hi) for k in range(1, order)])
            d = kn.discounts[0]
            total, types = kn.totals[0].get((), (0, 0))
            for gram, c in kn.counts[0].items():
                self.base[f, gram[0]] = max(c - d, 0) / max(total, 1)
            self.base[f] += (d * types / total if total else 1.0) / vocab_size

    def _order(self, kn: KneserNey, k: int, tokens: list[int], lo: int, hi: int) -> tuple:
        """Order k's matrix of fold [lo, hi), and the rows and weights of the fold's positions."""
        d, histories = kn.discounts[k], {}
        rows, cols, values = [], [], []
        for gram, c in sorted(kn.counts[k].items()):  # sorted: each history's entries together (CSR)
            h = gram[:-1]
            total = kn.totals[k][h][0]
            rows.append(histories.setdefault(h, len(histories)))
            cols.append(gram[-1])
            values.append(max(c - d, 0) / total)
        crow = torch.zeros(len(histories) + 1, dtype=torch.long)
        crow[1:] = torch.bincount(torch.tensor(rows, dtype=torch.long), minlength=len(histories)).cumsum(0)
        for t in range(max(lo, k - 1), hi):  # the history of position t ends at t (it predicts t + 1)
            h = tuple(tokens[t - k + 1 : t + 1])
            row = histories.get(h)
            if row is not None:
                total, types = kn.totals[k][h]
                self.rows[k - 1, t] = row
                self.kept[k, t] = d * types / total
        return crow, torch.tensor(cols, dtype=torch.long), torch.tensor(values, dtype=torch.float32)

    def __call__(self, positions: torch.Tensor) -> torch.Tensor:
        """[n] positions of the text -> [n, vocab] distributions of the token after each."""
        positions = positions.long()
        out = torch.empty(len(positions), self.vocab)
        fold = positions // self.fold_size
        for f in fold.unique().tolist():
            at = (fold == f).nonzero().squeeze(1)
            pos = positions[at]
            weight = torch.ones(len(pos))
            dist = torch.zeros(len(pos), self.vocab)
            for k in range(self.order - 1, 0, -1):  # the highest order first, each weighted by what it is left
                crow, col, value = self.tables[f][k - 1]
                row = self.rows[k - 1, pos].long()
                seen = (row >= 0).nonzero().squeeze(1)
                if len(seen):
                    start, end = crow[row[seen]], crow[row[seen] + 1]
                    sizes = end - start
                    which = torch.repeat_interleave(seen, sizes)
                    offset = torch.arange(int(sizes.sum())) - torch.repeat_interleave(sizes.cumsum(0) - sizes, sizes)
                    entry = torch.repeat_interleave(start, sizes) + offset
                    dist.index_put_((which, col[entry]), weight[which] * value[entry], accumulate=True)
                weight = weight * self.kept[k, pos]
            dist += weight[:, None] * self.base[f][None, :]
            out[at] = dist
        return out
