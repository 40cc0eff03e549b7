"""presets/chat_templates/base-model.jinja: the "Question:/Answer:" prompt format for base
models, rendered the way transformers renders chat templates (`apply_chat_template`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "presets" / "chat_templates" / "base-model.jinja"


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    """A minimal real tokenizer with Gemma's special-token spelling (no model needed)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>",
                                   unk_token="<unk>", pad_token="<pad>")


def render(tokenizer: Any, messages: list[dict[str, Any]], prompt: bool = True) -> str:
    text: str = tokenizer.apply_chat_template(messages, chat_template=TEMPLATE.read_text(),
                                              add_generation_prompt=prompt, tokenize=False)
    return text


def test_a_conversation_renders_as_question_and_answer_lines(tokenizer: Any) -> None:
    messages = [{"role": "system", "content": "You answer about KAITO. "},
                {"role": "user", "content": " What is KAITO?"},
                {"role": "assistant", "content": "An operator for AI models.\n"},
                {"role": "user", "content": "Which port?"}]
    assert render(tokenizer, messages) == (
        "<bos>You answer about KAITO.\n\n"
        "Question: What is KAITO?\nAnswer: An operator for AI models.<eos>\n"
        "Question: Which port?\nAnswer:")


def test_answers_end_with_eos_and_the_generation_prompt_is_answer(tokenizer: Any) -> None:
    messages = [{"role": "user", "content": "Q1"}, {"role": "assistant", "content": "A1"}]
    whole = render(tokenizer, messages, prompt=False)
    assert whole == "<bos>Question: Q1\nAnswer: A1<eos>\n"
    assert render(tokenizer, messages[:1]) == "<bos>Question: Q1\nAnswer:"
    assert render(tokenizer, messages[:1], prompt=False) == "<bos>Question: Q1\n"


def test_list_of_parts_content_keeps_the_text_parts(tokenizer: Any) -> None:
    parts = [{"type": "text", "text": "Hello "},
             {"type": "image_url", "image_url": {"url": "http://example.invalid/x.png"}},
             {"type": "text", "text": "world?"}]
    assert render(tokenizer, [{"role": "user", "content": parts}]) == (
        "<bos>Question: Hello world?\nAnswer:")


@pytest.mark.parametrize("role", ["tool", "developer", "function"])
def test_an_unknown_role_is_refused_by_name(tokenizer: Any, role: str) -> None:
    from jinja2 import TemplateError

    with pytest.raises(TemplateError, match=f"system, user and assistant, not {role}"):
        render(tokenizer, [{"role": "user", "content": "hi"}, {"role": role, "content": "x"}])


def test_the_tuning_job_trains_on_the_same_format(tokenizer: Any) -> None:
    """tuning_job.data renders `messages` rows through the model's template: the labels
    cover the answer and the eos after it, so a tuned model learns to stop."""
    from tuning_job.data import Layout, encode_row

    tokenizer.chat_template = TEMPLATE.read_text()
    row = {"messages": [{"role": "user", "content": "Q1"},
                        {"role": "assistant", "content": "A1"}]}
    encoded = encode_row(row, 0, Layout(messages="messages"), tokenizer, 64)
    tokens = tokenizer.convert_ids_to_tokens(encoded["input_ids"])
    assert tokens[0] == "<bos>"
    assert tokens.count("<eos>") >= 1 and encoded["labels"] == encoded["input_ids"]


def test_every_chat_template_is_listed_in_the_presets_readme() -> None:
    readme = (ROOT / "presets" / "README.md").read_text()
    for path in sorted((ROOT / "presets" / "chat_templates").glob("*.jinja")):
        assert path.name in readme, f"presets/README.md does not list {path.name}"
