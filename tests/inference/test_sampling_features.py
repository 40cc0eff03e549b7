"""select_tokens' penalties and logprobs against reference computations, and the scheduler's events.

The math tests use hand-made logits (no model); the scheduler tests run the tiny model through
``Scheduler.submit`` and read the events as the routers do.
"""

from __future__ import annotations

import math

import pytest
import torch

from inference_server.sampling import RowSampler, SamplingParams, _draw, select_tokens

VOCAB = 12
EOS = frozenset({11})


def row(**params: object) -> RowSampler:
    return RowSampler(SamplingParams(max_new_tokens=50, **params), history=[])  # type: ignore[arg-type]


def base_logits() -> torch.Tensor:
    generator = torch.Generator().manual_seed(3)
    return torch.randn(VOCAB, generator=generator) * 2


def test_presence_and_frequency_penalties_follow_openai_formula():
    """logit - presence * (count > 0) - frequency * count, over the completion only."""
    presence, frequency = 0.7, 0.4
    penalised = row(presence_penalty=presence, frequency_penalty=frequency)
    penalised.history = [int(base_logits().argmax())] * 3  # prompt tokens do not count
    plain = row()
    counts = torch.zeros(VOCAB)
    for _ in range(15):
        logits = torch.stack([base_logits(), base_logits()])
        expected = int((base_logits() - presence * (counts > 0) - frequency * counts).argmax())
        tokens = select_tokens(logits, [plain, penalised], EOS)
        assert tokens == [int(base_logits().argmax()), expected]
        counts[expected] += 1
    assert len(set(counts.nonzero().flatten().tolist())) > 1  # the penalty really moved the choice


def test_negative_penalties_favour_repeats():
    favour = row(frequency_penalty=-5.0)
    first = select_tokens(base_logits().unsqueeze(0), [favour], EOS)[0]
    shifted = base_logits()
    shifted[first] -= 4.0  # no longer the best without the penalty
    assert select_tokens(shifted.unsqueeze(0), [favour], EOS) == [first]


def test_greedy_logprobs_equal_log_softmax_of_processed_logits():
    wants = row(logprobs=True, top_logprobs=5, presence_penalty=1.5)
    plain = row()
    reference_counts = torch.zeros(VOCAB)
    for _ in range(4):
        tokens = select_tokens(torch.stack([base_logits(), base_logits()]), [wants, plain], EOS)
        reference = torch.log_softmax(base_logits() - 1.5 * (reference_counts > 0), dim=-1)
        logprob = wants.pending_logprobs.pop()
        assert logprob.token_id == tokens[0] == int(reference.argmax())
        assert logprob.logprob == pytest.approx(float(reference[tokens[0]]), abs=1e-6)
        top_values, top_ids = reference.topk(5)
        assert [t for t, _ in logprob.top] == top_ids.tolist()
        assert [lp for _, lp in logprob.top] == pytest.approx(top_values.tolist(), abs=1e-6)
        reference_counts[tokens[0]] += 1
    assert not plain.pending_logprobs  # rows that did not ask get nothing


def test_sampled_logprobs_use_the_temperature_and_sum_sensibly():
    wants = row(do_sample=True, temperature=0.6, top_p=0.9, seed=4, logprobs=True, top_logprobs=20)
    for _ in range(10):
        token = select_tokens(base_logits().unsqueeze(0), [wants], EOS)[0]
        logprob = wants.pending_logprobs.pop()
        reference = torch.log_softmax(base_logits() / 0.6, dim=-1)
        assert logprob.logprob == pytest.approx(float(reference[token]), abs=1e-6)
        assert math.isfinite(logprob.logprob) and logprob.logprob <= 0
        values = [lp for _, lp in logprob.top]
        assert len(values) == VOCAB  # top_logprobs 20 > vocab: every token, once
        assert values == sorted(values, reverse=True)
        assert sum(math.exp(v) for v in values) == pytest.approx(1.0, abs=1e-5)


def test_top_logprobs_zero_gives_only_the_chosen_token():
    wants = row(logprobs=True)
    select_tokens(base_logits().unsqueeze(0), [wants], EOS)
    assert wants.pending_logprobs.pop().top == ()


