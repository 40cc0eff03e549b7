"""Constrained decoding with the tiny random model: the output parses and matches the schema.

The model is random, so whatever it writes is the grammar's doing: a parseable, schema-valid
document from it (greedy and sampled) is the test that the masks, the matcher's advance and the
forced end work together.
"""

from __future__ import annotations

import json
import math

import jsonschema
import pytest
import torch

from inference_server.constrained import ConstraintCompiler, ConstraintSpec
from inference_server.errors import InvalidRequestError
from inference_server.sampling import RowSampler, SamplingParams, select_tokens

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 12},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
        "role": {"enum": ["admin", "user"]},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 4}, "maxItems": 3},
    },
    "required": ["name", "age", "role", "tags"],
    "additionalProperties": False,
}
PROMPTS = ["Hello there", "0123", "A", "def main():"]




def params(constraint, **extra) -> SamplingParams:
    return SamplingParams(max_new_tokens=120, constraint=constraint, **extra)


@pytest.mark.parametrize(
    "extra",
    [{}, {"ignore_eos": True}, {"do_sample": True, "temperature": 1.0, "seed": 3},
     {"do_sample": True, "temperature": 1.5, "top_p": 0.95, "seed": 8, "ignore_eos": True}],
    ids=["greedy", "greedy-ignore-eos", "sampled", "sampled-ignore-eos"],
)
async def test_schema_output_parses_and_validates(scheduler, base_engine, extra):
    constraint = base_engine.compile_constraint(ConstraintSpec(PERSON))
    handles = [
        scheduler.submit(base_engine.encode_prompt(p), params(constraint, **extra))
        for p in PROMPTS
    ]
    for handle in handles:
        result = await handle.result()
        assert result.finish_reason == "stop", result.text  # the grammar ended it, not the limit
        jsonschema.validate(json.loads(result.text), PERSON)


async def test_prefix_and_suffix_surround_the_json(scheduler, base_engine):
    spec = ConstraintSpec(PERSON, prefix="<tool_call>\n", suffix="\n</tool_call>")
    constraint = base_engine.compile_constraint(spec)
    result = await scheduler.submit(
        base_engine.encode_prompt("Hello"),
        params(constraint, do_sample=True, seed=5, skip_special_tokens=False),
    ).result()
    assert result.text.startswith("<tool_call>\n") and result.text.endswith("\n</tool_call>")
    body = result.text.removeprefix("<tool_call>\n").removesuffix("\n</tool_call>")
    jsonschema.validate(json.loads(body), PERSON)


@pytest.mark.parametrize(
    "extra", [{}, {"do_sample": True, "temperature": 0.7, "seed": 1}], ids=["greedy", "sampled"]
)
async def test_json_object_mode_writes_an_object(scheduler, base_engine, extra):
    """Any object: the random model may wander inside a string forever (it never learnt to
    close one), but from these prompts it ends the object."""
    constraint = base_engine.compile_constraint(ConstraintSpec(None))
    for prompt in ("A", "{"):
        result = await scheduler.submit(base_engine.encode_prompt(prompt),
                                        params(constraint, **extra)).result()
        assert result.finish_reason == "stop"
        assert isinstance(json.loads(result.text), dict)


async def test_unconstrained_rows_in_the_same_batch_are_unchanged(scheduler, base_engine):
    prompt = base_engine.encode_prompt("The quick brown fox")
    plain = SamplingParams(max_new_tokens=30, ignore_eos=True)
    alone = await scheduler.submit(prompt, plain).result()
    constraint = base_engine.compile_constraint(ConstraintSpec(PERSON))
    mixed = [scheduler.submit(base_engine.encode_prompt(p), params(constraint)) for p in PROMPTS]
    together = scheduler.submit(prompt, plain)
    assert (await together.result()).text == alone.text
    for handle in mixed:
        jsonschema.validate(json.loads((await handle.result()).text), PERSON)


async def test_seeded_constrained_sampling_is_reproducible(scheduler, base_engine):
    constraint = base_engine.compile_constraint(ConstraintSpec(PERSON))
    prompt = base_engine.encode_prompt("A")
    sampled = params(constraint, do_sample=True, temperature=1.2, seed=21)
    alone = await scheduler.submit(prompt, sampled).result()
    others = [scheduler.submit(base_engine.encode_prompt(p), params(constraint, do_sample=True))
              for p in PROMPTS]
    batched = await scheduler.submit(prompt, sampled).result()
    for handle in others:
        await handle.result()
    assert batched.text == alone.text


