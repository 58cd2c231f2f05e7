"""Build the registry artifact from ``contracts/`` with py-solc-x.

Using ledger needs no compiler: the artifact (ABI, bytecode, compiler version,
settings, source digests) is committed at ``ledger/chain/artifacts``. This module
rebuilds it. It drives a native ``solc`` when one is on PATH at the pinned
version, and otherwise npm's solcjs (``node_modules/.bin/solcjs``) through
:mod:`ledger.chain._solcjs_shim`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import sys
import tempfile
from pathlib import Path
from typing import Any

from ledger.errors import CompilerError

CONTRACT_NAME = "ProvenanceRegistry"
SOURCE_UNIT = "contracts/ProvenanceRegistry.sol"
ARTIFACT_PATH = Path(__file__).parent / "artifacts" / f"{CONTRACT_NAME}.json"

SETTINGS: dict[str, Any] = {
    "optimizer": {"enabled": True, "runs": 10_000},
    "evmVersion": "cancun",
    "remappings": ["@openzeppelin/=node_modules/@openzeppelin/"],
    "outputSelection": {
        "*": {
            "*": [
                "abi",
                "evm.bytecode.object",
                "evm.deployedBytecode.object",
                "evm.deployedBytecode.immutableReferences",
                "metadata",
            ]
        }
    },
}


def project_root() -> Path:
    """The source checkout holding ``contracts/`` and ``node_modules/``."""
    here = Path(__file__).resolve().parents[2]
    for candidate in (here, Path.cwd()):
        if (candidate / SOURCE_UNIT).is_file():
            return candidate
    raise CompilerError(
        f"cannot find {SOURCE_UNIT} next to the ledger package or in the working directory",
        hint="compile from a source checkout of ledger",
    )


def _solc_binary(root: Path, workdir: Path) -> Path:
    """A native solc if present, else an executable wrapper around solcjs."""
    native = shutil.which("solc")
    if native:
        return Path(native)
    solcjs = root / "node_modules" / "solc" / "solc.js"
    if not solcjs.is_file():
        raise CompilerError(
            "no native solc on PATH and no solcjs in node_modules/",
            hint="run `npm ci` in the project root (package.json pins solc)",
        )
    wrapper = workdir / "solc"
    wrapper.write_text(
        f'#!/bin/sh\nexec "{sys.executable}" -m ledger.chain._solcjs_shim "{solcjs}" "$@"\n'
    )
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    return wrapper


def compile_registry(root: Path | None = None) -> dict[str, Any]:
    """Compile the registry and return the artifact (not written anywhere)."""
    import solcx  # deferred: only developers rebuild the artifact
    import solcx.wrapper

    root = root or project_root()
    standard_input = {
        "language": "Solidity",
        "sources": {SOURCE_UNIT: {"urls": [SOURCE_UNIT]}},
        "settings": SETTINGS,
    }
    with tempfile.TemporaryDirectory(prefix="ledger-solc-") as tmp:
        binary = _solc_binary(root, Path(tmp))
        old_cwd = os.getcwd()
        os.chdir(root)  # solcjs resolves `urls` and remappings against the working directory
        try:
            output = solcx.compile_standard(
                standard_input, solc_binary=binary, base_path=str(root), allow_paths=str(root)
            )
            version = str(solcx.wrapper.get_solc_version(binary, with_commit_hash=True))
        except solcx.exceptions.SolcError as exc:
            raise CompilerError(f"solc failed on {SOURCE_UNIT}: {exc}") from exc
        finally:
            os.chdir(old_cwd)
    errors = [e for e in output.get("errors", []) if e.get("severity") == "error"]
    if errors:
        raise CompilerError("\n".join(e.get("formattedMessage", str(e)) for e in errors))
    contract = output["contracts"][SOURCE_UNIT][CONTRACT_NAME]
    sources = sorted(output["sources"])
    return {
        "contractName": CONTRACT_NAME,
        "sourceUnit": SOURCE_UNIT,
        "compiler": {"name": "solc", "version": version},
        "settings": {k: v for k, v in SETTINGS.items() if k != "outputSelection"},
        "sourceDigests": {p: _sha256(root / p) for p in sources},
        "abi": contract["abi"],
        "bytecode": "0x" + contract["evm"]["bytecode"]["object"],
        "deployedBytecode": "0x" + contract["evm"]["deployedBytecode"]["object"],
        # byte ranges of the runtime code that the constructor fills in (EIP-712 caches)
        "immutableReferences": contract["evm"]["deployedBytecode"].get("immutableReferences", {}),
    }


def _sha256(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def write_artifact(artifact: dict[str, Any], path: Path = ARTIFACT_PATH) -> Path:
    """Write the artifact as stable, diff-friendly JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(artifact, indent=2, sort_keys=True) + "\n")
    return path


def load_artifact(path: Path = ARTIFACT_PATH) -> dict[str, Any]:
    """The committed artifact."""
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise CompilerError(
            f"registry artifact missing at {path.name}", hint="run `make contracts` to build it"
        ) from exc
    return data


if __name__ == "__main__":
    print(write_artifact(compile_registry()))
