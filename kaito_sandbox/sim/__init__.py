"""Simulators on loopback for the component tests, the benchmark and the sandbox.

- `kube_api`: the Kubernetes API emulator in its own thread (kmock with the fidelity fixes of
  `emulator`, `store`, `patching`, `selectors`, `watching`, `routing`, `collector`, `errors`;
  faults from `api_faults`; kmock's private API only in `kmock_private`), described in
  docs/emulator.md;
- `cluster`: what kubelets, workload controllers and a node provisioner would do, reduced to
  what the workspace controller observes;
- `arm` (with `arm_pools`, `arm_http`, `arm_faults`, `certs`): the Azure agent-pools endpoint
  over https for the real Azure SDK; `aks`: Nodes that join when a pool succeeds;
- `registry`: Debian's `docker-registry` as a throwaway OCI registry, with push helpers.
"""