async def test_constrained_logprobs_only_name_allowed_tokens(scheduler, base_engine):
    constraint = base_engine.compile_constraint(ConstraintSpec({"enum": ["admin", "user"]}))
    result = await scheduler.submit(
        base_engine.encode_prompt("Hello"),
        params(constraint, logprobs=True, top_logprobs=20, do_sample=True, seed=2),
    ).result()
    assert json.loads(result.text) in ("admin", "user")
    assert len(result.logprobs) == result.completion_tokens - 1  # the final EOS is not text
    first = result.logprobs[0]
    assert base_engine.decode([first.token_id]) == '"'  # a JSON string can only start so
    assert first.logprob == pytest.approx(0.0, abs=1e-6)
    assert [t for t, _ in first.top] == [first.token_id]  # the one allowed token
    for lp in result.logprobs:
        assert math.isfinite(lp.logprob)
        assert sum(math.exp(v) for _, v in lp.top) <= 1.0 + 1e-5


async def test_max_tokens_cuts_a_document_cleanly(scheduler, base_engine):
    constraint = base_engine.compile_constraint(ConstraintSpec(PERSON))
    result = await scheduler.submit(
        base_engine.encode_prompt("Hello"), SamplingParams(max_new_tokens=5, constraint=constraint)
    ).result()
    assert result.finish_reason == "length" and result.completion_tokens == 5
    assert '{"name": "'.startswith(result.text)  # the keys come in the schema's order


def test_a_row_stuck_in_its_grammar_ends_with_eos(base_engine):
    """A matcher that can go nowhere (here: fed a token its grammar forbids) ends the row."""
    constraint = base_engine.compile_constraint(ConstraintSpec(PERSON))
    stuck = RowSampler(params(constraint, ignore_eos=True), history=[])
    assert stuck.matcher is not None
    assert not stuck.matcher.advance(base_engine.encode_prompt("x")[-1])  # must start with {
    assert stuck.matcher.failed
    vocab = base_engine.info.vocab_size
    eos = base_engine.eos_token_ids
    token = select_tokens(torch.zeros(1, vocab), [stuck], eos)[0]
    assert token in eos and stuck.constraint_done


@pytest.mark.parametrize(
    ("schema", "reason"),
    [({"type": "integr"}, "Invalid type"),
     ({"type": "string", "minLength": 5, "maxLength": 2}, "minLength"),
     ({"not": {"type": "string"}}, "not"),
     ({"$ref": "#/definitions/missing"}, "missing")],
)
def test_a_schema_the_library_refuses_is_a_400_with_its_reason(base_engine, schema, reason):
    with pytest.raises(InvalidRequestError) as caught:
        base_engine.compile_constraint(ConstraintSpec(schema))
    assert reason in caught.value.message and caught.value.param == "response_format"


def test_compiles_are_cached_and_the_cache_is_bounded(base_engine):
    compiler = ConstraintCompiler(
        base_engine.tokenizer, base_engine.info.vocab_size, base_engine.eos_token_ids,
        cache_size=2,
    )
    first = compiler.compile(ConstraintSpec(PERSON))
    assert compiler.compile(ConstraintSpec(dict(PERSON))) is first
    compiler.compile(ConstraintSpec({"type": "integer"}))
    compiler.compile(ConstraintSpec({"type": "boolean"}))
    assert compiler.compile(ConstraintSpec(PERSON)) is not first  # evicted, compiled again


def test_a_tokenizer_llguidance_cannot_take_is_a_400_every_time(base_engine):
    compiler = ConstraintCompiler(object(), 512, [2])  # not a fast tokenizer
    for _ in range(2):
        with pytest.raises(InvalidRequestError, match="fast tokenizer"):
            compiler.compile(ConstraintSpec(None))
    no_eos = ConstraintCompiler(base_engine.tokenizer, base_engine.info.vocab_size, [])
    with pytest.raises(InvalidRequestError, match="end-of-sequence"):
        no_eos.compile(ConstraintSpec(None))


def test_marker_tokens_in_prefix_and_suffix_are_the_tokens_themselves(tiny_model_dir):
    """Qwen-style ``<tool_call>`` is an added, non-special token: the grammar wants that token
    (as the model writes it), and its text still appears in the decoded output."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.add_tokens(["<tool_call>", "</tool_call>"])
    compiler = ConstraintCompiler(tokenizer, len(tokenizer), [tokenizer.eos_token_id])
    spec = ConstraintSpec({"type": "integer"}, prefix="<tool_call>\n", suffix="\n</tool_call>")
    opening, closing = tokenizer.convert_tokens_to_ids(["<tool_call>", "</tool_call>"])
    spelled = compiler.compile(spec).matcher()
    assert not spelled.advance(tokenizer.encode("<", add_special_tokens=False)[0])
    matcher = compiler.compile(spec).matcher()
    ids = tokenizer.encode("<tool_call>\n42\n</tool_call>", add_special_tokens=False)
    assert ids[0] == opening and ids[-1] == closing
    assert all(matcher.advance(t) for t in ids) and matcher.complete
    assert tokenizer.decode(ids, skip_special_tokens=True) == "<tool_call>\n42\n</tool_call>"
