"""This project's chat format, `[CLS]u1[SEP]u2[SEP]...`, as a chat template and a text decoder that every
tool reading a tokenizer understands: `apply_chat_template`, `pipeline("text-generation")` given messages,
`transformers serve`, vLLM, TGI (issue #36).

The template gives the ids `chat.ChatEngine` builds for the same turns as long as they fit the model's
positions: user and assistant messages are turns in order (the format has no roles: two user messages in a
row read as a message and its reply), system messages are left out (the format has no system prompt; the
models were never trained with one), only the last `max_history` turns are kept, in steps of half that as
the engine does, and the last message keeps its last `max_message_chars` characters. What a template cannot
do is count tokens: a conversation longer than the model's positions is the caller's to shorten.

The decoder writes Chinese as it is written (no space between characters, spaces kept only between two
ASCII letters or digits: `data.text.despace`) instead of BERT's `你 好 呀`.
"""

from __future__ import annotations

import json
import os

from data.text import _DROP_SPACE

_TEMPLATE = """\
{#- This project's GPT-2 chat format: [CLS]turn[SEP]turn[SEP]... (see its README). User and assistant
    messages are turns in order; there are no roles, so two user messages in a row read as a message and
    its reply. The models have no system prompt: system (and developer) messages are left out. -#}
{%- set kept = namespace(turns=[]) -%}
{%- for m in messages -%}
  {%- if m['role'] not in ['user', 'assistant', 'system', 'developer'] -%}
    {{- raise_exception("this chat format has user and assistant messages only, not " ~ m['role']) -}}
  {%- endif -%}
  {%- if m['role'] in ['user', 'assistant'] -%}
    {%- if m['content'] is string -%}{%- set text = m['content'] -%}
    {%- else -%}
      {%- set text = m['content'] | selectattr('type', 'equalto', 'text') | map(attribute='text') | join('') -%}
    {%- endif -%}
    {%- set text = text | trim -%}
    {%- if text -%}{%- set kept.turns = kept.turns + [text] -%}{%- endif -%}
  {%- endif -%}
{%- endfor -%}
{%- set n = kept.turns | length -%}
{%- if n == 0 -%}{{- raise_exception("the conversation has no user or assistant message with text") -}}{%- endif -%}
{%- set start = 0 -%}
{%- if n > MAX_HISTORY -%}{%- set start = ((n - MAX_HISTORY + STEP - 1) // STEP) * STEP -%}{%- endif -%}
{%- if start > n - 1 -%}{%- set start = n - 1 -%}{%- endif -%}
[CLS]
{%- for text in kept.turns[start:] -%}
  {%- if loop.last and add_generation_prompt -%}{{- text[-MAX_CHARS:] -}}{%- else -%}{{- text -}}{%- endif -%}
[SEP]
{%- endfor -%}
"""


def chat_template(max_history: int, max_message_chars: int) -> str:
    """The Jinja template for a chat checkpoint (the engine's history and message limits baked in)."""
    step = max(1, max_history // 2)
    return (
        _TEMPLATE.replace("MAX_HISTORY", str(max_history))
        .replace("STEP", str(step))
        .replace("MAX_CHARS", str(max_message_chars))
    )


def _decoder():
    """BERT's WordPiece joining, then the spaces dropped as `data.text.despace` drops them."""
    from tokenizers import Regex, decoders

    return decoders.Sequence(
        [
            decoders.WordPiece(prefix="##", cleanup=True),
            decoders.Fuse(),
            decoders.Replace(Regex(_DROP_SPACE.pattern), ""),
        ]
    )


def make_decoder_chinese(tokenizer) -> bool:
    """Give a BERT-vocabulary tokenizer the decoder that writes Chinese without spaces (where it lacks it), so
    `decode` and pipelines print text as it is written; True when it was added."""
    backend = tokenizer.backend_tokenizer
    tokenizer.clean_up_tokenization_spaces = False
    if json.loads(backend.to_str()).get("decoder", {}).get("type") == "Sequence":
        return False
    backend.decoder = _decoder()
    return True


def make_chat_ready(tokenizer, max_history: int, max_message_chars: int) -> list[str]:
    """Give a chat tokenizer the template and the decoder, where it lacks them (a checkpoint written before
    issue #36 gets them when it is loaded or deployed); returns what was added, in words."""
    added = []
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = chat_template(max_history, max_message_chars)
        added.append("chat template")
    if make_decoder_chinese(tokenizer):
        added.append("Chinese decoder")
    return added


def load_as_written(folder: str) -> None:
    """Make `AutoTokenizer` load the folder's tokenizer.json as written, the decoder included (as
    `BertTokenizer` it would rebuild BERT's spacing decoder), with only the inputs GPT-2 takes."""
    path = os.path.join(folder, "tokenizer_config.json")
    with open(path, encoding="utf-8") as f:
        config = json.load(f)
    config.update(tokenizer_class="PreTrainedTokenizerFast", model_input_names=["input_ids", "attention_mask"])
    with open(path, "w", encoding="utf-8") as f:
        json.dump(config, f, ensure_ascii=False, indent=2)
