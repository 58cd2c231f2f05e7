"""Gas used by each registry write, on a throw-away local Anvil.

Prints a table, then one JSON line with the figures. Baseline for comparison:
the product goal that start + finalize of one run stays under 200,000 gas
(the Ethereum Attestation Service spends 180k-320k gas per attestation).

Run: ``.venv/bin/python bench/gas.py``
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
from pathlib import Path
from typing import cast

from eth_account import Account
from eth_account.signers.local import LocalAccount

from ledger.chain.anvil import AnvilProcess
from ledger.chain.registry import Registry, Relation, connect_web3
from ledger.config import ANVIL_DEV_KEY

GOAL_START_PLUS_FINALIZE = 200_000


def digest() -> bytes:
    return os.urandom(32)


def main() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    with tempfile.TemporaryDirectory() as tmp:
        anvil = AnvilProcess(Path(tmp), port=port)
        anvil.start(persist=False)
        try:
            w3 = connect_web3(anvil.rpc_url)
            account = cast(LocalAccount, Account.from_key(ANVIL_DEV_KEY))
            registry, deployed = Registry.deploy(w3, account)
            run_id, start = registry.start_run(digest())
            first = registry.commit_checkpoint(run_id, 0, digest(), digest(), digest())
            second = registry.commit_checkpoint(run_id, 1, digest(), digest(), digest())
            final = registry.finalize_run(run_id, digest(), digest(), digest(), digest(), 2)
            child, start_child = registry.start_run(digest(), [(run_id, Relation.FINE_TUNE)])
            failed = registry.mark_failed(child, "diverged")
            revoked = registry.revoke_run(run_id, "leaked test data")
        finally:
            anvil.stop()
    figures = {
        "deploy": deployed.gas_used,
        "start_run": start.gas_used,
        "start_run_one_parent": start_child.gas_used,
        "commit_checkpoint_first": first.gas_used,
        "commit_checkpoint_next": second.gas_used,
        "finalize_run": final.gas_used,
        "mark_failed": failed.gas_used,
        "revoke_run": revoked.gas_used,
        "start_plus_finalize": start.gas_used + final.gas_used,
    }
    for name, gas in figures.items():
        print(f"{name:28s} {gas:>10,d}")
    ratio = figures["start_plus_finalize"] / GOAL_START_PLUS_FINALIZE
    print(f"start+finalize / goal ({GOAL_START_PLUS_FINALIZE:,}) = {ratio:.2f}")
    print(json.dumps({**figures, "ratio_to_goal": round(ratio, 3)}, sort_keys=True))


if __name__ == "__main__":
    main()
