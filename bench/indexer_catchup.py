"""The indexer's catch-up through a provider-like RPC (not part of CI).

1. A throw-away Anvil; the registry deployed; ``--events`` run events
   synthesized in bulk through the batch functions (bench/api_load.py's
   ``synthesize``: ``startRuns``, ``commitCheckpoints``, ``finalizeRuns`` of 400
   runs a transaction, three events per run).
2. Baseline, in the same run: one ``Indexer.run_once`` over the whole chain
   into a fresh SQLite index, straight from Anvil.
3. The same pass into another fresh index through
   :mod:`ledger.testing.provider`'s proxy (its own process) in front of the same Anvil,
   capping ``eth_getLogs`` at ``--max-log-results`` results (Infura's -32005,
   with its range hint) and ``--max-log-blocks`` blocks (QuickNode's -32614).

Printed: events per second over the events stage (fetch, decode, write) and
over the whole pass (plus the documents stage: manifests and metrics looked up
in the store), the RPC calls and refusals the proxy counted, the ratio of the
proxied to the direct rate, and a profile of the proxied pass's events stage
(``--profile``). Goal: >= 5,000 events/s through the proxy on 100,000 events.
The last line is one JSON document with every figure.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from api_load import free_port, loadavg, synthesize

from ledger.chain.admin import deploy_registry
from ledger.chain.anvil import AnvilProcess
from ledger.chain.logs import forget_learned_caps
from ledger.config import Settings, load_settings, save_deployment
from ledger.store import LocalStore
from ledger.testing.provider import ProviderRules


def start_proxy(upstream: str, rules: ProviderRules) -> tuple[subprocess.Popen[str], str]:
    """The proxy in its own process, as a provider is: it does not share this
    process's interpreter lock with the indexer it serves."""
    command = [sys.executable, "-m", "ledger.testing.provider", upstream]
    if rules.max_log_blocks is not None:
        command += ["--max-log-blocks", str(rules.max_log_blocks)]
    if rules.max_log_results is not None:
        command += ["--max-log-results", str(rules.max_log_results)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    url = process.stdout.readline().strip()
    if not url.startswith("http://"):
        process.kill()
        raise SystemExit(f"the proxy did not start: {url!r}")
    return process, url


def read_counters(url: str) -> dict[str, dict[str, int]]:
    with urllib.request.urlopen(url + "/counters", timeout=30) as response:
        counters: dict[str, dict[str, int]] = json.loads(response.read())
    return counters


def one_pass(settings: Settings, index_path: Path, profile: bool) -> dict[str, Any]:
    """One catch-up pass into a fresh SQLite index at ``index_path``."""
    from ledger.index import open_index
    from ledger.index.service import build_indexer

    forget_learned_caps()
    engine = open_index(settings, f"sqlite:///{index_path}")
    indexer = build_indexer(settings, engine, confirmations=0)
    indexer.rpc.timeout = 300
    before = loadavg()
    profiler = cProfile.Profile() if profile else None
    began = time.perf_counter()
    if profiler is not None:
        profiler.enable()
    result = indexer.run_once()
    if profiler is not None:
        profiler.disable()
    seconds = time.perf_counter() - began
    engine.dispose()
    figures: dict[str, Any] = {
        "events": result.events,
        "documents": result.documents,
        "events_s": round(result.events_seconds, 3),
        "events_per_s": round(result.events / result.events_seconds),
        "pass_s": round(seconds, 3),
        "pass_events_per_s": round(result.events / seconds),
        "loadavg": f"{before} -> {loadavg()}",
    }
    if profiler is not None:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(18)
        figures["profile"] = out.getvalue()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--documented", type=int, default=1000)
    parser.add_argument("--max-log-results", type=int, default=10_000)
    parser.add_argument("--max-log-blocks", type=int, default=10_000)
    parser.add_argument("--profile", action="store_true", help="profile the proxied pass")
    parser.add_argument("--quick", action="store_true", help="10,000 events")
    args = parser.parse_args()
    if args.quick:
        args.events, args.documented = 10_000, 200
    runs = max(1, args.events // 3)
    rules = ProviderRules(max_log_blocks=args.max_log_blocks, max_log_results=args.max_log_results)

    with tempfile.TemporaryDirectory(prefix="ledger-bench-") as tmp:
        root = Path(tmp)
        anvil = AnvilProcess(root / "chain", port=free_port())
        anvil.start(persist=False)
        try:
            settings = Settings(data_dir=root / "data", rpc_url=anvil.rpc_url)
            registry, tx = deploy_registry(settings)
            save_deployment(
                settings,
                address=registry.address,
                chain_id=registry.chain_id,
                block=tx.block_number,
            )
            store = LocalStore(settings.store_dir)
            print(f"synthesizing {runs * 3} events ({runs} runs) ...", flush=True)
            made = synthesize(registry, store, runs, min(args.documented, runs))
            print(f"  {made['seconds']:.1f} s on chain", flush=True)
            settings = load_settings(settings.data_dir)

            direct = one_pass(settings, root / "direct.sqlite", profile=False)
            print(f"direct from Anvil: {direct}", flush=True)
            proxy, url = start_proxy(anvil.rpc_url, rules)
            try:
                os.environ["LEDGER_RPC_URL"] = url
                proxied_settings = load_settings(settings.data_dir)
                proxied = one_pass(proxied_settings, root / "proxied.sqlite", args.profile)
                counters = read_counters(url)
                calls, events = counters["calls"], counters["events"]
            finally:
                proxy.terminate()
                proxy.wait(timeout=30)
        finally:
            os.environ.pop("LEDGER_RPC_URL", None)
            anvil.stop()

    profile = proxied.pop("profile", None)
    if profile:
        print(profile)
    print(
        f"through the proxy ({args.max_log_results:,}-result, {args.max_log_blocks:,}-block "
        f"eth_getLogs caps): {proxied}\n"
        f"  RPC calls {calls}; refused for results {events['refused_results']}, "
        f"for range {events['refused_range']}\n"
        f"  catch-up {proxied['pass_events_per_s']:,} events/s over the whole pass "
        f"(events stage {proxied['events_per_s']:,}/s) vs {direct['pass_events_per_s']:,} "
        f"({direct['events_per_s']:,}/s) straight from Anvil: ratio "
        f"{proxied['pass_events_per_s'] / direct['pass_events_per_s']:.2f}",
        flush=True,
    )
    assert proxied["events"] == direct["events"], "the proxied pass indexed other events"
    figures = {
        "bench": "indexer_catchup",
        "events": proxied["events"],
        "max_log_results": args.max_log_results,
        "max_log_blocks": args.max_log_blocks,
        "synthesize_s": round(made["seconds"], 2),
        "direct_events_per_s": direct["events_per_s"],
        "direct_pass_events_per_s": direct["pass_events_per_s"],
        "proxied_events_per_s": proxied["events_per_s"],
        "proxied_pass_events_per_s": proxied["pass_events_per_s"],
        "proxied_vs_direct": round(proxied["pass_events_per_s"] / direct["pass_events_per_s"], 3),
        "get_logs_calls": calls["eth_getLogs"],
        "refused_results": events["refused_results"],
        "refused_range": events["refused_range"],
        "rpc_calls": sum(calls.values()),
        "loadavg": proxied["loadavg"],
        "goal_events_per_s": 5000,
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
