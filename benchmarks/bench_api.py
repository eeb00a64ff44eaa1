"""The REST API under load, as a client sees it: real ``serve`` processes over sockets.

Figures (issue 12), measured in this one run so the ratios compare like with like:

- ``GET /tenants/{id}`` with 50 concurrent clients, each its own tenant with its own
  token: requests a second and p99 latency, against a bare FastAPI endpoint returning
  a constant (a ``def`` endpoint on the same uvicorn, one process) under the same load;
- ``serve`` start-up: from spawning the process to the first answer of ``/healthz``,
  against the same for the bare app.

Each request of ours checks the token, looks up its key (revocation), reads the
tenant's plan, counts the call against its rate limit and meters it into
``usage.api_calls`` (a write), then resolves the tenant and masks its credentials.
The load generator (a thread per client, each on its own keep-alive connection)
runs in this process and is itself Python on the same cores, so the bare endpoint's
figure is partly the generator's ceiling. Prints a report and
always exits 0: it is a report, not a test.

    python benchmarks/bench_api.py [--clients 50] [--seconds 5] [--starts 3]
"""

from __future__ import annotations

import argparse
import http.client
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import httpx
from results import record

BIN = Path(sys.executable).parent
BARE_APP = textwrap.dedent('''
    from fastapi import FastAPI

    app = FastAPI()

    @app.get("/tenants/{tenant_id}")
    def tenant(tenant_id: str) -> dict:
        return {"tenant_id": "constant"}

    @app.get("/healthz")
    def healthz() -> dict:
        return {"status": "ok"}
''')


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def seed(db: Path, clients: int) -> list[tuple[str, str]]:
    """*clients* enterprise tenants without a rate limit in sight, a key each."""
    from botpoly_admin import TenantManager, apikeys

    manager = TenantManager(db)
    pairs = []
    for n in range(clients):
        tenant = manager.create_tenant(f"Bench {n}", f"bench{n}@example.com", "enterprise",
                                       status="active")
        manager.update_tenant(tenant.tenant_id,
                              rate_limits={"api_calls_per_minute": 1_000_000})
        pairs.append((tenant.tenant_id, apikeys.create_key(manager, tenant_id=tenant.tenant_id)
                      .api_key))
    manager.close()
    return pairs


def spawn(command: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def wait_healthy(base: str, proc: subprocess.Popen, timeout: float = 60) -> float:
    """Seconds until ``/healthz`` answers (any status: the process serves)."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}")
        try:
            httpx.get(f"{base}/healthz", timeout=1)
            return time.perf_counter() - started
        except httpx.TransportError:
            time.sleep(0.01)
    raise RuntimeError("the server did not answer in time")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def load(port: int, clients: list[tuple[str, dict[str, str]]],
         seconds: float) -> tuple[list[float], int]:
    """Each (path, headers) is one client, a thread on its own keep-alive connection,
    looping for *seconds*: the latencies of its requests, and how many failed."""
    latencies: list[float] = []
    errors = [0]
    deadline = time.perf_counter() + seconds

    def client(path: str, headers: dict[str, str]) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine = []
        try:
            while time.perf_counter() < deadline:
                sent = time.perf_counter()
                connection.request("GET", path, headers=headers)
                response = connection.getresponse()
                response.read()
                mine.append(time.perf_counter() - sent)
                if response.status != 200:
                    errors[0] += 1
        finally:
            connection.close()
            latencies.extend(mine)

    threads = [threading.Thread(target=client, args=pair) for pair in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, errors[0]


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def measure(port: int, clients: list[tuple[str, dict[str, str]]],
            seconds: float) -> tuple[float, float, int]:
    """Requests a second, p99 latency and errors of *clients* against *port*."""
    load(port, clients, min(1.0, seconds))  # warm up: connections, caches
    started = time.perf_counter()
    latencies, errors = load(port, clients, seconds)
    return len(latencies) / (time.perf_counter() - started), p99(latencies), errors


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--starts", type=int, default=3)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="botpoly-bench-api-"))
    try:
        db = work / "tenants.db"
        pairs = seed(db, args.clients)
        (work / "bare.py").write_text(BARE_APP)
        ours = [str(BIN / "botpoly-admin"), "--db", str(db), "serve", "--port"]
        bare = [sys.executable, "-m", "uvicorn", "bare:app", "--log-level", "warning",
                "--port"]

        # Start-up, round-robin.
        starts: dict[str, list[float]] = {"serve": [], "bare": []}
        for _ in range(args.starts):
            for name, command in (("serve", ours), ("bare", bare)):
                port = free_port()
                proc = spawn([*command, str(port)], work)
                try:
                    starts[name].append(wait_healthy(f"http://127.0.0.1:{port}", proc))
                finally:
                    stop(proc)

        figures = {}
        for name, command in (("serve", ours), ("bare", bare)):
            port = free_port()
            base = f"http://127.0.0.1:{port}"
            proc = spawn([*command, str(port)], work)
            try:
                wait_healthy(base, proc)
                clients = []
                for tenant_id, key in pairs:
                    token = httpx.post(f"{base}/token", headers={"X-API-Key": key}).json() \
                        if name == "serve" else {"access_token": "-"}
                    clients.append((f"/tenants/{tenant_id}",
                                    {"Authorization": f"Bearer {token['access_token']}"}))
                figures[name] = measure(port, clients, args.seconds)
            finally:
                stop(proc)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    (rps, latency, errors), (bare_rps, bare_latency, _) = figures["serve"], figures["bare"]
    start, bare_start = statistics.median(starts["serve"]), statistics.median(starts["bare"])
    print(f"GET /tenants/{{id}}, {args.clients} concurrent clients, {args.seconds:g} s:")
    print(f"  serve       {rps:8.0f} req/s   p99 {latency * 1000:7.1f} ms   errors {errors}")
    print(f"  bare app    {bare_rps:8.0f} req/s   p99 {bare_latency * 1000:7.1f} ms")
    print(f"  ratio       {rps / bare_rps:8.2f} of the bare endpoint's throughput")
    print(f"start-up to the first /healthz answer (median of {args.starts}): serve "
          f"{start:.2f} s, bare app {bare_start:.2f} s ({start / bare_start:.1f}x)")
    record("api", f"GET /tenants/{{id}} req/s, {args.clients} clients", project=f"{rps:.0f}",
           baseline=f"{bare_rps:.0f} (bare FastAPI)", ratio=f"{rps / bare_rps:.2f}",
           goal="report", passed=None if not errors else False)
    record("api", f"GET /tenants/{{id}} p99, {args.clients} clients",
           project=f"{latency * 1000:.1f} ms", baseline=f"{bare_latency * 1000:.1f} ms",
           ratio=f"{latency / bare_latency:.1f}", goal="report", passed=None)
    record("api", "serve start-up to first /healthz", project=f"{start:.2f} s",
           baseline=f"{bare_start:.2f} s (bare uvicorn)", ratio=f"{start / bare_start:.1f}",
           goal="report", passed=None)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
