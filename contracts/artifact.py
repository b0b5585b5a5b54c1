"""The committed, compiled FLChain artifact (ABI + bytecode), read as package data.

Nodes and the CLI never need the Vyper compiler: they load `FLChain.json`, which
`python -m flchain.contracts.build` regenerates and a test keeps in step with the source.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

from flchain import safe_json
from flchain.contracts.errors import ArtifactError

CONTRACT_NAME = "FLChain"
SOURCE_FILE = "FLChain.vy"
ARTIFACT_FILE = "FLChain.json"
# The compiled artifact is about 80 KB of shallow JSON (the ABI nests a few levels).
MAX_ARTIFACT_BYTES = 4 << 20
MAX_ARTIFACT_DEPTH = 16
_KEYS = ("abi", "bytecode", "contractName", "sourceSha256", "vyperVersion")


@dataclass(frozen=True)
class Artifact:
    """ABI and deployable bytecode of the contract, with the source hash they came from."""

    contract_name: str
    abi: list[dict[str, Any]]
    bytecode: str
    vyper_version: str
    source_sha256: str


def source_text() -> str:
    """The Vyper source shipped with the package."""
    return resources.files("flchain.contracts").joinpath(SOURCE_FILE).read_text("utf-8")


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def parse_artifact(raw: str) -> Artifact:
    """Validate and parse the JSON text of an artifact."""
    try:
        data = safe_json.loads(raw, max_bytes=MAX_ARTIFACT_BYTES, max_depth=MAX_ARTIFACT_DEPTH)
    except ValueError as exc:
        raise ArtifactError(f"{ARTIFACT_FILE} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict) or sorted(data) != sorted(_KEYS):
        raise ArtifactError(f"{ARTIFACT_FILE} must have exactly the keys {list(_KEYS)}")
    bytecode = data["bytecode"]
    if not isinstance(bytecode, str) or not bytecode.startswith("0x") or len(bytecode) < 4:
        raise ArtifactError(f"{ARTIFACT_FILE}: bytecode must be a 0x-prefixed hex string")
    if not isinstance(data["abi"], list):
        raise ArtifactError(f"{ARTIFACT_FILE}: abi must be a list")
    return Artifact(
        contract_name=str(data["contractName"]),
        abi=data["abi"],
        bytecode=bytecode,
        vyper_version=str(data["vyperVersion"]),
        source_sha256=str(data["sourceSha256"]),
    )


@lru_cache(maxsize=1)
def load_artifact() -> Artifact:
    """The packaged artifact (cached: it cannot change while the process runs)."""
    try:
        raw = resources.files("flchain.contracts").joinpath(ARTIFACT_FILE).read_text("utf-8")
    except FileNotFoundError as exc:
        raise ArtifactError(
            f"{ARTIFACT_FILE} is missing: run `python -m flchain.contracts.build`"
        ) from exc
    return parse_artifact(raw)
