"""The local sandbox and the simulators the tests and the demo run the product against
(docs/design.md §7, §8). Installed by the `sandbox` extra; no product package imports it.

- `sim`: the Kubernetes API emulator, the simulated cluster, the simulated Azure ARM endpoint
  and AKS, and a throwaway OCI registry, all on loopback;
- the sandbox itself: `daemon` (what `kaito sandbox up` starts), `agent` with `controllers`,
  `scheduling`, `kubelet`, `containers` and `services` (the simulated cluster's node side: pods
  run as local processes on the CPU), `model` (which model the pods serve), `state` (where
  state and logs live), `cli` (the `kaito sandbox ...`, `get`, `describe`, `delete` and `chat`
  commands, added to `kaito` through the `kaito.cli` entry-point group) and `demo`
  (`make demo`).

The workspace operator, the gpu-provisioner, the inference server, the adapter fetcher and the
tuning job are the product's own processes and code paths; only the cluster and the cloud are
simulated.
"""
