"""Child processes: one way to start a handler, an agent turn or a hook.

- spawn.py: the owner's side: ``run`` (wait for the child), ``start_detached``
  (hooks: log the outcome, never block), ``stop_all``, Outcome and Lease;
- supervisor.py: the supervisor process between owner and child (lean start,
  kills the child's whole process group);
- records.py: a running child's record, and killing what a killed owner and
  supervisor left behind;
- env.py: the child's environment, without Redis credentials;
- detached.py: the detached owner process that ``start_detached`` starts.
"""
