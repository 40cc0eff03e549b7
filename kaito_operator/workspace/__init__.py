"""The workspace controller: Workspace → Machines, workload, Services, status.

Pure builders (`machines`, `inference`, `services`, `status`, `nodes`) turn typed inputs into
manifests and conditions; only `reconcile` talks to the API server.
"""
