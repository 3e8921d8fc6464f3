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
(a new view of every example for the pass), else from its items, read once. The order and the views follow from
the run's seed and the pass's number alone, so several processes (accelerate deals the batches out) agree and a
run resumed in the middle of a pass skips the batches it trained (the library's sampler draws from torch's global
generator).
"""

from __future__ import annotations

from collections.abc import Mapping
from numbers import Number

import torch
from transformers import Trainer

MEGA = 50  # batches per mega-batch


class GroupedBatches(torch.utils.data.Sampler):
    def __init__(self, dataset, batch_size: int, seed: int = 0):
        self.dataset, self.batch_size, self.seed, self.epoch = dataset, batch_size, seed, 0
        self.lengths = None if hasattr(dataset, "draw") else [len(item["input_ids"]) for item in dataset]

    def __len__(self):
        return len(self.dataset)

    def set_epoch(self, epoch: int) -> None:
        """The Trainer (through accelerate's loader) names each pass before it starts."""
        self.epoch = epoch

    def __iter__(self):
        # a pass's order and views follow from the seed and the pass alone: every process deals the same batches,
        # and a run resumed in the middle of a pass skips the very batches it trained before it stopped
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        lengths, size = self.lengths or self.dataset.draw(self.epoch), self.batch_size
        order = torch.randperm(len(lengths), generator=generator).tolist()
        batches = []
        for i in range(0, len(order), MEGA * size):
            chunk = sorted(order[i : i + MEGA * size], key=lambda j: -lengths[j])
            batches += [chunk[k : k + size] for k in range(0, len(chunk), size)]
        short = batches.pop() if batches and len(batches[-1]) < size else None
        batches = [batches[b] for b in torch.randperm(len(batches), generator=generator).tolist()]
        batches += [short] if short else []
        # the whole batch holding the longest example first, as the library does: a run that does not fit in memory
        # fails at its first step, not hours in (a batch is sorted longest first)
        whole = len(batches) - (1 if short else 0)
        if whole:
            longest = max(range(whole), key=lambda b: lengths[batches[b][0]])
            batches[0], batches[longest] = batches[longest], batches[0]
        return iter([j for batch in batches for j in batch])


def one_label_each(dataset) -> bool:
    """Examples with one label each (classify, similarity) keep the library's sampler: their lengths often go with
    the label (complaints run long), and batches cut from one long sorted run would each hold one class; its
    smaller mega-batches keep classes mixed, and these tasks' batches are little padding already (similarity 1.3%).
    """
    return isinstance(dataset[0].get("labels"), Number)  # a class, or a similarity score (float)


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
            seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
            return GroupedBatches(dataset, self.args.train_batch_size * self.args.gradient_accumulation_steps, seed)
        return super()._get_train_sampler(train_dataset)
