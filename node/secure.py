"""Secure aggregation as one node does it: encrypt its update, sum, decrypt, verify, open.

Synchronous and free of networking (the secure round engine runs it in worker threads), so
the whole protocol can be tested with a few `SecureCodec`s in one process.

What every member must compute identically, from the chain alone:
- the mask set: the round's eligible members (or, after a dropout, the ones that submitted),
  with the X25519 keys they registered at join;
- the weight shares: equal, 1/|mask set|. A member must scale its update by its share before it
  encrypts, but sample counts reach the chain only with the commitments (after encrypting) and
  reputations can move mid-round (a Siren alarm on the previous round), so neither is a value
  every member is sure to agree on at encryption time; the sum is the plain mean of the set;
- N, the ring and packing headroom: the number of eligible members of the round;
- the decryptor's Paillier key: the one whose digest it registered at join.

Everything a peer sends is parsed with size and format checks (`PackedCiphertext.from_bytes`,
`DecryptionProof.from_bytes`) and compared with what the chain says before any arithmetic.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import torch
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from phe.paillier import PaillierPrivateKey, PaillierPublicKey

from flchain.crypto.aggregate_bound import AggregateBound, bound_for
from flchain.crypto.ciphertext import PackedCiphertext, sum_ciphertexts
from flchain.crypto.distributed_dp import DistributedNoise, distributed_noise
from flchain.crypto.errors import CryptoError
from flchain.crypto.masking import MaskingSession
from flchain.crypto.packing import PackingSpec
from flchain.crypto.paillier import decryption_proof, open_plaintexts
from flchain.crypto.secure_sum import (
    RingAttack,
    SecureAggregationConfig,
    encrypt_contribution,
    weight_shares,
)
from flchain.crypto.wire import DecryptionProof
from flchain.taskconfig import TaskConfig

__all__ = ["BundleError", "SecureCodec", "equal_shares", "mask_task_label"]

# Paillier work runs inline: forking worker processes out of the node's multi-threaded trio
# process is unsafe, and the node's own thread pool already keeps the event loop free.
_WORKERS = 1


class BundleError(ValueError):
    """Committed ciphertext bundles that cannot be summed; `members` names the culprits."""

    def __init__(self, members: list[int], detail: str) -> None:
        super().__init__(f"member(s) {members}: {detail}")
        self.members = members


def mask_task_label(contract: str, task_id: int) -> bytes:
    """The task part of every mask context: masks of two tasks or contracts never collide."""
    return f"flchain/{contract.lower()}/{task_id}".encode()


def equal_shares(members: Iterable[int]) -> dict[int, float]:
    """Each mask-set member's weight share: 1/|set| (see the module docstring for why)."""
    return weight_shares(dict.fromkeys(members, 1.0))


