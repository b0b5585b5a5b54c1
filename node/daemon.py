"""`flchain node run`: wire identity, chain client, learner, libp2p and the round engine.

Everything the node needs survives a restart in its directory: keys, the blob store (models and
updates), the task config; the round state is the chain's. `runtime.json` tells local tools
(`flchain node status`, the devnet launcher) where the status endpoint and libp2p listen.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio
from phe.paillier import PaillierPrivateKey, PaillierPublicKey

from flchain.attacks import SECURE_ATTACKS, AttackError, RingShift
from flchain.attacks.channel import COLLUDING_ATTACKS, ColludingTrainer, CollusionChannel
from flchain.config import DEFAULT_LINGER_S
from flchain.contracts import FLChainClient
from flchain.contracts.rpc import http_web3
from flchain.crypto.wire import encode_public_key
from flchain.node.blobstore import DEFAULT_KEEP_ROUNDS, BlobStore
from flchain.node.engine import PROTOCOL_ATTACKS, RoundEngine
from flchain.node.events import emit
from flchain.node.files import RUNTIME_FILE, STATUS_FILE
from flchain.node.funds import wait_for_funds
from flchain.node.he_key import load_or_create_he_key
from flchain.node.identity import NodeIdentity
from flchain.node.learner import Learner
from flchain.node.metrics import Metrics
from flchain.node.p2p import P2PConfig, P2PNode
from flchain.node.secure import SecureCodec, mask_task_label
from flchain.node.secure_engine import SecureRoundEngine
from flchain.node.status import StatusServer, redact_url
from flchain.siren_defaults import CLIENT_THRESHOLD
from flchain.taskconfig import DataSpec, TaskConfig

log = logging.getLogger("flchain.node")
# How long a node keeps serving blobs after its task ended (`node run --linger`).
TASK_CONFIG_FILE = "task-config.json"


class NodeError(RuntimeError):
    """The node cannot start: a wrong task config, an unreachable chain, a bad flag."""


@dataclass(frozen=True)
class NodeSettings:
    dir: Path
    rpc_url: str
    contract: str
    task_id: int
    data: DataSpec
    listen: tuple[str, ...] = ("/ip4/127.0.0.1/tcp/0",)
    bootstrap: tuple[str, ...] = ()
    peers: tuple[str, ...] = ()  # P2PConfig.peers: addresses known ahead (`load_peers_file`)
    device: str = "auto"
    attacks: tuple[str, ...] = ()
    attack_params: dict[str, Any] = field(default_factory=dict)
    task_config: Path | None = None
    status_host: str = "127.0.0.1"
    status_port: int = 0
    poll_interval: float = 0.3
    alarm_threshold: float = CLIENT_THRESHOLD  # Siren's C_l, defined once
    seed: int = 0
    dp_clip: float | None = None
    dp_noise: float | None = None
    dp_delta: float | None = None
    keep_rounds: int = DEFAULT_KEEP_ROUNDS
    linger: float = DEFAULT_LINGER_S
    # The devnet's collusion channel (attacks/channel.py): a Byzantine node running alie or
    # ipm estimates the benign statistics there with the other colluders; an honest node is
    # given it only in the omniscient test mode, where it leaks its update there.
    collude_dir: Path | None = None


def load_task_config(settings: NodeSettings, on_chain_digest: bytes) -> TaskConfig:
    """The task config file, checked against the digest the chain holds."""
    path = settings.task_config or settings.dir / TASK_CONFIG_FILE
    if not path.exists():
        raise NodeError(f"no task config at {path}: pass --task-config FILE (the task's JSON)")
    data = path.read_bytes()
    if hashlib.sha256(data).digest() != on_chain_digest:
        raise NodeError(
            f"{path} does not match task {settings.task_id}'s config digest on chain "
            f"(0x{on_chain_digest.hex()}); it is not this task's config"
        )
    if path != settings.dir / TASK_CONFIG_FILE:
        (settings.dir / TASK_CONFIG_FILE).write_bytes(data)
    return TaskConfig.from_json_bytes(data)


def split_attacks(names: tuple[str, ...]) -> tuple[str | None, frozenset[str]]:
    """One learning attack (update or data) and any number of protocol attacks (secure-mode
    attacks are neither: `ring_attack` builds them)."""
    protocol = frozenset(n for n in names if n in PROTOCOL_ATTACKS)
    learning = [n for n in names if n not in PROTOCOL_ATTACKS and n not in SECURE_ATTACKS]
    if len(learning) > 1:
        raise NodeError(f"at most one update or data attack per node, got {learning}")
    return (learning[0] if learning else None), protocol


def ring_attack(settings: NodeSettings, config: TaskConfig) -> RingShift | None:
    """The ring attack this member of a secure task runs (`ringshift`), or None."""
    if "ringshift" not in settings.attacks:
        return None
    if not config.secure:
        raise NodeError("--attack ringshift attacks secure aggregation: this task is not secure")
    try:
        return RingShift.of(settings.attack_params, config.secure_value_range)
    except AttackError as exc:
        raise NodeError(str(exc)) from exc


def colluder_attack(settings: NodeSettings, attack: str | None) -> str | None:
    """The colluding attack (alie, ipm) this node crafts over the collusion channel, or
    None; a colluder's Learner trains honestly and `ColludingTrainer` does the rest."""
    if settings.collude_dir is not None and attack in COLLUDING_ATTACKS:
        return attack
    return None


