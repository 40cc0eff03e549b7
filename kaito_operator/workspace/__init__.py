"""The workspace controller: Workspace → node objects (Machines or NodeClaims, by mode),
workload, Services or tuning Job, status.

Pure builders and reducers turn typed inputs into manifests and conditions: `names` (names,
labels, ports), `nodes` (which nodes qualify), `provisioning` (per node-provisioning mode:
what node object to create, and the view of the Machines and NodeClaims a Workspace owns),
`node_conditions`, `workload` and `podspec` (the inference Deployment or StatefulSet and its
Services), `podsecurity` and `sizing` (restricted, bounded pods), `tuning` (the Job and its
config), `status` (conditions from what was observed). `reconcile` and `apply` are the pass
that reads and writes the API. `runtime` runs the passes on the shared controller runtime and
shows failed ones; `handlers` hands kopf's events to it; `metrics` are the controller's
Prometheus metrics; `operator` is `main()` of `kaito-operator`.
"""
