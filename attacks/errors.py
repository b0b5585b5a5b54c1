"""The attacks' one error, importable without torch (the catalog raises it)."""

from __future__ import annotations


class AttackError(ValueError):
    """An attack was asked for something it cannot do: unknown name, bad knob, bad shapes."""
