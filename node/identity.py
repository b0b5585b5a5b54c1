"""A node's long-lived identity: its Ethereum account, libp2p key and X25519 key.

`init_node_dir` creates the three keys in a directory that only the owner can read;
`load_node_identity` decrypts them again. The Ethereum key is a standard eth keystore
(scrypt), so wallets and `cast` can use it. The libp2p Ed25519 key and the X25519 key are
encrypted PKCS8 PEM files. PKCS8 encryption in `cryptography` only offers PBKDF2 with 2048
rounds, which is cheap to brute-force, so the PEM passphrase is not the password itself but
scrypt(password) with the salt and cost recorded in `node.json`: an attacker who steals the
directory pays scrypt for every guess, for every key.

Every file is created with `os.open(..., 0o600)` and moved into place atomically, so a key
is never readable by others, not even for an instant. Loading refuses key files that are
group- or world-readable.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, x25519
from eth_account import Account
from eth_account.signers.local import LocalAccount
from libp2p.crypto.ed25519 import Ed25519PrivateKey as Libp2pEd25519PrivateKey
from libp2p.crypto.keys import KeyPair
from libp2p.peer.id import ID

from flchain import safe_json

ETH_KEYSTORE = "eth-keystore.json"
LIBP2P_KEY = "libp2p-key.pem"
X25519_KEY = "x25519-key.pem"
NODE_JSON = "node.json"
KEY_FILES = (ETH_KEYSTORE, LIBP2P_KEY, X25519_KEY)

DEFAULT_SCRYPT_N = 2**18  # the eth keystore default: about a second per unlock
_MIN_SCRYPT_N = 2**10
_MAX_SCRYPT_N = 2**20
_SCRYPT_R = 8
_SCRYPT_P = 1
_MAX_KEY_FILE_BYTES = 64 * 1024  # a keystore or node.json is about 1 KB


class IdentityError(ValueError):
    """A node directory is missing, unsafe, tampered with, or the password is wrong."""


@dataclass(frozen=True)
class NodeIdentity:
    """The decrypted keys of one node; `path` is the node directory they came from."""

    path: Path
    eth_account: LocalAccount
    libp2p_keypair: KeyPair
    x25519_private: x25519.X25519PrivateKey

    @property
    def address(self) -> str:
        """Checksummed Ethereum address (the member's on-chain identity)."""
        return str(self.eth_account.address)

    @property
    def peer_id(self) -> str:
        """Base58 libp2p peer id, derived from the Ed25519 public key."""
        return _peer_id_of(self.libp2p_keypair)

    @property
    def x25519_public_bytes(self) -> bytes:
        """Raw 32-byte X25519 public key, as registered on chain for pairwise masks."""
        return self.x25519_private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    def public_info(self) -> dict[str, str]:
        """What `node.json` publishes: safe to show to anyone."""
        return {
            "address": self.address,
            "peer_id": self.peer_id,
            "x25519_public": "0x" + self.x25519_public_bytes.hex(),
        }


def init_node_dir(
    path: str | os.PathLike[str],
    password: str,
    *,
    overwrite: bool = False,
    scrypt_n: int = DEFAULT_SCRYPT_N,
) -> NodeIdentity:
    """Create fresh keys in `path` (mode 0700) and return them.

    Refuses to replace existing keys unless `overwrite` is set, because losing the
    Ethereum key loses the stake. `scrypt_n` is the scrypt cost (a power of two);
    lower it only for throwaway keys such as tests and local devnets.
    """
    _check_password(password)
    _check_scrypt_n(scrypt_n)
    directory = Path(path)
    existing = [name for name in (*KEY_FILES, NODE_JSON) if (directory / name).exists()]
    if existing and not overwrite:
        raise IdentityError(
            f"{directory} already holds node keys ({', '.join(existing)}); "
            "`flchain node init --force` overwrites them (the old account and its stake are lost)"
        )
    _make_private_dir(directory)

    account: LocalAccount = Account.create()
    libp2p_raw = ed25519.Ed25519PrivateKey.generate()
    x_private = x25519.X25519PrivateKey.generate()
    kdf = {"name": "scrypt", "n": scrypt_n, "r": _SCRYPT_R, "p": _SCRYPT_P}
    kdf["salt"] = secrets.token_hex(16)
    passphrase = _pem_passphrase(password, kdf)

    keystore = Account.encrypt(account.key, password, kdf="scrypt", iterations=scrypt_n)
    _write_private(directory / ETH_KEYSTORE, json.dumps(keystore, indent=2).encode())
    _write_private(directory / LIBP2P_KEY, _encrypted_pem(libp2p_raw, passphrase))
    _write_private(directory / X25519_KEY, _encrypted_pem(x_private, passphrase))

    identity = NodeIdentity(directory, account, _libp2p_keypair(libp2p_raw), x_private)
    node_json = {**identity.public_info(), "key_kdf": kdf, "version": 1}
    _write_private(directory / NODE_JSON, (json.dumps(node_json, indent=2) + "\n").encode())
    return identity


def load_node_identity(path: str | os.PathLike[str], password: str) -> NodeIdentity:
    """Decrypt the keys in `path`; refuses unsafe permissions and a wrong password."""
    directory = Path(path)
    if not directory.is_dir():
        raise IdentityError(f"{directory} is not a node directory; run `flchain node init` first")
    for name in KEY_FILES:
        _check_private_file(directory / name)
    meta = _read_node_json(directory / NODE_JSON)

    try:
        keystore = safe_json.load_file(directory / ETH_KEYSTORE, max_bytes=_MAX_KEY_FILE_BYTES)
        eth_key = Account.decrypt(keystore, password)
    except (ValueError, KeyError, TypeError) as exc:
        if "MAC mismatch" in str(exc):
            raise IdentityError(f"wrong password for {directory / ETH_KEYSTORE}") from exc
        raise IdentityError(f"{directory / ETH_KEYSTORE} is not a valid keystore: {exc!r}") from exc
    passphrase = _pem_passphrase(password, meta["key_kdf"])
    libp2p_raw = _load_pem(directory / LIBP2P_KEY, passphrase, ed25519.Ed25519PrivateKey)
    x_private = _load_pem(directory / X25519_KEY, passphrase, x25519.X25519PrivateKey)

    identity = NodeIdentity(
        directory, Account.from_key(eth_key), _libp2p_keypair(libp2p_raw), x_private
    )
    for field, actual in identity.public_info().items():
        if meta.get(field) != actual:
            raise IdentityError(
                f"{directory / NODE_JSON} says {field}={meta.get(field)!r} but the keys give "
                f"{actual!r}; the directory was altered"
            )
    return identity


def read_password(password_file: Path | None, env: str = "FLCHAIN_PASSWORD") -> str:
    """The key password from `password_file` (first line) or else the `env` variable.

    A password file must be private (no group/other access) like the keys it unlocks.
    """
    if password_file is not None:
        file = Path(password_file)
        if not file.is_file():
            raise IdentityError(f"password file {file} does not exist")
        _check_private_file(file)
        lines = file.read_text().splitlines()
        password = lines[0] if lines else ""
        if not password:
            raise IdentityError(f"password file {file} is empty")
        return password
    password = os.environ.get(env, "")
    if not password:
        raise IdentityError(f"no password: pass a password file or set ${env}")
    return password


def _peer_id_of(keypair: KeyPair) -> str:
    return ID.from_pubkey(keypair.public_key).to_base58()


def _libp2p_keypair(key: ed25519.Ed25519PrivateKey) -> KeyPair:
    raw = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    private = Libp2pEd25519PrivateKey.from_bytes(raw)
    return KeyPair(private, private.get_public_key())


def _check_password(password: str) -> None:
    if not isinstance(password, str) or not password:
        raise IdentityError("the key password must be a non-empty string")


def _check_scrypt_n(n: Any) -> None:
    if (
        not isinstance(n, int)
        or isinstance(n, bool)
        or not _MIN_SCRYPT_N <= n <= _MAX_SCRYPT_N
        or n & (n - 1)
    ):
        raise IdentityError(
            f"scrypt cost n={n!r} must be a power of two in [{_MIN_SCRYPT_N}, {_MAX_SCRYPT_N}]"
        )


def _pem_passphrase(password: str, kdf: Any) -> bytes:
    """scrypt(password) as hex: the PEM passphrase, so guessing costs scrypt per try."""
    if not isinstance(kdf, dict) or kdf.get("name") != "scrypt":
        raise IdentityError(f"unsupported key_kdf in {NODE_JSON}: {kdf!r}")
    _check_scrypt_n(kdf.get("n"))
    try:
        salt = bytes.fromhex(kdf["salt"])
        r, p = int(kdf["r"]), int(kdf["p"])
    except (KeyError, TypeError, ValueError) as exc:
        raise IdentityError(f"malformed key_kdf in {NODE_JSON}: {kdf!r}") from exc
    if len(salt) < 16 or not (1 <= r <= 32 and 1 <= p <= 16):
        raise IdentityError(f"weak or malformed key_kdf in {NODE_JSON}: {kdf!r}")
    n = kdf["n"]
    derived = hashlib.scrypt(
        password.encode(), salt=salt, n=n, r=r, p=p, maxmem=256 * n * r, dklen=32
    )
    return derived.hex().encode()


def _encrypted_pem(key: ed25519.Ed25519PrivateKey | x25519.X25519PrivateKey, pw: bytes) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(pw),
    )


