"""Run the config's notify hooks (as keepalived runs notify scripts), never blocking a tick.

A hook is an argv list run without a shell, with ``NODE_ID``, ``LEADER_ID``,
``EPOCH``, ``HOOK`` (and for ``on_node_offline``, ``OFFLINE_NODE_ID``) in its
environment, without Redis credentials (procs.env.clean_env). It runs the
way every child runs (procs.spawn), from a detached owner process
(spawn.start_detached): its whole process group is killed at
``hooks.timeout_s``, and at once if that owner dies; the outcome goes to
``logs/hooks.log``, at most ``tasks.max_output_bytes`` of its output to
``logs/hooks.log.out``, which rotates like the logs (``logging.max_bytes``,
``logging.backup_count``). The tick that fired it goes on at once.

Should the owner and its supervisor both be killed with SIGKILL, the hook's
leader dies with the supervisor (PR_SET_PDEATHSIG, Linux) but not what the
hook started in its group: the owner notes the group in
``<run_dir>/hook-child.<node>.<owner pid>.json``, and the next hook this node
fires first kills what is left of any group whose owner is gone
(records.kill_leftovers; Linux, where /proc tells a reused pid apart): once
the hook's leader is gone, only the processes carrying the hook's own marker
(records.MARK_ENV, random per hook) in their environment.
"""

import os

_started = []  # detached owners of this process, reaped as they finish (loop mode would collect zombies)


def fire(ctx, name: str, leader_id: str, epoch, **extra_env) -> bool:
    """Start hook ``name`` if configured; return whether it was started."""
    argv = ctx.cfg["hooks"][name]
    if not argv:
        return False
    # deferred: the child-process modules (signal, threading, json) cost every election tick ~1.4 ms,
    # and most ticks fire no hook
    from distnode.procs import env as child_env
    from distnode.procs import records
    from distnode.procs import spawn
    env = child_env.clean_env(ctx.cfg, dict(NODE_ID=ctx.node_id, LEADER_ID=leader_id or "", EPOCH=str(epoch),
                                            HOOK=name))
    env.update({k: str(v) for k, v in extra_env.items()})
    record_prefix = os.path.join(ctx.cfg.run_dir, "hook-child.%s." % ctx.node_id)
    _started[:] = [p for p in _started if p.poll() is None]
    for pgid in records.kill_leftovers(record_prefix):
        ctx.log.warning("killed the process group %s a killed hook supervisor left running", pgid)
    logging = ctx.cfg["logging"]
    try:
        _started.append(spawn.start_detached(
            argv, env, ctx.cfg["hooks"]["timeout_s"], ctx.cfg["tasks"]["max_output_bytes"],
            os.path.join(ctx.cfg.log_dir, "hooks.log"), "node=%s hooks: %s" % (ctx.node_id, name),
            rotate=(logging["max_bytes"], logging["backup_count"]), record_prefix=record_prefix))
    except OSError as exc:
        ctx.log.error("hook %s could not start: %s", name, exc)
        return False
    ctx.log.info("hook %s started: %s", name, " ".join(argv))
    return True
