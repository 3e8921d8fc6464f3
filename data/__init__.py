"""What a dialogue, a corpus and a sentence pair are; readers for every accepted file
format; the one encoder of a dialogue into token ids; sample data written by the project.

This package imports no other project package: `training` and `chat` both stand on it.
"""

from data.dialogue import DIALOGUE_FORMATS, DialogueFile, read_dialogues
from data.encoder import DialogueEncoder, EncodedDialogue
from data.errors import BadRows, InputError
from data.text import despace, looks_char_spaced, normalize_utterance
from data.textio import read_text
from data.vocab import SPECIAL_TOKENS, build_char_vocab, make_tokenizer, write_vocab

__all__ = [
    "BadRows",
    "InputError",
    "read_text",
    "despace",
    "looks_char_spaced",
    "normalize_utterance",
    "DialogueFile",
    "read_dialogues",
    "DIALOGUE_FORMATS",
    "DialogueEncoder",
    "EncodedDialogue",
    "SPECIAL_TOKENS",
    "build_char_vocab",
    "make_tokenizer",
    "write_vocab",
]
