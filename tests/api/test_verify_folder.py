"""``POST /api/v1/verify/folder``: a model folder uploaded file by file, verified as
``ledger verify FOLDER`` verifies it, over the real chain and store; every hostile
part is a 4xx naming it, and nothing is written outside the request's folder."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from ledger.api import folder_upload
from ledger.store import LocalStore
from ledger.verify import Outcome, Verifier
from tests.conftest import Chain
from tests.runs import Recorded, hf_folder, record_folder_run

MakeClient = Callable[..., TestClient]
PROBLEM = "application/problem+json"
ROUTE = "/api/v1/verify/folder"


def parts(folder: Path) -> list[tuple[str, tuple[str, bytes, str]]]:
    """The folder as the page sends it: one ``files`` part per file, named by its path."""
    return [
        ("files", (p.relative_to(folder).as_posix(), p.read_bytes(), "application/octet-stream"))
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    ]


@pytest.fixture
def model(chain: Chain, data_store: LocalStore, tmp_path: Path) -> tuple[Path, Recorded]:
    folder = hf_folder(tmp_path / "model")
    return folder, record_folder_run(chain.registry, data_store, "folder-run", folder)


def test_a_genuine_folder_verifies_like_the_cli(
    make_client: MakeClient, model: tuple[Path, Recorded], chain: Chain, data_store: LocalStore
) -> None:
    folder, run = model
    answer = make_client().post(ROUTE, files=parts(folder))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    cli = Verifier(chain.registry, data_store).verify_file(folder)
    assert body["outcome"] == cli.outcome.value == Outcome.VERIFIED.value
    assert body["run_id"] == run.hex
    assert body["tensor_root"] == run.tensor_root.hex() if run.tensor_root else False
    assert [c["name"] for c in body["checks"]] == [c.name for c in cli.checks]
    assert all(c["ok"] for c in body["checks"])
    assert not any("ledger-verify-" in c["detail"] for c in body["checks"])  # no server path
    # paths as a browser's webkitRelativePath gives them: the folder's name first
    named = [("files", (f"model/{name}", *rest)) for _, (name, *rest) in parts(folder)]
    again = make_client().post(ROUTE, files=named).json()
    assert again["outcome"] == "verified" and again["checks"] == body["checks"]


def test_a_tampered_file_is_named(
    make_client: MakeClient, model: tuple[Path, Recorded], tmp_path: Path
) -> None:
    folder, run = model
    tampered = tmp_path / "tampered"
    shutil.copytree(folder, tampered)
    shard = tampered / "model-00002-of-00002.safetensors"
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0x01  # one bit of the last tensor value
    shard.write_bytes(bytes(data))
    client = make_client()
    unknown = client.post(ROUTE, files=parts(tampered)).json()
    assert unknown["outcome"] == "unknown"
    body = client.post(ROUTE, files=[*parts(tampered), ("run", (None, run.hex))]).json()
    assert body["outcome"] == "mismatch"
    failed = {c["name"]: c["detail"] for c in body["checks"] if not c["ok"]}
    assert failed["files"] == "changed: model-00002-of-00002.safetensors"
    assert failed["tensors"] == "changed: head.bias"
    # a changed file that holds no tensors: the tensors match, the file is named
    config = tmp_path / "config-changed"
    shutil.copytree(folder, config)
    (config / "config.json").write_text('{"model_type": "tiny", "hidden": 5}')
    same = client.post(ROUTE, files=[*parts(config), ("run", (None, run.hex))]).json()
    assert same["outcome"] == "verified"  # as the CLI: the weights are the recorded ones


FILE = (b"x", "application/octet-stream")


def one(name: str) -> list[tuple[str, Any]]:
    return [("files", (name, *FILE))]


@pytest.mark.parametrize(
    ("files", "status", "named"),
    [
        (one("/etc/passwd"), 422, "absolute"),
        (one("C:/x.bin"), 422, "absolute"),
        (one("../escape.bin"), 422, "'..'"),
        (one("a/../../escape.bin"), 422, "'..'"),
        (one("./a.bin"), 422, "'.'"),
        (one("a//b.bin"), 422, "empty"),
        (one("a/"), 422, "empty"),
        (one("a\\b.bin"), 422, "backslash"),
        (one("n" * 256), 422, "255 bytes"),
        (one(""), 422, "files part 1"),
        (one("d/" * 33 + "deep.bin"), 422, "32 folders deep"),
        ([*one("a.bin"), *one("a.bin")], 422, "given twice"),
        ([*one("a"), *one("a/b.bin")], 422, "is a file in another part"),
        ([*one("Model.bin"), *one("model.bin")], 422, "differs only in case"),
        ([*one("caf\u00e9.bin"), *one("cafe\u0301.bin")], 422, "Unicode form"),
        ([*one("A/x.bin"), *one("a/y.bin")], 422, "folder 'a' differs from another part's 'A'"),
        ([*one("A/x.bin"), *one("a")], 422, "a file where another part has a folder"),
        ([*one("a/b.bin"), *one("a")], 422, "a file where another part has a folder"),
        ([("other", ("x.bin", *FILE))], 422, "unknown field"),
        ([("run", (None, "zz"))], 422, "files: no file"),
    ],
)
def test_hostile_parts_are_refused_naming_the_part(
    make_client: MakeClient, files: list[tuple[str, Any]], status: int, named: str
) -> None:
    before = set(Path(tempfile.gettempdir()).iterdir())
    answer = make_client().post(ROUTE, files=files)
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith(PROBLEM)
    assert named in answer.json()["detail"]
    assert "part" in answer.json()["detail"] or named == "files: no file"
    after = set(Path(tempfile.gettempdir()).iterdir())
    assert not [p for p in after - before if p.name.startswith("ledger-verify-")]  # deleted
    assert not (Path(tempfile.gettempdir()) / "escape.bin").exists()


@pytest.mark.parametrize(
    ("name", "named"), [(b"a\x00b.bin", "NUL"), (b"a\x01b.bin", "control"), (b"a\\b", "backslash")]
)
def test_raw_names_httpx_would_escape_are_refused(
    make_client: MakeClient, name: bytes, named: str
) -> None:
    """httpx percent-encodes control characters in a filename; a raw client need not."""
    body = (
        b'--x\r\nContent-Disposition: form-data; name="files"; filename="'
        + name
        + b'"\r\n\r\nab\r\n--x--\r\n'
    )
    answer = make_client().post(
        ROUTE, headers={"content-type": "multipart/form-data; boundary=x"}, content=body
    )
    assert answer.status_code == 422, answer.text
    assert named in answer.json()["detail"] and "files part 1" in answer.json()["detail"]


def test_too_many_files_and_too_many_bytes_are_413(
    make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(folder_upload, "MAX_FILES", 3)
    client = make_client()
    four = [("files", (f"f{i}.bin", *FILE)) for i in range(4)]
    answer = client.post(ROUTE, files=four)
    assert answer.status_code == 413
    assert "files part 4" in answer.json()["detail"]
    monkeypatch.setattr(folder_upload, "MAX_FOLDERS", 2)
    nested = [("files", (f"d{i}/f.bin", *FILE)) for i in range(3)]
    answer = client.post(ROUTE, files=nested)
    assert answer.status_code == 413
    assert "files part 3: more than 2 folders" in answer.json()["detail"]
    big = make_client(max_upload=100)
    over = [("files", ("a.bin", b"a" * 60, "x")), ("files", ("b.bin", b"b" * 60, "x"))]
    answer = big.post(ROUTE, files=over)
    assert answer.status_code == 413
    assert "100 bytes" in answer.json()["detail"]


def test_malformed_bodies_are_4xx(make_client: MakeClient) -> None:
    client = make_client()
    for headers, content in [
        ({"content-type": "application/json"}, b"{}"),
        ({"content-type": "multipart/form-data"}, b"--x\r\n"),  # no boundary
        ({"content-type": "multipart/form-data; boundary=x"}, b"garbage"),
        (
            {"content-type": "multipart/form-data; boundary=x"},
            b'--x\r\nContent-Disposition: form-data; name="files"; filename="a.bin"\r\n\r\nab',
        ),  # cut inside its part
        (
            {"content-type": "multipart/form-data; boundary=x"},
            b'--x\r\nContent-Disposition: form-data; name="files"; filename="\xff.bin"\r\n\r\n'
            b"ab\r\n--x--\r\n",
        ),
    ]:
        answer = client.post(ROUTE, headers=headers, content=content)
        assert 400 <= answer.status_code < 500, (content, answer.text)
        assert answer.headers["content-type"].startswith(PROBLEM)


def test_the_guard_leaves_room_for_each_parts_framing(make_client: MakeClient) -> None:
    """600 one-byte files: their part headers pass the single upload's 64 KiB framing
    room, but not the folder route's; the files' bytes are what the limit counts."""
    from ledger.api.guard import MULTIPART_SLACK

    files = [
        ("files", (f"shard-{i:04d}.bin", b"x", "application/octet-stream")) for i in range(600)
    ]
    client = make_client(max_upload=1000)
    request = client.build_request("POST", ROUTE, files=files)
    assert int(request.headers["content-length"]) > 1000 + MULTIPART_SLACK
    answer = client.send(request)
    assert answer.status_code == 422, answer.text  # verified, and found no weights: not 413
    assert "without model weights" in answer.json()["detail"]
    assert "ledger-verify-" not in answer.text  # the server's folder is not shown
    # the same parts on the single-file route are over its limit
    single = client.post("/api/v1/verify", files=files)
    assert single.status_code == 413
    # a declared body past the folder's room: refused before it is read, as a folder
    heavy = [("files", ("a.bin", b"a" * 1001, "x"))]
    request = client.build_request("POST", ROUTE, files=heavy)
    request.headers["content-length"] = str(1000 + folder_upload.MAX_FOLDER_FRAMING + 1)
    refused = client.send(request)
    assert refused.status_code == 413
    assert refused.json()["detail"].startswith("files: the folder is larger than the 1000 bytes")
