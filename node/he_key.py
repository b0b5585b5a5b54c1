"""The node's Paillier key pair for secure aggregation, stored encrypted next to its other keys.

A member decrypts a round's sum when the contract picks it, so the private key must survive
restarts and never sit on disk in the clear. It is generated on the first secure task (the key
size is a task setting) and kept in `paillier-<bits>.json`, mode 0600: the primes p and q
sealed with ChaCha20-Poly1305 under a key derived (HKDF) from the same scrypt(password) that
protects the node's PEM keys, with the public modulus as associated data, so a swapped or
edited file fails to open instead of yielding a wrong key.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from phe.paillier import PaillierPrivateKey, PaillierPublicKey

from flchain import safe_json
from flchain.crypto.paillier import generate_keypair
from flchain.node.identity import (
    NODE_JSON,
    IdentityError,
    _check_private_file,
    _pem_passphrase,
    _read_node_json,
    _write_private,
)

__all__ = ["he_key_file", "load_or_create_he_key"]

_INFO = b"flchain/paillier-key/v1"
# An 8192-bit key file is ~6 KB of hex in a flat object; more is not a key file.
_MAX_KEY_FILE_BYTES = 64 * 1024
_MAX_KEY_FILE_DEPTH = 1


def he_key_file(directory: Path, key_bits: int) -> Path:
    return Path(directory) / f"paillier-{key_bits}.json"


def _sealing_key(directory: Path, password: str) -> bytes:
    meta = _read_node_json(Path(directory) / NODE_JSON)
    secret = _pem_passphrase(password, meta["key_kdf"])
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(secret)


def load_or_create_he_key(
    directory: str | os.PathLike[str], password: str, key_bits: int
) -> tuple[PaillierPublicKey, PaillierPrivateKey]:
    """The node's `key_bits` Paillier key pair: loaded if stored, else generated and stored."""
    directory = Path(directory)
    file = he_key_file(directory, key_bits)
    sealing = _sealing_key(directory, password)
    if file.exists():
        return _load(file, sealing, key_bits)
    public, private = generate_keypair(key_bits)
    width = (key_bits // 2 + 7) // 8 + 1
    nonce = secrets.token_bytes(12)
    n_hex = format(int(public.n), "x")
    primes = int(private.p).to_bytes(width, "big") + int(private.q).to_bytes(width, "big")
    sealed = ChaCha20Poly1305(sealing).encrypt(nonce, primes, n_hex.encode())
    record = {"version": 1, "key_bits": key_bits, "n": n_hex, "nonce": nonce.hex()}
    record["sealed"] = sealed.hex()
    _write_private(file, (json.dumps(record, indent=2) + "\n").encode())
    return public, private


def _load(
    file: Path, sealing: bytes, key_bits: int
) -> tuple[PaillierPublicKey, PaillierPrivateKey]:
    _check_private_file(file)
    try:
        record = safe_json.load_file(
            file, max_bytes=_MAX_KEY_FILE_BYTES, max_depth=_MAX_KEY_FILE_DEPTH
        )
        n_hex, nonce, sealed = record["n"], bytes.fromhex(record["nonce"]), record["sealed"]
        primes = ChaCha20Poly1305(sealing).decrypt(nonce, bytes.fromhex(sealed), n_hex.encode())
        n = int(n_hex, 16)
    except InvalidTag as exc:
        raise IdentityError(f"wrong password for {file}, or the file was altered") from exc
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise IdentityError(f"{file} is not a flchain Paillier key file: {exc}") from exc
    half = len(primes) // 2
    p, q = int.from_bytes(primes[:half], "big"), int.from_bytes(primes[half:], "big")
    if p * q != n or n.bit_length() != key_bits:
        raise IdentityError(f"{file} holds primes that do not match its {key_bits}-bit modulus")
    public = PaillierPublicKey(n)
    return public, PaillierPrivateKey(public, p, q)
