"""The installable package: its public names, its wheel, and the wheel installed.

The fast tests check ``import ledger``. The slow ones build the wheel as a user's
pip would, install it (without torch) into one virtualenv per test session, and
run ``ledger`` from there against the session's Anvil: what a ``pip install
ledger-provenance`` gets, not what the checkout happens to have.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import venv
import zipfile
from collections.abc import Iterator
from email.parser import Parser
from pathlib import Path

import pytest

import ledger
from tests.conftest import Chain, free_port

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("typer", "click", "web3", "torch", "rich", "numpy", "sqlalchemy", "fastapi")


def run_python(code: str, *, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``code`` in a fresh interpreter of this environment, the checkout first on its path."""
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        text=True,
        capture_output=True,
        timeout=120,
        check=False,
    )


# -- import ledger ---------------------------------------------------------------


def test_every_public_name_resolves_and_is_listed() -> None:
    for name in ledger.__all__:
        assert getattr(ledger, name) is not None, name
    assert set(ledger.__all__) == {"__version__", *ledger._EXPORTS}
    assert set(ledger.__all__) <= set(dir(ledger))
    namespace: dict[str, object] = {}
    exec("from ledger import *", namespace)
    assert ledger.__all__ and all(name in namespace for name in ledger.__all__)
    with pytest.raises(AttributeError, match="no attribute 'verify_everything'"):
        ledger.verify_everything  # noqa: B018


def test_public_names_are_the_defining_modules_objects() -> None:
    from ledger.errors import ConfigError, LedgerError
    from ledger.ids import Relation
    from ledger.verify import Verifier

    assert ledger.Verifier is Verifier and ledger.Relation is Relation
    assert issubclass(ledger.ConfigError, ledger.LedgerError)
    assert ledger.ConfigError is ConfigError and ledger.LedgerError is LedgerError
    for name in ledger.__all__:
        value = getattr(ledger, name)
        if isinstance(value, type) and issubclass(value, Exception):
            assert issubclass(value, LedgerError), name  # only the one error tree


def test_import_ledger_loads_nothing_heavy() -> None:
    out = run_python(
        "import sys, ledger\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        f"{HEAVY!r} or m.startswith('ledger.')))\n"
        "ledger.Verifier, ledger.file_cid, ledger.open_store, ledger.load_settings\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}))\n"
    )
    assert out.returncode == 0, out.stderr
    at_import, after_names = out.stdout.splitlines()
    assert at_import == "[]"  # not even a submodule of ledger
    assert after_names == "[]"  # the verify path's names stay free of them too


# -- the wheel -------------------------------------------------------------------


# What a source tree may hold that is no part of the sources (and large: node_modules).
NOT_SOURCES = shutil.ignore_patterns(
    ".git", ".venv", "node_modules", "build", "dist", "demo-out", "*.egg-info", "__pycache__",
    ".*_cache", ".peers", ".mlflow", ".ledger",
)  # fmt: skip


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel pip builds from a copy of this checkout's sources (an in-tree build
    would leave build/ behind, whose stale files later wheels would pick up); no build
    isolation, so nothing is downloaded."""
    source = tmp_path_factory.mktemp("source") / "ledger-provenance"
    shutil.copytree(ROOT, source, symlinks=True, ignore=NOT_SOURCES)
    out = tmp_path_factory.mktemp("wheel")
    pip = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation"]
    subprocess.run([*pip, "-w", str(out), str(source)], check=True, timeout=300)
    (found,) = out.glob("ledger_provenance-*.whl")
    return found


@pytest.mark.slow
def test_the_wheel_is_ledger_provenance_without_torch_and_with_its_files(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        (metadata_name,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        metadata = Parser().parsestr(archive.read(metadata_name).decode())
        artifact = json.loads(archive.read("ledger/chain/artifacts/ProvenanceRegistry.json"))
    assert metadata["Name"] == "ledger-provenance"
    assert metadata["Version"] == ledger.__version__
    requires = metadata.get_all("Requires-Dist") or []
    assert any(r.startswith("web3") for r in requires)
    torch_requires = [r for r in requires if r.split(";")[0].strip().startswith("torch")]
    assert torch_requires, "the torch extras are declared"
    assert all("extra ==" in r for r in torch_requires), torch_requires
    assert {"torch", "lightning", "hf"} <= set(metadata.get_all("Provides-Extra") or [])

    training = {n for n in names if n.startswith("ledger/training/")}
    assert {"ledger/training/__init__.py", "ledger/training/hook.py"} <= training
    assert all(n.endswith(".py") for n in training)
    sources = {
        (Path(folder) / name).relative_to(ROOT).as_posix()
        for folder, _, files in os.walk(ROOT / "ledger", followlinks=True)  # ledger/training
        for name in files
        if name.endswith(".py")
    }
    assert "ledger/training/hook.py" in sources
    assert sources - set(names) == set(), "a package missing from [tool.setuptools] packages"
    assert artifact["abi"] and artifact["bytecode"]
    assert "ledger/py.typed" in names
    # the page's chart library, copied from npm by `make setup` (make web-assets)
    assert "ledger/api/web/vendor/chart.umd.min.js" in names, "run `make web-assets` first"
    assert "ledger/api/web/app.js" in names
    top = {n.split("/")[0] for n in names}
    assert top == {"ledger", metadata_name.split("/")[0]}, top  # no examples/, tests/, ...
    assert not any(n.split("/")[0] in ("examples", "tests", "bench", "training") for n in names)


@pytest.fixture(scope="session")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv holding the wheel and its dependencies (from the configured
    index), and no torch; returns its bin folder."""
    env_dir = tmp_path_factory.mktemp("venv")
    venv.create(env_dir, with_pip=True)
    bin_dir = env_dir / "bin"
    pip = [str(bin_dir / "python"), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, str(wheel)], check=True, timeout=900)
    return bin_dir


