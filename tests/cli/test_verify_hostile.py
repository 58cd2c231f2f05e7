"""``ledger verify`` on files built to mislead or to exhaust, as a real process.

A tensor-root match whose container holds anything beyond the state dict's
tensors (and a checkpoint's training state) is a MISMATCH naming it; a hostile
file gets UNKNOWN or a one-line input error, within 256 MiB of an idle run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from tests.cli.test_cli import chain_env
from tests.conftest import Chain
from tests.hashing.test_hostile import HOSTILE, rezip
from tests.training.test_flow import train

BUDGET_KIB = 256 * 1024

MEASURED = """
import resource, subprocess, sys
done = subprocess.run(sys.argv[1:], capture_output=True, text=True)
sys.stdout.write(done.stdout)
sys.stderr.write(done.stderr)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)
sys.exit(done.returncode)
"""


def verify(path: Path, env: dict[str, str], *args: str) -> tuple[int, str, str, int]:
    """``ledger verify`` in its own process: exit code, stdout, stderr, peak RSS (KiB)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    full_env.update(env)
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            MEASURED,
            sys.executable,
            "-m",
            "ledger",
            "verify",
            str(path),
            *args,
        ],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    *lines, peak = done.stderr.rstrip("\n").split("\n")
    return done.returncode, done.stdout, "\n".join(lines), int(peak)


def test_a_tensor_match_with_unaccounted_content_is_a_mismatch_naming_it(
    chain: Chain, tmp_path: Path
) -> None:
    train(chain, tmp_path)
    env = chain_env(chain, tmp_path / "ledger")
    genuine = torch.load(tmp_path / "model.pt", weights_only=True)
    other = {name: torch.randn_like(t) for name, t in genuine.items()}

    torch.save({"state_dict": genuine, "model": other}, tmp_path / "two.pt")
    rezip(tmp_path / "model.pt", tmp_path / "member.pt", add={"extra.bin": b"\1" * 64})
    for name, named in (("two.pt", "'model'"), ("member.pt", "extra.bin")):
        code, out, err, _ = verify(tmp_path / name, env, "--json")
        report = json.loads(out)
        assert (code, report["outcome"], report["matched_by"]) == (3, "mismatch", "tensors"), err
        container = next(c for c in report["checks"] if c["name"] == "container")
        assert not container["ok"] and named in container["detail"]

    optimizer = torch.optim.Adam([torch.nn.Parameter(t.clone()) for t in genuine.values()])
    checkpoint = {"state_dict": genuine, "optimizer_states": [optimizer.state_dict()], "epoch": 2}
    torch.save(checkpoint, tmp_path / "epoch=2.ckpt")
    code, out, err, _ = verify(tmp_path / "epoch=2.ckpt", env, "--json")
    assert code == 0, err
    container = next(c for c in json.loads(out)["checks"] if c["name"] == "container")
    assert container["ok"] and "optimizer_states" in container["detail"]


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_hostile_files_get_one_line_and_bounded_memory(
    chain: Chain, tmp_path: Path, kind: str
) -> None:
    train(chain, tmp_path)
    env = chain_env(chain, tmp_path / "ledger")
    code, _, _, idle = verify(tmp_path / "model.pt", env)  # recorded: matched by CID
    assert code == 0

    path = HOSTILE[kind](tmp_path)
    code, out, err, peak = verify(path, env)
    assert code in (4, 11), (code, out, err)
    assert "Traceback" not in err and "weights_only" not in out + err
    if code == 11:
        assert str(path) in err and len(err.strip().splitlines()) <= 2  # message (+ hint)
    else:
        assert "UNKNOWN" in out.upper()
    assert peak - idle <= BUDGET_KIB, f"{kind}: {(peak - idle) >> 10} MiB above an idle verify"
    line = next((x for x in (err + out).splitlines() if "tensors:" in x or "Error" in x), err)
    print(f"\n{kind}: exit {code}, +{(peak - idle) >> 10} MiB: {line.strip()[:200]}")


def test_a_zip_that_is_not_torchs_never_gets_torch_advice(chain: Chain, tmp_path: Path) -> None:
    train(chain, tmp_path)
    env = chain_env(chain, tmp_path / "ledger")
    path = tmp_path / "docs.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("word/document.xml", b"<w:document/>")
    code, out, err, _ = verify(path, env, "--json")
    assert code == 4, err
    tensors = next(c for c in json.loads(out)["checks"] if c["name"] == "tensors")
    assert "data.pkl" in tensors["detail"] and "weights_only" not in tensors["detail"]
