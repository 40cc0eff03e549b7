"""KAITO in Python: a Kubernetes operator that turns `Workspace` resources into GPU nodes,
inference servers and LoRA/QLoRA tuning jobs.

Sub-packages:
- `api`: typed models of the Workspace and Machine resources and the CRDs generated from them;
- `catalog`: the model preset and GPU SKU catalogs (data in the top-level `presets/` folder);
- `validation`: the rules every layer (CLI, webhook, controller) applies to a Workspace;
- `cli`: the `kaito` command.
"""

__version__ = "0.1.0"
