"""Start a devnet's node daemons from one process that imports once, then forks.

Each `flchain node run` process pays seconds of imports (torch, web3, libp2p) before it does
anything; ten of them on two cores took half a minute before the first node joined. The host
imports the node's modules once, then forks one child per node. Each child starts a session of
its own (so `devnet down` signals it as it did a `node run` process), writes to its node.log,
reseeds Python's `random`, and runs `node run` with the arguments the launcher built. Nothing
but imports runs before the forks, so no thread, event loop or connection is copied into a
child.

The launcher writes a JSON list of {"args": [...], "log": "path"} to the host's stdin; the host
prints one JSON line, {"pids": [...]}, and exits. The children then belong to init, as the
`start_new_session` children of a `devnet up` that exits always did.

    python -m flchain.devnet.nodehost < specs.json
"""

from __future__ import annotations

import importlib
import json
import os
import random
import subprocess
import sys
import traceback

from flchain import safe_json
from flchain.fast_exit import exit_now, exit_status

# A launch of a few hundred nodes is well below this; a larger stdin is not ours.
MAX_SPEC_BYTES = 4 * 1024 * 1024
# What `node run` imports on its way (torch, web3, libp2p, trio among them). Training imports
# no torch._dynamo (`models/trainer.py: _SgdStep`), which the host preloaded for 0.9-1.4 s,
# and the digits load without scikit-learn (`models/datasets.py: _digits_arrays`), 0.6 s more.
_PRELOADED = ("flchain.commands.node", "flchain.node.daemon")


# Every node process runs single-threaded torch: N nodes share the machine's cores.
NODE_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def spawn() -> subprocess.Popen[bytes]:
    """Start a host: it imports at once and forks the nodes when it reads their specs, so
    started as early as possible its imports overlap the launcher's and the chain's start.
    Whoever started it kills it if it never gets to hand the specs over."""
    return subprocess.Popen(
        [sys.executable, "-m", "flchain.devnet.nodehost"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, **NODE_ENV},
    )


def _run_child(args: list[str], log: str) -> int:
    """In the forked child: detach, log to `log`, run `node run` with `args`."""
    os.setsid()
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    random.seed()  # the parent's state would repeat in every child
    from flchain.commands.node import run_command

    try:
        run_command.main(args=args, prog_name="flchain node run", standalone_mode=True)
    except SystemExit as exc:
        return exit_status(exc.code)
    return 0


def parse_specs(raw: bytes) -> list[dict]:
    """The launcher's node specs: a JSON list of {"args": [str, ...], "log": str}."""
    specs = safe_json.loads(raw, max_bytes=MAX_SPEC_BYTES)  # ValueErrors: oversize, too deep
    if not isinstance(specs, list) or not all(
        isinstance(s, dict)
        and isinstance(s.get("log"), str)
        and isinstance(s.get("args"), list)
        and all(isinstance(a, str) for a in s["args"])
        for s in specs
    ):
        raise ValueError('expected a JSON list of {"args": [...], "log": "path"}')
    return specs


def main() -> None:
    # Imports first: the launcher starts the host before the chain, so they overlap its
    # start-up, and writes the specs once the nodes' keys and funds are ready.
    for module in _PRELOADED:  # the expensive imports, once, before any fork
        importlib.import_module(module)
    try:
        specs = parse_specs(sys.stdin.buffer.read(MAX_SPEC_BYTES + 1))
    except ValueError as exc:
        raise SystemExit(str(exc)) from None

    pids = []
    for spec in specs:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = _run_child(spec["args"], spec["log"])
            except BaseException:
                traceback.print_exc()
            finally:
                exit_now(code)
        pids.append(pid)
    print(json.dumps({"pids": pids}), flush=True)
    # Straight out: an interpreter teardown with torch, web3 and libp2p loaded took seconds,
    # and the launcher waits for it; the host holds nothing to clean up.
    exit_now(0)


if __name__ == "__main__":
    main()
