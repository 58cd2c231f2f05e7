"""Load benchmark of the audit index and API (not part of CI: `make bench-api`).

1. A throw-away Anvil; the registry deployed; ``--events`` run events
   synthesized in bulk through the batch functions (``startRuns``,
   ``commitCheckpoints``, ``finalizeRuns``: three events per run). Every tenth
   run is a fine-tune of the one before; the first ``--documented`` runs have
   their manifest (name, sweep) and final metrics in the store.
2. Indexer catch-up: one ``Indexer.run_once`` over the whole chain into a fresh
   SQLite index. The catch-up rate is events over the whole pass: the events
   stage (fetch, decode, write events and the runs, parents and weights derived
   from them), against the floor measured in the same run (the bare
   ``eth_getLogs`` fetch of the same logs: no decoding, no SQL), plus the
   documents stage (every run's manifest and final metrics looked up in the
   store), each also shown on its own.
3. ``ledger serve --no-index --workers 2`` in its own processes; ``--clients``
   concurrent closed-loop clients (each sends its next request when the answer
   to the previous one has arrived; no think time) on the common queries; p50
   and p99 latency per query and overall, requests per second, errors (any
   status >= 400 or transport error) and the share answered from the server's
   cache (``X-Ledger-Cache: hit``). Three phases: the queries with the answer
   cache off (``LEDGER_API_CACHE=0``: every request runs its SQL), then, on a
   fresh server with the cache on, ``/healthz`` (no database) as a baseline
   and the measured ``--duration`` seconds, which start with the cache cold.
   The load generator runs on the same cores as the server: its CPU time is
   reported, and the load average beside every phase.

Goals: p99 <= 50 ms, 0 errors (the cached phase), >= 5,000 events/s (the whole
pass). The last line is one JSON document with every figure. ``--quick`` is a
small, short run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ledger.chain.admin import RegistryAdmin, deploy_registry
from ledger.chain.anvil import AnvilProcess
from ledger.chain.records import FinalRecord, run_id_for
from ledger.config import Settings, save_deployment
from ledger.documents import MANIFEST_SCHEMA, METRICS_SCHEMA, canonical_json
from ledger.hashing.merkle import CheckpointLeaf, checkpoint_root
from ledger.ids import Relation
from ledger.store import LocalStore

BATCH = 250  # registry 3: about 80k gas per finalize in a batch; 250 fit a 30M-gas block


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def synthesize(
    registry: RegistryAdmin, store: LocalStore, runs: int, documented: int
) -> dict[str, Any]:
    """Records ``runs`` runs (start, one checkpoint, finalize) in batches; returns samples."""
    started = time.perf_counter()
    run_ids: list[bytes] = []
    digests: list[bytes] = []
    for i in range(runs):
        if i < documented:
            manifest = {
                "schema": MANIFEST_SCHEMA,
                "name": f"model-{i}",
                "created_at": f"bench-{i}",
                "parents": [],
                "sweep": {"id": f"sweep-{i % 20}", "trial": i},
                "distributed": {"world_size": 1},
            }
            digests.append(store.put_bytes(canonical_json(manifest)).digest)
        else:
            digests.append(os.urandom(32))
    committer = registry.signer.address
    for at in range(0, runs, BATCH):
        requests: list[tuple[bytes, list[tuple[bytes, Relation]]]] = []
        for i in range(at, min(at + BATCH, runs)):
            parents = []
            if i % 10 == 5:  # a fine-tune of the run just before it (same batch)
                parent = run_id_for(committer, digests[i - 1])
                parents = [(parent, Relation.FINE_TUNE)]
            requests.append((digests[i], parents))
        ids, _ = registry.start_runs(requests)
        run_ids += ids
    leaves: list[CheckpointLeaf] = []
    finals: list[tuple[bytes, FinalRecord]] = []
    for i, run_id in enumerate(run_ids):
        metrics_digest = os.urandom(32)
        if i < documented:
            document = {
                "schema": METRICS_SCHEMA,
                "run_id": "0x" + run_id.hex(),
                "step": None,
                "final": True,
                "metrics": {"val_loss": (i % 100) / 100, "acc": 1 - (i % 100) / 100},
                "weights": {"cid": None, "tensor_root": None, "tensor_index": None},
            }
            metrics_digest = store.put_bytes(canonical_json(document)).digest
        leaf = CheckpointLeaf(1, os.urandom(32), os.urandom(32), os.urandom(32))
        leaves.append(leaf)
        finals.append(
            (
                run_id,
                FinalRecord(
                    os.urandom(32), os.urandom(32), metrics_digest, checkpoint_root([leaf]), 1
                ),
            )
        )
    for at in range(0, runs, BATCH):
        registry.commit_checkpoints(
            list(zip(run_ids[at : at + BATCH], leaves[at : at + BATCH], strict=True))
        )
    for at in range(0, runs, BATCH):
        registry.finalize_runs(finals[at : at + BATCH])
    return {
        "seconds": time.perf_counter() - started,
        "run_ids": ["0x" + r.hex() for r in run_ids],
        "digests": ["0x" + f[1].weights_digest.hex() for f in finals],
    }


def fetch_floor(rpc_url: str, address: str, start: int) -> tuple[int, float]:
    """The bare eth_getLogs fetch of every registry log (the indexer's floor)."""
    from ledger.chain.abi import LogDecoder
    from ledger.chain.rpc import JsonRpc

    rpc = JsonRpc(rpc_url, timeout=300)
    began = time.perf_counter()
    logs = rpc(
        "eth_getLogs",
        {
            "address": address,
            "fromBlock": hex(start),
            "toBlock": "latest",
            "topics": [LogDecoder().topics],
        },
    )
    return len(logs), time.perf_counter() - began


async def _get(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> tuple[int, bool]:
    """One keep-alive HTTP/1.1 GET; (status, answered from the server's cache)."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length, hit = 0, False
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.lower()
        if name == "content-length":
            length = int(value)
        elif name == "x-ledger-cache":
            hit = value.strip() == "hit"
    await reader.readexactly(length)
    return status, hit


async def load(base: str, paths: list[str], clients: int, duration: float) -> dict[str, Any]:
    """``clients`` closed-loop clients, each on its own keep-alive connection.

    A few lines of asyncio HTTP/1.1 with the request bytes built beforehand
    instead of an HTTP library: on two shared cores httpx's async client itself
    managed under 100 requests/s, so it would have measured the client, not the
    server. Each client sends its next request when the answer to the previous
    one has arrived (no think time).
    """
    host, port = base.removeprefix("http://").split(":")
    requests = [f"GET {p} HTTP/1.1\r\nHost: bench\r\n\r\n".encode() for p in paths]
    kinds = [kind_of(p) for p in paths]
    latencies: dict[str, list[float]] = {}
    errors: dict[str, int] = {}
    hits: dict[str, int] = {}
    stop_at = time.perf_counter() + duration
    cpu_before = time.process_time()

    async def worker(offset: int) -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        i = offset
        try:
            while time.perf_counter() < stop_at:
                at = i % len(paths)
                kind = kinds[at]
                i += 1
                began = time.perf_counter()
                try:
                    status, hit = await _get(reader, writer, requests[at])
                    failed = status >= 400
                except (OSError, asyncio.IncompleteReadError, ValueError):
                    failed, hit = True, False
                    writer.close()
                    reader, writer = await asyncio.open_connection(host, int(port))
                latencies.setdefault(kind, []).append(time.perf_counter() - began)
                if failed:
                    errors[kind] = errors.get(kind, 0) + 1
                if hit:
                    hits[kind] = hits.get(kind, 0) + 1
        finally:
            writer.close()

    await asyncio.gather(*(worker(n * 7) for n in range(clients)))
    return {
        "latencies": latencies,
        "errors": errors,
        "hits": hits,
        "client_cpu_s": time.process_time() - cpu_before,
    }


def kind_of(path: str) -> str:
    """The query's shape: route with ids elided and its parameter names."""
    route, _, query = path.partition("?")
    route = re.sub(r"0x[0-9a-f]{64}", "{id}", route)
    keys = [k.split("=")[0] for k in query.split("&") if k and not k.startswith("limit")]
    if "q" in keys:
        return route + "?q=" + query.split("q=", 1)[1].split("&")[0]
    return route + ("?" + "&".join(keys) if keys else "")


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summarize(result: dict[str, Any], duration: float) -> dict[str, Any]:
    every = [v for vs in result["latencies"].values() for v in vs]
    per_kind = {
        kind: {
            "n": len(vs),
            "p50_ms": round(percentile(vs, 0.5) * 1000, 2),
            "p99_ms": round(percentile(vs, 0.99) * 1000, 2),
            "errors": result["errors"].get(kind, 0),
            "cache_hits": round(result["hits"].get(kind, 0) / len(vs), 3),
        }
        for kind, vs in sorted(result["latencies"].items())
    }
    return {
        "requests": len(every),
        "rps": round(len(every) / duration, 1),
        "p50_ms": round(percentile(every, 0.5) * 1000, 2),
        "p99_ms": round(percentile(every, 0.99) * 1000, 2),
        "mean_ms": round(statistics.fmean(every) * 1000, 2) if every else None,
        "errors": sum(result["errors"].values()),
        "cache_hits": round(sum(result["hits"].values()) / len(every), 3) if every else None,
        "client_cpu_s": round(result["client_cpu_s"], 2),
        "per_query": per_kind,
    }


def loadavg() -> str:
    """The 1-minute load average (other work on the machine shows here)."""
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        return "n/a"


def start_server(data_dir: Path, workers: int, cache: int) -> tuple[subprocess.Popen[bytes], str]:
    """``ledger serve --no-index`` in its own processes; (process, base URL) once it answers."""
    import httpx

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    env["LEDGER_API_CACHE"] = str(cache)
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ledger",
            "serve",
            "--no-index",
            "--data-dir",
            str(data_dir),
            "--port",
            str(port),
            "--workers",
            str(workers),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(base + "/healthz", timeout=2).status_code == 200:
                return server, base
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or server.poll() is not None:
            server.terminate()
            raise SystemExit("ledger serve did not start")
        time.sleep(0.2)


def stop_server(server: subprocess.Popen[bytes]) -> None:
    server.terminate()
    server.wait(timeout=30)


def phase(base: str, paths: list[str], clients: int, seconds: float, label: str) -> dict[str, Any]:
    """One closed-loop load phase, with the load average before and after."""
    print(f"{label}: {clients} clients, {seconds:.0f} s (load average {loadavg()})", flush=True)
    figures = summarize(asyncio.run(load(base, paths, clients, seconds)), seconds)
    figures["loadavg"] = loadavg()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--documented", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=2, help="ledger serve --workers")
    parser.add_argument("--quick", action="store_true", help="10,000 events, 10 s of load")
    args = parser.parse_args()
    if args.quick:
        args.events, args.duration, args.documented = 10_000, 10.0, 500
    runs = max(1, args.events // 3)
    side_s = max(3.0, args.duration / 4)  # the /healthz baseline and the uncached phase

    with tempfile.TemporaryDirectory(prefix="ledger-bench-") as tmp:
        root = Path(tmp)
        anvil = AnvilProcess(root / "chain", port=free_port())
        anvil.start(persist=False)
        server = None
        try:
            settings = Settings(data_dir=root / "data", rpc_url=anvil.rpc_url)
            registry, tx = deploy_registry(settings)
            chain_id, block = registry.chain_id, tx.block_number
            save_deployment(settings, address=registry.address, chain_id=chain_id, block=block)
            store = LocalStore(settings.store_dir)
            print(
                f"synthesizing {runs * 3} events ({runs} runs) in batches of {BATCH} ...",
                flush=True,
            )
            made = synthesize(registry, store, runs, min(args.documented, runs))
            print(f"  {made['seconds']:.1f} s on chain", flush=True)

            floor_events, floor_s = fetch_floor(anvil.rpc_url, registry.address, tx.block_number)

            from ledger.config import load_settings
            from ledger.index import open_index
            from ledger.index.service import build_indexer

            settings = load_settings(settings.data_dir)
            engine = open_index(settings)
            indexer = build_indexer(settings, engine, confirmations=0)
            indexer.rpc.timeout = 300
            index_load = loadavg()
            began = time.perf_counter()
            result = indexer.run_once()
            index_s = time.perf_counter() - began
            rate = result.events / result.events_seconds
            floor_rate = floor_events / floor_s
            documents_s = index_s - result.events_seconds
            total_rate = result.events / index_s
            print(
                f"indexer (load average {index_load} -> {loadavg()}): catch-up "
                f"{total_rate:,.0f} events/s over the whole pass ({result.events} events in "
                f"{index_s:.2f} s) = events stage {result.events_seconds:.2f} s "
                f"({rate:,.0f} events/s: fetch, decode, write events, runs, parents, weights; "
                f"bare eth_getLogs fetch alone {floor_rate:,.0f} events/s) + documents stage "
                f"{documents_s:.2f} s ({result.documents} manifests and metrics documents "
                f"looked up in the store)",
                flush=True,
            )
            engine.dispose()

            ids, digests = made["run_ids"], made["digests"]
            paths = []
            for i in range(0, 200):
                run_id = ids[(i * 7919) % len(ids)]
                paths += [
                    "/api/v1/runs?limit=50",
                    "/api/v1/runs?status=finalized&limit=20",
                    "/api/v1/runs?metric=val_loss%3C0.1&limit=20",
                    f"/api/v1/runs?sweep=sweep-{i % 20}&limit=20",
                    "/api/v1/runs?q=metric%3Aval_loss%3C0.05%20OR%20sweep%3Asweep-3&limit=20",
                    f"/api/v1/runs/{run_id}",
                    f"/api/v1/runs/{run_id}/lineage",
                    f"/api/v1/lookup?digest={digests[(i * 7919) % len(digests)]}",
                ]
            kinds = len({kind_of(p) for p in paths})
            server, base = start_server(settings.data_dir, args.workers, cache=0)
            uncached = phase(
                base, paths, args.clients, side_s, f"uncached: {kinds} queries, no answer cache"
            )
            stop_server(server)
            server, base = start_server(settings.data_dir, args.workers, cache=4096)
            baseline = phase(base, ["/healthz"], args.clients, side_s, "baseline: /healthz")
            measured = phase(
                base, paths, args.clients, args.duration, f"load: {kinds} queries, cache cold"
            )
        finally:
            if server is not None:
                stop_server(server)
            anvil.stop()

    print(f"{'query':55} {'n':>7} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6} {'hits':>5}")
    for kind, row in measured["per_query"].items():
        print(
            f"{kind[:55]:55} {row['n']:>7} {row['p50_ms']:>8} {row['p99_ms']:>8} "
            f"{row['errors']:>6} {row['cache_hits']:>5}"
        )
    for label, f in (("all queries", measured), ("uncached", uncached), ("/healthz", baseline)):
        print(
            f"{label}: {f['rps']} req/s, p50 {f['p50_ms']} ms, p99 {f['p99_ms']} ms, "
            f"{f['errors']} errors, answered from the cache {f['cache_hits']}, load "
            f"generator CPU {f['client_cpu_s']} s, load average after {f['loadavg']}"
        )
    figures = {
        "bench": "api_load",
        "events": result.events,
        "runs": runs,
        "synthesize_s": round(made["seconds"], 2),
        "index_events_s": round(result.events_seconds, 3),
        "index_events_per_s": round(rate),
        "index_documents": result.documents,
        "index_documents_s": round(documents_s, 3),
        "index_total_events_per_s": round(total_rate),
        "index_loadavg": index_load,
        "fetch_floor_events_per_s": round(floor_rate),
        "index_vs_fetch_floor": round(rate / floor_rate, 3),
        "clients": args.clients,
        "workers": args.workers,
        "duration_s": args.duration,
        "requests": measured["requests"],
        "rps": measured["rps"],
        "p50_ms": measured["p50_ms"],
        "p99_ms": measured["p99_ms"],
        "errors": measured["errors"],
        "cache_hits": measured["cache_hits"],
        "loadavg": measured["loadavg"],
        "uncached_rps": uncached["rps"],
        "uncached_p50_ms": uncached["p50_ms"],
        "uncached_p99_ms": uncached["p99_ms"],
        "uncached_errors": uncached["errors"],
        "healthz_rps": baseline["rps"],
        "healthz_p50_ms": baseline["p50_ms"],
        "healthz_p99_ms": baseline["p99_ms"],
        "p99_vs_healthz": round(measured["p99_ms"] / baseline["p99_ms"], 2)
        if baseline["p99_ms"]
        else None,
        "goal_p99_ms": 50,
        "goal_events_per_s": 5000,
        "goals_met": measured["p99_ms"] <= 50 and measured["errors"] == 0 and total_rate >= 5000,
        "cpus": os.cpu_count(),
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
