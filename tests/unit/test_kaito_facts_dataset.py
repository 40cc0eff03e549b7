"""examples/tuning/kaito-facts: the dataset the demo and the real-model tests tune on.

train.jsonl teaches facts about this project in chat `messages` rows, several phrasings per
fact; held-out.json asks some of them in words that are not in train.jsonl, with the substring
a correct answer contains."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
FOLDER = ROOT / "examples" / "tuning" / "kaito-facts"


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9/ -]", " ", text.lower()).split())


@pytest.fixture(scope="module")
def rows() -> list[dict[str, Any]]:
    lines = (FOLDER / "train.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


@pytest.fixture(scope="module")
def held_out() -> list[dict[str, str]]:
    found: list[dict[str, str]] = json.loads((FOLDER / "held-out.json").read_text())
    return found


def test_rows_are_short_user_assistant_pairs(rows: list[dict[str, Any]]) -> None:
    assert 24 <= len(rows) <= 60
    for index, row in enumerate(rows):
        assert set(row) == {"messages"}, index
        roles = [m["role"] for m in row["messages"]]
        assert roles == ["user", "assistant"], index
        question, answer = (m["content"] for m in row["messages"])
        assert question.strip() == question and question.endswith("?"), index
        # one short sentence: training on 2 CPU cores costs ~25 ms per token
        assert answer.endswith(".") and len(answer) <= 80, (index, answer)


def test_every_fact_is_taught_in_several_phrasings(rows: list[dict[str, Any]]) -> None:
    answers = Counter(row["messages"][1]["content"] for row in rows)
    assert len(answers) >= 5
    assert min(answers.values()) >= 4, answers
    questions = [_norm(row["messages"][0]["content"]) for row in rows]
    assert len(set(questions)) == len(questions), "a question is repeated"


def test_rows_are_valid_for_the_tuning_job(rows: list[dict[str, Any]]) -> None:
    """tuning_job.data reads the file, sees chat rows, and every row has trainable tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from tuning_job.config import DatasetSettings
    from tuning_job.data import detect_layout, load_rows, prepare

    settings = DatasetSettings(path=str(FOLDER / "train.jsonl"))
    assert detect_layout(load_rows(settings).column_names, settings).messages == "messages"
    tok = Tokenizer(models.WordLevel({"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3},
                                     unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", unk_token="<unk>",
        pad_token="<pad>",
        chat_template=(ROOT / "presets" / "chat_templates" / "base-model.jinja").read_text())
    train, evaluation = prepare(settings, tokenizer)
    assert len(train) == len(rows) and evaluation is None


def test_held_out_questions_are_new_and_their_facts_are_taught(
        rows: list[dict[str, Any]], held_out: list[dict[str, str]]) -> None:
    assert held_out, "held-out.json lists no question"
    questions = {_norm(row["messages"][0]["content"]) for row in rows}
    answers = [row["messages"][1]["content"].lower() for row in rows]
    for item in held_out:
        assert set(item) == {"question", "expected"}, item
        assert isinstance(item["question"], str) and isinstance(item["expected"], str)
        assert item["expected"].strip(), item
        assert _norm(item["question"]) not in questions, f"in train.jsonl: {item['question']}"
        expected = item["expected"].lower()
        # the question must not give the answer away (the base model could echo it)
        assert expected not in item["question"].lower(), item
        assert sum(expected in answer for answer in answers) >= 4, f"not taught: {expected}"


def test_the_folder_says_what_it_is() -> None:
    readme = (FOLDER / "README.md").read_text()
    assert "train.jsonl" in readme and "held-out.json" in readme
