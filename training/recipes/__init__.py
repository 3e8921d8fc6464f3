"""One training recipe per task (training.pipeline.Recipe): what is the task's own, declared once.

chat.py (GPT-2 on dialogues), cloze.py (a masked-LM on your facts, or on pair text), similarity.py
(sentence pairs). The scripts training/chat.py, cloze.py and similarity.py are their entry points.
"""
