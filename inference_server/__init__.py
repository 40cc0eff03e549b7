"""The process inside every inference pod (docs/design.md §5): KAITO's `/chat` and the OpenAI
API on transformers + peft, with continuous batching and Prometheus metrics (README.md here).

`python -m inference_server` starts it; `inference_server.fetch_adapter` is the init container
that pulls LoRA adapters. Importing this package is free: torch and transformers load when the
server starts.
"""
