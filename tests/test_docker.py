"""docker/: the compose file validates against the Compose Specification and is wired right.

No container engine runs here, so ``docker compose config`` is replaced by
check-jsonschema's vendored compose-spec schema (the same JSON schema Compose
uses), plus the cross-checks ``docker compose config`` would make (references
between services and volumes) and this project's own rules (ports on
127.0.0.1, health checks, pinned images, the ledger pointed at Kubo).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from ledger.store._kubo import parse_api_address

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker" / "docker-compose.yml"
DOCKERFILE = ROOT / "docker" / "Dockerfile"
CHECK = Path(sys.executable).with_name("check-jsonschema")


def validate(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CHECK), "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document: dict[str, Any] = YAML(typ="safe").load(COMPOSE.read_text())
    return document


def test_compose_file_matches_the_compose_spec() -> None:
    done = validate(COMPOSE)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_validator_rejects_a_broken_compose_file(tmp_path: Path) -> None:
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(
        COMPOSE.read_text().replace("service_completed_successfully", "service_done", 1)
    )
    done = validate(broken)
    assert done.returncode == 1 and "service_done" in done.stdout


@pytest.mark.skipif(
    shutil.which("docker") is None
    or subprocess.run(["docker", "compose", "version"], capture_output=True).returncode != 0,
    reason="no docker compose plugin on this machine (the schema check above stands in)",
)
def test_docker_compose_config_accepts_it() -> None:
    done = subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE), "config", "--quiet"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def test_references_resolve(compose: dict[str, Any]) -> None:
    services = compose["services"]
    declared = set(compose["volumes"])
    used: set[str] = set()
    for name, service in services.items():
        for target in service.get("depends_on", {}):
            assert target in services, f"{name} depends on unknown service {target}"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            assert not source.startswith((".", "/")), f"{name} mounts a host path: {volume}"
            used.add(source)
        build = service.get("build")
        if build:
            context = (COMPOSE.parent / build["context"]).resolve()
            assert (context / build["dockerfile"]).resolve() == DOCKERFILE
    assert used == declared, "every named volume is used, and declared"


def test_ports_are_bound_to_loopback(compose: dict[str, Any]) -> None:
    ports = [p for s in compose["services"].values() for p in s.get("ports", [])]
    assert ports
    for port in ports:
        assert str(port).startswith("127.0.0.1:"), port


def test_long_running_services_have_health_checks(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in services.items():
        if service.get("restart") == "no":  # the one-shot deploy
            continue
        assert "healthcheck" in service, name
        test = service["healthcheck"]["test"]
        assert test[0] == "CMD" and len(test) > 1, name


def test_images_are_pinned_and_official(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["anvil"]["image"].startswith("ghcr.io/foundry-rs/foundry:v")
    assert services["kubo"]["image"].startswith("ipfs/kubo:v")


def test_ledger_uses_kubo_and_anvil_and_waits_for_the_deploy(compose: dict[str, Any]) -> None:
    services = compose["services"]
    ledger = services["ledger"]
    env = ledger["environment"]
    api = parse_api_address(env["LEDGER_IPFS_API"])
    assert api.host == "kubo" and api.port == 5001
    assert env["LEDGER_RPC_URL"] == "http://anvil:8545"
    assert ledger["depends_on"]["deploy"]["condition"] == "service_completed_successfully"
    assert ledger["depends_on"]["kubo"]["condition"] == "service_healthy"
    deploy = services["deploy"]
    assert "ledger deploy" in deploy["command"][0]
    assert deploy["volumes"] == ledger["volumes"], "the deploy records into the API's data dir"


def test_dockerfile_installs_the_cpu_torch_pinned_by_the_project() -> None:
    text = DOCKERFILE.read_text()
    # torch is an extra of the package; the Makefile pins the build the project tests with
    pinned = re.search(r"pip install --quiet torch==([\d.]+)", (ROOT / "Makefile").read_text())
    assert pinned is not None
    install = re.search(r"pip install --index-url (\S+) torch==([\d.]+)", text)
    assert install is not None
    assert install.group(1).endswith("/whl/cpu") and install.group(2) == pinned.group(1)
    assert text.index("torch==") < text.index("pip install ."), "torch before the project"
    assert re.search(r"^USER (?!root)\w+", text, re.MULTILINE), "runs unprivileged"
