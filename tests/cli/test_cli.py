"""The ``ledger`` command line, run as a real process against the session's Anvil."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ledger.hashing.cid import file_cid
from ledger.hashing.tensors import state_dict_digest
from tests.conftest import Chain, free_port
from tests.hashing.test_tensors import make_state_dict, save_sharded
from tests.training.test_flow import train


def ledger(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "ledger", *args],
        env=full_env,
        text=True,
        capture_output=True,
        timeout=120,
        check=False,
    )


def chain_env(chain: Chain, data_dir: Path) -> dict[str, str]:
    chain.settings(data_dir)  # writes config.json with the registry address
    return {"LEDGER_HOME": str(data_dir)}


@pytest.mark.parametrize("version", [0, 1])
def test_cid_prints_what_ipfs_add_would(tmp_path: Path, version: int) -> None:
    path = tmp_path / "blob.bin"
    path.write_bytes(os.urandom(700_000))
    out = ledger("cid", str(path), "--cid-version", str(version))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(file_cid(path, cid_version=version))
    assert out.stdout.startswith("Qm" if version == 0 else "bafy")


def test_tensors_command_reads_a_folder(tmp_path: Path) -> None:
    sd = make_state_dict()
    save_sharded(sd, tmp_path / "model", shards=2)
    result = ledger("tensors", str(tmp_path / "model"), "--json")
    assert result.returncode == 0, result.stderr
    index = json.loads(result.stdout)
    assert index["root"] == state_dict_digest(sd).root.hex()
    assert set(index["tensors"]) == set(sd)


def test_a_missing_file_is_a_clear_input_error(tmp_path: Path) -> None:
    out = ledger("cid", str(tmp_path / "nope.pt"))
    assert out.returncode == 11
    assert "nope.pt" in out.stderr and "Traceback" not in out.stderr


def test_ledger_debug_shows_the_traceback_instead_of_the_one_line(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.pt")
    debug = ledger("cid", missing, env={"LEDGER_DEBUG": "1"})
    assert debug.returncode == 1
    assert "Traceback" in debug.stderr and "FileMissingError" in debug.stderr
    # `ledger verify` of a file, without typer, reports the same way (no registry here: 10)
    model = tmp_path / "model.pt"
    model.write_bytes(b"x")
    env = {"LEDGER_HOME": str(tmp_path / "empty")}
    out = ledger("verify", str(model), env=env)
    assert out.returncode == 10 and out.stderr.startswith("error: ")
    assert "ledger deploy" in out.stderr and "Traceback" not in out.stderr
    debug = ledger("verify", str(model), env={**env, "LEDGER_DEBUG": "1"})
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "ConfigError" in debug.stderr


def test_exit_codes_by_kind_of_error() -> None:
    """The table the docs give: one exit code per kind, on the error classes."""
    import ledger.errors as errors

    codes = {
        name: cls.exit_code
        for name, cls in vars(errors).items()
        if isinstance(cls, type) and issubclass(cls, errors.LedgerError)
    }
    api_only = ("LedgerError", "AuthError")  # the root is never raised; AuthError is HTTP 401
    kinds = {code for name, code in codes.items() if name not in api_only}
    assert kinds == {9, 10, 11, 12, 20, 30, 31, 40, 60, 130}
    assert (codes["ConfigError"], codes["InputError"], codes["StoreError"]) == (10, 11, 20)
    assert (codes["ChainError"], codes["CompilerError"], codes["RecordError"]) == (30, 31, 40)
    assert codes["AuditIndexError"] == 60
    # a keystore that cannot be opened (wrong password...): its own code, a ConfigError
    assert codes["KeystoreError"] == 12 and issubclass(errors.KeystoreError, errors.ConfigError)
    # `ledger replay` without a verdict; its verdicts are 0 reproduced and 8 diverged
    assert codes["ReplayError"] == codes["NotReplayableError"] == codes["CodeDriftError"] == 9
    assert codes["ReplayInterruptedError"] == 130  # Ctrl-C: as a shell reports SIGINT
    # subclasses keep their kind's code
    assert codes["FileMissingError"] == codes["NotFoundError"] == 11
    assert codes["IntegrityError"] == codes["StoreUnavailableError"] == 20
    assert codes["ChainUnavailableError"] == codes["TransactionRevertedError"] == 30
    assert codes["FeeAboveCapError"] == codes["InsufficientFundsError"] == 30


def test_verify_exit_codes_and_json(chain: Chain, tmp_path: Path) -> None:
    run = train(chain, tmp_path)
    env = chain_env(chain, tmp_path / "ledger")
    ok = ledger("verify", str(tmp_path / "model.pt"), "--json", env=env)
    assert ok.returncode == 0, ok.stderr
    report = json.loads(ok.stdout)
    assert report["outcome"] == "verified" and report["run_id"] == run.run_id

    state = torch.load(tmp_path / "model.pt", weights_only=True)
    state["fc1.bias"][0] += 1
    torch.save(state, tmp_path / "other.pt")
    assert ledger("verify", str(tmp_path / "other.pt"), env=env).returncode == 4
    mismatch = ledger("verify", str(tmp_path / "other.pt"), "--run", run.run_id, "--json", env=env)
    assert mismatch.returncode == 3
    assert json.loads(mismatch.stdout)["tensor_diff"]["changed"] == ["fc1.bias"]

    revoked = ledger("revoke", run.run_id, "--reason", "bad labels", env=env)
    assert revoked.returncode == 0, revoked.stderr
    human = ledger("verify", str(tmp_path / "model.pt"), env=env)
    assert human.returncode == 5
    assert "REVOKED" in human.stdout and "bad labels" in human.stdout


NO_TORCH_DRIVER = """
import sys
from ledger.cli.app import app
try:
    app(sys.argv[1:], prog_name="ledger")
