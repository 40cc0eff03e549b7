"""What both operators (the workspace controller and the gpu-provisioner) run on.

- ``scheduler``  :class:`KeyScheduler`: one pass at a time per object, coalescing triggers,
  debounce, worker slots, requeue timers, and the one place a pass that raised becomes a retry
  after the backoff plus a call of the operator's failure hook;
- ``backoff``    :class:`Backoff`: the delay before the next try of something that keeps failing;
- ``failures``   ``describe_failure``: an exception as a condition reason and a one-line message;
- ``startup``    login, kopf settings, our client's connection, logging, metrics server, running
  ``kopf.operator`` (``run_operator``) and :class:`KopfThread` (an operator in a thread).
"""
