"""`flchain devnet up`: a whole local network from one command.

A chain (`flchain chain serve`, py-evm or anvil) as a child process, the FLChain contract, a
task, and N node daemons (`flchain node run`) as separate processes with their own keys, data
shards and logs. `devnet.json` in the devnet directory records everything; the ledger CLI and
`devnet status|logs|down` read it through `flchain.devnet.manifest`, as the launcher does.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

from eth_account import Account

from flchain import safe_json
from flchain.attacks.channel import COLLUDING_ATTACKS, create_channel
from flchain.contracts import FLChainClient, TaskParams
from flchain.contracts.rpc import http_web3
from flchain.devnet.chainproc import (
    clear_directory,
    flchain_cmd,
    spawn_chain,
    stop_chain,
    wait_for_chain,
)

# What callers imported from here before the devnet's files and processes got modules of
# their own (devnet/manifest.py, devnet/processes.py).
from flchain.devnet.manifest import MANIFEST as MANIFEST
from flchain.devnet.manifest import (
    MAX_MANIFEST_BYTES,
    PEERS_FILE,
    DevnetError,
    write_manifest,
)
from flchain.devnet.manifest import process_alive as process_alive
from flchain.devnet.manifest import read_manifest as read_manifest
from flchain.devnet.nodehost import NODE_ENV
from flchain.devnet.nodehost import spawn as spawn_host

# What callers imported from here before the plan got a module of its own.
from flchain.devnet.plan import DEFAULT_REWARD_ETH as DEFAULT_REWARD_ETH
from flchain.devnet.plan import DEFAULT_REWARD_WEI as DEFAULT_REWARD_WEI
from flchain.devnet.plan import DevnetPlan as DevnetPlan
from flchain.devnet.plan import auto_f as auto_f
from flchain.devnet.plan import tolerance_warning as tolerance_warning
from flchain.devnet.ports import free_listen_port
from flchain.devnet.processes import (
    _node_log,
)
from flchain.devnet.processes import casualty as casualty
from flchain.devnet.processes import down as down
from flchain.devnet.processes import node_exited as node_exited
from flchain.devnet.processes import node_status as node_status
from flchain.devnet.processes import own_log_line as own_log_line
from flchain.node.blobstore import DEFAULT_KEEP_ROUNDS
from flchain.node.identity import init_node_dir
from flchain.peer_data import byzantine_indices
from flchain.taskconfig import TaskConfig, initial_model_digest

# Bound on the JSON files and /status answers the launcher reads (safe_json's depth default).
_JSON_MAX_BYTES = MAX_MANIFEST_BYTES
NODE_FUNDS_WEI = 100 * 10**18
STAKE_WEI = 10**15


def deploy_task(plan: DevnetPlan, rpc_url: str, owner_key: str) -> tuple[str, int, TaskConfig]:
    """Deploy FLChain from `owner_key`'s account and create the plan's task, escrowing its
    reward pool (`plan.reward_wei`, paid by that account); returns (contract, task id, the
    task config)."""
    w3 = http_web3(rpc_url, 60)
    owner = Account.from_key(owner_key)
    client = FLChainClient.deploy(w3, owner)
    config = plan.task_config()
    task_id = client.create_task(
        TaskParams(
            config_digest=config.digest,
            initial_digest=initial_model_digest(config),
            min_members=plan.nodes,
            max_members=max(plan.nodes, 2),
            submit_window=plan.submit_window,
            vote_window=plan.vote_window,
            alarm_window=plan.alarm_window,
            quorum_bps=plan.quorum_bps,
            alarm_bps=plan.alarm_bps,
            stake=STAKE_WEI,
            max_rounds=plan.rounds,
            rep_floor=plan.rep_floor,
            max_samples=config.max_samples,  # the cap every node's weights assume
            reward=plan.reward_wei,
        )
    )
    return client.address, task_id, config


DEVNET_SCRYPT_N = 2**10
"""scrypt cost of devnet node keys. Their passwords are 128 random bits (`prepare_nodes`), and
no work factor makes such a password easier or harder to guess; the default cost (2^18, about a
second per key) protects the passwords people choose at `node init`. At 2^18 the keys of a
10-node devnet took some 20 s to create and 10 s more to unlock as the nodes started."""


def prepare_nodes(plan: DevnetPlan, rpc_url: str, funder_key: str, config: TaskConfig) -> list:
    """Keys, funds, task config and a fixed listen port for every node."""
    w3 = http_web3(rpc_url, 60)
    funder = Account.from_key(funder_key)
    nodes = []
    nonce = w3.eth.get_transaction_count(funder.address, "pending")
    # The Byzantine nodes are the simulation's Byzantine peers for the same seed
    # (`flchain.peer_data`), each given the plan's attacks in turn.
    byzantine = byzantine_indices(plan.nodes, plan.byzantine, plan.seed)
    for i in range(plan.nodes):
        node_dir = (plan.directory / f"node-{i}").resolve()
        node_dir.mkdir(parents=True, exist_ok=True)
        password = os.urandom(16).hex()
        pw_file = node_dir / "password"
        fd = os.open(pw_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(password)
        identity = init_node_dir(node_dir, password, overwrite=True, scrypt_n=DEVNET_SCRYPT_N)
        (node_dir / "task-config.json").write_bytes(config.to_json_bytes())
        tx = {
            "to": identity.address,
            "value": NODE_FUNDS_WEI,
            "gas": 21000,
            "nonce": nonce,
            "chainId": w3.eth.chain_id,
            "maxFeePerGas": 10 * 10**9,
            "maxPriorityFeePerGas": 10**9,
        }
        nonce += 1
        w3.eth.send_raw_transaction(funder.sign_transaction(tx).raw_transaction)
        k = byzantine.index(i) if i in byzantine else -1
        nodes.append(
            {
                "name": f"node-{i}",
                "dir": str(node_dir),
                "address": identity.address,
                "peer_id": identity.peer_id,
                "port": free_listen_port(),
                "attack": plan.attacks[k % len(plan.attacks)] if k >= 0 and plan.attacks else None,
                "data": f"{config.dataset}#shard={i}/{plan.nodes},partition={plan.partition}",
                # The run seed, as `simulate --seed` uses it for every peer: a node's draws
                # differ from the others' by its shard index (`flchain.pipeline.stream`).
                "seed": plan.seed,
            }
        )
    _collusion_channel(plan, nodes)
    return nodes


def _peer_addr(node: dict) -> str:
    return f"/ip4/127.0.0.1/tcp/{node['port']}/p2p/{node['peer_id']}"


def write_peers_file(directory: Path, nodes: list[dict]) -> Path:
    """Every node's address, for `node run --peers-file`: the nodes dial the member mesh
    directly from it instead of first asking members that may not know them yet (in a
    10-node devnet most of the mesh was still dialing when round 1's fetches began)."""
    path = (directory / PEERS_FILE).resolve()
    path.write_text(json.dumps([_peer_addr(node) for node in nodes]))
    return path


def _collusion_channel(plan: DevnetPlan, nodes: list[dict]) -> None:
    """The Byzantine nodes running alie/ipm share a channel directory (attacks/channel.py);
    in the omniscient test mode the honest nodes are given it too, to leak their updates."""
    colluders = [n for n in nodes if n["attack"] in COLLUDING_ATTACKS]
    if not colluders:
        return
    directory = create_channel(
        (plan.directory / "collusion").resolve(), len(colluders), omniscient=plan.omniscient
    )
    for node in nodes:
        if node in colluders or (plan.omniscient and node["attack"] is None):
            node["collude_dir"] = str(directory)


def node_args(manifest: dict, node: dict) -> list[str]:
    """The `flchain node run` arguments of one devnet node."""
    peers = [n for n in manifest["nodes"] if n["name"] != node["name"]][:2]
    args = [
        "--dir",
        node["dir"],
        "--password-file",
        str(Path(node["dir"]) / "password"),
        "--rpc",
        manifest["rpc_url"],
        "--contract",
        manifest["contract"],
        "--task",
        str(manifest["task_id"]),
        "--data",
        node["data"],
        "--listen",
        f"/ip4/127.0.0.1/tcp/{node['port']}",
        "--device",
        "cpu",
        "--seed",
        str(node.get("seed", 0)),
        "-v",
    ]
    for peer in peers:
        args += ["--bootstrap", _peer_addr(peer)]
    if manifest.get("peers_file"):
        args += ["--peers-file", manifest["peers_file"]]
    if node.get("attack"):
        args += ["--attack", node["attack"]]
        for pair in manifest.get("attack_params", ()):
            args += ["--attack-param", pair]
    if node.get("collude_dir"):
        args += ["--collude-dir", node["collude_dir"]]
    args += ["--keep-rounds", str(manifest.get("keep_rounds", DEFAULT_KEEP_ROUNDS))]
    return args


# Devnet nodes train on one torch thread each: they share the machine, and a run is
# bit-reproducible only at a fixed thread count (`flchain simulate` matches it).


def start_node(manifest: dict, node: dict) -> subprocess.Popen[bytes]:
    """One node as its own `flchain node run` process (a restart of a single node)."""
    cmd = [*flchain_cmd(), "node", "run", *node_args(manifest, node)]
    log = _node_log(node).open("ab")
    env = {**os.environ, **NODE_ENV}
    return subprocess.Popen(
        cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env
    )


def start_nodes(
    host: subprocess.Popen[bytes], manifest: dict, nodes: list[dict], timeout: float = 120.0
) -> list[int]:
    """Every node at once, forked by `host` after one import of the node's modules; their
    pids, in the order of `nodes`."""
    specs = [{"args": node_args(manifest, n), "log": str(_node_log(n))} for n in nodes]
    try:
        out, err = host.communicate(json.dumps(specs).encode(), timeout=timeout)
    except subprocess.TimeoutExpired:
        host.kill()
        raise DevnetError(f"the node host did not start the nodes within {timeout:.0f} s") from None
    lines = out.decode(errors="replace").strip().splitlines()
    try:
        pids = safe_json.loads(lines[-1], max_bytes=_JSON_MAX_BYTES)["pids"]
    except (IndexError, ValueError, KeyError, TypeError):
        tail = err.decode(errors="replace").strip()[-2000:]
        raise DevnetError(f"the node host failed (exit {host.returncode}): {tail}") from None
    if len(pids) != len(nodes) or not all(isinstance(p, int) for p in pids):
        raise DevnetError(f"the node host started {len(pids)} of {len(nodes)} nodes")
    return pids


def up(
    plan: DevnetPlan,
    *,
    replace: bool = False,
    host: subprocess.Popen[bytes] | None = None,
    chain_proc: subprocess.Popen[bytes] | None = None,
) -> dict:
    """Start everything and write the manifest; returns it. A stopped devnet already in the
    directory is replaced only with `replace` (DevnetError otherwise). `host` and `chain_proc`:
    a node host (`nodehost.spawn`) and a chain (`chainproc.spawn_chain`, its directory cleared
    first) the caller started early; `up` owns them from here."""
    host = host or spawn_host()
    try:
        if chain_proc is None:
            clear_directory(plan.directory, replace=replace)
            chain_proc = spawn_chain(plan)
        chain = wait_for_chain(chain_proc, plan.directory)
    except BaseException:
        host.kill()
        if chain_proc is not None:
            stop_chain(chain_proc)
        raise
    try:
        keys = [a["private_key"] for a in chain["accounts"]]
        contract, task_id, config = deploy_task(plan, chain["rpc_url"], keys[0])
        nodes = prepare_nodes(plan, chain["rpc_url"], keys[1], config)
        manifest = {
            "rpc_url": chain["rpc_url"],
            "chain": plan.chain,
            "chain_pid": chain_proc.pid,
            "contract": contract,
            "task_id": task_id,
            "rounds": plan.rounds,
            "rule": plan.rule,
            "attack": ",".join(plan.attacks) or None,
            "byzantine": plan.byzantine,
            "attack_params": list(plan.attack_params),
            "secure": plan.secure,
            "reward_wei": plan.reward_wei,
            "keep_rounds": plan.keep_rounds,
            "nodes": nodes,
            "peers_file": str(write_peers_file(plan.directory, nodes)),
            "started": time.time(),
        }
        for node, pid in zip(nodes, start_nodes(host, manifest, nodes), strict=True):
            node["pid"] = pid
        write_manifest(plan.directory, manifest)
        return manifest
    except BaseException:
        if host.poll() is None:
            host.kill()
        stop_chain(chain_proc)
        raise
