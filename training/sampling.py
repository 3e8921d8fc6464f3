"""Which examples share a training batch: similar lengths, so a batch is little padding (GroupedTrainer, the base
of every task's Trainer; chat, write and cloze group with GroupedBatches, classify and similarity as the library does).

Written by hand because the library's `LengthGroupedSampler` (`train_sampling_strategy="group_by_length"`) left
much padding on this project's data, measured with bench/train_speed.py (docs/benchmarks.md):
- it reads each example's length once, when training starts; a cloze dataset (TrainingViews) draws a new view of
  a window each time it is read, so batches were grouped by views that were thrown away: 35.5% padding -> 5.2%;
- on a small set it keeps four mega-batches (the groups it sorts by length), and each mega-batch's longest batch,
  a long tail of lengths, holds most of the padding: LCCC chat 16.1% -> 6.1%.
Here: shuffled mega-batches of 50 batches, each sorted by length and cut into batches, and the batches shuffled
(the library runs each mega-batch from its longest batch to its shortest); a short last batch stays last so every
other batch stays whole. The lengths come from the dataset's `draw()` at the start of every pass where it has one
(a new view of every example for the pass), else from its items, read once. The order comes from torch's
generator, which the Trainer seeds, so several processes (accelerate, which deals the batches out) agree.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from transformers import Trainer

MEGA = 50  # batches per mega-batch


class GroupedBatches(torch.utils.data.Sampler):
    def __init__(self, dataset, batch_size: int):
        self.dataset, self.batch_size = dataset, batch_size
        self.lengths = None if hasattr(dataset, "draw") else [len(item["input_ids"]) for item in dataset]

    def __len__(self):
        return len(self.dataset)

    def __iter__(self):
        lengths, size = self.lengths or self.dataset.draw(), self.batch_size
        order = torch.randperm(len(lengths)).tolist()
        batches = []
        for i in range(0, len(order), MEGA * size):
            chunk = sorted(order[i : i + MEGA * size], key=lambda j: -lengths[j])
            batches += [chunk[k : k + size] for k in range(0, len(chunk), size)]
        short = batches.pop() if batches and len(batches[-1]) < size else None
        batches = [batches[b] for b in torch.randperm(len(batches)).tolist()] + ([short] if short else [])
        return iter([j for batch in batches for j in batch])


def one_label_each(dataset) -> bool:
    """Examples with one label each (classify, similarity) keep the library's sampler: their lengths often go with
    the label (complaints run long), and batches cut from one long sorted run would each hold one class; its
    smaller mega-batches keep classes mixed, and these tasks' batches are little padding already (similarity 1.3%).
    """
    return isinstance(dataset[0].get("labels"), int)


class GroupedTrainer(Trainer):
    """The Trainer, its training batches grouped by GroupedBatches under `group_by_length` (training/runner.py) for
    token-level tasks (chat, write, cloze)."""

    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if (
            self.args.train_sampling_strategy == "group_by_length"
            and hasattr(dataset, "__len__")
            and len(dataset)
            and isinstance(dataset[0], Mapping)
            and "input_ids" in dataset[0]
            and not one_label_each(dataset)
        ):
            return GroupedBatches(dataset, self.args.train_batch_size * self.args.gradient_accumulation_steps)
        return super()._get_train_sampler(train_dataset)
