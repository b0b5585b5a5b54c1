"""Ending a process that has loaded torch without the interpreter's teardown.

Freeing torch's modules one by one takes 0.4-0.8 s after the work is done (seconds with
web3 and libp2p loaded too). A process whose work is over, with nothing left to clean up,
flushes what it said and ends at once. Used by the `flchain` entry point and by the devnet's
node host and its forked nodes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from typing import NoReturn


def exit_status(code: object) -> int:
    """The status `sys.exit(code)` ends with: None is 0, an int itself, anything else 1."""
    if code is None:
        return 0
    return code if isinstance(code, int) else 1


def exit_now(code: object = 0) -> NoReturn:
    """End the process as `sys.exit(code)` would (status, and a message code printed to
    stderr), after flushing stdout, stderr and the logging handlers, skipping the teardown."""
    if code is not None and not isinstance(code, int):
        print(code, file=sys.stderr)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe: nothing more to say
            stream.flush()
    logging.shutdown()
    os._exit(exit_status(code))
