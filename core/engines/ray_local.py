"""A throw-away Ray cluster on this machine: a head and worker nodes started with ``ray start``.

For tests and benchmarks of the Ray engine against a real cluster address (the same path
as a remote cluster: ``ray start --head`` prints an address, the engine connects to it).
Every process is started here with ``--block`` in its own session, on free ports and
with its own temp folder, and stopped here by process id (its process tree, then any
process still naming the temp folder) — never ``ray stop``, which would also end other
people's Ray processes on a shared machine.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

PORT_FLAGS_HEAD = ("--port", "--dashboard-port")
PORT_FLAGS_NODE = ("--node-manager-port", "--object-manager-port", "--dashboard-agent-listen-port",
                   "--dashboard-agent-grpc-port", "--runtime-env-agent-port", "--metrics-export-port")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ray_executable() -> str:
    """The ``ray`` command beside this interpreter (a venv's bin), else on PATH."""
    here = Path(sys.executable).with_name("ray")
    return str(here) if here.is_file() else (shutil.which("ray") or "ray")


class LocalRayCluster:
    """``with LocalRayCluster(nodes=2) as c: engine = get_engine("ray", address=c.address)``."""

    def __init__(self, nodes: int = 2, cpus_per_node: int = 1, *, object_store_bytes: int = 100_000_000,
                 env: dict[str, str] | None = None, start_timeout_s: float = 60.0) -> None:
        self.nodes, self.cpus = nodes, cpus_per_node
        self.object_store_bytes = object_store_bytes
        self.env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", **(env or {})}
        self.timeout = start_timeout_s
        self.tmp = Path(tempfile.mkdtemp(prefix="slr-", dir="/tmp" if os.path.isdir("/tmp") else None))
        self.procs: list[subprocess.Popen[bytes]] = []
        self.address = ""

    # -- start -----------------------------------------------------------------------------------
    def start(self) -> LocalRayCluster:
        port = free_port()
        self.address = f"127.0.0.1:{port}"
        head = ["--head", f"--port={port}",
                f"--dashboard-port={free_port()}", "--include-dashboard=false", f"--temp-dir={self.tmp}"]
        self._start_node("head", head)
        self._wait_port(port)
        for k in range(1, self.nodes):
            self._start_node(f"node{k}", [f"--address={self.address}"])
        self.wait_for_nodes()
        return self

    def _start_node(self, name: str, extra: list[str]) -> None:
        ports = [f"{flag}={free_port()}" for flag in PORT_FLAGS_NODE]
        argv = [ray_executable(), "start", "--block", "--node-ip-address=127.0.0.1", f"--num-cpus={self.cpus}",
                f"--object-store-memory={self.object_store_bytes}", "--disable-usage-stats", *ports, *extra]
        log = open(self.tmp / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        self.procs.append(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                           start_new_session=True))
        log.close()

    def _wait_port(self, port: int) -> None:
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.2)
        raise TimeoutError(f"the Ray head did not open port {port} within {self.timeout:.0f} s; {self.log_tail()}")

    def wait_for_nodes(self) -> None:
        """Block until every node has joined (connects with ``ray.init`` and disconnects again)."""
        import ray

        ray.init(address=self.address, log_to_driver=False, configure_logging=False)
        try:
            deadline = time.monotonic() + self.timeout
            while sum(1 for n in ray.nodes() if n.get("Alive")) < self.nodes:
                self._check_alive()
                if time.monotonic() > deadline:
                    raise TimeoutError(f"only some of {self.nodes} Ray nodes joined; {self.log_tail()}")
                time.sleep(0.25)
        finally:
            ray.shutdown()

    def _check_alive(self) -> None:
        for p in self.procs:
            if p.poll() is not None:
                raise RuntimeError(f"`ray start` exited with code {p.returncode}; {self.log_tail()}")

    def log_tail(self) -> str:
        tails = []
        for f in sorted(self.tmp.glob("*.log")):
            tails.append(f"{f.name}: " + f.read_text(errors="replace")[-800:])
        return " | ".join(tails)

    # -- stop ------------------------------------------------------------------------------------
    def processes(self) -> list[Any]:
        """Every live process of this cluster: the ``ray start`` trees and anything naming the temp folder."""
        import psutil

        found: dict[int, Any] = {}
        for p in self.procs:
            try:
                root = psutil.Process(p.pid)
                for q in [root, *root.children(recursive=True)]:
                    found[q.pid] = q
            except psutil.NoSuchProcess:
                continue
        tag = str(self.tmp)
        for q in psutil.process_iter(["pid", "cmdline"]):
            try:
                if any(tag in part for part in (q.info["cmdline"] or [])):
                    found[q.pid] = q
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        found.pop(os.getpid(), None)
        return list(found.values())

    def stop(self, grace_s: float = 3.0) -> None:
        import psutil

        procs = self.processes()
        for q in procs:
            try:
                q.send_signal(signal.SIGTERM)
            except psutil.NoSuchProcess:
                pass
        _, alive = psutil.wait_procs(procs, timeout=grace_s)
        for q in alive:
            try:
                q.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(alive, timeout=5)
        for p in self.procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        self.procs = []
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> LocalRayCluster:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
