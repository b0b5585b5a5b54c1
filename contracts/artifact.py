"""The committed, compiled FLChain artifact (ABI + bytecode), read as package data.

Nodes and the CLI never need the Vyper compiler: they load `FLChain.json`, which
`python -m flchain.contracts.build` regenerates and a test keeps in step with the sources.

FLChain deploys as two pieces at one address (contracts/README.md, "Layout"): FLChain.vy,
whose constructor creates FLChainSettlement.vy from the creation code passed to it, and
which runs it by delegatecall. Both lay out storage through the FLChainCore.vy module.
`Artifact.deploy_data()` is the one creation transaction's data.
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
SETTLEMENT_FILE = "FLChainSettlement.vy"
MODULE_FILE = "FLChainCore.vy"
# Every source file of the contract, the entry contract first.
SOURCE_FILES = (SOURCE_FILE, SETTLEMENT_FILE, MODULE_FILE)
ARTIFACT_FILE = "FLChain.json"
# EIP-170's limit on deployed code, and the share of it each piece may use (25% headroom).
EIP170_LIMIT = 24_576
CODE_BUDGET = EIP170_LIMIT * 3 // 4
# The compiled artifact is about 80 KB of shallow JSON (the ABI nests a few levels).
MAX_ARTIFACT_BYTES = 4 << 20
MAX_ARTIFACT_DEPTH = 16
_KEYS = (
    "abi",
    "bytecode",
    "contractName",
    "runtimeSizes",
    "settlementBytecode",
    "sourceSha256",
    "vyperVersion",
)


@dataclass(frozen=True)
class Artifact:
    """ABI and deployable bytecode of the contract, with the source hash they came from."""

    contract_name: str
    abi: list[dict[str, Any]]
    bytecode: str
    settlement_bytecode: str
    vyper_version: str
    source_sha256: str
    runtime_sizes: dict[str, int]

    def deploy_data(self) -> str:
        """Creation data of the one deploy transaction: FLChain's creation code followed by
        its constructor argument, FLChainSettlement's creation code (ABI `bytes`)."""
        code = bytes.fromhex(self.settlement_bytecode[2:])
        padded = code + bytes(-len(code) % 32)
        arg = (32).to_bytes(32, "big") + len(code).to_bytes(32, "big") + padded
        return self.bytecode + arg.hex()


def source_texts() -> dict[str, str]:
    """The Vyper sources shipped with the package, by file name."""
    files = resources.files("flchain.contracts")
    return {name: files.joinpath(name).read_text("utf-8") for name in SOURCE_FILES}


def source_text() -> str:
    """The entry contract's source (FLChain.vy)."""
    return source_texts()[SOURCE_FILE]


def sources_sha256(texts: dict[str, str]) -> str:
    """One digest over every source file, each named, in SOURCE_FILES order."""
    h = hashlib.sha256()
    for name in SOURCE_FILES:
        data = texts[name].encode("utf-8")
        h.update(f"{name}\0{len(data)}\0".encode())
        h.update(data)
    return h.hexdigest()


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
    for key in ("bytecode", "settlementBytecode"):
        code = data[key]
        if (
            not isinstance(code, str)
            or not code.startswith("0x")
            or len(code) < 4
            or len(code) % 2
            or any(c not in "0123456789abcdefABCDEF" for c in code[2:])
        ):
            raise ArtifactError(f"{ARTIFACT_FILE}: {key} must be a 0x-prefixed hex string")
    if not isinstance(data["abi"], list):
        raise ArtifactError(f"{ARTIFACT_FILE}: abi must be a list")
    sizes = data["runtimeSizes"]
    if not isinstance(sizes, dict) or not all(
        isinstance(k, str) and isinstance(v, int) for k, v in sizes.items()
    ):
        raise ArtifactError(f"{ARTIFACT_FILE}: runtimeSizes must map names to byte counts")
    return Artifact(
        contract_name=str(data["contractName"]),
        abi=data["abi"],
        bytecode=data["bytecode"],
        settlement_bytecode=data["settlementBytecode"],
        vyper_version=str(data["vyperVersion"]),
        source_sha256=str(data["sourceSha256"]),
        runtime_sizes=dict(sizes),
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
