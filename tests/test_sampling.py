"""Which examples share a training batch (training/sampling.py): similar lengths, every example once a pass."""

from __future__ import annotations

import random

import torch


def _padding(lengths, order, size):
    batches = [[lengths[i] for i in order[k : k + size]] for k in range(0, len(order), size)]
    return sum(max(b) * len(b) - sum(b) for b in batches) / sum(max(b) * len(b) for b in batches)


def test_a_long_tail_of_lengths_is_grouped_tighter_than_the_librarys_sampler():
    from transformers.trainer_pt_utils import LengthGroupedSampler

    from training.sampling import GroupedBatches

    rng = random.Random(0)  # a thousand dialogues: most short, a tail up to the longest allowed
    rows = [{"input_ids": [1] * min(256, int(rng.lognormvariate(3.6, 0.6)))} for _ in range(1000)]
    lengths = [len(r["input_ids"]) for r in rows]
    torch.manual_seed(0)
    library = _padding(lengths, list(LengthGroupedSampler(16, dataset=rows)), 16)
    sampler = GroupedBatches(rows, 16)
    orders = [list(sampler) for _ in range(2)]
    for order in orders:
        assert sorted(order) == list(range(len(rows)))
        assert _padding(lengths, order, 16) < library / 2, (_padding(lengths, order, 16), library)
    assert orders[0] != orders[1]  # shuffled anew each pass
    torch.manual_seed(0)
    first = list(GroupedBatches(rows, 16))
    torch.manual_seed(0)
    assert list(GroupedBatches(rows, 16)) == first  # the Trainer's seed decides it: processes agree


def test_a_short_last_batch_stays_last_so_the_other_batches_stay_whole():
    from training.sampling import GroupedBatches

    rows = [{"input_ids": [1] * (1 + i % 7)} for i in range(53)]
    order = list(GroupedBatches(rows, 8))
    batches = [order[k : k + 8] for k in range(0, len(order), 8)]
    assert [len(b) for b in batches] == [8] * 6 + [5]
    for b in batches[:-1]:  # each whole batch was cut from one sorted run of lengths
        assert max(len(rows[i]["input_ids"]) for i in b) - min(len(rows[i]["input_ids"]) for i in b) <= 1


def test_every_tasks_trainer_groups_with_it(tmp_path):
    from transformers import BertConfig, BertForSequenceClassification, TrainingArguments

    from training.runner import TrainingSetup
    from training.sampling import GroupedBatches, GroupedTrainer
    from training.tasks.classify.recipe import WeightedTrainer
    from training.tasks.cloze.mlm import MaskedLMTrainer

    assert TrainingSetup(None, None, None).trainer_class is GroupedTrainer
    model = BertForSequenceClassification(
        BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    )
    args = TrainingArguments(
        output_dir=str(tmp_path), train_sampling_strategy="group_by_length", use_cpu=True, report_to=[]
    )
    rows = [{"input_ids": [1] * (2 + i % 5)} for i in range(20)]
    for kind, extra in ((GroupedTrainer, {}), (MaskedLMTrainer, {}), (WeightedTrainer, {"class_weights": [1.0, 1.0]})):
        trainer = kind(model=model, args=args, train_dataset=rows, **extra)
        # a transformers release that stops calling _get_train_sampler fails here, not silently in the bench
        assert isinstance(trainer._get_train_sampler(), GroupedBatches), kind
        assert isinstance(trainer.get_train_dataloader().batch_sampler.sampler, GroupedBatches), kind


def test_labelled_examples_keep_the_librarys_sampler():
    from transformers import BertConfig, BertForSequenceClassification, TrainingArguments
    from transformers.trainer_pt_utils import LengthGroupedSampler

    from training.sampling import GroupedBatches, GroupedTrainer

    model = BertForSequenceClassification(
        BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    )
    args = TrainingArguments(output_dir="unused", train_sampling_strategy="group_by_length", use_cpu=True, report_to=[])
    labelled = [{"input_ids": [1] * (2 + i % 5), "labels": i % 2} for i in range(20)]
    tokens = [{"input_ids": r["input_ids"], "labels": r["input_ids"]} for r in labelled]  # chat, write
    assert isinstance(
        GroupedTrainer(model=model, args=args, train_dataset=labelled)._get_train_sampler(), LengthGroupedSampler
    )
    assert isinstance(GroupedTrainer(model=model, args=args, train_dataset=tokens)._get_train_sampler(), GroupedBatches)
