"""The gpu-provisioner: one Karpenter `Machine` or `NodeClaim` becomes one AKS agent pool
(docs/design.md §4).

Modules:

- ``pools``   pure: :class:`PoolSpec` / :class:`PoolState`, ``pool_spec_from_machine``, labels;
- ``kinds``   pure: the two kinds served (``PROVISIONER_NODE_KIND``), one descriptor each;
- ``errors``  pure: the exception tree below and the one classification table;
- ``azure``   the only importer of the Azure SDK: :class:`AzurePools` (short, non-blocking calls)
  and ``classify(exc)`` for azure-core exceptions;
- ``metrics`` ARM calls by operation and result code, pools owned, objects by condition;
- ``settings`` pure: the environment (``ARM_SUBSCRIPTION_ID`` ...) with errors naming variables;
- ``lifecycle`` pure: launched → registered → initialized → ready, from the pool and the Node;
- ``reconcile`` one pass over an object and one finalizer step; the one error-handling place;
- ``gc``      garbage collection of our orphaned pools (pure selection + the loop);
- ``runtime`` what the handlers call: passes per object on the shared scheduler of
  ``kaito_operator.controller`` (no handler ever waits), the finalizer step, the phase gauge;
- ``handlers`` the kopf registry; ``operator`` ``main()`` and a thread runner for tests.

Exception tree (the error contract of the Azure side; the controller maps it in one place)::

    ProvisionerError                 base: .message, .code (ARM code), .status (HTTP status)
    ├── PermanentPoolError           cannot succeed for this Machine/NodeClaim as specified:
    │   │                            (Machine)Launched=False with the message, Warning Event
    │   ├── QuotaExceeded            subscription/regional quota or capacity (subnet) exhausted
    │   ├── SkuNotAvailable          VM size not offered or not allocatable in the region/zone
    │   ├── InvalidPoolParameters    the request itself is wrong (bad name, size, disk, labels)
    │   └── PoolNotOwned             a pool of that name exists without our labels: never touched
    ├── RetryableArmError            try again later: .retry_after seconds (None: use your backoff)
    │   └── OperationInProgress      409: another operation on the pool is running
    ├── AuthenticationFailed         401/403/credential errors; message names the settings to check
    └── PoolNotFound                 404 where a pool was required
"""
