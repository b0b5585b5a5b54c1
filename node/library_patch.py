"""Wrapping a library's function from outside, once, and only where it is what we expect.

The node mends a few of py-libp2p's behaviours this way (`node/yamux_credit.py`,
`node/pubsub_records.py`). Each wrapper is marked, so installing twice changes nothing, and a
library whose attribute is missing or changed is left alone: the node then runs with the
library's own behaviour, which is slower but correct.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

_MARK = "_flchain_wrapped"


def wrap_once(
    owner: Any,
    name: str,
    make_wrapper: Callable[[Callable[..., Any]], Callable[..., Any]],
    *,
    what: str,
    expected: Callable[[], bool] = lambda: True,
) -> bool:
    """Replace `owner.name` with `make_wrapper(original)` unless it is wrapped already; True
    if the wrapper is (now) in place. Nothing changes, and False is returned (logged, naming
    `what`), when the attribute is not callable or `expected()` says the library changed."""
    original = getattr(owner, name, None)
    if not callable(original) or not expected():
        log.info("%s not installed: the library changed", what)
        return False
    if getattr(original, _MARK, False):
        return True
    wrapper = make_wrapper(original)
    setattr(wrapper, _MARK, True)
    setattr(owner, name, wrapper)
    return True
