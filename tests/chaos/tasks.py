"""The task stream: submit tasks through the CLI while faults happen, then account for each one.

A submitter thread runs ``task_queue.py submit --type chaos --key chaos-<n>``
every ``period_s``, as a user would, from a client config that talks to
Redis directly (not through any node's proxy). A submission that fails
(Redis down) is retried with the same idempotency key until it is
acknowledged, so a lost reply never queues a task twice. Each execution of
the handler appends "task node attempt" to the ledger file, from which
duplicates are counted.
"""

import json
import os
import subprocess
import sys
import threading
import time

from cluster import SCRIPTS, TASK_TYPE, clean_env

from distnode.core import keys  # noqa: E402  (scripts/ is on the path through cluster)

TERMINAL = ("done", "dead")


class TaskStream:
    def __init__(self, client_dir: str, probe, period_s: float, timeout_s: float):
        self.client_dir, self.probe, self.period_s, self.timeout_s = client_dir, probe, period_s, timeout_s
        self.acked = {}             # seq -> task id (the submission was acknowledged)
        self.unacked = set()        # seqs tried but never acknowledged (yet)
        self.failed_submits = 0     # submit runs that exited non-zero (each retried)
        self.last_state = {}        # task id -> last state the harness read
        self.wiped = set()          # task ids not done/dead when Redis restarted empty
        self._seq = 0
        self._paused = threading.Event()
        self._idle = threading.Event()
        self._stop = threading.Event()
        self._thread = None

    def start(self) -> "TaskStream":
        self._thread = threading.Thread(target=self._run, name="tasks", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(60)

    def pause(self) -> None:
        """Stop submitting (waits for a submission in flight to finish)."""
        self._paused.set()
        self._idle.wait(30)

    def resume(self) -> None:
        self._paused.clear()

    def _run(self) -> None:
        pending = None
        while not self._stop.is_set():
            if self._paused.is_set():
                self._idle.set()
                time.sleep(0.05)
                continue
            self._idle.clear()
            if pending is None:
                self._seq += 1
                pending = self._seq
            if self._submit(pending):
                pending = None
            self._idle.set()
            self._stop.wait(self.period_s)
        if pending is not None and pending not in self.acked:
            self.unacked.add(pending)

    def _submit(self, seq: int) -> bool:
        argv = [sys.executable, os.path.join(SCRIPTS, "task_queue.py"), "submit", "--type", TASK_TYPE,
                "--key", "chaos-%d" % seq, "--payload", json.dumps({"seq": seq}), "--json", "--quiet",
                "--config-dir", os.path.join(self.client_dir, "config"),
                "--log-dir", os.path.join(self.client_dir, "logs")]
        try:
            proc = subprocess.run(argv, env=clean_env(OPENCLAW_NODE_ID="chaos-client"), capture_output=True,
                                  text=True, timeout=self.timeout_s)
        except subprocess.TimeoutExpired:
            proc = None
        if proc is None or proc.returncode != 0:
            self.failed_submits += 1
            self.unacked.add(seq)
            return False
        try:
            task_id = json.loads(proc.stdout.strip().splitlines()[-1])["id"]
        except (ValueError, IndexError, KeyError, TypeError):
            self.failed_submits += 1  # exit 0 without the task id: counted, and retried with the same key
            self.unacked.add(seq)
            return False
        self.acked[seq] = task_id
        self.unacked.discard(seq)
        return True

    # -- reading states --
    def refresh(self) -> dict:
        """Read every acknowledged task's state (one round trip); returns {state: count}."""
        ids = list(self.acked.values())
        if not ids:
            return {}
        replies = self.probe.request([("HGET", keys.task(tid), "state") for tid in ids])
        for tid, state in zip(ids, replies):
            if isinstance(state, Exception):
                continue  # an error reply (LOADING after a restart): read again next time
            state = state.decode() if isinstance(state, bytes) else state
            if state is not None:
                self.last_state[tid] = state
            elif tid not in self.last_state:
                self.last_state[tid] = "missing"
            elif self.last_state[tid] not in TERMINAL and tid not in self.wiped:
                self.last_state[tid] = "missing"
        counts = {}
        for tid in ids:
            counts[self.last_state[tid]] = counts.get(self.last_state[tid], 0) + 1
        return counts

    def drain(self, timeout_s: float) -> bool:
        """Wait until every acknowledged task is done or dead (or wiped); True if that happened in time."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                self.refresh()
            except ConnectionError:
                pass
            open_ids = [t for t in self.acked.values()
                        if self.last_state.get(t) not in TERMINAL and t not in self.wiped]
            if not open_ids:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.2)

    def mark_wiped(self) -> int:
        """Redis is restarting empty: tasks not done or dead now are gone with it (by design)."""
        for tid in self.acked.values():
            if self.last_state.get(tid) not in TERMINAL:
                self.wiped.add(tid)
        return len(self.wiped)


def read_ledger(path: str) -> dict:
    """task id -> [(node, attempt)] for every handler execution that started (adversary.py reads the rest)."""
    runs = {}
    try:
        with open(path) as fh:
            for line in fh:
                parts = line.split()
                if len(parts) >= 3:  # task node attempt [who time]
                    runs.setdefault(parts[0], []).append((parts[1], parts[2]))
    except OSError:
        pass
    return runs