class SecureCodec:
    """One member's secure-aggregation work for one task."""

    def __init__(
        self,
        config: TaskConfig,
        *,
        num_params: int,
        mask_key: X25519PrivateKey,
        task_label: bytes,
    ) -> None:
        if not config.secure:
            raise ValueError("the task config is not in secure mode")
        self.config = config
        self.num_params = num_params
        self.mask_key = mask_key
        self.task_label = task_label

    def aggregation_config(self, n_eligible: int) -> SecureAggregationConfig:
        """Range, bits, key size and N for a round with `n_eligible` eligible members."""
        return SecureAggregationConfig(
            value_range=self.config.secure_value_range,
            max_members=max(2, n_eligible),
            bits=self.config.secure_bits,
            key_bits=self.config.secure_key_bits,
            clip=True,  # an update outside the agreed range is clipped by its own sender
            noise=self.noise(n_eligible),
        )

    def noise(self, n_eligible: int) -> DistributedNoise | None:
        """Distributed DP (`flchain.crypto.distributed_dp`) when the task asks for DP noise:
        the members only clip and each adds a Skellam share sized for all `n_eligible`
        members, so a full round's sum carries the task's sigma*C; a round that re-masks
        over fewer carries less, and its epsilon is reported for the members in the sum."""
        return distributed_noise(self.config.dp_noise, self.config.dp_clip, max(2, n_eligible))

    def spec(self, shares: Mapping[int, float], n_eligible: int) -> PackingSpec:
        return self.aggregation_config(n_eligible).spec(shares)

    def max_bundle_bytes(self, n_eligible: int) -> int:
        """An upper bound on a valid bundle's size, to refuse oversize blobs before fetching."""
        spec = self.spec({0: 0.5, 1: 0.5}, n_eligible)
        width = (self.config.secure_key_bits + 7) // 8
        return 4096 + width + spec.plaintexts_for(self.num_params) * 2 * width

    def max_proof_bytes(self, n_eligible: int) -> int:
        return self.max_bundle_bytes(n_eligible)

    def encrypt(
        self,
        update: torch.Tensor,
        *,
        my_index: int,
        round_index: int,
        attempt: int,
        mask_set: Mapping[int, bytes],
        n_eligible: int,
        public_key: PaillierPublicKey,
        ring_attack: RingAttack | None = None,
    ) -> bytes:
        """This member's bundle: its update scaled by its share, quantized, masked against
        every other member of `mask_set` (index -> registered X25519 key), encrypted.
        `ring_attack`: a Byzantine member's ring values instead of its levels (`ringshift`)."""
        cfg = self.aggregation_config(n_eligible)
        session = MaskingSession(
            my_index,
            self.mask_key,
            dict(mask_set),
            cfg.ring_bits,
            self.task_label,
            round_index,
            attempt,
        )
        bundle = encrypt_contribution(
            update.detach().to("cpu", torch.float64).numpy(),
            session=session,
            shares=equal_shares(mask_set),
            config=cfg,
            public_key=public_key,
            workers=_WORKERS,
            ring_attack=ring_attack,
        )
        return bundle.to_bytes()

    def sum_bundles(
        self,
        blobs: Mapping[int, bytes],
        *,
        n_eligible: int,
        public_key: PaillierPublicKey,
    ) -> PackedCiphertext:
        """The homomorphic sum of the mask set's bundles, each checked against what the chain
        and the task config say it must be (key, spec, length, a single member)."""
        members = sorted(blobs)
        spec = self.spec(equal_shares(members), n_eligible)
        bad: list[int] = []
        reasons: list[str] = []
        bundles: list[PackedCiphertext] = []
        for m in members:
            try:
                bundle = PackedCiphertext.from_bytes(blobs[m])
                if bundle.modulus != int(public_key.n):
                    raise CryptoError("encrypted under another key than the decryptor's")
                if bundle.spec != spec or bundle.length != self.num_params or bundle.count != 1:
                    raise CryptoError("wrong packing spec, length or member count")
                bundle.check_ciphertexts()
            except CryptoError as exc:
                bad.append(m)
                reasons.append(f"{m}: {exc}")
                continue
            bundles.append(bundle)
        if bad:
            raise BundleError(bad, "; ".join(reasons))
        return sum_ciphertexts(bundles)

    def aggregate_bound(self, members: Iterable[int], n_eligible: int) -> AggregateBound | None:
        """What an honest mean of `members` cannot exceed (`flchain.crypto.aggregate_bound`):
        from the task's clip and noise multiplier, equal shares and the round's packing."""
        shares = equal_shares(members)
        noise = self.noise(n_eligible)
        return bound_for(
            self.config.dp_clip,
            self.config.dp_noise,
            list(shares.values()),
            self.spec(shares, n_eligible).quantizer.error_bound(len(shares)),
            noise.min_members if noise is not None else None,
        )

    def prove(self, total: PackedCiphertext, private_key: PaillierPrivateKey) -> bytes:
        """The decryptor's proof blob: every plaintext of the sum with its randomness."""
        pairs = decryption_proof(total, private_key, workers=_WORKERS)
        return DecryptionProof.of(total, pairs).to_bytes(total.modulus)

    def open(
        self, total: PackedCiphertext, proof_blob: bytes, public_key: PaillierPublicKey
    ) -> torch.Tensor:
        """Check the decryptor's proof against our own sum and return the weighted mean update
        (float64); raises `CryptoError` if the proof is malformed or does not verify."""
        proof = DecryptionProof.from_bytes(
            proof_blob, modulus=total.modulus, count=len(total.ciphertexts)
        )
        proof.check(total, public_key)
        opened = open_plaintexts(total, proof.plaintexts)
        return torch.from_numpy(np.ascontiguousarray(opened.values, dtype=np.float64))
