"""The slot KV cache: rows join and leave without disturbing the others; admission is bounded."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import torch

from inference_server.batching import Scheduler
from inference_server.errors import QueueFullError
from inference_server.kvbatch import KVBatch
from inference_server.metrics import ServerMetrics
from inference_server.sampling import SamplingParams

PROMPTS = ["Hello there", "The quick brown fox jumps over the lazy dog", "A", "def main():",
           "LoRA adapters change a few weights", "0123"]


def greedy(max_tokens: int) -> SamplingParams:
    return SamplingParams(max_new_tokens=max_tokens, ignore_eos=True)


async def collect(sched: Scheduler, prompt_ids: list[int], max_tokens: int) -> list[int]:
    handle = sched.submit(prompt_ids, greedy(max_tokens))
    await handle.result()
    return handle.completion_ids


def test_drop_moves_the_last_rows_into_freed_slots(base_engine):
    batch = base_engine.new_batch()
    ids = [base_engine.encode_prompt(p) for p in PROMPTS[:5]]
    base_engine.prefill(batch, ids)
    assert batch.rows == 5
    assert batch.drop([1]) == [0, 4, 2, 3]
    assert batch.drop([0, 3]) == [2, 1]
    assert batch.rows == 2
    assert batch.drop([0, 1]) == []


def test_decoding_after_joins_and_leaves_matches_a_fresh_prefill(base_engine):
    """A row's logits after slot moves, regrowth and left padding equal those of a fresh batch."""
    prompts = [base_engine.encode_prompt(p) for p in PROMPTS]
    batch = base_engine.new_batch()
    base_engine.prefill(batch, prompts[:3])
    histories = [list(p) for p in prompts[:3]]
    vocab = base_engine.info.vocab_size
    for step in range(70):  # past the first column capacity, so the buffers are reallocated
        if step == 5:
            base_engine.prefill(batch, prompts[3:])
            histories += [list(p) for p in prompts[3:]]
        if step == 20:
            order = batch.drop([0, 2])
            histories = [histories[i] for i in order]
        tokens = [(7 * step + 3 * row) % vocab for row in range(batch.rows)]
        logits = base_engine.decode_step(batch, torch.tensor(tokens))
        for history, token in zip(histories, tokens, strict=True):
            history.append(token)
    for row, history in enumerate(histories):
        alone = base_engine.new_batch()
        base_engine.prefill(alone, [history[:-1]])
        expected = base_engine.decode_step(alone, torch.tensor([history[-1]]))
        torch.testing.assert_close(logits[row], expected[0], rtol=1e-4, atol=1e-4)


def test_capacity_grows_and_compacts(base_engine):
    batch: KVBatch = base_engine.new_batch()
    base_engine.prefill(batch, [base_engine.encode_prompt("Hello")])
    first = batch.capacity
    for _ in range(first + 1):
        base_engine.decode_step(batch, torch.tensor([5]))
    assert batch.capacity > first
    assert batch.width == len(base_engine.encode_prompt("Hello")) + first + 1


async def test_rows_joining_and_leaving_mid_decode_match_their_solo_runs(base_engine):
    sched = Scheduler(base_engine, ServerMetrics(), max_batch_size=4, queue_size=16)
    sched.start()
    try:
        lengths = [40, 6, 25, 12, 33, 9]
        ids = [base_engine.encode_prompt(p) for p in PROMPTS]
        solo = [await collect(sched, i, n) for i, n in zip(ids, lengths, strict=True)]
        handles = []
        for i, n in zip(ids, lengths, strict=True):  # staggered: each joins a decoding batch
            handle = sched.submit(i, greedy(n))
            handles.append(handle)
            await until(lambda h=handle: h.completion_tokens >= 3)
        await asyncio.gather(*[h.result() for h in handles])
        together = [h.completion_ids for h in handles]
        assert together == solo
        assert [len(t) for t in together] == lengths
    finally:
        await sched.stop()


