"""Node keys: private files, round trips, wrong passwords, tampering and unsafe modes."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import x25519
from eth_account import Account
from eth_account.messages import encode_defunct
from libp2p.peer.id import ID

from flchain.node.identity import (
    ETH_KEYSTORE,
    KEY_FILES,
    LIBP2P_KEY,
    NODE_JSON,
    X25519_KEY,
    IdentityError,
    init_node_dir,
    load_node_identity,
    read_password,
)

FAST = 2**12  # scrypt cost for throwaway test keys
PASSWORD = "correct horse battery staple"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def node_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "node"
    init_node_dir(directory, PASSWORD, scrypt_n=FAST)
    return directory


def test_init_creates_private_files_in_a_private_dir(tmp_path: Path) -> None:
    directory = tmp_path / "node"
    old_umask = os.umask(0)  # a permissive umask must not widen the key files
    try:
        init_node_dir(directory, PASSWORD, scrypt_n=FAST)
    finally:
        os.umask(old_umask)
    assert _mode(directory) == 0o700
    assert sorted(p.name for p in directory.iterdir()) == sorted([*KEY_FILES, NODE_JSON])
    for name in (*KEY_FILES, NODE_JSON):
        assert _mode(directory / name) == 0o600, name


def test_existing_open_directory_is_tightened(tmp_path: Path) -> None:
    directory = tmp_path / "node"
    directory.mkdir(mode=0o755)
    os.chmod(directory, 0o755)
    init_node_dir(directory, PASSWORD, scrypt_n=FAST)
    assert _mode(directory) == 0o700


def test_round_trip_gives_the_same_keys(node_dir: Path) -> None:
    first = load_node_identity(node_dir, PASSWORD)
    second = load_node_identity(node_dir, PASSWORD)
    assert first.address == second.address
    assert first.peer_id == second.peer_id
    assert first.x25519_public_bytes == second.x25519_public_bytes
    assert len(first.x25519_public_bytes) == 32
    # the eth key signs, and the libp2p key pair is the one the peer id names
    signed = first.eth_account.sign_message(encode_defunct(text="flchain"))
    assert Account.recover_message(encode_defunct(text="flchain"), signature=signed.signature) == (
        first.address
    )
    assert ID.from_pubkey(first.libp2p_keypair.public_key).to_base58() == first.peer_id


def test_init_returns_what_load_reads_and_node_json_publishes_it(tmp_path: Path) -> None:
    created = init_node_dir(tmp_path / "n", PASSWORD, scrypt_n=FAST)
    loaded = load_node_identity(tmp_path / "n", PASSWORD)
    meta = json.loads((tmp_path / "n" / NODE_JSON).read_text())
    assert (created.address, created.peer_id) == (loaded.address, loaded.peer_id)
    assert meta["address"] == loaded.address
    assert meta["peer_id"] == loaded.peer_id
    assert meta["x25519_public"] == "0x" + loaded.x25519_public_bytes.hex()
    assert loaded.peer_id.startswith("12D3KooW")  # Ed25519 peer ids in base58


def test_keystore_is_a_standard_eth_keystore(node_dir: Path) -> None:
    keystore = json.loads((node_dir / ETH_KEYSTORE).read_text())
    assert keystore["crypto"]["kdf"] == "scrypt"
    key = Account.decrypt(keystore, PASSWORD)
    assert Account.from_key(key).address == load_node_identity(node_dir, PASSWORD).address


def test_pem_keys_are_encrypted(node_dir: Path) -> None:
    for name in (LIBP2P_KEY, X25519_KEY):
        pem = (node_dir / name).read_bytes()
        assert pem.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
        with pytest.raises(TypeError):
            serialization.load_pem_private_key(pem, password=None)


def test_x25519_keys_agree_between_two_nodes(tmp_path: Path) -> None:
    a = init_node_dir(tmp_path / "a", PASSWORD, scrypt_n=FAST)
    b = init_node_dir(tmp_path / "b", PASSWORD, scrypt_n=FAST)
    a_pub = x25519.X25519PublicKey.from_public_bytes(a.x25519_public_bytes)
    b_pub = x25519.X25519PublicKey.from_public_bytes(b.x25519_public_bytes)
    assert a.x25519_private.exchange(b_pub) == b.x25519_private.exchange(a_pub)
    assert a.peer_id != b.peer_id and a.address != b.address


def test_wrong_password_is_a_clear_error(node_dir: Path) -> None:
    with pytest.raises(IdentityError, match="wrong password"):
        load_node_identity(node_dir, "not the password")


@pytest.mark.parametrize("name", KEY_FILES)
def test_group_or_world_readable_key_is_refused(node_dir: Path, name: str) -> None:
    os.chmod(node_dir / name, 0o644)
    with pytest.raises(IdentityError, match=f"chmod 600 .*{name}") as info:
        load_node_identity(node_dir, PASSWORD)
    assert "0644" in str(info.value)


def test_init_refuses_to_overwrite_keys_unless_asked(node_dir: Path) -> None:
    before = load_node_identity(node_dir, PASSWORD)
    with pytest.raises(IdentityError, match="overwrite"):
        init_node_dir(node_dir, PASSWORD, scrypt_n=FAST)
    assert load_node_identity(node_dir, PASSWORD).address == before.address
    replaced = init_node_dir(node_dir, "new password", overwrite=True, scrypt_n=FAST)
    assert replaced.address != before.address
    assert load_node_identity(node_dir, "new password").peer_id == replaced.peer_id
    assert not [p for p in node_dir.iterdir() if p.name.endswith(".tmp")]


def test_altered_node_json_is_detected(node_dir: Path) -> None:
    meta = json.loads((node_dir / NODE_JSON).read_text())
    meta["peer_id"] = "12D3KooWSomebodyElse"
    (node_dir / NODE_JSON).write_text(json.dumps(meta))
    with pytest.raises(IdentityError, match="altered"):
        load_node_identity(node_dir, PASSWORD)


def test_missing_directory_or_key_is_a_clear_error(tmp_path: Path, node_dir: Path) -> None:
    with pytest.raises(IdentityError, match="node init"):
        load_node_identity(tmp_path / "nowhere", PASSWORD)
    (node_dir / X25519_KEY).unlink()
    with pytest.raises(IdentityError, match="missing"):
        load_node_identity(node_dir, PASSWORD)


def test_corrupted_keystore_is_a_clear_error(node_dir: Path) -> None:
    keystore = json.loads((node_dir / ETH_KEYSTORE).read_text())
    del keystore["crypto"]["mac"]
    (node_dir / ETH_KEYSTORE).write_text(json.dumps(keystore))  # keeps the 0600 mode
    with pytest.raises(IdentityError, match="not a valid keystore"):
        load_node_identity(node_dir, PASSWORD)


@pytest.mark.parametrize("bad", [0, 3, 2**9, 2**21, 1000])
def test_scrypt_cost_must_be_a_sane_power_of_two(tmp_path: Path, bad: int) -> None:
    with pytest.raises(IdentityError, match="power of two"):
        init_node_dir(tmp_path / "n", PASSWORD, scrypt_n=bad)
    assert not (tmp_path / "n").exists()


def test_empty_password_is_refused(tmp_path: Path) -> None:
    with pytest.raises(IdentityError, match="non-empty"):
        init_node_dir(tmp_path / "n", "", scrypt_n=FAST)


def test_read_password_from_file_then_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    file = tmp_path / "pw"
    fd = os.open(file, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"s3cret\n")
    os.close(fd)
    monkeypatch.setenv("FLCHAIN_PASSWORD", "from-env")
    assert read_password(file) == "s3cret"
    assert read_password(None) == "from-env"
    monkeypatch.setenv("OTHER_PW", "other")
    assert read_password(None, env="OTHER_PW") == "other"


def test_read_password_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLCHAIN_PASSWORD", raising=False)
    with pytest.raises(IdentityError, match="FLCHAIN_PASSWORD"):
        read_password(None)
    with pytest.raises(IdentityError, match="does not exist"):
        read_password(tmp_path / "absent")
    open_file = tmp_path / "open"
    open_file.write_text("pw\n")
    os.chmod(open_file, 0o644)
    with pytest.raises(IdentityError, match="chmod 600"):
        read_password(open_file)
    empty = tmp_path / "empty"
    os.close(os.open(empty, os.O_WRONLY | os.O_CREAT, 0o600))
    with pytest.raises(IdentityError, match="empty"):
        read_password(empty)