except SystemExit as exc:
    code = exc.code
print("torch imported" if "torch" in sys.modules else "torch not imported", file=sys.stderr)
sys.exit(code)
"""


def verify_instrumented(path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``ledger verify --json`` in a fresh process that reports whether torch was imported."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    full_env.update(env)
    return subprocess.run(
        [sys.executable, "-c", NO_TORCH_DRIVER, "verify", str(path), "--json"],
        env=full_env,
        text=True,
        capture_output=True,
        timeout=120,
        check=False,
    )


def test_verify_of_a_recorded_file_never_imports_torch(chain: Chain, tmp_path: Path) -> None:
    train(chain, tmp_path)
    env = chain_env(chain, tmp_path / "ledger")
    recorded = verify_instrumented(tmp_path / "model.pt", env)
    assert recorded.returncode == 0, recorded.stderr
    assert json.loads(recorded.stdout)["matched_by"] == "file"
    assert "torch not imported" in recorded.stderr


def test_verify_by_tensor_root_of_a_plain_state_dict_never_imports_torch(
    chain: Chain, tmp_path: Path
) -> None:
    train(chain, tmp_path)
    env = chain_env(chain, tmp_path / "ledger")
    state = torch.load(tmp_path / "model.pt", weights_only=True)
    # a re-saved copy: another file (its CID is not on record), the same tensors
    torch.save(state, tmp_path / "copy.pt")
    copy = verify_instrumented(tmp_path / "copy.pt", env)
    assert copy.returncode == 0, copy.stderr
    report = json.loads(copy.stdout)
    assert (report["outcome"], report["matched_by"]) == ("verified", "tensors")
    assert "torch not imported" in copy.stderr
    # control: a transposed view holds the same values but is not contiguous, which
    # only torch reads; the same record is found, and this time torch was imported
    name = next(n for n, t in state.items() if t.dim() == 2)
    state[name] = state[name].t().contiguous().t()
    assert not state[name].is_contiguous()
    torch.save(state, tmp_path / "strided.pt")
    strided = verify_instrumented(tmp_path / "strided.pt", env)
    assert strided.returncode == 0, strided.stderr
    assert json.loads(strided.stdout)["tensor_root"] == report["tensor_root"]
    assert "torch imported" in strided.stderr


# `ledger verify` as the console script runs it (plain arguments: no typer), and as the
# typer command; each reports whether typer was loaded.
DIRECT_DRIVER = """
import sys
from ledger.cli.main import verify
code = verify(sys.argv[1:])
print("typer imported" if "typer" in sys.modules else "typer not imported", file=sys.stderr)
sys.exit(code)
"""
TYPER_DRIVER = """
import sys
from ledger.cli.main import run_app
sys.argv[0] = "ledger"
try:
    run_app(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
print("typer imported" if "typer" in sys.modules else "typer not imported", file=sys.stderr)
sys.exit(code)
"""


def run_driver(
    driver: str, args: list[str], env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    full_env.update(env)
    return subprocess.run(
        [sys.executable, "-c", driver, *args],
        env=full_env,
        text=True,
        capture_output=True,
        timeout=120,
        check=False,
    )


def test_verify_without_the_parser_answers_as_the_typer_command(
    chain: Chain, tmp_path: Path
) -> None:
    run = train(chain, tmp_path)
    env = chain_env(chain, tmp_path / "ledger")
    state = torch.load(tmp_path / "model.pt", weights_only=True)
    state["fc1.bias"][0] += 1
    torch.save(state, tmp_path / "other.pt")
    model, other = str(tmp_path / "model.pt"), str(tmp_path / "other.pt")
    home = env["LEDGER_HOME"]
    cases = {
        "verified": ([model, "--json"], 0),
        "verified, text": ([model], 0),
        "verified, options first": (["--run", run.run_id, "--data-dir", home, model], 0),
        "unknown": ([other, "--json"], 4),
        "mismatch": ([other, f"--run={run.run_id}", "--json"], 3),
        "bad run id": ([model, "--run", "0x1234"], 11),
    }
    for name, (args, code) in cases.items():
        direct = run_driver(DIRECT_DRIVER, ["verify", *args], env)
        typer_ = run_driver(TYPER_DRIVER, ["verify", *args], env)
        assert (direct.returncode, typer_.returncode) == (code, code), (name, direct.stderr)
        assert direct.stdout == typer_.stdout, name
        assert direct.stderr.replace("typer not imported", "typer imported") == typer_.stderr, name
        if code != 11:  # an error is reported by the CLI's own function, typer and all
            assert "typer not imported" in direct.stderr.splitlines()[-1], name
    # a misspelt option is the parser's to explain: the same usage error either way
    direct = run_driver(DIRECT_DRIVER, ["verify", model, "--jsn"], env)
    assert direct.returncode == 2 and "No such option" in direct.stderr


def test_verify_a_model_folder(chain: Chain, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    run = train(chain, tmp_path)
    env = chain_env(chain, tmp_path / "ledger")
    state = torch.load(tmp_path / "model.pt", weights_only=True)
    save_sharded(state, tmp_path / "hf", shards=2)
    out = ledger("verify", str(tmp_path / "hf"), "--json", env=env)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert (report["kind"], report["file_cid"], report["run_id"]) == ("folder", None, run.run_id)
    human = ledger("verify", str(tmp_path / "hf"), env=env)
    assert human.returncode == 0 and "no file CID" in human.stdout and "VERIFIED" in human.stdout
    (tmp_path / "hf" / "model-00001-of-00002.safetensors").unlink()
    missing = ledger("verify", str(tmp_path / "hf"), env=env)
    assert missing.returncode == 11
    assert "model-00001-of-00002.safetensors" in missing.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    save_file({}, str(empty / "unrelated.safetensors"))
    nothing = ledger("verify", str(empty), env=env)
    assert nothing.returncode == 11 and "without model weights" in nothing.stderr


def test_show_prints_the_on_chain_record(chain: Chain, tmp_path: Path) -> None:
    run = train(chain, tmp_path)
    out = ledger("show", run.run_id, "--json", env=chain_env(chain, tmp_path / "ledger"))
    assert out.returncode == 0, out.stderr
    record = json.loads(out.stdout)
    assert record["status"] == "finalized" and record["committer"] == chain.admin.address


def test_bad_run_id_and_missing_registry_are_explained(chain: Chain, tmp_path: Path) -> None:
    env = chain_env(chain, tmp_path / "ledger")
    bad = ledger("show", "0x123", env=env)
    assert bad.returncode == 11 and "0x123" in bad.stderr
    empty = {"LEDGER_HOME": str(tmp_path / "empty"), "LEDGER_RPC_URL": chain.rpc_url}
    (tmp_path / "model.pt").write_bytes(b"x")
    missing = ledger("verify", str(tmp_path / "model.pt"), env=empty)
    assert missing.returncode == 10
    assert "ledger deploy" in missing.stderr


def test_chain_up_deploy_down_up_keeps_state(tmp_path: Path) -> None:
    port = str(free_port())
    env = {"LEDGER_HOME": str(tmp_path / "home"), "LEDGER_RPC_URL": f"http://127.0.0.1:{port}"}
    try:
        assert ledger("chain", "up", "--port", port, env=env).returncode == 0
        status = ledger("chain", "status", "--port", port, "--json", env=env)
        assert json.loads(status.stdout)["chain_id"] == 31337
        deployed = ledger("deploy", env=env)
        assert deployed.returncode == 0, deployed.stderr
        config = json.loads((tmp_path / "home" / "config.json").read_text())
        assert config["chain_id"] == 31337 and config["registry_address"].startswith("0x")

        assert ledger("chain", "down", "--port", port, env=env).returncode == 0
        assert ledger("chain", "status", "--port", port, env=env).returncode == 1
        assert (tmp_path / "home" / "chain" / "state.json").is_file()

        assert ledger("chain", "up", "--port", port, env=env).returncode == 0
        # the registry survived the restart: a lookup works without redeploying
        probe = tmp_path / "probe.bin"
        probe.write_bytes(b"not weights")
        out = ledger("verify", str(probe), "--json", env=env)
        assert out.returncode == 4, out.stderr
        assert json.loads(out.stdout)["outcome"] == "unknown"
    finally:
        ledger("chain", "down", "--port", port, env=env)


def test_help_lists_the_commands() -> None:
    out = ledger("--help")
    assert out.returncode == 0
    for command in ("verify", "cid", "deploy", "chain", "revoke", "show", "tensors"):
        assert command in out.stdout


def test_proof_prints_a_proof_the_registry_accepts(chain: Chain, tmp_path: Path) -> None:
    run = train(chain, tmp_path, epochs=3)
    env = chain_env(chain, tmp_path / "ledger")
    out = ledger("proof", run.run_id, "1", env=env)
    assert out.returncode == 0, out.stderr
    proof = json.loads(out.stdout)
    assert proof["root_matches"] is True
    (entry,) = proof["checkpoints"]
    assert entry["step"] == 1 and entry["verified_by_registry"] is True
    assert len(entry["proof"]) in (1, 2)  # three leaves: depth 1 or 2 by sorted position
    missing = ledger("proof", run.run_id, "7", env=env)
    assert missing.returncode == 11 and "steps: 0, 1, 2" in missing.stderr


def test_proof_of_a_run_that_is_not_finalized_is_explained(chain: Chain, tmp_path: Path) -> None:
    run_id, _ = chain.registry.start_run(os.urandom(32))
    out = ledger("proof", "0x" + run_id.hex(), "0", env=chain_env(chain, tmp_path / "ledger"))
    assert out.returncode == 11 and "not finalized" in out.stderr
