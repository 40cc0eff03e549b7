"""What the processes inside workload pods share: the inference server, the adapter fetcher
init container and the tuning job.

`kaito_workload.oci` talks to OCI registries (image references, docker-config secrets, auth
challenges, a request session through the egress guard); `kaito_workload.termination` writes
the one-line failure that Kubernetes shows for a container.  The package stays light, since the
init container runs it: httpx and `kaito_egress`, never torch nor `kaito_operator`.
"""
