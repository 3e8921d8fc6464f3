"""Fine-tuning scripts (one per task) over shared pieces.

chat.py        GPT-2 on multi-turn dialogues      python training/chat.py --data dialogs.txt
cloze.py       masked-LM on your facts             python training/cloze.py --data facts.txt
similarity.py  sentence-pair classifier            python training/similarity.py --train pairs.tsv

tasks/<task>/  everything a task owns: its Training declaration (__init__.py), options.py, recipe.py, demo.yaml
               and the helpers only it uses (cloze: masking.py, mlm.py; similarity: pairs.py, metrics.py, stage.py)

The shared machinery:
pipeline.py    read data -> build the model -> plan -> train -> evaluate -> publish, for every Recipe
steps.py       the pipeline's steps: output folder and identity, base and vocab, report, publish
args.py        argument dataclasses, --config files
models.py      base-model loading (pretrained, cached, or scratch), LoRA wrapping and merging
plan.py        the run plan (RunPlan), decided once before the Trainer starts
runner.py      the Trainer run: arguments, callbacks (Ctrl-C, progress), resume, per-epoch metrics
output.py      the output folder: .partial/ while training, what may be resumed, the publish that never loses a model
ownership.py   which files in an output folder are ours (the manifest, the run's identity) and which are yours
checkpoint.py  the checkpoint folder: weights, tokenizer, model card, report, loss plot
cli.py         one-line errors and exit codes for every entry point
schedule.py    how long to train by default (sized by the data and this machine; a ceiling for the cloze default)
threads.py     as many PyTorch threads as free cores: fewer while another program is busy
"""