def in_venv(
    bin_dir: Path, *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a program of the installed virtualenv with a clean environment: its bin
    folder only on PATH, no PYTHONPATH, nothing of ledger's configuration but ``env``."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("LEDGER_", "PYTHON"))}
    clean.update({"PATH": str(bin_dir), "HOME": str(bin_dir.parent), **(env or {})})
    return subprocess.run(
        [str(bin_dir / args[0]), *args[1:]],
        cwd=cwd,
        env=clean,
        text=True,
        capture_output=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def empty_folder(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "empty"
    folder.mkdir()
    yield folder


@pytest.mark.slow
def test_installed_without_torch_ledger_runs_from_the_wheel(
    installed: Path, empty_folder: Path
) -> None:
    where = in_venv(
        installed, "python", "-c", "import ledger; print(ledger.__file__)", cwd=empty_folder
    )
    assert where.returncode == 0, where.stderr
    assert "site-packages" in where.stdout and str(ROOT) not in where.stdout
    no_torch = in_venv(installed, "python", "-c", "import torch", cwd=empty_folder)
    assert no_torch.returncode == 1 and "No module named 'torch'" in no_torch.stderr
    helped = in_venv(installed, "ledger", "--help", cwd=empty_folder)
    assert helped.returncode == 0, helped.stderr
    assert "verify" in helped.stdout and "chain" in helped.stdout


@pytest.mark.slow
def test_installed_ledger_verifies_a_recorded_model(
    installed: Path, chain: Chain, tmp_path: Path, empty_folder: Path
) -> None:
    from tests.training.test_flow import train

    run = train(chain, tmp_path)  # the real hook, in this process (it has torch)
    env = {
        "LEDGER_RPC_URL": chain.rpc_url,
        "LEDGER_REGISTRY": chain.registry.address,
        "LEDGER_HOME": str(tmp_path / "ledger"),  # the store the run's documents are in
    }
    out = in_venv(
        installed, "ledger", "verify", str(tmp_path / "model.pt"), cwd=empty_folder, env=env
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "VERIFIED" in out.stdout and run.run_id in out.stdout
    assert list(empty_folder.iterdir()) == []  # it wrote nothing where it ran


@pytest.mark.slow
def test_installed_ledger_without_anvil_says_how_to_get_one(
    installed: Path, empty_folder: Path
) -> None:
    out = in_venv(
        installed,
        "ledger",
        "chain",
        "up",
        "--port",
        str(free_port()),
        cwd=empty_folder,
        env={"LEDGER_HOME": str(empty_folder / ".ledger")},
    )
    assert out.returncode == 10, out.stderr
    message, hint = out.stderr.splitlines()
    assert message.startswith("error: no anvil binary found")
    assert "LEDGER_ANVIL" in hint and "foundryup" in hint and "@foundry-rs/anvil" in hint
    assert "npm ci" not in hint  # there is no checkout to run it in


# -- ledger.training beside a user's own training package ------------------------


def test_ledger_training_and_a_users_training_package_coexist(tmp_path: Path) -> None:
    own = tmp_path / "training"
    own.mkdir()
    (own / "__init__.py").write_text("WHOSE = 'the user'\n")
    user, ours = "import training", "from ledger.training import LedgerRun"
    for imports in (f"{user}\n{ours}\n", f"{ours}\n{user}\n"):
        out = run_python(
            imports + "import ledger.training\n"
            "print(training.WHOSE, LedgerRun.__module__, ledger.training.__name__)\n",
            cwd=tmp_path,
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.split() == ["the", "user", "ledger.training.hook", "ledger.training"]
