"""Property-based fuzzing of what secure aggregation parses from peers: ciphertext bundles
(`PackedCiphertext.from_bytes`, JSON header included), Paillier public keys
(`decode_public_key`) and decryption proofs (`DecryptionProof.from_bytes`).

Inputs: random bytes (with and without the right magic and version), valid bundles, keys and
proofs with random byte edits, bundles whose header is replaced by random (deep, huge, or
almost right) JSON, and random declared header lengths. Every input must parse or raise a
`CryptoError` (the declared rejection, counted by the engine); any other exception is a
crash. Run in a process that imported eth_account, as a node is.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from typing import Any

import eth_account  # noqa: F401  (py_ecc raises the recursion limit: the hostile setting)
from fuzzkit import Tally, examples_for, fuzz_settings, json_values
from hypothesis import given
from hypothesis import strategies as st

from flchain.crypto.ciphertext import PackedCiphertext
from flchain.crypto.errors import CryptoError
from flchain.crypto.packing import PackingSpec
from flchain.crypto.paillier import public_key_from_modulus
from flchain.crypto.wire import DecryptionProof, decode_public_key, encode_public_key

SHARES = {"random": 0.25, "mutated": 0.35, "headers": 0.3, "lengths": 0.1}
KEY_BITS = 512
LENGTH = 40

tally = Tally("bundles")


def examples(kind: str) -> int:
    return examples_for(SHARES, kind)


def _valid() -> tuple[int, bytes, bytes, bytes, int]:
    """A well-formed bundle, key and proof (no real encryption: parsing is what is fuzzed)."""
    rng = random.Random(7)
    n = rng.getrandbits(KEY_BITS) | (1 << (KEY_BITS - 1)) | 1
    spec = PackingSpec(bits=16, value_range=(-1.0, 1.0), max_members=4, key_bits=KEY_BITS)
    count = spec.plaintexts_for(LENGTH)
    cts = tuple(rng.randrange(1, n * n) for _ in range(count))
    bundle = PackedCiphertext(cts, spec, 1, LENGTH, n)
    key = encode_public_key(public_key_from_modulus(n))
    proof = DecryptionProof.of(
        bundle, [(rng.randrange(n), rng.randrange(1, n)) for _ in range(count)]
    ).to_bytes(n)
    return n, bundle.to_bytes(), key, proof, count


MODULUS, BUNDLE, KEY, PROOF, COUNT = _valid()
HEADER_LEN = int.from_bytes(BUNDLE[5:9], "big")
HEADER = json.loads(BUNDLE[9 : 9 + HEADER_LEN])

PARSERS: dict[str, Callable[[bytes], Any]] = {
    "bundle": PackedCiphertext.from_bytes,
    "key": lambda blob: decode_public_key(blob, key_bits=KEY_BITS),
    "proof": lambda blob: DecryptionProof.from_bytes(blob, modulus=MODULUS, count=COUNT),
}
VALID = {"bundle": BUNDLE, "key": KEY, "proof": PROOF}
MAGIC = {"bundle": b"FLPK\x01", "key": b"FLPP\x01", "proof": b"FLDP\x01"}


def check(kind: str, blob: bytes) -> None:
    try:
        PARSERS[kind](blob)
    except CryptoError as exc:
        tally.reject(f"{kind}:{type(exc).__name__}")
    except Exception as exc:
        tally.crash(f"{kind} {type(exc).__name__}: {exc} <- {blob[:80]!r}")
    else:
        tally.accept()


def test_the_valid_inputs_parse() -> None:
    for kind, blob in VALID.items():
        PARSERS[kind](blob)
    assert PackedCiphertext.from_bytes(BUNDLE).to_bytes() == BUNDLE


# --------------------------------------------------------------------------- strategies

kinds = st.sampled_from(sorted(PARSERS))


@st.composite
def mutated(draw: st.DrawFn, kind: str) -> bytes:
    data = bytearray(VALID[kind])
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        edit = draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        if edit == "flip" and at < len(data):
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif edit == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif edit == "delete":
            del data[at : at + draw(st.integers(1, 16))]
        else:
            del data[at:]
    return bytes(data)


@st.composite
def header_field(draw: st.DrawFn) -> dict[str, Any]:
    """The real header with one field (or one spec field) replaced by a random value."""
    header = json.loads(json.dumps(HEADER))
    if draw(st.booleans()):
        header[draw(st.sampled_from(sorted(header)))] = draw(json_values)
    else:
        header["spec"][draw(st.sampled_from(sorted(header["spec"])))] = draw(json_values)
    return header


def with_header(header: bytes, declared: int | None = None) -> bytes:
    length = len(header) if declared is None else declared
    body = BUNDLE[9 + HEADER_LEN :]
    return b"FLPK\x01" + length.to_bytes(4, "big") + header + body


# --------------------------------------------------------------------------- properties


@fuzz_settings(examples("random"))
@given(kind=kinds, data=st.binary(max_size=2000), magic=st.booleans())
def test_random_bytes(kind: str, data: bytes, magic: bool) -> None:
    check(kind, (MAGIC[kind] if magic else b"") + data)


@fuzz_settings(examples("mutated"))
@given(data=st.data(), kind=kinds)
def test_mutated_valid_blobs(data: st.DataObject, kind: str) -> None:
    check(kind, data.draw(mutated(kind)))


@fuzz_settings(examples("headers"))
@given(
    header=header_field() | json_values,
    deep=st.integers(0, 5000) | st.just(0),
)
def test_bundles_with_random_headers(header: Any, deep: int) -> None:
    raw = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    if deep:
        raw = b"[" * deep + raw + b"]" * deep
    check("bundle", with_header(raw))


@fuzz_settings(examples("lengths"))
@given(declared=st.integers(0, 2**32 - 1) | st.integers(HEADER_LEN - 5, HEADER_LEN + 5))
def test_bundles_with_random_declared_header_lengths(declared: int) -> None:
    check("bundle", with_header(BUNDLE[9 : 9 + HEADER_LEN], declared))


def test_every_input_is_counted_and_nothing_crashed() -> None:
    tally.check(SHARES)
    assert {reason.split(":")[0] for reason in tally.rejected} == {"bundle", "key", "proof"}
