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
