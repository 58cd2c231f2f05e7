"""``ledger key new|show`` and ``LEDGER_KEYSTORE``, as real processes (no chain needed).

Keystores written by ledger are opened with eth-account (an independent reader);
ledger's own reader is fed hostile files: wrong passwords, directories, non-JSON,
key-derivation parameters made to exhaust memory.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from eth_account import Account

from ledger.config import ANVIL_DEV_KEY

KEY = "0x" + "4c" * 32


def ledger(*args: str, stdin: str | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    full_env.update(env)
    return subprocess.run(
        [sys.executable, "-m", "ledger", *args],
        env=full_env,
        input=stdin,
        text=True,
        capture_output=True,
        timeout=120,
        check=False,
    )


def test_a_new_key_round_trips_through_eth_account(tmp_path: Path) -> None:
    path = tmp_path / "team" / "key.json"
    made = ledger("key", "new", "--out", str(path), LEDGER_KEYSTORE_PASSWORD="s3cret pw")
    assert made.returncode == 0, made.stderr
    address = made.stdout.strip()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    document = json.loads(path.read_text())
    assert document["crypto"]["kdf"] == "scrypt"
    key = Account.decrypt(document, "s3cret pw")
    assert Account.from_key(key).address == address
    assert key.hex() not in made.stdout + made.stderr
    shown = ledger("key", "show", LEDGER_KEYSTORE=str(path), LEDGER_KEYSTORE_PASSWORD="s3cret pw")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip() == address
    assert f"keystore {path}" in shown.stderr
    other = ledger("key", "new", "--out", str(tmp_path / "b.json"), LEDGER_KEYSTORE_PASSWORD="x")
    assert other.stdout.strip() != address  # a fresh random key each time


def test_the_password_comes_from_a_prompt_or_a_file(tmp_path: Path) -> None:
    path = tmp_path / "key.json"
    made = ledger("key", "new", "--out", str(path), stdin="typed pw\ntyped pw\n")
    assert made.returncode == 0, made.stderr
    assert Account.from_key(Account.decrypt(path.read_text(), "typed pw")).address == (
        made.stdout.strip()
    )
    secret_file = tmp_path / "pw.txt"
    secret_file.write_text("typed pw\nignored second line\n")
    shown = ledger("key", "show", "--keystore", str(path), "--password-file", str(secret_file))
    assert shown.stdout.strip() == made.stdout.strip(), shown.stderr
    via_env = ledger(
        "key", "show", LEDGER_KEYSTORE=str(path), LEDGER_KEYSTORE_PASSWORD_FILE=str(secret_file)
    )
    assert via_env.stdout.strip() == made.stdout.strip(), via_env.stderr


def test_a_new_key_never_overwrites_a_file(tmp_path: Path) -> None:
    path = tmp_path / "key.json"
    path.write_text("precious")
    made = ledger("key", "new", "--out", str(path), LEDGER_KEYSTORE_PASSWORD="pw")
    assert made.returncode == 12
    assert "already exists" in made.stderr
    assert path.read_text() == "precious"
    empty = ledger("key", "new", "--out", str(tmp_path / "e.json"), LEDGER_KEYSTORE_PASSWORD="")
    assert empty.returncode == 12 and "empty password" in empty.stderr
    assert not (tmp_path / "e.json").exists()


def test_a_wrong_password_is_exit_12_and_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "key.json"
    path.write_text(json.dumps(Account.encrypt(KEY, "right", kdf="scrypt")))
    shown = ledger("key", "show", LEDGER_KEYSTORE=str(path), LEDGER_KEYSTORE_PASSWORD="wrong")
    assert shown.returncode == 12
    assert "wrong password" in shown.stderr and str(path) in shown.stderr
    assert "LEDGER_KEYSTORE_PASSWORD" in shown.stderr
    assert KEY[2:] not in shown.stdout + shown.stderr


@pytest.mark.parametrize(
    "content",
    [
        None,  # a directory
        b"\xff\xfe not text",
        b"[1, 2, 3]",
        b'{"version": 3}',
        b"x" * (2 << 20),  # larger than any keystore: not read whole
    ],
    ids=["directory", "binary", "json-list", "no-crypto", "huge"],
)
def test_an_unusable_keystore_is_exit_12(tmp_path: Path, content: bytes | None) -> None:
    path = tmp_path / "key.json"
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    shown = ledger("key", "show", LEDGER_KEYSTORE=str(path), LEDGER_KEYSTORE_PASSWORD="pw")
    assert shown.returncode == 12, shown.stderr
    assert str(path) in shown.stderr
    assert "Traceback" not in shown.stderr


def test_key_derivation_made_to_exhaust_memory_is_refused_unopened(tmp_path: Path) -> None:
    document = Account.encrypt(KEY, "pw", kdf="scrypt")
    document["crypto"]["kdfparams"]["n"] = 1 << 30  # 128 GiB of scrypt memory at r=8
    path = tmp_path / "key.json"
    path.write_text(json.dumps(document))
    shown = ledger("key", "show", LEDGER_KEYSTORE=str(path), LEDGER_KEYSTORE_PASSWORD="pw")
    assert shown.returncode == 12
    assert "key derivation" in shown.stderr


def test_with_both_a_key_and_a_keystore_the_key_wins_and_says_so(tmp_path: Path) -> None:
    path = tmp_path / "key.json"
    path.write_text(json.dumps(Account.encrypt(KEY, "pw", kdf="scrypt")))
    other = "0x" + "7d" * 32
    shown = ledger(
        "key",
        "show",
        LEDGER_KEYSTORE=str(path),
        LEDGER_KEYSTORE_PASSWORD="pw",
        LEDGER_PRIVATE_KEY=other,
    )
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip() == Account.from_key(other).address
    assert "LEDGER_PRIVATE_KEY" in shown.stderr and f"{path} is ignored" in shown.stderr


def test_without_a_key_show_names_the_dev_key_and_the_relayer(tmp_path: Path) -> None:
    relayer = "0x" + "5e" * 32
    shown = ledger("key", "show", "--data-dir", str(tmp_path), LEDGER_RELAYER_KEY=relayer)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip() == Account.from_key(ANVIL_DEV_KEY).address
    assert "dev key" in shown.stderr
    assert Account.from_key(relayer).address in shown.stderr
