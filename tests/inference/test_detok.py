"""IncrementalText against real tokenizers: the streamed text equals the full decode exactly.

Four tokenizer families whose token text depends on the neighbours: byte-level BPE (the tiny
model's; characters split over byte tokens), Llama-2 style SentencePiece BPE with byte fallback
(the first token of a decode loses its space), the same with Mistral's Metaspace decoder, and
WordPiece through transformers with ``clean_up_tokenization_spaces`` (" ." becomes "." across
tokens). Random token sequences over the whole vocabulary, special tokens included, skipped and
not, plus stop strings and a bound on the decoding work per token.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from inference_server.detok import IncrementalText

_CORPUS = [
    "The quick brown fox jumps over the lazy dog. Isn't it? It's fine, we're here!",
    "Héllo wörld: naïve café, 日本語のテキスト, emoji 😀🚀 and € signs.",
    "def main():\n    print('hello world')  # two  spaces\n",
    "Kubernetes AI Toolchain Operator deploys models on GPU nodes, doesn't it ?",
]
_SPECIALS = ["<unk>", "<s>", "</s>", "<|end|>"]


def _byte_fallback_bpe(metaspace_decoder: bool) -> Any:
    """A Llama-2 style tokenizer (or Mistral's, with the Metaspace decoder), trained in memory."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    if metaspace_decoder:
        tok.decoder = decoders.Sequence([
            decoders.ByteFallback(), decoders.Metaspace(replacement="▁", prepend_scheme="first")])
    else:
        tok.decoder = decoders.Sequence([
            decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
            decoders.Strip(" ", 1, 0)])
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=_SPECIALS, show_progress=False)
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    tok.add_tokens([f"<0x{b:02X}>" for b in range(256)])
    return tok


