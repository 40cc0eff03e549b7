"""Generate a tiny, random, *real* causal LM and LoRA adapters for tests and the local sandbox.

Why this lives in product code: the inference tests, the tuning-job tests and the local sandbox all
need a model that loads through exactly the same code paths as a real preset (``from_pretrained``,
``apply_chat_template``, peft), without downloads. No PyPI package ships small causal-LM weights,
so we build one: a Phi-3 style ``Phi3Config`` with hidden size 64 and two layers, and a byte-level
BPE tokenizer trained in memory on a few sentences, wrapped as ``PreTrainedTokenizerFast`` with a
Jinja chat template. The whole directory is about 0.5 MB and is generated in well under a second.

Heavy imports (torch, transformers, peft, tokenizers) happen inside the functions so that importing
this module is free.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["CHAT_TEMPLATE", "SPECIAL_TOKENS", "create_tiny_adapter", "create_tiny_model"]

#: Role markers follow Phi-3's chat format, so the tiny model looks like the presets it stands for.
SPECIAL_TOKENS: list[str] = [
    "<unk>",
    "<s>",
    "<|endoftext|>",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|end|>",
]

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] not in ['system', 'user', 'assistant'] %}"
    "{{ raise_exception('Unknown role: ' + message['role']) }}"
    "{% endif %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + '<|end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)

_CORPUS = [
    "Kubernetes AI Toolchain Operator deploys models on GPU nodes.",
    "A workspace names a preset and an instance type; the operator does the rest.",
    "The quick brown fox jumps over the lazy dog. 0123456789",
    "LoRA adapters change a few weights; strength scales how much they change.",
    "Hello! How are you today? I am a tiny language model, and I say random things.",
    "def main():\n    print('hello world')\n",
]

#: The architecture knobs of the tiny model; ``shape_overrides`` in ``create_tiny_model`` can
#: change them (the benchmark uses a somewhat bigger one).
DEFAULT_SHAPE: dict[str, Any] = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "max_position_embeddings": 512,
}


def _train_tokenizer(vocab_size: int) -> Any:
    """Train a byte-level BPE in memory and wrap it the way a hub checkpoint ships it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="<|endoftext|>",
        unk_token="<unk>",
        pad_token="<|endoftext|>",
        chat_template=CHAT_TEMPLATE,
        model_max_length=DEFAULT_SHAPE["max_position_embeddings"],
    )


def create_tiny_model(
    model_dir: str | Path,
    seed: int = 0,
    *,
    vocab_size: int = 512,
    initializer_range: float = 0.2,
    shape_overrides: dict[str, Any] | None = None,
    dtype: str = "float32",
) -> Path:
    """Write a random Phi-3 style model + tokenizer + chat template into ``model_dir``.

    ``initializer_range`` is larger than a trained model's (0.02) so that logits are peaked: a
    near-uniform random model makes greedy decoding hinge on 1e-6 rounding differences, which would
    make "batched equals alone" a coin toss instead of a real check.
    """
    import torch
    from transformers import GenerationConfig, Phi3Config, Phi3ForCausalLM

    out = Path(model_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = _train_tokenizer(vocab_size)
    shape = {**DEFAULT_SHAPE, **(shape_overrides or {})}
    tokenizer.model_max_length = shape["max_position_embeddings"]
    eos_ids = [tokenizer.convert_tokens_to_ids(t) for t in ("<|endoftext|>", "<|end|>")]
    config = Phi3Config(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=eos_ids,
        pad_token_id=tokenizer.pad_token_id,
        initializer_range=initializer_range,
        sliding_window=None,
        tie_word_embeddings=False,
        **shape,
    )
    torch.manual_seed(seed)
    model = Phi3ForCausalLM(config).to(getattr(torch, dtype)).eval()
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=eos_ids,
        pad_token_id=tokenizer.pad_token_id,
    )
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def create_tiny_adapter(
    model_dir: str | Path,
    out_dir: str | Path,
    rank: int = 4,
    seed: int = 1,
    *,
    alpha: int | None = None,
    target_modules: list[str] | None = None,
) -> Path:
    """Write a real peft LoRA adapter for the model in ``model_dir`` into ``out_dir``.

    ``init_lora_weights=False`` gives random A *and* B matrices; the default initialisation sets B
    to zero, which would make the adapter a no-op and every "the adapter changes outputs" test
    vacuous.
    """
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha if alpha is not None else 2 * rank,
        target_modules=target_modules or ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"],
        init_lora_weights=False,
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(base, config)
    out = Path(out_dir)
    peft_model.save_pretrained(str(out))
    return out
