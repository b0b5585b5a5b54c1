"""Write one benchmark's section into docs/benchmarks.md, leaving the other sections alone.

Each benchmark owns the text between `<!-- bench:NAME:start -->` and `<!-- bench:NAME:end -->`,
so benchmarks can be re-run one at a time without clobbering each other's figures.
"""

from __future__ import annotations

import json
import platform
import re
from datetime import UTC, datetime
from pathlib import Path

import torch

DOCS = Path(__file__).resolve().parents[1] / "docs"
REPORT = DOCS / "benchmarks.md"
_HEADER = (
    "# Benchmarks\n\n"
    "Measured figures, each section written by its benchmark script (`make bench` runs them "
    "all). Times are medians of several runs on the machine named in the section.\n"
)


def machine() -> str:
    """One line naming where the figures were taken."""
    return (
        f"{platform.machine()}, {torch.get_num_threads()} torch threads, "
        f"Python {platform.python_version()}, torch {torch.__version__}, "
        f"{datetime.now(UTC).strftime('%Y-%m-%d')}"
    )


def write_section(name: str, markdown: str) -> Path:
    start, end = f"<!-- bench:{name}:start -->", f"<!-- bench:{name}:end -->"
    block = f"{start}\n{markdown.rstrip()}\n{end}"
    text = REPORT.read_text() if REPORT.exists() else _HEADER
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.DOTALL)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else f"{text}\n{block}\n"
    DOCS.mkdir(exist_ok=True)
    REPORT.write_text(text)
    return REPORT


def load_cells(cache: Path, fresh: bool = False) -> dict[str, dict]:
    """The cached cells of a benchmark matrix (one JSON object with a "key" per line), by
    key; a later line wins. Empty when `fresh` or no cache; a torn last line from an
    interrupted run is skipped."""
    if fresh or not cache.exists():
        return {}
    done = {}
    for line in cache.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        done[row["key"]] = row
    return done