def with_collusion(learner: Any, settings: NodeSettings, attack: str | None, name: str) -> Any:
    """The learner the engine trains with: as is, or wrapped in a `ColludingTrainer` when
    the node was given the collusion channel and is a colluder or, in the omniscient test
    mode, an honest node (it leaks its update there; other attackers ignore the channel)."""
    colluding = colluder_attack(settings, attack)
    if settings.collude_dir is None or not (colluding or attack is None):
        return learner
    try:
        channel = CollusionChannel(settings.collude_dir, name, learner.num_params)
    except ValueError as exc:
        raise NodeError(f"collusion channel: {exc}") from exc
    return ColludingTrainer(learner, channel, attack=colluding, params=settings.attack_params)


async def run_node(
    settings: NodeSettings, identity: NodeIdentity, password: str | None = None
) -> None:
    """Run until the task ends or the process is told to stop (SIGINT/SIGTERM).

    `password` unlocks (or seals a new) Paillier key pair; only secure tasks need it."""
    w3 = http_web3(settings.rpc_url)
    client = FLChainClient(w3, settings.contract, identity.eth_account)
    try:
        task = await trio.to_thread.run_sync(client.get_task, settings.task_id)
    except Exception as exc:
        raise NodeError(
            f"cannot read task {settings.task_id} from {settings.contract} at "
            f"{settings.rpc_url}: {exc}"
        ) from exc
    config = load_task_config(settings, task.config_digest)
    attack, protocol_attacks = split_attacks(settings.attacks)
    ring = ring_attack(settings, config)
    # A colluder trains honestly; `ColludingTrainer` crafts its attack from the channel.
    colluding = colluder_attack(settings, attack)
    learner: Any = await trio.to_thread.run_sync(
        lambda: Learner(
            config,
            settings.data,
            device=settings.device,
            attack=None if colluding else attack,
            attack_params=settings.attack_params,
            seed=settings.seed,
            dp_clip=settings.dp_clip,
            dp_noise=settings.dp_noise,
        )
    )
    learner = with_collusion(learner, settings, attack, identity.peer_id)
    initial = await trio.to_thread.run_sync(learner.initial_model)
    if hashlib.sha256(initial).digest() != task.initial_digest:
        raise NodeError(
            "the initial model rebuilt from the task config does not match the chain's "
            f"initial digest 0x{task.initial_digest.hex()}"
        )
    metrics = Metrics()
    store = BlobStore(settings.dir, metrics=metrics, keep_rounds=settings.keep_rounds)
    store.put(initial, pin=True)
    (settings.dir / STATUS_FILE).unlink(missing_ok=True)
    p2p_config = P2PConfig(
        listen=settings.listen, bootstrap=settings.bootstrap, peers=settings.peers
    )
    secure = await trio.to_thread.run_sync(
        _secure_setup, settings, identity, password, config, learner, store
    )
    async with P2PNode(identity.libp2p_keypair, store, metrics=metrics, config=p2p_config) as p2p:
        engine_kwargs: dict[str, Any] = dict(
            client=client,
            task_id=settings.task_id,
            learner=learner,
            p2p=p2p,
            store=store,
            metrics=metrics,
            peer_id=identity.peer_id,
            attacks=protocol_attacks,
            poll_interval=settings.poll_interval,
            alarm_threshold=settings.alarm_threshold,
            dp_delta=settings.dp_delta or config.dp_delta,
        )
        if secure is None:
            engine: RoundEngine = RoundEngine(**engine_kwargs)
        else:
            engine = SecureRoundEngine(
                codec=secure.codec, he_keypair=secure.keypair, ring_attack=ring, **engine_kwargs
            )
        # Commit, then reveal: our own update is served only once its round's submit phase
        # has closed on chain (requests before that are answered NOT_REVEALED).
        p2p.sealed = engine.sealed_now
        if isinstance(learner, ColludingTrainer):
            learner.members = engine.training_members
            learner.deadline = engine.collusion_deadline
        if "equivocate" in protocol_attacks:
            from flchain.node.equivocation import install_equivocating_server

            install_equivocating_server(p2p)

        def status() -> dict[str, Any]:
            s = engine.state
            return {
                "node": str(settings.dir),
                "address": identity.address,
                "peer_id": p2p.peer_id,
                "task": settings.task_id,
                "contract": client.address,
                "rpc": redact_url(settings.rpc_url),
                "member_index": s.member_index,
                "round": s.round,
                "phase": s.phase,
                "task_status": s.task_status,
                "global_round": s.global_round,
                "global_digest": s.global_digest,
                "accuracy": s.accuracy,
                "rounds_done": s.rounds_done,
                "accepted_last_round": s.last_accepted,
                "accuracy_history": s.accuracy_history,
                "dp": {
                    "clip": learner.dp_clip,
                    "noise": learner.dp_noise,
                    "delta": settings.dp_delta or config.dp_delta,
                    "epsilon": s.epsilon,
                },
                "secure": None
                if secure is None
                else {
                    "paillier_key_digest": "0x" + secure.key_digest.hex(),
                    "key_bits": config.secure_key_bits,
                },
                "timings": s.timings,
                "peers": p2p.connected_peers(),
                "addrs": p2p.addrs,
                "attacks": list(settings.attacks),
                "last_error": s.last_error,
                "metrics": metrics.snapshot(),
                "pid": os.getpid(),
            }

        with StatusServer(
            status, metrics.to_prometheus, host=settings.status_host, port=settings.status_port
        ) as server:
            runtime = {
                "status_url": server.url,
                "addrs": p2p.addrs,
                "pid": os.getpid(),
                "peer_id": p2p.peer_id,
            }
            _write_json(settings.dir / RUNTIME_FILE, runtime)
            log.info("node %s: status %s, libp2p %s", identity.address, server.url, p2p.addrs)
            emit(
                "started",
                address=identity.address,
                peer_id=p2p.peer_id,
                task=settings.task_id,
                contract=client.address,
                addrs=p2p.addrs,
                status_url=server.url,
            )
            # Say once what to fund, and wait for it, rather than retry a join the chain
            # refuses for want of ETH (node/funds.py).
            engine.state.phase = "waiting for funds"
            hints: list[str] = []

            def waiting(hint: str) -> None:  # /status shows it as the node's last error
                engine.state.last_error = hint
                hints.append(hint)

            await wait_for_funds(client, settings.task_id, settings.rpc_url, on_wait=waiting)
            if hints and engine.state.last_error == hints[-1]:
                engine.state.last_error = None
            engine.state.phase = "starting"
            await engine.refresh_members()
            deliveries = await p2p.join_task(
                settings.task_id,
                is_member=engine.is_member,
                round_ok=engine.round_ok,
                address_of=engine.address_of,
            )
            await engine.ensure_member(
                identity.x25519_public_bytes,
                secure.key_digest if secure else bytes(32),
                peer_key=identity.libp2p_keypair,
            )
            try:
                async with trio.open_nursery() as nursery:
                    await nursery.start(engine.view.follow)  # new blocks wake the engine
                    nursery.start_soon(engine.members_loop)
                    nursery.start_soon(engine.consume, deliveries)
                    if engine.attacker is not None:
                        nursery.start_soon(engine.attacker.run)
                    nursery.start_soon(_stop_on_signal, nursery.cancel_scope)
                    await engine.run()
                    # Members a step behind (a restart, a slow link) fetch the final model from
                    # us: serve blobs a little longer before leaving. /status says "done".
                    log.info(
                        "task %d is over; serving for %g s more", settings.task_id, settings.linger
                    )
                    if settings.linger > 0:
                        emit("lingering", seconds=settings.linger)
                    await trio.sleep(settings.linger)
                    log.info("task %d is over; node stops", settings.task_id)
                    nursery.cancel_scope.cancel()
            finally:
                # The last word of a stopped node, for `devnet status` and the ledger summary.
                _write_json(settings.dir / STATUS_FILE, status())


@dataclass(frozen=True)
class _SecureSetup:
    codec: SecureCodec
    keypair: tuple[PaillierPublicKey, PaillierPrivateKey]
    key_digest: bytes  # sha256 of the public key blob, registered at join


def _secure_setup(
    settings: NodeSettings,
    identity: NodeIdentity,
    password: str | None,
    config: TaskConfig,
    learner: Learner,
    store: BlobStore,
) -> _SecureSetup | None:
    """For a secure task: unlock (or create) the Paillier key and offer its public blob."""
    if not config.secure:
        return None
    if password is None:
        raise NodeError("a secure task needs the node password to unlock its Paillier key")
    public, private = load_or_create_he_key(settings.dir, password, config.secure_key_bits)
    codec = SecureCodec(
        config,
        num_params=learner.num_params,
        mask_key=identity.x25519_private,
        task_label=mask_task_label(settings.contract, settings.task_id),
    )
    digest = store.put(encode_public_key(public), pin=True)
    return _SecureSetup(codec, (public, private), digest)


async def _stop_on_signal(scope: trio.CancelScope) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            log.info("stopping on signal")
            scope.cancel()
            return


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)