class _SlowPrefill:
    """The real engine, but prefill waits until the test lets it go."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.entered = threading.Event()
        self.release = threading.Event()

    def prefill(self, batch: KVBatch, prompts: list[list[int]]) -> torch.Tensor:
        self.entered.set()
        assert self.release.wait(30), "the test never released the prefill"
        return self._inner.prefill(batch, prompts)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


async def test_requests_being_prefilled_count_against_the_queue_bound(base_engine):
    engine = _SlowPrefill(base_engine)
    sched = Scheduler(engine, ServerMetrics(), max_batch_size=16, queue_size=128)  # type: ignore[arg-type]
    sched.start()
    prompt = base_engine.encode_prompt("Hello")
    try:
        first = [sched.submit(prompt, greedy(2)) for _ in range(16)]
        await asyncio.get_running_loop().run_in_executor(None, engine.entered.wait, 30)
        assert len(sched.waiting) == 0  # all 16 are being prefilled, none running yet
        accepted, refused = list(first), 0
        for _ in range(300):
            try:
                accepted.append(sched.submit(prompt, greedy(2)))
            except QueueFullError:
                refused += 1
        assert len(accepted) == 16 + 128
        assert refused == 300 - 128
        engine.release.set()
        results = await asyncio.wait_for(asyncio.gather(*[h.result() for h in accepted]), 120)
        assert all(r.completion_tokens == 2 for r in results)
    finally:
        engine.release.set()
        await sched.stop()


async def until(predicate: Any, timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.002)


def _random_engine(base_engine: Any, config: Any) -> Any:
    """A random model of ``config``'s architecture with the tiny tokenizer, as an engine."""
    from transformers import AutoModelForCausalLM

    from inference_server.engine import EngineInfo, TransformersEngine

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    return TransformersEngine(model, base_engine.tokenizer, EngineInfo("random", "-", 512))


def _small(config_class: Any, vocab: int, **extra: Any) -> Any:
    return config_class(vocab_size=vocab, hidden_size=32, intermediate_size=64,
                        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, **extra)


def test_a_sliding_window_model_batches_and_matches_generate(base_engine):
    """Mistral-style: one window for every layer, shorter than the output (GQA, lean step)."""
    from transformers import MistralConfig

    engine = _random_engine(base_engine, _small(MistralConfig, base_engine.info.vocab_size,
                                                sliding_window=4))
    assert engine.supports_batching and engine._lean is not None
    ids = engine.encode_prompt("Hello there")
    expected = engine.generate(ids, {"max_new_tokens": 12, "min_new_tokens": 12,
                                     "do_sample": False})
    batch = engine.new_batch()
    logits = engine.prefill(batch, [ids, engine.encode_prompt("A")])
    out = [int(logits[0].argmax())]
    for _ in range(11):
        logits = engine.decode_step(batch, torch.tensor([out[-1], 5]))
        out.append(int(logits[0].argmax()))
    assert out == expected


def test_a_model_mixing_window_and_full_layers_is_served_one_at_a_time(base_engine):
    from transformers import Qwen2Config

    config = _small(Qwen2Config, base_engine.info.vocab_size, use_sliding_window=True,
                    sliding_window=4, max_window_layers=1)
    assert set(config.layer_types) == {"full_attention", "sliding_attention"}
    assert not _random_engine(base_engine, config).supports_batching


def test_lean_step_matches_the_transformers_forward(base_engine):
    from inference_server import kvbatch

    assert base_engine._lean is not None  # the tiny model is Phi-3: the lean step is used
    prompts = [base_engine.encode_prompt(p) for p in PROMPTS[:3]]
    runs = []
    for lean in (None, base_engine._lean):
        batch = base_engine.new_batch()
        base_engine.prefill(batch, prompts)
        runs.append(torch.stack([
            kvbatch.decode_step(base_engine.model, batch, torch.tensor([7, 8, 9]), lean)
            for _ in range(8)
        ]))
    torch.testing.assert_close(runs[1], runs[0], rtol=1e-4, atol=1e-5)


async def test_a_row_ending_by_its_token_count_takes_no_extra_step(base_engine):
    metrics = ServerMetrics()
    sched = Scheduler(base_engine, metrics, max_batch_size=4, queue_size=4)
    sched.start()
    try:
        ids = base_engine.encode_prompt("Hello")
        assert len(await collect(sched, ids, 10)) == 10
        await until(lambda: not sched.running)
        steps = metrics.registry.get_sample_value("kaito_inference_batch_size_count")
        assert steps == 10  # one prefill step and nine decode steps, nothing wasted
    finally:
        await sched.stop()


def test_columns_freed_by_leaving_rows_are_reused_in_place(base_engine):
    prompt = base_engine.encode_prompt("Hello")
    batch = base_engine.new_batch()
    base_engine.prefill(batch, [prompt])
    for _ in range(50):
        base_engine.decode_step(batch, torch.tensor([5]))
    base_engine.prefill(batch, [prompt])  # a second row joins near the end of the columns
    assert batch.drop([0]) == [1]  # the first leaves: its columns are free
    buffer, capacity = batch.keys[0], batch.capacity
    history = list(prompt)
    for step in range(20):  # runs past the last column: compaction, not reallocation
        token = 3 + step % 7
        logits = base_engine.decode_step(batch, torch.tensor([token]))
        history.append(token)
    assert batch.keys[0] is buffer and batch.capacity == capacity
    alone = base_engine.new_batch()
    base_engine.prefill(alone, [history[:-1]])
    expected = base_engine.decode_step(alone, torch.tensor([history[-1]]))
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-4)
