"""The round engine of a secure task: nobody sees an individual update, only their mean.

A secure round, on top of the plain one (engine.py):
1. the contract names the round's decryptor; members fetch its Paillier public key (a blob
   whose digest it registered at join) and check it;
2. each member trains, then commits the digest of its bundle: the update quantized, masked with
   pairwise X25519 masks over the round's eligible members, packed and Paillier-encrypted;
3. when the submit phase ends and some eligible member did not submit, the masks would not
   cancel: every submitter re-masks over the submitters and commits the new bundle (`remask`);
4. everyone fetches the bundles of the mask set and multiplies them (the homomorphic sum);
   the decryptor decrypts only that sum and commits the digest of its proof blob
   (plaintexts + Paillier randomness, `publish_sum`);
5. everyone fetches the proof, checks it against its own sum, opens the mean update, applies
   it to the base model and votes on the result (accepted = the mask set).
Siren alarms work as in plain rounds: they judge the finalized global model, which every member
holds in the clear. Nobody can check what one member encrypted, so every member checks the
decrypted mean instead (`flchain.crypto.aggregate_bound`: with the task's clip, an honest mean
has norm <= C plus noise and quantization slack): beyond it, it votes for the unchanged model
and an empty bitmap (`aggregates_out_of_bound_total`), as every honest member does, so the
round finalizes without a change. A Byzantine member running `ringshift` encrypts ring values
of its choice instead. A bundle that is malformed or withheld stalls the round (its masks
cannot be removed without it); the round then fails at its vote deadline and the next one
starts.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

import torch
import trio
from phe.paillier import PaillierPrivateKey, PaillierPublicKey

from flchain.contracts import ContractRevert, RoundStatus, bitmap_indices
from flchain.crypto.aggregate_bound import AggregateBoundError
from flchain.crypto.distributed_dp import DistributedAccountant
from flchain.crypto.errors import CryptoError
from flchain.crypto.secure_sum import RingAttack
from flchain.crypto.wire import decode_public_key
from flchain.node.engine import RoundEngine
from flchain.node.learner import BlobError
from flchain.node.metrics import MetricSpec
from flchain.node.p2p import BlobNotFound
from flchain.node.secure import BundleError, SecureCodec, equal_shares

log = logging.getLogger("flchain.node.secure_engine")


class SecureRoundEngine(RoundEngine):
    """`RoundEngine` whose updates travel only as masked Paillier ciphertexts."""

    remasks = True

    def __init__(
        self,
        *,
        codec: SecureCodec,
        he_keypair: tuple[PaillierPublicKey, PaillierPrivateKey],
        ring_attack: RingAttack | None = None,
        **kwargs: Any,
    ) -> None:
        """ring_attack: this member is Byzantine and encrypts these ring values (`ringshift`)."""
        super().__init__(**kwargs)
        self.codec = codec
        self.ring_attack = ring_attack
        self.he_public, self.he_private = he_keypair
        self._keys: dict[int, PaillierPublicKey] = {}  # member index -> its Paillier key
        self._plain: dict[int, torch.Tensor] = {}  # round -> our plaintext update (for remask)
        # Distributed DP: we only clip, the codec adds our Skellam share after quantizing, and
        # the epsilon reported is the decrypted sum's (crypto/distributed_dp.py), not a
        # Gaussian release of our own update. Shares are sized per round (`_account`).
        self._distributed = codec.noise(2) is not None
        self._sum_accountant: DistributedAccountant | None = None
        self._accounted: set[int] = set()
        if self._distributed and self._accountant is not None:
            self._sum_accountant = DistributedAccountant(
                codec.noise(2), codec.num_params, self._accountant.delta
            )
            self._accountant = None
        self.metrics.register(
            MetricSpec(
                "sums_rejected_total",
                "counter",
                "Decrypted sums whose proof did not verify against our own ciphertext sum.",
            )
        )
        self.metrics.register(
            MetricSpec(
                "aggregates_out_of_bound_total",
                "counter",
                "Decrypted means beyond the norm clipped honest updates allow: voted down.",
            )
        )

    def _max_update_bytes(self) -> int:
        return self.codec.max_bundle_bytes(max(2, len(self._members)))

    # ------------------------------------------------------------------ helpers
    async def _decryptor(self, r: int, deadline: float) -> tuple[int, PaillierPublicKey] | None:
        """The round's decryptor and its checked public key; retried until `deadline` (peers
        that joined a moment ago may not serve us yet), then None: the reason is in /status."""
        while True:
            index, outcome = await self._try_decryptor(r)
            if isinstance(outcome, PaillierPublicKey):
                return index, outcome
            self.state.last_error = f"round {r}: {outcome}"
            if time.time() >= deadline:
                log.warning("round %d: giving up on the decryptor's key: %s", r, outcome)
                return None
            log.info("round %d: %s; retrying", r, outcome)
            await trio.sleep(1.0)  # a peer's answer, not the chain's: no block marks it
            await self.refresh_members()

    async def _try_decryptor(self, r: int) -> tuple[int, PaillierPublicKey | str]:
        index = await self.view.read(self.client.decryptor, self.task_id, r)
        if index is None:
            return -1, "no eligible member registered a Paillier key"
        if index in self._keys:
            return index, self._keys[index]
        if index not in self._member_info:
            await self.refresh_members()
        info = self._member_info.get(index)
        if info is None or info.he_key == bytes(32):
            return index, f"decryptor {index} has no registered key"
        try:
            blob = self.store.get(info.he_key) or await self.p2p.fetch_blob(
                info.he_key, self._providers(index), timeout=10.0, max_size=4096
            )
            key = decode_public_key(blob, key_bits=self.codec.config.secure_key_bits)
        except BlobNotFound as exc:
            return index, f"decryptor {index}'s key: {exc}"
        except CryptoError as exc:  # a key blob that matches its digest but is not a key
            self.metrics.inc("blob_failures_total", reason="bad_key")
            return index, f"decryptor {index}'s key: {exc}"
        self.store.put(blob, pin=True)  # keys outlive rounds: kept through pruning
        self._keys[index] = key
        return index, key

    async def _encrypt(
        self,
        vector: torch.Tensor,
        r: int,
        attempt: int,
        mask_members: list[int],
        n_eligible: int,
        key: PaillierPublicKey,
    ) -> bytes:
        """Our bundle for `attempt` of round r, masked over `mask_members` (in a worker)."""
        me = self.state.member_index
        assert me is not None
        mask_set = {m: self._member_info[m].x25519 for m in mask_members}
        return await trio.to_thread.run_sync(
            lambda: self.codec.encrypt(
                vector,
                my_index=me,
                round_index=r,
                attempt=attempt,
                mask_set=mask_set,
                n_eligible=n_eligible,
                public_key=key,
                ring_attack=self.ring_attack,
            )
        )

    def _train(self, base: bytes, r: int) -> Any:
        """Our update for round r: clipped, and noised here only without distributed DP."""
        return self.learner.train(base, r, local_noise=not self._distributed)

    def _account(self, r: int, members: list[int], n_eligible: int) -> None:
        """One more distributed-DP release: round r's decrypted sum of `members`' shares."""
        if self._sum_accountant is None or r in self._accounted:
            return
        self._accounted.add(r)
        shares = equal_shares(members)
        u = self.codec.aggregation_config(n_eligible).levels_per_unit(shares)
        self._sum_accountant.step(u, len(members), min_members=max(2, n_eligible))
        self.state.epsilon = self._sum_accountant.epsilon
        log.info(
            "distributed DP: epsilon %.4g for the sum, %.4g for our own share against the "
            "other %d members",
            self.state.epsilon,
            self._sum_accountant.member_epsilon,
            len(members) - 1,
        )

    def _providers(self, first: int) -> list[str]:
        """Peers to ask for a blob: member `first` (its owner), then every other member."""
        provider = self._peer_of.get(first)
        head = [provider] if provider else []
        return head + [p for p in self._members if p not in head]

    async def _plain_update(self, r: int, base: bytes) -> torch.Tensor:
        """Our update for round r; retrained after a restart (training is seeded per round,
        so it is the same vector we encrypted before)."""
        if r not in self._plain:
            update = await self._train_timed(self._train, base, r)
            self._plain = {r: self.learner.decode_update(update.blob)}
        return self._plain[r]

    # ------------------------------------------------------------------ steps
    async def _train_and_commit(
        self, r: int, info: Any, base: bytes, timings: dict[str, float]
    ) -> None:
        chosen = await self._decryptor(r, info.submit_deadline)
        if chosen is None:
            return
        _, key = chosen
        eligible = bitmap_indices(info.eligible)
        if any(m not in self._member_info for m in eligible):
            await self.refresh_members()
        self.state.phase = "training"
        t0 = time.perf_counter()
        update = await self._train_timed(self._train, base, r)
        vector = self.learner.decode_update(update.blob)
        self._plain = {r: vector}
        timings["train"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        blob = await self._encrypt(vector, r, 0, eligible, len(eligible), key)
        if self.attacker is not None:  # spam: a bundle nobody can parse; deepjson: a nested
            blob = self.attacker.committed_bundle(blob)  # bracket header
        timings["encrypt"] = time.perf_counter() - t0
        await self._commit(r, info, dataclasses.replace(update, blob=blob), timings)

    async def _aggregate_and_vote(
        self, r: int, info: Any, base: bytes, timings: dict[str, float]
    ) -> None:
        me = self.state.member_index
        eligible = bitmap_indices(info.eligible)
        submitted = bitmap_indices(info.submitted & info.eligible)
        if len(submitted) < 2:
            log.info("round %d: %d submitter(s); a sum of one is no secret", r, len(submitted))
            return
        chosen = await self._decryptor(r, info.vote_deadline)
        if chosen is None:
            return
        decryptor, key = chosen
        digests = await self._mask_set_digests(r, base, eligible, submitted, key)
        if digests is None:
            return
        self.state.phase = "fetching"
        t0 = time.perf_counter()
        max_size = self.codec.max_bundle_bytes(len(eligible))
        blobs = await self._fetch_blobs(r, digests, info.vote_deadline, max_size)
        timings["fetch"] = time.perf_counter() - t0
        if len(blobs) != len(digests):
            self.state.last_error = f"round {r}: bundles missing, the sum cannot be formed"
            return
        self.state.phase = "summing"
        t0 = time.perf_counter()
        try:
            total = await trio.to_thread.run_sync(
                lambda: self.codec.sum_bundles(blobs, n_eligible=len(eligible), public_key=key)
            )
        except BundleError as exc:
            self.metrics.inc("updates_invalid_total", len(exc.members))
            self.state.last_error = f"round {r}: {exc}"
            log.warning("round %d: invalid bundles: %s", r, exc)
            return
        timings["sum"] = time.perf_counter() - t0
        if decryptor == me:
            await self._publish_sum(r, total, timings)
        proof = await self._fetch_proof(r, decryptor, len(eligible))
        if proof is None:
            return
        self._account(r, sorted(digests), len(eligible))  # the sum is public from here on
        t0 = time.perf_counter()
        try:
            mean = await trio.to_thread.run_sync(self.codec.open, total, proof, key)
            bound = self.codec.aggregate_bound(digests, len(eligible))
            if bound is not None and self.ring_attack is None:  # an attacker wants its mean
                await trio.to_thread.run_sync(bound.check, mean)
            model = await trio.to_thread.run_sync(self.learner.apply_update, base, mean)
        except AggregateBoundError as exc:
            self.metrics.inc("aggregates_out_of_bound_total")
            self.state.last_error = f"round {r}: the decrypted mean is rejected: {exc}"
            log.warning("%s", self.state.last_error)
            # Every honest member reaches this verdict from the same floats, so they all vote
            # for the model they hold and no update: the round finalizes unchanged, instead of
            # failing with only the attacker's vote cast (which would cost each honest
            # non-voter REP_NO_VOTE while the attacker keeps its reputation).
            if not await self._voted(r):
                await self._cast_vote(r, info, base, [], timings)
            return
        except (CryptoError, BlobError) as exc:
            self.metrics.inc("sums_rejected_total")
            self.state.last_error = f"round {r}: the decryptor's sum is rejected: {exc}"
            log.warning("round %d: %s", r, self.state.last_error)
            return
        timings["open"] = time.perf_counter() - t0
        if not await self._voted(r):
            await self._cast_vote(r, info, model, sorted(digests), timings)

    async def _mask_set_digests(
        self, r: int, base: bytes, eligible: list[int], submitted: list[int], key: Any
    ) -> dict[int, bytes] | None:
        """Digest of each bundle in the sum: the commitments when every eligible member
        submitted; otherwise the re-masked commitments of every submitter (we re-mask first)."""
        me = self.state.member_index
        if submitted == eligible:
            keys = [(r, i) for i in eligible]
            updates = await self._chain(self.client.get_updates, self.task_id, keys)
            return {i: u.digest for i, u in zip(eligible, updates, strict=True)}
        if me in submitted:
            await self._remask(r, base, eligible, submitted, key)
        self.state.phase = "waiting for re-masks"
        while True:
            seen = self.view.head
            info = await self.view.round(r)
            # Everything needed first: a round the others finalized meanwhile still takes
            # our (late) vote.
            if set(submitted) <= set(bitmap_indices(info.remasked)):
                break
            if info.status != RoundStatus.OPEN or time.time() > info.vote_deadline:
                return None
            await self.view.wait(seen, until=info.vote_deadline)
        digests = {}
        for i in submitted:
            digests[i] = await self._chain(self.client.get_remask, self.task_id, r, i)
        return digests

    async def _remask(
        self, r: int, base: bytes, eligible: list[int], submitted: list[int], key: Any
    ) -> None:
        me = self.state.member_index
        if await self.view.read(self.client.get_remask, self.task_id, r, me) is not None:
            return
        self.state.phase = "re-masking"
        dropped = sorted(set(eligible) - set(submitted))
        log.info("round %d: member(s) %s did not submit; re-masking over %s", r, dropped, submitted)
        vector = await self._plain_update(r, base)
        blob = await self._encrypt(vector, r, 1, submitted, len(eligible), key)
        digest = await self._kept(r, blob)
        if digest is None:
            return
        try:
            await self.view.send(self.client.remask, self.task_id, r, digest)
        except ContractRevert as exc:
            log.info("round %d: re-mask refused (%s)", r, exc)
            return
        await self._announce("update", r, digest, len(blob))

    async def _publish_sum(self, r: int, total: Any, timings: dict[str, float]) -> None:
        """As the round's decryptor: decrypt the sum only, publish it with its proof."""
        info = await self.view.round(r)
        if info.sum_digest != bytes(32):
            return
        self.state.phase = "decrypting"
        t0 = time.perf_counter()
        proof = await trio.to_thread.run_sync(self.codec.prove, total, self.he_private)
        timings["decrypt"] = time.perf_counter() - t0
        digest = await self._kept(r, proof)
        if digest is None:
            return
        try:
            await self.view.send(self.client.publish_sum, self.task_id, r, digest)
        except ContractRevert as exc:
            log.info("round %d: publish_sum refused (%s)", r, exc)
            return
        await self._announce("sum", r, digest, len(proof))

    async def _fetch_proof(self, r: int, decryptor: int, n_eligible: int) -> bytes | None:
        """Wait for the decryptor's sum digest on chain, then fetch that blob."""
        self.state.phase = "waiting for the sum"
        while True:
            seen = self.view.head
            info = await self.view.round(r)
            if info.sum_digest != bytes(32):  # also in a round finalized meanwhile: vote late
                break
            if info.status != RoundStatus.OPEN or time.time() > info.vote_deadline:
                return None
            await self.view.wait(seen, until=info.vote_deadline)
        try:
            return self.store.get(info.sum_digest) or await self.p2p.fetch_blob(
                info.sum_digest,
                self._providers(decryptor),
                timeout=max(5.0, info.vote_deadline - time.time()),
                max_size=self.codec.max_proof_bytes(n_eligible),
            )
        except BlobNotFound as exc:
            self.state.last_error = f"round {r}: the decryptor's proof is unavailable: {exc}"
            return None
