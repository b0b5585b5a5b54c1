"""Compile FLChain's sources into the committed artifact FLChain.json, or check it is current.

    python -m flchain.contracts.build            # regenerate FLChain.json
    python -m flchain.contracts.build --check    # exit 1 when the artifact drifted

The output is deterministic (sorted keys, fixed contract path, fixed compiler version), so
a fresh compile equals the committed file byte for byte unless a source changed. The build
also refuses a compile where FLChain and FLChainSettlement lay storage out differently
(the settlement runs on FLChain's storage by delegatecall) or where either piece uses more
than three quarters of EIP-170's code size limit.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from flchain import safe_json
from flchain.contracts.artifact import (
    ARTIFACT_FILE,
    CODE_BUDGET,
    CONTRACT_NAME,
    MAX_ARTIFACT_BYTES,
    MAX_ARTIFACT_DEPTH,
    SETTLEMENT_FILE,
    SOURCE_FILE,
    source_texts,
    sources_sha256,
)
from flchain.contracts.errors import ArtifactError

ARTIFACT_PATH = Path(__file__).with_name(ARTIFACT_FILE)


def _compile(vyper: Any, root: Path, name: str, formats: list[str]) -> dict[str, Any]:
    from vyper.compiler.input_bundle import FilesystemInputBundle

    path = root / name
    return vyper.compile_code(
        path.read_text(encoding="utf-8"),
        contract_path=name,
        resolved_path=path,
        input_bundle=FilesystemInputBundle([root]),
        output_formats=formats,
    )


def compile_artifact(sources: dict[str, str] | None = None) -> dict[str, Any]:
    """Compile the Vyper sources (the packaged ones by default) into the artifact dict."""
    try:
        import vyper
    except ImportError as exc:  # the compiler is a build-time tool, not a runtime need
        raise ArtifactError("the vyper compiler is not installed (pip install vyper)") from exc
    texts = source_texts() if sources is None else sources
    formats = ["abi", "bytecode", "bytecode_runtime", "layout"]
    with tempfile.TemporaryDirectory(prefix="flchain-build-") as tmp:
        root = Path(tmp)
        for name, text in texts.items():
            (root / name).write_text(text, encoding="utf-8")
        # Layouts first (semantic analysis only, a second of compiling): a piece that lays
        # out storage differently is refused before the code generation (four more seconds).
        layouts = [_compile(vyper, root, n, ["layout"]) for n in (SOURCE_FILE, SETTLEMENT_FILE)]
        if layouts[0]["layout"]["storage_layout"] != layouts[1]["layout"]["storage_layout"]:
            raise ArtifactError(
                f"{SOURCE_FILE} and {SETTLEMENT_FILE} lay out storage differently: the "
                "settlement runs on FLChain's storage, so both must declare state only through "
                "FLChainCore"
            )
        entry = _compile(vyper, root, SOURCE_FILE, formats)
        settlement = _compile(vyper, root, SETTLEMENT_FILE, formats)
    # Deployed code is the runtime code followed by the immutables' values.
    sizes = {
        name: (len(out["bytecode_runtime"]) - 2) // 2
        + sum(i["length"] for i in out["layout"].get("code_layout", {}).values())
        for name, out in ((SOURCE_FILE, entry), (SETTLEMENT_FILE, settlement))
    }
    for name, size in sizes.items():
        if size > CODE_BUDGET:
            raise ArtifactError(
                f"{name} compiles to {size} bytes of runtime code, over the budget of "
                f"{CODE_BUDGET} (75% of EIP-170's limit): move code to the other piece"
            )
    # Events the settlement logs belong to FLChain's address (delegatecall), so its ABI lists
    # them; the settlement's functions are reachable only through FLChain's.
    abi = list(entry["abi"])
    events = {i["name"] for i in abi if i["type"] == "event"}
    abi += [i for i in settlement["abi"] if i["type"] == "event" and i["name"] not in events]
    return {
        "abi": abi,
        "bytecode": entry["bytecode"],
        "contractName": CONTRACT_NAME,
        "runtimeSizes": sizes,
        "settlementBytecode": settlement["bytecode"],
        "sourceSha256": sources_sha256(texts),
        "vyperVersion": vyper.__version__,
    }


def render(artifact: dict[str, Any]) -> str:
    """The canonical JSON text of an artifact."""
    return json.dumps(artifact, sort_keys=True, indent=2) + "\n"


def write_artifact(path: Path = ARTIFACT_PATH) -> Path:
    path.write_text(render(compile_artifact()), encoding="utf-8")
    return path


def artifact_drift(path: Path = ARTIFACT_PATH) -> list[str]:
    """What differs between the file at `path` and a fresh compile (empty when current)."""
    fresh = compile_artifact()
    if not path.exists():
        return [f"{path.name} does not exist"]
    try:
        committed = safe_json.load_file(
            path, max_bytes=MAX_ARTIFACT_BYTES, max_depth=MAX_ARTIFACT_DEPTH
        )
    except ValueError:
        return [f"{path.name} is not valid JSON"]
    if not isinstance(committed, dict):
        return [f"{path.name} is not a JSON object"]
    problems = [
        f"{key} differs"
        for key in sorted(set(fresh) | set(committed))
        if committed.get(key) != fresh.get(key)
    ]
    if not problems and path.read_text(encoding="utf-8") != render(fresh):
        problems.append("formatting differs from the canonical rendering")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flchain.contracts.build", description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail when the artifact drifted")
    parser.add_argument("--out", type=Path, default=ARTIFACT_PATH, help="artifact path")
    args = parser.parse_args(argv)
    if args.check:
        problems = artifact_drift(args.out)
        if problems:
            print(
                f"{args.out}: out of date ({'; '.join(problems)}); run "
                "`python -m flchain.contracts.build`",
                file=sys.stderr,
            )
            return 1
        print(f"{args.out}: up to date")
        return 0
    print(f"wrote {write_artifact(args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