def _wordpiece_with_cleanup() -> Any:
    """A BERT style tokenizer through transformers, with the clean-up of tokenization spaces."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    trainer = trainers.WordPieceTrainer(vocab_size=300, special_tokens=_SPECIALS,
                                        show_progress=False)
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>",
                                   clean_up_tokenization_spaces=True)


def _stream(decode: Callable[[list[int]], str], ids: list[int], stop: tuple[str, ...] = (),
            clean_up: bool = False) -> tuple[str, IncrementalText]:
    """Push ``ids``; check every piece extends a prefix of the full text; return the stream."""
    inc = IncrementalText(decode, stop, clean_up=clean_up)
    out = ""
    for i, token in enumerate(ids):
        out += inc.push(token)
        if inc.stopped:
            break
        so_far = decode(ids[: i + 1])
        if not stop and not so_far.endswith("\ufffd"):  # unfinished characters aside, what was
            assert so_far.startswith(out), (ids[: i + 1], out)  # sent begins the decode so far
    out += inc.finish()
    assert out == inc.text
    return out, inc


def _random_ids(rng: random.Random, vocab: int, n: int,
                runs: Callable[[random.Random], list[int]]) -> list[int]:
    """Mostly any token, with runs of byte tokens from ``runs`` so multi-byte characters occur."""
    ids: list[int] = []
    while len(ids) < n:
        if rng.random() < 0.2:
            ids.extend(runs(rng))
        else:
            ids.append(rng.randrange(vocab))
    return ids


def _any_of(tokens: list[int]) -> Callable[[random.Random], list[int]]:
    return lambda rng: [rng.choice(tokens) for _ in range(rng.randint(1, 4))]


def _whole_characters(tok: Any) -> Callable[[random.Random], list[int]]:
    """Byte fallback decodes a run of byte tokens as one: all valid or all U+FFFD, so a model
    (and this test) spells out whole characters; a run cut short is in another test."""
    chars = "éø€😀日本🚀ßЖ"
    return lambda rng: [tok.token_to_id(f"<0x{b:02X}>") for _ in range(rng.randint(1, 3))
                        for b in rng.choice(chars).encode()]


@pytest.mark.parametrize("metaspace_decoder", [False, True], ids=["llama2", "mistral"])
@pytest.mark.parametrize("skip", [True, False], ids=["skip-special", "keep-special"])
def test_byte_fallback_sentencepiece_streams_its_full_decode(metaspace_decoder, skip):
    tok = _byte_fallback_bpe(metaspace_decoder)
    decode = lambda ids: tok.decode(ids, skip_special_tokens=skip)  # noqa: E731
    rng = random.Random(7)
    vocab = tok.get_vocab_size() - 256  # the byte tokens come last
    for n in (1, 2, 5, 30, 200):
        for _ in range(20):
            ids = _random_ids(rng, vocab, n, _whole_characters(tok))
            assert _stream(decode, ids)[0] == decode(ids), ids
    text = "Héllo wörld 日本語 😀 it's fine"
    ids = tok.encode(text).ids
    assert _stream(decode, ids)[0] == decode(ids) == text


def test_byte_fallback_run_cut_short_at_the_end():
    """Generation stopped inside a character: the rest comes out as the full decode has it. If
    the run began with whole characters, those were sent already and stay (the full decode turns
    the whole run into U+FFFD: no stream can take back what it sent)."""
    tok = _byte_fallback_bpe(metaspace_decoder=False)
    euro = [tok.token_to_id(f"<0x{b:02X}>") for b in "€".encode()]
    ids = tok.encode("the fox").ids + euro[:2]
    out, _ = _stream(tok.decode, ids)
    assert out == tok.decode(ids) == "the fox\ufffd\ufffd"
    ids = tok.encode("fox").ids + euro + euro[:1]
    inc = IncrementalText(tok.decode)
    assert "".join(inc.push(t) for t in ids) == "fox€"
    assert inc.finish().startswith("\ufffd") and tok.decode(ids) == "fox" + "\ufffd" * 4


def test_wordpiece_clean_up_spaces_streams_its_full_decode():
    tok = _wordpiece_with_cleanup()
    rng = random.Random(3)
    punct = [tok.convert_tokens_to_ids(t) for t in [".", ",", "?", "!", "'", "n", "s", "t", "m"]]
    for skip in (True, False):
        decode = lambda ids, skip=skip: tok.decode(  # noqa: E731
            ids, skip_special_tokens=skip, clean_up_tokenization_spaces=True)
        for n in (1, 3, 10, 60, 300):
            for _ in range(20):
                ids = _random_ids(rng, len(tok), n, _any_of(punct))
                assert _stream(decode, ids, clean_up=True)[0] == decode(ids), ids
    ids = tok("It isn't here , is it ? It's done .").input_ids
    decode = lambda ids: tok.decode(ids, clean_up_tokenization_spaces=True)  # noqa: E731
    assert _stream(decode, ids, clean_up=True)[0] == "It isn't here, is it? It's done."


def test_tiny_model_tokenizer_streams_its_full_decode(tiny_model_dir: Path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    rng = random.Random(11)
    high = [i for t, i in tok.get_vocab().items() if len(t) == 1 and ord(t) >= 0x80]
    for skip in (True, False):
        decode = lambda ids, skip=skip: tok.decode(ids, skip_special_tokens=skip)  # noqa: E731
        for n in (1, 4, 40, 300):
            for _ in range(15):
                ids = _random_ids(rng, len(tok), n, _any_of(high))
                assert _stream(decode, ids)[0] == decode(ids), ids
    text = "Héllo wörld, 日本語 😀 <|end|> def main():\n    print('x')"
    ids = tok(text).input_ids
    assert _stream(lambda i: tok.decode(i, skip_special_tokens=False), ids)[0] == text
    skipped = lambda i: tok.decode(i, skip_special_tokens=True)  # noqa: E731
    assert _stream(skipped, ids)[0] == skipped(ids) == text.replace("<|end|>", "")
    full = skipped(ids)
    for stop in [("日本",), ("ö", "ll"), ("zz", ":\n"), ("😀 ",)]:
        out, inc = _stream(skipped, ids, stop)
        assert out == full[: min(full.find(s) for s in stop if s in full)] and inc.stopped, stop


def test_multibyte_character_is_sent_whole():
    """One byte per token: nothing is sent until the character is complete."""
    raw = "a€😀b".encode()
    decode = lambda ids: bytes(ids).decode("utf-8", errors="replace")  # noqa: E731
    inc = IncrementalText(decode)
    pieces = [inc.push(b) for b in raw]
    assert pieces == ["a", "", "", "€", "", "", "", "😀", "b"]
    assert inc.finish() == ""
    inc = IncrementalText(decode)
    assert [inc.push(b) for b in "x€".encode()[:2]] == ["x", ""]
    assert inc.finish() == "\ufffd"  # what the full decode says of the cut-off character


def test_invalid_bytes_do_not_stall_the_window():
    """Lone continuation bytes end in U+FFFD for good: the text still streams, with bounded work."""
    raw = bytes([0x80] * 100) + b"ok" + bytes([0xE2, 0x82]) * 50 + "€".encode()
    calls: list[int] = []

    def decode(ids: list[int]) -> str:
        calls.append(len(ids))
        return bytes(ids).decode("utf-8", errors="replace")

    inc = IncrementalText(decode)
    out = "".join(inc.push(b) for b in raw) + inc.finish()
    assert out == raw.decode("utf-8", errors="replace")
    assert max(calls) <= 32


def _chars(text: str) -> Callable[[list[int]], str]:
    return lambda ids: "".join(text[i] for i in ids)


@pytest.mark.parametrize(("source", "stop", "sent"), [
    ("hello END world", ("END",), "hello "),
    ("ENDx", ("END",), ""),  # at the very start
    ("abcSTOPdef", ("OP", "cST", "zzz"), "ab"),  # the earliest of several
    ("aaab", ("aab",), "a"),  # a false start overlapping the real one
    ("no stop here", ("stop!", "X"), "no stop here"),
])
def test_stop_strings_cut_exactly(source, stop, sent):
    out, inc = _stream(_chars(source), list(range(len(source))), stop)
    assert out == sent == inc.text
    assert inc.stopped == (sent != source)


def test_stop_string_spanning_tokens_is_never_sent_in_part():
    words = ["The", " an", "sw", "er", " is", " <", "/", "ans", "wer", ">", " more"]
    decode = lambda ids: "".join(words[i] for i in ids)  # noqa: E731
    inc = IncrementalText(decode, ("</answer>",))
    pieces = [inc.push(i) for i in range(len(words))]  # pushing on after the stop adds nothing
    assert "".join(pieces) == "The answer is " == inc.text
    assert not any("<" in p for p in pieces) and inc.stopped
    assert inc.finish() == ""


def test_work_per_token_is_bounded():
    """The decoded window stays short however long the output: O(1) per token."""
    text = "".join(chr(0x61 + i % 26) for i in range(2048))
    calls: list[int] = []

    def decode(ids: list[int]) -> str:
        calls.append(len(ids))
        return "".join(text[i] for i in ids)

    inc = IncrementalText(decode)
    out = "".join(inc.push(i) for i in range(len(text))) + inc.finish()
    assert out == text
    assert max(calls) <= 12 and sum(calls) <= 8 * len(text)
