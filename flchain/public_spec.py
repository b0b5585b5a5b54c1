"""The task config's `public_data` spec, apart from the samples it names.

Task configs are read by commands that never touch a model (`flchain ledger rounds` reads a
devnet's config for its privacy budget); this module lets them parse the spec without
importing torch. `flchain.public_set` derives and scores the set itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# `flchain simulate --public-fraction` draws the same share by default.
DEFAULT_PUBLIC_FRACTION = 0.05
_KEYS = ("dataset", "fraction", "seed", "sha256")


class PublicSetError(ValueError):
    """A public set spec that is malformed, or whose samples do not match its digest."""


@dataclass(frozen=True)
class PublicData:
    """The task config's `public_data`: which samples are public and their digest.

    dataset: the task's dataset (the set is cut from its training split, and the task's
             shards from the rest); fraction: share of that split, stratified by label;
             seed: seeds the draw; sha256: hex digest of the samples (`samples_digest`).
    """

    dataset: str
    fraction: float
    seed: int
    sha256: str

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> PublicData:
        """Parse the JSON object of a task config's public_data (PublicSetError if bad)."""
        if not isinstance(raw, Mapping) or set(raw) != set(_KEYS):
            raise PublicSetError(f"public_data must be an object with exactly {list(_KEYS)}")
        dataset, fraction, seed, digest = (raw[k] for k in _KEYS)
        if not isinstance(dataset, str) or not dataset:
            raise PublicSetError("public_data.dataset must be a non-empty string")
        if isinstance(fraction, bool) or not isinstance(fraction, int | float):
            raise PublicSetError(f"public_data.fraction must be a number, got {fraction!r}")
        if not 0.0 < float(fraction) < 0.5:
            raise PublicSetError(f"public_data.fraction must be in (0, 0.5), got {fraction}")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise PublicSetError(f"public_data.seed must be an integer >= 0, got {seed!r}")
        if not isinstance(digest, str) or len(digest) != 64 or not _is_hex(digest):
            raise PublicSetError("public_data.sha256 must be 64 lowercase hex digits")
        return cls(dataset, float(fraction), seed, digest)

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in _KEYS}


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdef" for c in text)
