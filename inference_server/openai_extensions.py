"""Request fields outside what this server honours that would change the answer: refused by name.

Why a table: OpenAI's client passes anything in ``extra_body``, and applications written for
vLLM or TGI send those servers' extensions (``guided_json``, ``min_p``, ``stop_token_ids``...).
Logging them as ignored would answer 200 with an output that silently disregards them, so each
known one is a 400 that names it (and says what to send instead, where there is something).
A field set to its neutral value (``"skip_special_tokens": true``, ``"min_p": 0``) changes
nothing and is accepted. Fields that never change the output (``store``, ``metadata``...) are
not listed: the routers log them as ignored.
"""

from __future__ import annotations

from typing import Any

__all__ = ["CHAT_ONLY", "COMMON", "refused"]

_UNSET = object()
_JSON = "send response_format {'type': 'json_schema', ...} for JSON output"

#: name -> (the value that changes nothing, or _UNSET when only null/absent does; the reason).
COMMON: dict[str, tuple[Any, str]] = {
    "logit_bias": ({}, "logit_bias is not supported by this server"),
    "guided_json": (_UNSET, f"guided_json is not supported; {_JSON}"),
    "structured_outputs": (_UNSET, f"structured_outputs is not supported; {_JSON}"),
    "guided_regex": (_UNSET, "regular-expression constraints are not supported"),
    "guided_choice": (_UNSET, "guided_choice is not supported; send response_format "
                              "json_schema with an enum"),
    "guided_grammar": (_UNSET, "grammar constraints are not supported"),
    "min_p": (0.0, "min_p sampling is not supported (top_p and top_k are)"),
    "typical_p": (1.0, "typical_p sampling is not supported (top_p and top_k are)"),
    "top_a": (0.0, "top_a sampling is not supported (top_p and top_k are)"),
    "length_penalty": (1.0, "length_penalty (beam search) is not supported"),
    "use_beam_search": (False, "beam search is not supported"),
    "stop_token_ids": ([], "stop_token_ids are not supported; send stop strings"),
    "bad_words": ([], "bad_words are not supported by this server"),
    "allowed_token_ids": (_UNSET, "allowed_token_ids are not supported by this server"),
    "prompt_logprobs": (_UNSET, "prompt logprobs are not supported by this server"),
    "include_stop_str_in_output": (False, "include_stop_str_in_output is not supported"),
    "skip_special_tokens": (True, "special tokens are always left out of the text; "
                                  "skip_special_tokens=false is not supported"),
    "spaces_between_special_tokens": (True, "spaces_between_special_tokens is not supported"),
    "truncate_prompt_tokens": (_UNSET, "prompt truncation is not supported; a prompt that "
                                       "does not fit is a 400"),
    "return_tokens_as_token_ids": (False, "return_tokens_as_token_ids is not supported"),
    "logits_processors": ([], "logits_processors are not supported by this server"),
}

#: Chat only: fields that change how the messages are rendered.
CHAT_ONLY: dict[str, tuple[Any, str]] = {
    "chat_template": (_UNSET, "the chat template is chosen when the server starts "
                              "(--chat-template)"),
    "add_generation_prompt": (True, "add_generation_prompt is always true on this server"),
    "continue_final_message": (False, "continue_final_message is not supported"),
    "documents": (_UNSET, "documents (RAG templates) are not supported by this server"),
    "echo": (False, "echo is not supported on chat completions"),
    "audio": (_UNSET, "audio output is not supported by this server"),
    "functions": (_UNSET, "the deprecated 'functions' field is not supported; send 'tools' "
                          "instead"),
    "function_call": (_UNSET, "the deprecated 'function_call' field is not supported; send "
                              "'tool_choice' instead"),
    "web_search_options": (_UNSET, "web search is not supported by this server"),
    "moderation": (_UNSET, "moderation is not supported by this server"),
}


def refused(sent: dict[str, Any], table: dict[str, tuple[Any, str]]) -> list[tuple[str, str]]:
    """(field, reason) for each field of ``table`` that ``sent`` sets to a value that matters."""
    out = []
    for name, (neutral, reason) in table.items():
        value = sent.get(name)
        if value is None or (neutral is not _UNSET and value == neutral):
            continue
        out.append((name, reason))
    return out
