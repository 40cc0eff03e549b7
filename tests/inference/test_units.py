"""Small pure pieces: flag parsing, incremental text with stop strings, per-row sampling."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from inference_server.detok import IncrementalText
from inference_server.sampling import RowSampler, SamplingParams, select_tokens
from inference_server.settings import parse_args, parse_strengths

ROOT = Path(__file__).resolve().parents[2]


def test_flags_to_settings():
    s = parse_args([
        "--model-dir", "/models/phi", "--served-model-name", "phi-3", "--dtype", "bfloat16",
        "--adapters-dir", "/a", "--adapter-strengths", "x=0.5, y=1", "--adapter-combination",
        "cat", "--max-batch-size", "8", "--queue-size", "4", "--max-new-tokens-cap", "64",
        "--chat-template", "{{ messages }}", "--trust-remote-code", "--max-n", "3",
    ])
    assert s.model_dir == Path("/models/phi") and s.model_name == "phi-3"
    assert s.adapter_strengths == {"x": 0.5, "y": 1.0}
    assert (s.adapter_combination, s.max_batch_size, s.queue_size) == ("cat", 8, 4)
    assert s.max_new_tokens_cap == 64 and s.trust_remote_code and s.dtype == "bfloat16"
    assert s.max_n == 3
    assert s.port == 5000 and s.adapters_dir == Path("/a")
    d = parse_args(["--model-id", "microsoft/Phi-3-mini-4k-instruct", "--revision", "abc"])
    assert d.model_name == "microsoft/Phi-3-mini-4k-instruct"
    assert d.adapters_dir == Path("/mnt/adapter") and d.adapter_combination == "svd"
    assert d.max_n == 8


@pytest.mark.parametrize("argv", [
    [],
    ["--model-dir", "a", "--model-id", "b"],
    ["--model-dir", "a", "--adapter-strengths", "x=2"],
    ["--model-dir", "a", "--adapter-strengths", "x=0.5,0.3"],
    ["--model-dir", "a", "--adapter-combination", "ties"],
    ["--model-dir", "a", "--max-batch-size", "0"],
    ["--model-dir", "a", "--max-n", "0"],
])
def test_bad_flags_exit_with_usage(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        parse_args(argv)
    assert exc.value.code == 2
    assert "usage:" in capsys.readouterr().err


def test_positional_strengths():
    assert parse_strengths("0.25, 1") == [0.25, 1.0]
    assert parse_strengths("") == {}


def test_importing_does_no_work():
    """Importing every module parses no argv, loads no model and starts nothing."""
    code = (
        "import sys; sys.argv = ['x', '--bogus'];"
        "import inference_server.app, inference_server.__main__, inference_server.tiny_model;"
        "import inference_server.engine, inference_server.batching;"
        "print('transformers.models.phi3.modeling_phi3' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def _chars(text: str):
    """A fake decoder where token i is the i-th character of ``text``."""
    return lambda ids: "".join(text[i] for i in ids)


def test_incremental_text_holds_back_possible_stop_prefix():
    source = "hello END world"
    inc = IncrementalText(_chars(source), stop=("END",))
    out = [inc.push(i) for i in range(len(source))]
    assert "".join(out) == "hello "
    assert inc.stopped and inc.text == "hello "
    assert "E" not in "".join(out)


def test_incremental_text_releases_false_alarm():
    source = "an ENd"
    inc = IncrementalText(_chars(source), stop=("END",))
    pieces = [inc.push(i) for i in range(len(source))]
    assert pieces[3] == "" and pieces[4] == ""  # "E", "EN" held back
    assert "".join(pieces) + inc.finish() == source and not inc.stopped


def test_incremental_text_waits_for_whole_characters():
    decoded = ["a", "a\ufffd", "aé"]
    inc = IncrementalText(lambda ids: decoded[len(ids) - 1])
    assert [inc.push(0), inc.push(1), inc.push(2)] == ["a", "", "é"]


def _row(**kw) -> RowSampler:
    return RowSampler(SamplingParams(max_new_tokens=10, **kw), history=[])


def test_select_tokens_mixes_greedy_and_sampled_rows():
    logits = torch.tensor([[0.0, 5.0, 1.0, 0.0], [0.0, 5.0, 1.0, 0.0]])
    rows = [_row(), _row(do_sample=True, temperature=1.0, top_k=1)]
    assert select_tokens(logits.clone(), rows, frozenset()) == [1, 1]


def test_min_tokens_and_ignore_eos_suppress_eos():
    logits = torch.tensor([[9.0, 1.0, 0.0]] * 3)
    rows = [_row(), _row(min_new_tokens=2), _row(ignore_eos=True)]
    assert select_tokens(logits.clone(), rows, frozenset({0})) == [0, 1, 1]


def test_top_p_and_seed():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.2]]))
    draws = {select_tokens(logits.clone(), [_row(do_sample=True, top_p=0.5, seed=s)],
                           frozenset())[0] for s in range(30)}
    assert draws == {0}
    a = [select_tokens(logits.clone(), [_row(do_sample=True, seed=3)], frozenset())[0]
         for _ in range(5)]
    assert len(set(a)) == 1
    wide = {select_tokens(logits.clone(), [_row(do_sample=True, seed=s)], frozenset())[0]
            for s in range(60)}
    assert wide == {0, 1, 2}


def test_repetition_penalty_discourages_seen_tokens():
    logits = torch.tensor([[2.0, 1.9, -1.0]])
    row = RowSampler(SamplingParams(max_new_tokens=5, repetition_penalty=2.0), history=[0])
    assert select_tokens(logits.clone(), [row], frozenset()) == [1]


def test_tiny_model_is_small_and_has_a_chat_template(tiny_model_dir):
    size = sum(f.stat().st_size for f in tiny_model_dir.iterdir())
    assert size < 2_000_000
    assert (tiny_model_dir / "chat_template.jinja").is_file()
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    text = "Grüße, 世界! 🙂"
    assert tok.decode(tok(text)["input_ids"], skip_special_tokens=True) == text
    rendered = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                       add_generation_prompt=True)
    assert rendered == "<|user|>\nhi<|end|>\n<|assistant|>\n"
