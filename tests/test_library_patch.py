"""A library function is wrapped once, and a library that changed is left alone."""

from __future__ import annotations

from types import SimpleNamespace

from flchain.node.library_patch import wrap_once


def _doubling(original):
    return lambda x: 2 * original(x)


def test_wrapped_once_and_a_changed_library_is_left_alone() -> None:
    lib = SimpleNamespace(f=lambda x: x + 1)
    assert wrap_once(lib, "f", _doubling, what="doubling") is True
    assert lib.f(1) == 4
    wrapped = lib.f
    assert wrap_once(lib, "f", _doubling, what="doubling") is True  # already in place
    assert lib.f is wrapped and lib.f(1) == 4
    assert wrap_once(lib, "g", _doubling, what="doubling") is False  # no such function
    assert not hasattr(lib, "g")
    other = SimpleNamespace(f=lambda x: x + 1)
    assert wrap_once(other, "f", _doubling, what="doubling", expected=lambda: False) is False
    assert other.f(1) == 2  # the library's own
