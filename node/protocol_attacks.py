"""The protocol attacks a Byzantine node carries out on the network (`--attack NAME`).

The round engine calls in at a few points, so an attacking node runs the honest engine for
everything else: `claimed_samples` when it commits (`liesamples`), `commit_instead` before it
trains (`copy`, `replay` take the commit over, `freeride` skips it), `casts_vote` before it
votes (`novote` never does), `alarm_instead` where the honest Siren check would run and
`at_task_end` once the task is over (`falsealarm` alarms every finalized round, whatever its
model). The economic attacks (`freeride`, `falsealarm`, `novote`) break no rule the contract
can refuse: they only test whether the rewards and reputations price them out. `run` is a
side task of the daemon that hits the other members once per round (`slowloris`,
`blobflood`, `deepjson`); in secure mode `bundle` swaps the bundle header (`deepjson`).
What each attempt came to is counted in `protocol_attack_actions_total{attack, outcome}` on
the attacker's own /metrics, so a test can tell "the attack was refused" from "the attack
never ran". Every action is bounded in count and time, and nothing a victim answers can
raise out of here.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import time
import urllib.error
import urllib.request
from typing import TYPE_CHECKING, Any, Final

import torch
import trio
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID

from flchain.attacks.catalog import PROTOCOL_ATTACKS
from flchain.attacks.payloads import (
    DEEPJSON_SIZES,
    LIE_SAMPLES,
    junk_blob,
    nested_brackets,
    nested_bundle,
    nested_rpc_request,
)
from flchain.contracts import ContractRevert, RoundStatus, bitmap_indices
from flchain.crypto.ciphertext import MAX_HEADER_BYTES
from flchain.node import blobs
from flchain.node.learner import LocalUpdate
from flchain.node.messages import MAX_MESSAGE_BYTES, Announcement
from flchain.node.metrics import MetricSpec

if TYPE_CHECKING:
    from flchain.node.engine import RoundEngine

log = logging.getLogger("flchain.node.attack")

# The attacks this module carries out: the catalogue's protocol attacks but equivocate, which
# lives in the gossip layer (node/equivocation.py).
ELSEWHERE: Final = frozenset({"equivocate"})
ATTACKS: Final = frozenset(PROTOCOL_ATTACKS) - ELSEWHERE
_PER_ROUND: Final = ("slowloris", "blobflood", "deepjson")

SLOWLORIS_STREAMS: Final = 24  # blob requests held open per member per round
SLOWLORIS_HOLD_S: Final = 45.0  # the most one round's streams are held (the round may end first)
BLOBFLOOD_COUNT: Final = 16  # junk digests announced per round
RPC_TIMEOUT_S: Final = 30.0  # per nested JSON-RPC post
# Gossip bodies: one just inside an announcement's size limit (only a depth check stops it)
# and the 75 KB one.
GOSSIP_NESTED_SIZES: Final = (MAX_MESSAGE_BYTES, DEEPJSON_SIZES[0])

ACTIONS_METRIC: Final = MetricSpec(
    "protocol_attack_actions_total",
    "counter",
    "What this node's protocol attacks attempted, by attack and outcome (a Byzantine "
    "node's own record; honest nodes never count here).",
    ("attack", "outcome"),
)


class ProtocolAttacker:
    """The network attacks of one Byzantine node, driven by its round engine."""

    def __init__(self, engine: RoundEngine, attacks: frozenset[str]) -> None:
        self.engine = engine
        self.attacks = attacks & ATTACKS
        self._rng = random.Random(engine.peer_id)
        engine.metrics.register(ACTIONS_METRIC)

    def _count(self, attack: str, outcome: str, value: int = 1) -> None:
        self.engine.metrics.inc(ACTIONS_METRIC.name, value, attack=attack, outcome=outcome)

    # ------------------------------------------------------------------ commit hooks
    def committed_update(self, r: int, update: LocalUpdate) -> LocalUpdate:
        """`spam`: commit a well-formed update blob full of NaN instead of ours (a new digest
        each round: the same one would be refused as taken)."""
        if "spam" not in self.attacks:
            return update
        learner = self.engine.learner
        nan = torch.full((learner.num_params,), math.nan)
        nan[0] = float(r)
        return LocalUpdate(learner.encode_update(nan), update.samples, update.loss)

    def committed_bundle(self, blob: bytes) -> bytes:
        """Secure mode: `spam` commits a bundle nobody can parse; `deepjson` one with a
        nested-bracket header."""
        if "spam" in self.attacks:
            return os.urandom(4096)
        return self.bundle(blob)

    def keeps_blob(self) -> bool:
        """`withhold`: commit the digest but keep no blob to serve."""
        return "withhold" not in self.attacks

    async def after_commit(self, r: int) -> None:
        """`spam`: oversize, malformed and replayed gossip after the announcement."""
        if "spam" in self.attacks:
            await self.engine._spam(r)

    def claimed_samples(self, samples: int) -> int:
        """`liesamples`: the sample count to commit instead of the true one."""
        if "liesamples" in self.attacks:
            self._count("liesamples", "claimed")
            return LIE_SAMPLES
        return samples

    async def commit_instead(self, r: int, info: Any) -> bool:
        """`copy` / `replay`: commit someone else's or an old digest instead of training;
        `freeride`: commit nothing at all (the node still votes with the honest aggregate).
        True when the attack took the round's commit (accepted, refused or skipped), False
        to train."""
        if "freeride" in self.attacks:
            log.info("round %d: free-riding: no training, no commit", r)
            self.engine.state.phase = "free-riding"
            self._count("freeride", "skipped_commit")
            return True
        if "copy" in self.attacks:
            await self._copy(r)
            return True
        if "replay" in self.attacks:
            return await self._replay(r)
        return False

    async def _copy(self, r: int) -> None:
        """Wait for another member's commit of this round and commit its digest as ours."""
        e = self.engine
        me = e.state.member_index
        e.state.phase = "copying"
        while True:
            seen = e.view.head
            info = await e.view.round(r)
            others = [i for i in bitmap_indices(info.submitted) if i != me]
            if others:
                break
            if info.status != RoundStatus.OPEN or time.time() >= info.submit_deadline:
                self._count("copy", "no_victim")
                return
            await e.view.wait(seen, until=info.submit_deadline)
        victim = others[0]
        commit = await e._chain(e.client.get_update, e.task_id, r, victim)
        log.info("round %d: copying member %d's digest 0x%s", r, victim, commit.digest.hex())
        await self._submit("copy", r, commit.digest, commit.samples, info.base_round, commit.loss)

    async def _replay(self, r: int) -> bool:
        """Recommit an old digest with its old base round: our own in even rounds, another
        member's in odd ones (either when only one exists). Round 1 has nothing to replay:
        the node trains honestly, which gives it something of its own to replay later."""
        e = self.engine
        me = e.state.member_index
        own, other = None, None
        for old in range(r - 1, 0, -1):
            info = await e._chain(e.client.get_round, e.task_id, old)
            for i in bitmap_indices(info.submitted):
                commit = await e._chain(e.client.get_update, e.task_id, old, i)
                if i == me and own is None:
                    own = commit
                elif i != me and other is None:
                    other = commit
            if own is not None and other is not None:
                break
        chosen = (own or other) if r % 2 == 0 else (other or own)
        if chosen is None:
            return False
        e.state.phase = "replaying"
        log.info(
            "round %d: replaying digest 0x%s (base round %d)",
            r,
            chosen.digest.hex(),
            chosen.base_round,
        )
        await self._submit(
            "replay", r, chosen.digest, chosen.samples, chosen.base_round, chosen.loss
        )
        return True

    async def _submit(
        self, attack: str, r: int, digest: bytes, samples: int, base_round: int, loss: int
    ) -> bool:
        """Commit on chain; a revert is logged and counted, and the node carries on."""
        e = self.engine
        try:
            await e.view.send(e.client.submit, e.task_id, r, digest, samples, base_round, loss)
        except ContractRevert as exc:
            log.info("round %d: %s commit refused: %s", r, attack, exc)
            self._count(attack, "refused")
            return False
        self._count(attack, "committed")
        return True

    # ------------------------------------------------------------------ vote and alarm hooks
    def ballot(self, info: Any, digest: bytes, accepted: int) -> tuple[bytes, int]:
        """`badvote`: a random model digest, every submitter accepted."""
        if "badvote" in self.attacks:
            return os.urandom(32), info.submitted
        return digest, accepted

    def casts_vote(self, r: int) -> bool:
        """`novote`: False, the node never votes (a blocking minority: it counts towards the
        quorum's denominator and holds its weight back). `freeride` votes with the honest
        aggregate, hoping to be paid for it. Everyone else votes as the engine says."""
        if "novote" in self.attacks:
            log.info("round %d: withholding the vote", r)
            self._count("novote", "withheld")
            return False
        if "freeride" in self.attacks:
            self._count("freeride", "voted")
        return True

    async def alarm_instead(self, r: int, task: Any) -> bool:
        """`falsealarm`: alarm on finalized round `r` without looking at its model, while
        its alarm window is open. True when the attack took the Siren check over."""
        if "falsealarm" not in self.attacks:
            return False
        e = self.engine
        info = await e._chain(e.client.get_round, e.task_id, r)
        if time.time() >= info.finalized_at + task.alarm_window:
            self._count("falsealarm", "window_closed")
            return True
        try:
            await e.view.send(e.client.raise_alarm, e.task_id, r)
        except ContractRevert as exc:
            log.info("round %d: false alarm refused: %s", r, exc)
            self._count("falsealarm", "refused")
            return True
        log.info("round %d: false alarm raised", r)
        self._count("falsealarm", "raised")
        e.metrics.inc("alarms_raised_total")
        await e._announce("alarm", r, task.global_digest, 0)
        return True

    async def at_task_end(self, task: Any) -> None:
        """`falsealarm`: the task's last finalized round gets its alarm too (the engine's
        Siren check runs only when a round opens)."""
        if "falsealarm" in self.attacks:
            await self.engine._maybe_alarm(task)

    # ------------------------------------------------------------------ secure mode
    def bundle(self, blob: bytes) -> bytes:
        """`deepjson` in secure mode: our bundle with a nested-bracket header."""
        if "deepjson" not in self.attacks:
            return blob
        self._count("deepjson", "bundle")
        return nested_bundle(blob, nested_brackets(MAX_HEADER_BYTES))

    # ------------------------------------------------------------------ once per round
    async def run(self) -> None:
        """Side task: hit every other member once per round the node takes part in."""
        if not self.attacks & set(_PER_ROUND):
            return
        if "blobflood" in self.attacks:
            install_permissive_server(self.engine)
        done = 0
        while True:
            e = self.engine
            r = e.state.round
            if r > done and e.state.member_index is not None:
                done = r
                async with trio.open_nursery() as nursery:
                    if "slowloris" in self.attacks:
                        nursery.start_soon(self._slowloris, r)
                    if "blobflood" in self.attacks:
                        nursery.start_soon(self._blobflood, r)
                    if "deepjson" in self.attacks:
                        nursery.start_soon(self._deepjson, r)
            await trio.sleep(e.poll)

    def _targets(self) -> list[str]:
        return sorted(p for p in self.engine._members if p != self.engine.peer_id)

    async def _slowloris(self, r: int) -> None:
        """Open SLOWLORIS_STREAMS blob requests to every other member and read nothing,
        until the round moves on or SLOWLORIS_HOLD_S pass; then reset them all."""
        e = self.engine
        info = await e._chain(e.client.get_round, e.task_id, r)
        digest = info.base_digest  # every member holds and serves the round's base model
        with trio.move_on_after(SLOWLORIS_HOLD_S):
            async with trio.open_nursery() as nursery:
                for peer in self._targets():
                    for k in range(SLOWLORIS_STREAMS):
                        nursery.start_soon(self._hold, peer, digest, k)
                while e.state.round == r:
                    await trio.sleep(e.poll)
                nursery.cancel_scope.cancel()

    async def _hold(self, peer: str, digest: bytes, k: int) -> None:
        """One held stream: a whole request (the answer is never read); every second
        stream, all but the last byte of one (the server waits for the rest); every third,
        a blob session that asks once, reads the answer and then idles (the server keeps an
        idle session open for `session_idle`)."""
        stream = None
        session = k % 3 == 2
        protocol = blobs.SESSION_PROTOCOL_ID if session else blobs.PROTOCOL_ID
        try:
            with trio.fail_after(10.0):
                stream = await self.engine.p2p.host.new_stream(
                    ID.from_base58(peer), [TProtocol(protocol)]
                )
                if session:
                    await blobs.write_request(stream, digest)
                    await blobs.read_response(stream, self.engine.p2p.config.max_blob_bytes)
                else:
                    await stream.write(digest if k % 2 == 0 else digest[:-1])
            self._count("slowloris", "opened")
            await trio.sleep_forever()
        except Exception as exc:
            self._count("slowloris", "failed")
            log.debug("slowloris stream to %s: %r", peer, exc)
        finally:
            if stream is not None:
                with (
                    trio.CancelScope(shield=True),
                    trio.move_on_after(2.0),
                    contextlib.suppress(Exception),
                ):
                    await stream.reset()

    async def _blobflood(self, r: int) -> None:
        """Announce BLOBFLOOD_COUNT junk update digests (never committed), each the size of
        a real update, and keep the junk so that it can be served."""
        e = self.engine
        size = 4 * e.learner.num_params
        for _ in range(BLOBFLOOD_COUNT):
            blob = junk_blob(size, self._rng)
            digest = await trio.to_thread.run_sync(e.store.put, blob)
            message = Announcement(
                kind="update",
                task=e.task_id,
                round=r,
                digest=digest,
                sender=e.client.account,
                size=len(blob),
            )
            try:
                await e.p2p.announce(message)
                self._count("blobflood", "announced")
            except Exception as exc:
                self._count("blobflood", "failed")
                log.debug("blobflood announce failed: %r", exc)

    async def _deepjson(self, r: int) -> None:
        """Post each nested JSON-RPC body to the chain, then publish nested gossip."""
        url = self.engine.client.w3.provider.endpoint_uri
        for size in DEEPJSON_SIZES:
            outcome = await trio.to_thread.run_sync(post_json, url, nested_rpc_request(size))
            log.info("round %d: %d-byte nested JSON-RPC body: %s", r, size, outcome)
            self._count("deepjson", f"rpc_{outcome}")
        for size in GOSSIP_NESTED_SIZES:
            try:
                await self.engine.p2p.publish_raw(self.engine.task_id, nested_brackets(size))
                self._count("deepjson", "gossip_published")
            except Exception as exc:
                self._count("deepjson", "failed")
                log.debug("nested gossip publish failed: %r", exc)


