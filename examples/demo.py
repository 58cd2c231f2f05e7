"""The main job, end to end on the embedded defaults (``make demo``).

1. start a local Anvil chain with its state in ``demo-out/.ledger``;
2. deploy the registry;
3. train the price-forecast example with the ledger hook;
4. verify the trained model (verified);
5. verify a copy with one flipped byte (not verified), and explain it against the run;
6. print what to run next.

Each ledger step runs the real ``ledger`` CLI, so the commands printed are the
ones a user would type. Set ``LEDGER_DEMO_PORT`` to use another port than 8545.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import zipfile
from pathlib import Path

OUT = Path("demo-out")


def ledger(
    *args: str, env: dict[str, str], expect: int | None = 0, quiet: bool = False
) -> subprocess.CompletedProcess[str]:
    if not quiet:
        print(f"\n$ ledger {shlex.join(args)}", flush=True)
    proc = subprocess.run(
        [sys.executable, "-m", "ledger", *args],
        env=env,
        text=True,
        capture_output=True,
        check=False,
    )
    if not quiet:
        print(proc.stdout, end="")
    print(proc.stderr, end="", file=sys.stderr)
    if expect is not None and proc.returncode != expect:
        raise SystemExit(f"`ledger {args[0]}` exited {proc.returncode}, expected {expect}")
    return proc


def flip_one_byte(source: Path, target: Path) -> int:
    """Copy ``source`` flipping one byte inside its largest tensor's data; returns the offset."""
    data = bytearray(source.read_bytes())
    with zipfile.ZipFile(source) as archive:
        record = max(
            (i for i in archive.infolist() if "/data/" in i.filename), key=lambda i: i.file_size
        )
    # local file header: 30 bytes + name + extra field, then the stored bytes
    offset = record.header_offset + 30 + len(record.filename) + len(record.extra)
    offset += record.file_size // 2
    data[offset] ^= 0x01
    target.write_bytes(bytes(data))
    return offset


def main() -> None:
    OUT.mkdir(exist_ok=True)
    port = os.environ.get("LEDGER_DEMO_PORT", "8545")
    env = {
        **os.environ,
        "LEDGER_HOME": str(OUT / ".ledger"),
        "LEDGER_RPC_URL": f"http://127.0.0.1:{port}",
    }
    ledger("chain", "up", "--port", port, env=env)
    ledger("deploy", env=env)

    model = OUT / "price-forecast.pt"
    print(f"\n$ python -m examples.price_forecast --out {model}", flush=True)
    subprocess.run(
        [sys.executable, "-m", "examples.price_forecast", "--out", str(model)],
        env=env,
        check=True,
    )

    ledger("verify", str(model), env=env)
    run_id = json.loads(ledger("verify", str(model), "--json", env=env, quiet=True).stdout)[
        "run_id"
    ]

    tampered = OUT / "price-forecast-tampered.pt"
    offset = flip_one_byte(model, tampered)
    print(f"\n(flipped one bit of the byte at offset {offset} into {tampered})")
    unknown = ledger("verify", str(tampered), env=env, expect=4)
    explained = ledger("verify", str(tampered), "--run", run_id, env=env, expect=3)
    assert unknown.returncode and explained.returncode

    print(f"""
Done: {model} VERIFIED; its tampered copy NOT VERIFIED (unknown, and a mismatch against
run {run_id} naming the changed tensor).

The chain keeps running. Next (in this shell):
  export PATH=$PWD/.venv/bin:$PATH
  export LEDGER_HOME={env["LEDGER_HOME"]} LEDGER_RPC_URL={env["LEDGER_RPC_URL"]}
  ledger show {run_id}
  ledger tensors {model} --json
  ledger cid {model}
  ledger revoke {run_id} --reason "leaked test data"
  ledger verify {model}          # now REVOKED, exit 5
  ledger chain down --port {port}     # stop the chain; its state is kept for `chain up`
""")


if __name__ == "__main__":
    main()
