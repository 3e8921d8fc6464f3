"""Fine-tuning scripts (one per task) over shared pieces.

chat.py        GPT-2 on multi-turn dialogues      python training/chat.py --data dialogs.txt
cloze.py       masked-LM on your facts             python training/cloze.py --data facts.txt
similarity.py  sentence-pair classifier            python training/similarity.py --train pairs.tsv
pair_metrics.py  its dev figures: accuracy/F1 or correlations, tuned threshold, calibration, the majority and
               character-overlap baselines
masking.py     what cloze trains on: windows, recombined and bag-of-words views (TrainingViews), the collator
mlm.py         the masked-LM trainer (head at masked positions only), masked accuracy, the quiz
args.py        argument dataclasses, --config files
models.py      base-model loading (pretrained, cached, or scratch), LoRA wrapping and merging
runner.py      the Trainer run: arguments, callbacks (Ctrl-C, progress), resume, per-epoch metrics
output.py      the output folder: .partial/ while training, what may be resumed, the publish that never loses a model
checkpoint.py  the checkpoint folder: weights, tokenizer, model card, report, loss plot
cli.py         one-line errors and exit codes for every entry point
schedule.py    how long to train by default (sized by the data and this machine; a ceiling for the cloze default)
threads.py     as many PyTorch threads as free cores: fewer while another program is busy
"""
