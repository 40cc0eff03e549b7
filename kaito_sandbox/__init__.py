"""The local sandbox (DESIGN §8): the whole flow on one machine, without a GPU cluster or a
cloud account.

The Kubernetes API (emulator), the Azure agent-pools endpoint, AKS joining nodes, and the
kubelet are simulated; the workspace operator, the gpu-provisioner, the inference server and
the tuning job are the product's own processes and code paths. `kaito sandbox up` starts it.
"""
