"""RPC calls and wall time of ``ledger verify``, ``show``, ``lineage`` and ``proof``
through a provider-like endpoint, at two history lengths.

For each length L (default 500 and 2,500 blocks), on its own throw-away Anvil:
deploy the registry, mine L empty blocks, record a base run and a fine-tune of it
(two checkpoints, final weights), mine L more blocks. Then each command runs as
the console script does (``python -m ledger``, a subprocess) through
:class:`ledger.testing.provider.ProviderProxy`, which refuses ``eth_getLogs``
over more than 50 blocks (a provider's range cap, tightened so short histories
show it). The proxy counts every JSON-RPC call.

Baseline, measured in the same run: a registry-2 style read, a scan of the
registry's ``RunStarted`` logs from its deploy block to the head through the same
proxy (what ``verify`` did per lookup before registry 3): its calls grow with the
chain. Ratios printed: calls and wall time at the longer length over the shorter.

Goals (issue #22): the same number of calls at both lengths, at most 20 for
``verify``.

Run: ``.venv/bin/python bench/real_network.py [--lengths 500 2500]``. The
machine is shared: wall times carry the load average printed beside them; the
call counts do not depend on it. The last line is JSON with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ledger.chain.admin import RegistryAdmin  # noqa: E402
from ledger.chain.anvil import AnvilProcess, free_port  # noqa: E402
from ledger.chain.logs import forget_learned_caps, scan_logs  # noqa: E402
from ledger.chain.records import FinalRecord  # noqa: E402
from ledger.chain.rpc import JsonRpc  # noqa: E402
from ledger.chain.sender import Signer  # noqa: E402
from ledger.config import ANVIL_DEV_KEY, Secret, Settings, save_deployment  # noqa: E402
from ledger.hashing.merkle import CheckpointLeaf, checkpoint_root  # noqa: E402
from ledger.ids import Relation  # noqa: E402
from ledger.record.artifacts import store_weights  # noqa: E402
from ledger.record.manifest import build_manifest, canonical_json  # noqa: E402
from ledger.store import LocalStore  # noqa: E402
from ledger.testing.provider import ProviderProxy, ProviderRules  # noqa: E402

LOG_LIMIT = 50
GOAL_VERIFY_CALLS = 20


@dataclass
class History:
    length: int
    anvil: AnvilProcess
    data_dir: Path
    files: dict[str, Path]
    runs: dict[str, str]
    deploy_block: int
    address: str


def _weights(path: Path, seed: int) -> Path:
    import torch

    generator = torch.Generator().manual_seed(seed)
    state = {f"layer{i}.weight": torch.randn(64, 64, generator=generator) for i in range(4)}
    torch.save(state, path)
    return path


def build(length: int, root: Path) -> History:
    """A registry on a new Anvil with ``length`` blocks before and after a run family."""
    anvil = AnvilProcess(root / "anvil", port=free_port())
    anvil.start(persist=False)
    slow = JsonRpc(anvil.rpc_url, timeout=900)  # Anvil slows down as its chain grows
    registry, deployed = RegistryAdmin.deploy(JsonRpc(anvil.rpc_url), Signer(Secret(ANVIL_DEV_KEY)))
    slow("anvil_mine", hex(length))
    data_dir = root / "data"
    settings = Settings(data_dir=data_dir, rpc_url=anvil.rpc_url)
    save_deployment(
        settings, address=registry.address, chain_id=registry.chain_id, block=deployed.block_number
    )
    store = LocalStore(settings.store_dir)
    files = {
        name: _weights(root / f"{name}.pt", seed)
        for seed, name in enumerate(("base", "checkpoint", "checkpoint2", "model"))
    }

    def start(name: str, parents: Sequence[tuple[bytes, Relation]] = ()) -> bytes:
        listed = [{"run_id": "0x" + p.hex(), "relation": "fine-tune"} for p, _ in parents]
        manifest = build_manifest(name=name, config={"bench": True}, parents=listed)
        cid = store.put_bytes(canonical_json(manifest, what="manifest"))
        return registry.start_run(cid.digest, parents)[0]

    def finalize(run_id: bytes, weights: Path, leaves: list[CheckpointLeaf]) -> None:
        file_cid, tensors, metrics = store_weights(store, "0x" + run_id.hex(), weights, {}, None)
        record = FinalRecord(
            file_cid.digest, tensors.root, metrics.digest, checkpoint_root(leaves), len(leaves)
        )
        registry.finalize_run(run_id, record)

    base = start("base")
    finalize(base, files["base"], [])
    tuned = start("fine-tuned", [(base, Relation.FINE_TUNE)])
    leaves = []
    for step, name in ((1, "checkpoint"), (2, "checkpoint2")):
        file_cid, tensors, metrics = store_weights(
            store, "0x" + tuned.hex(), files[name], {"loss": 1 / step}, step
        )
        leaf = CheckpointLeaf(step, file_cid.digest, tensors.root, metrics.digest)
        registry.commit_checkpoint(tuned, leaf)
        leaves.append(leaf)
    finalize(tuned, files["model"], leaves)
    slow("anvil_mine", hex(length))
    runs = {"base": "0x" + base.hex(), "tuned": "0x" + tuned.hex()}
    return History(length, anvil, data_dir, files, runs, deployed.block_number, registry.address)


COMMANDS: dict[str, list[str]] = {
    "verify": ["verify", "@model", "--json"],
    "verify_checkpoint": ["verify", "@checkpoint", "--json"],
    "show": ["show", "#tuned", "--json"],
    "lineage": ["lineage", "#base", "--json"],
    "proof": ["proof", "#tuned", "1"],
}


def run_command(history: History, name: str) -> dict[str, Any]:
    args = [
        str(history.files[a[1:]])
        if a.startswith("@")
        else history.runs[a[1:]]
        if a.startswith("#")
        else a
        for a in COMMANDS[name]
    ]
    rules = ProviderRules(max_log_blocks=LOG_LIMIT, range_style="infura")
    with ProviderProxy(history.anvil.rpc_url, rules) as proxy:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
        env.update(LEDGER_HOME=str(history.data_dir), LEDGER_RPC_URL=proxy.url)
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "ledger", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        wall = time.perf_counter() - started
        if done.returncode != 0:
            raise SystemExit(f"ledger {' '.join(args)} failed: {done.stderr}")
        return {
            "calls": proxy.total_calls(),
            "by_method": dict(proxy.calls),
            "refused": proxy.events["refused_range"] + proxy.events["refused_results"],
            "wall_s": wall,
        }


def scan_baseline(history: History) -> dict[str, Any]:
    """A whole-registry scan of RunStarted logs through the same capped proxy."""
    from ledger.chain.abi import registry_abi

    forget_learned_caps()
    rules = ProviderRules(max_log_blocks=LOG_LIMIT, range_style="infura")
    with ProviderProxy(history.anvil.rpc_url, rules) as proxy:
        query = {"address": history.address, "topics": [registry_abi().event_topic("RunStarted")]}
        started = time.perf_counter()
        found = sum(
            len(logs) for _, logs in scan_logs(JsonRpc(proxy.url), query, history.deploy_block)
        )
        wall = time.perf_counter() - started
        calls = proxy.total_calls()
    forget_learned_caps()
    return {"calls": calls, "wall_s": wall, "events": found}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--lengths", type=int, nargs=2, default=[500, 2_500])
    parser.add_argument("--repeat", type=int, default=3, help="runs of each command (median)")
    args = parser.parse_args(argv)
    figures: dict[str, Any] = {"log_block_limit": LOG_LIMIT, "lengths": args.lengths}
    with tempfile.TemporaryDirectory(prefix="ledger-bench-net-") as tmp:
        for length in args.lengths:
            started = time.perf_counter()
            history = build(length, Path(tmp) / f"h{length}")
            try:
                print(
                    f"history {length}: built in {time.perf_counter() - started:.1f} s "
                    f"(head {history.deploy_block + 2 * length + 7} blocks)",
                    flush=True,
                )
                for name in COMMANDS:
                    runs = [run_command(history, name) for _ in range(args.repeat)]
                    calls = {r["calls"] for r in runs}
                    if len(calls) != 1:
                        raise SystemExit(f"{name}: calls differ between runs: {calls}")
                    wall = statistics.median(r["wall_s"] for r in runs)
                    figures[f"{name}_calls_{length}"] = runs[0]["calls"]
                    figures[f"{name}_refused_{length}"] = runs[0]["refused"]
                    figures[f"{name}_wall_s_{length}"] = round(wall, 3)
                    print(
                        f"  {name:18} {runs[0]['calls']:3} calls  {wall:6.2f} s  "
                        f"{runs[0]['by_method']}  (load average {os.getloadavg()[0]:.2f})",
                        flush=True,
                    )
                scan = scan_baseline(history)
                figures[f"scan_calls_{length}"] = scan["calls"]
                figures[f"scan_wall_s_{length}"] = round(scan["wall_s"], 3)
                print(f"  {'baseline scan':18} {scan['calls']:3} calls  {scan['wall_s']:6.2f} s")
            finally:
                history.anvil.stop()
    short, long = args.lengths
    for name in (*COMMANDS, "scan"):
        figures[f"{name}_calls_ratio"] = round(
            figures[f"{name}_calls_{long}"] / figures[f"{name}_calls_{short}"], 3
        )
        figures[f"{name}_wall_ratio"] = round(
            figures[f"{name}_wall_s_{long}"] / max(figures[f"{name}_wall_s_{short}"], 1e-9), 3
        )
        print(
            f"{name:18} calls {figures[f'{name}_calls_{short}']} -> "
            f"{figures[f'{name}_calls_{long}']} (x{figures[f'{name}_calls_ratio']}), "
            f"wall x{figures[f'{name}_wall_ratio']}"
        )
    verify_calls = figures[f"verify_calls_{long}"]
    print(
        f"verify: {verify_calls} calls, goal <= {GOAL_VERIFY_CALLS} "
        f"({verify_calls / GOAL_VERIFY_CALLS:.2f})"
    )
    print(json.dumps(figures, sort_keys=True))


if __name__ == "__main__":
    main()