def post_json(url: str, body: bytes, timeout: float = RPC_TIMEOUT_S) -> str:
    """POST `body` as JSON; "refused" when the server answers with an error (HTTP status or
    JSON-RPC error), "answered" when it answers with a result, "no_answer" when the
    connection fails (a server that died on the body)."""
    request = urllib.request.Request(
        url, data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            text = response.read(65536)
    except urllib.error.HTTPError:
        return "refused"
    except (OSError, ValueError):
        return "no_answer"
    return "refused" if b'"error"' in text else "answered"


def install_permissive_server(engine: RoundEngine) -> None:
    """`blobflood`: serve anything in the store to anyone, committed or not (an honest
    node's server refuses to serve digests it has no business serving)."""
    p2p = engine.p2p

    async def serve(stream: Any) -> None:
        try:
            with trio.fail_after(10.0):
                digest = await blobs.read_request(stream)
                data = await trio.to_thread.run_sync(p2p.store.get, digest)
                if data is None:
                    await blobs.write_response(stream, blobs.Status.NOT_FOUND)
                else:
                    await blobs.write_response(stream, blobs.Status.OK, data)
            await stream.close()
        except Exception as exc:
            log.debug("permissive serve failed: %r", exc)
            with contextlib.suppress(Exception):
                await stream.reset()

    p2p.set_blob_handler(serve)
