"""KAITO in Python: Kubernetes operators that turn `Workspace` resources into GPU nodes,
inference servers and LoRA/QLoRA tuning jobs.

Layers, top first; each imports only from those below it (docs/design.md §1, checked by
`make contracts`):
- `cli`: the `kaito` command;
- `workspace` (the `kaito-operator` process) and `provisioner` (the `kaito-gpu-provisioner`
  process): the two controllers;
- `controller` (scheduling of reconcile passes, failure handling, start-up) and `cache` (the
  watch-fed cache the reconciles read from): what both controllers run on;
- `kube` (the only client of the Kubernetes API) and `webhook_tls` (the admission webhook's
  certificates);
- `validation`: the rules every layer (CLI, webhook, controller) applies to a Workspace;
- `api` (typed models of the Workspace and Machine resources, and the CRDs generated from
  them), `catalog` (the model preset and GPU SKU catalogs, data in the top-level `presets/`
  folder) and `settings` (the workspace controller's environment).
"""

__version__ = "0.1.0"
