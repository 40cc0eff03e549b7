"""The random models the inference benchmarks serve, saved to a folder both servers can load.

Every shape uses the tiny model's tokenizer and chat template (``inference_server.tiny_model``), so
no download is needed; only the transformer's size changes. ``phi3-mini`` is Phi-3-mini's shape
(3.8B parameters) with the tiny vocabulary, for GPUs. Also the memory-bandwidth bound: a decode
step reads every weight once, so one sequence cannot go faster than bandwidth / weight bytes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

SHAPES: dict[str, dict[str, Any]] = {
    "tiny": {},
    "small": {"hidden_size": 256, "intermediate_size": 768, "num_hidden_layers": 4,
              "num_attention_heads": 8, "num_key_value_heads": 8},
    "phi3-mini": {"hidden_size": 3072, "intermediate_size": 8192, "num_hidden_layers": 32,
                  "num_attention_heads": 32, "num_key_value_heads": 32,
                  "max_position_embeddings": 4096},
}
#: Peak HBM bandwidth in bytes/s, by a substring of the GPU's name (first match wins).
GPU_BANDWIDTH = {"H200": 4.8e12, "H100 PCIe": 2.0e12, "H100": 3.35e12, "A100-SXM4-80GB": 2.04e12,
                 "A100": 1.56e12, "L40S": 0.864e12, "A10": 0.6e12, "T4": 0.32e12}
PROMPTS = ["Hello there", "The quick brown fox", "Kubernetes deploys", "def main():",
           "LoRA adapters change", "Once upon a time", "0123456789", "A workspace names"]


def save_model(shape: str, dtype: str, folder: Path) -> Path:
    """Write the random model of ``shape`` in ``dtype`` under ``folder``; return its path."""
    from inference_server.tiny_model import create_tiny_model

    # A trained model's init range for the big shape: 0.2 over 32 layers overflows bfloat16.
    init = {"initializer_range": 0.02} if shape == "phi3-mini" else {}
    return create_tiny_model(folder / f"random-{shape}", seed=0, shape_overrides=SHAPES[shape],
                             dtype=dtype, **init)


def weight_bytes(model_dir: Path) -> int:
    """Bytes of the weights a decode step reads (the safetensors files, headers aside)."""
    return sum(f.stat().st_size for f in model_dir.glob("*.safetensors"))


def bandwidth_bound(model_dir: Path) -> tuple[str, float] | None:
    """(GPU name, tokens/s of one sequence at full memory bandwidth), or None without a known GPU."""
    import torch

    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    bandwidth = next((v for k, v in GPU_BANDWIDTH.items() if k in name), None)
    if bandwidth is None:
        return None
    return name, bandwidth / weight_bytes(model_dir)