def test_masked_tokens_are_left_out_of_top_logprobs():
    """ignore_eos masks EOS: it is no candidate, so it never appears with a -inf logprob."""
    logits = base_logits()
    logits[11] = 50.0
    wants = row(logprobs=True, top_logprobs=20, ignore_eos=True)
    select_tokens(logits.unsqueeze(0), [wants], EOS)
    top = wants.pending_logprobs.pop().top
    assert 11 not in [t for t, _ in top] and len(top) == VOCAB - 1


def test_seeded_rows_with_features_are_the_same_alone_and_batched():
    def make() -> RowSampler:
        return row(do_sample=True, temperature=1.2, top_k=8, seed=9, frequency_penalty=0.5,
                   logprobs=True, top_logprobs=3)

    alone, batched = make(), make()
    others = [row(do_sample=True, temperature=0.9, seed=1), row(presence_penalty=0.3)]
    alone_tokens, batched_tokens = [], []
    for _ in range(12):
        alone_tokens += select_tokens(base_logits().unsqueeze(0), [alone], EOS)
        logits = torch.stack([base_logits(), base_logits(), base_logits()])
        batched_tokens.append(select_tokens(logits, [others[0], batched, others[1]], EOS)[1])
    assert alone_tokens == batched_tokens
    assert list(alone.pending_logprobs) == list(batched.pending_logprobs)


def test_top_k_draws_only_among_the_k_best():
    logits = base_logits()
    best_two = set(logits.topk(2).indices.tolist())
    draws = {select_tokens(logits.unsqueeze(0).clone(),
                           [row(do_sample=True, temperature=5.0, top_k=2, seed=s)], EOS)[0]
             for s in range(40)}
    assert draws == best_two


def test_a_zero_probability_token_is_never_drawn():
    """Plain temperature rows draw from the unsorted distribution: masked tokens sit anywhere."""
    logits = torch.full((1, VOCAB), float("-inf"))
    logits[0, 7] = 0.0
    draws = {select_tokens(logits.clone(), [row(do_sample=True, seed=s)], EOS)[0]
             for s in range(30)}
    assert draws == {7}
    probs = torch.tensor([[0.0, 0.5, 0.0, 0.5]])
    assert _draw(probs, torch.tensor([0.0])).tolist() == [1]  # u == 0 skips the leading zero


def test_plain_greedy_rows_are_plain_argmax():
    logits = torch.stack([base_logits(), -base_logits()])
    assert select_tokens(logits.clone(), [row(), row()], EOS) == logits.argmax(dim=-1).tolist()


# ----------------------------------------------------------------- through the scheduler




async def test_events_carry_one_logprob_per_text_token(scheduler, base_engine):
    prompt = base_engine.encode_prompt("Hello there")
    params = SamplingParams(max_new_tokens=20, logprobs=True, top_logprobs=3, ignore_eos=True)
    handle = scheduler.submit(prompt, params)
    events = [event async for event in handle.stream()]
    logprobs = [lp for event in events for lp in event.logprobs]
    assert [lp.token_id for lp in logprobs] == handle.completion_ids
    assert len(handle.completion_ids) == 20 == handle.completion_tokens
    assert base_engine.decode(handle.completion_ids) == "".join(e.text for e in events)
    for lp in logprobs:
        assert math.isfinite(lp.logprob) and lp.logprob <= 0
        assert lp.top[0][0] == lp.token_id  # greedy: the chosen token is the best one
        assert sum(math.exp(v) for _, v in lp.top) <= 1.0 + 1e-6


async def test_logprobs_do_not_change_greedy_output(scheduler, base_engine):
    prompt = base_engine.encode_prompt("The quick brown fox")
    plain = await scheduler.submit(prompt, SamplingParams(max_new_tokens=16)).result()
    with_lp = await scheduler.submit(
        prompt, SamplingParams(max_new_tokens=16, logprobs=True, top_logprobs=2)
    ).result()
    assert with_lp.text == plain.text and not plain.logprobs
    assert len(with_lp.logprobs) == with_lp.completion_tokens - (with_lp.finish_reason == "stop")


async def test_frequency_penalty_reduces_repetition(scheduler, base_engine):
    prompt = base_engine.encode_prompt("0123")
    params = SamplingParams(max_new_tokens=40, ignore_eos=True)
    plain = scheduler.submit(prompt, params)
    penalised = scheduler.submit(
        prompt, SamplingParams(max_new_tokens=40, ignore_eos=True, frequency_penalty=2.0)
    )
    await plain.result(), await penalised.result()
    assert len(set(penalised.completion_ids)) > len(set(plain.completion_ids))
