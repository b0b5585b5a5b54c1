"""A process ended by `exit_now` keeps what it said and the status `sys.exit` would give."""

from __future__ import annotations

import subprocess
import sys

import pytest

from flchain.fast_exit import exit_status


@pytest.mark.parametrize(
    ("code", "status", "stderr"),
    [("None", 0, ""), ("3", 3, ""), ("'no task 7'", 1, "no task 7\n")],
)
def test_exit_now_flushes_output_and_logs_and_keeps_the_status(
    code: str, status: int, stderr: str
) -> None:
    script = (
        "import logging, sys\n"
        "from flchain.fast_exit import exit_now\n"
        "logging.basicConfig(stream=sys.stderr, format='%(message)s')\n"
        "sys.stdout.write('unflushed output')\n"
        "logging.getLogger('x').warning('logged')\n"
        f"exit_now({code})\n"
        "print('never reached')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == status
    assert done.stdout == "unflushed output"
    assert done.stderr == "logged\n" + stderr


def test_exit_status_is_what_sys_exit_ends_with() -> None:
    assert [exit_status(c) for c in (None, 0, 2, "message")] == [0, 0, 2, 1]
