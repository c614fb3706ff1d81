"""The answer part of a reasoning model's reply, without its visible reasoning.

Reasoning models served through an OpenAI-compatible server without a reasoning parser
(DeepSeek-R1 and its distillations, QwQ, Qwen3 in thinking mode) put their reasoning in the
reply itself, inside ``<think>...</think>``. The reasoning weighs every option ("option A
would be honest, but ..."), and may even state an answer that the reply then does not
give: reading it as the answer scored the model by what it considered, not by what it did.
The R1 chat templates open the ``<think>`` tag in the prompt, so that the reply holds only
the closing one.

The answer is what follows the last closing tag (``</think>``, ``</thinking>`` or
``</reasoning>``). A reply that opens such a tag and never closes it (cut off by the token
limit) has no answer: None. Any other reply is its own answer. The reasoning itself stays
in the stored reply.
"""

from __future__ import annotations

import re

_TAGS = r"think|thinking|reasoning"
_CLOSE = re.compile(rf"</\s*(?:{_TAGS})\s*>", re.IGNORECASE)
_OPEN = re.compile(rf"^\s*<\s*(?:{_TAGS})\s*>", re.IGNORECASE)


def answer_part(text: str) -> str | None:
    """`text` after its reasoning block; None when the reasoning never ended."""
    ends = [m.end() for m in _CLOSE.finditer(text)]
    if ends:
        return text[ends[-1] :]
    if _OPEN.match(text):
        return None
    return text
