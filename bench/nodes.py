"""The one way benchmarks start node daemons: tests/conftest.NodeProcess, with bench defaults.

Why: every benchmark used to carry its own Popen + wait-for-node.json code (five copies that
drifted: some waited for READY=1, some for a file, with different timeouts and log levels).
The test suite's `NodeProcess` already starts a real `homenode run` on port 0 and waits for
systemd's READY=1; benchmarks use it too, through `launch` / `launch_many`, which add only what
a benchmark wants by default: warnings-only logs and no request rate limit (the rate limit is
the node defending itself, not what a throughput figure should measure).

    from nodes import launch, node_addr
    with tempfile.TemporaryDirectory() as tmp:
        n = launch(tmp, "a", {"network": {"enabled": False}})
        ... connect(*node_addr(n)) ...
        n.stop()

`cpu_s(pid)` reads a node's CPU time, `run_delay_s(pid)` its threads' wait for a CPU.
"""

import os
import pathlib
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from tests.conftest import NodeProcess  # noqa: E402

__all__ = ["NodeProcess", "BENCH_LIMITS", "launch", "launch_many", "node_addr", "stop_all",
           "cpu_s", "run_delay_s"]

BENCH_LIMITS = {"rate_per_sec": 1e7, "rate_burst": 10_000_000}


def _config(config: dict | None, rate_limit: bool) -> dict:
    cfg = {"node": {"log_level": "warning"}}
    if not rate_limit:
        cfg["limits"] = dict(BENCH_LIMITS)
    for section, keys in (config or {}).items():
        cfg.setdefault(section, {}).update(keys)
    return cfg


def prepare(base, name: str, config: dict | None = None, *,
            rate_limit: bool = False) -> NodeProcess:
    """A `NodeProcess` for `base/name` (not started). `config`: {section: {key: value}} on top
    of the bench defaults; `rate_limit=True` keeps the node's default request rate limit."""
    return NodeProcess(pathlib.Path(base), _config(config, rate_limit), name=name)


def launch(base, name: str, config: dict | None = None, *, rate_limit: bool = False,
           timeout: float = 60.0) -> NodeProcess:
    """A started node (READY=1 received, address read); see `prepare`."""
    return prepare(base, name, config, rate_limit=rate_limit).start(timeout=timeout)


def launch_many(nodes: list[NodeProcess], *, timeout: float = 120.0, stagger: float = 0.0,
                parallel: int = 64) -> list[NodeProcess]:
    """Start prepared nodes at once (or `stagger` seconds apart), each waited for in a thread
    of its own, so N nodes boot in parallel the way N boxes would; raises the first start
    failure after stopping the rest."""
    with ThreadPoolExecutor(max_workers=max(1, min(parallel, len(nodes)))) as pool:
        futures = []
        for n in nodes:
            futures.append(pool.submit(n.start, timeout))
            if stagger:
                time.sleep(stagger)
        errors = [f.exception() for f in futures]
    failed = next((e for e in errors if e is not None), None)
    if failed is not None:
        stop_all(nodes)
        raise failed
    return nodes


def node_addr(n: NodeProcess) -> tuple[str, int, bytes]:
    """(host, port, node_id), the arguments of `firmware.client.connect`."""
    return n.host, n.port, n.node_id


def stop_all(nodes, *, kill: bool = False) -> None:
    """SIGTERM every node at once, then wait for each (SIGKILL with kill=True, or for one that
    does not stop in time)."""
    for n in nodes:
        if not kill and n.alive:
            n.proc.send_signal(signal.SIGTERM)
    for n in nodes:
        try:
            n.kill() if kill else n.stop()
        except Exception:  # noqa: BLE001 - a node that will not stop is killed; go on
            n.kill()


def cpu_s(pid: int) -> float:
    """Seconds the process ran on a CPU (user + system, every thread, ended ones included), in
    nanoseconds: the kernel's CPU clock of another process (clockid as glibc's
    clock_getcpuclockid makes it). Not psutil (10 ms clock ticks), and not a sum of the threads'
    schedstat, which loses a thread's time once it ends (trio's idle worker threads do)."""
    return time.clock_gettime(((~pid) << 3) | 2)


def run_delay_s(pid: int) -> float:
    """Seconds the process's live threads were runnable but waited for a CPU (the box's other
    load; /proc/<pid>/task/*/schedstat, nanoseconds)."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[1])
        except OSError:  # a thread that ended meanwhile
            pass
    return total / 1e9
