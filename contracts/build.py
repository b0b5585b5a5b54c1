"""Compile FLChain.vy into the committed artifact FLChain.json, or check that it is current.

    python -m flchain.contracts.build            # regenerate FLChain.json
    python -m flchain.contracts.build --check    # exit 1 when the artifact drifted

The output is deterministic (sorted keys, fixed contract path, fixed compiler version), so
a fresh compile equals the committed file byte for byte unless the source changed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from flchain import safe_json
from flchain.contracts.artifact import (
    ARTIFACT_FILE,
    CONTRACT_NAME,
    MAX_ARTIFACT_BYTES,
    MAX_ARTIFACT_DEPTH,
    SOURCE_FILE,
    sha256_hex,
    source_text,
)
from flchain.contracts.errors import ArtifactError

ARTIFACT_PATH = Path(__file__).with_name(ARTIFACT_FILE)


def compile_artifact(source: str | None = None) -> dict[str, Any]:
    """Compile the Vyper source (the packaged one by default) into the artifact dict."""
    try:
        import vyper
    except ImportError as exc:  # the compiler is a build-time tool, not a runtime need
        raise ArtifactError("the vyper compiler is not installed (pip install vyper)") from exc
    text = source_text() if source is None else source
    out = vyper.compile_code(text, contract_path=SOURCE_FILE, output_formats=["abi", "bytecode"])
    return {
        "abi": out["abi"],
        "bytecode": out["bytecode"],
        "contractName": CONTRACT_NAME,
        "sourceSha256": sha256_hex(text),
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