def _load_pem(file: Path, passphrase: bytes, kind: type) -> Any:
    try:
        key = serialization.load_pem_private_key(file.read_bytes(), password=passphrase)
    except ValueError as exc:
        if "password" in str(exc).lower() or "decrypt" in str(exc).lower():
            raise IdentityError(f"wrong password for {file}") from exc
        raise IdentityError(f"{file} is not a valid encrypted PEM key: {exc}") from exc
    except TypeError as exc:
        raise IdentityError(f"{file} is not encrypted; refusing to use a plaintext key") from exc
    if not isinstance(key, kind):
        raise IdentityError(f"{file} holds a {type(key).__name__}, expected {kind.__name__}")
    return key


def _read_node_json(file: Path) -> dict[str, Any]:
    try:
        meta = safe_json.load_file(file, max_bytes=_MAX_KEY_FILE_BYTES)
    except (OSError, ValueError) as exc:
        raise IdentityError(f"cannot read {file}: {exc}") from exc
    if not isinstance(meta, dict) or "key_kdf" not in meta:
        raise IdentityError(f"{file} is not a flchain node.json (no key_kdf)")
    return meta


def _make_private_dir(directory: Path) -> None:
    """Create `directory` as 0700; an existing one is tightened before any key lands in it."""
    if directory.exists():
        if not directory.is_dir():
            raise IdentityError(f"{directory} exists and is not a directory")
        os.chmod(directory, 0o700)
    else:
        directory.mkdir(mode=0o700, parents=True)


def _write_private(file: Path, data: bytes) -> None:
    """Write `data` to a new 0600 file and rename it over `file` (atomic, never wider)."""
    tmp = file.with_name(f".{file.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with open(fd, "wb", closefd=True) as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, file)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(file.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _check_private_file(file: Path) -> None:
    try:
        mode = file.stat().st_mode
    except FileNotFoundError as exc:
        raise IdentityError(f"{file} is missing; run `flchain node init` first") from exc
    if mode & 0o077:
        raise IdentityError(
            f"{file} is accessible by group/others (mode {stat.S_IMODE(mode):04o}); "
            f"fix it with: chmod 600 {file}"
        )
