"""Secure aggregation for one round: quantize -> mask -> pack -> encrypt; sum; decrypt; open.

Per member: pre-scale the update by its weight share, quantize, add its pairwise mask in
Z_{2^k}, pack and Paillier-encrypt. Anyone multiplies the ciphertexts; the round's decryptor
decrypts only the sum (the masks cancel there, each slot is reduced mod 2^k) and publishes it
with the Paillier randomness as proof. The decrypted value is directly the weighted FedAvg.

Weighted FedAvg: the weights are public counts w_i, so every member knows its share
s_i = w_i / sum(w) over the members in the sum and encrypts s_i * x_i; the sum of those is the
weighted mean. All members quantize with one shared range, the smallest interval holding
s_i * [lo, hi] for every i: for equal weights it is [lo, hi] / n, so the mean keeps the full
precision of `bits`, and the error per coordinate is at most n * step / 2 of that range.

The ring is k = bits + ceil(log2 N) bits, N the number of members registered for the round,
so the true sum of up to N quantized values fits and the reduction mod 2^k is exact. N stays
fixed across retries: when a member fails to deliver, the survivors re-mask over the live set
(fresh context) with new shares and re-encrypt; the first attempt's ciphertexts are discarded.

Distributed DP (`SecureAggregationConfig.noise`, crypto/distributed_dp.py): each member adds
its integer Skellam share to its levels in the ring before masking, so the decrypted mean
carries the central noise sigma*C*s_max; the range is widened by the noise's tail margin so
the noisy sum still decodes.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from phe.paillier import PaillierPrivateKey, PaillierPublicKey

from flchain.crypto.ciphertext import PackedCiphertext, sum_ciphertexts
from flchain.crypto.distributed_dp import DistributedNoise
from flchain.crypto.errors import MaskingError, PaillierError, QuantizationError
from flchain.crypto.masking import MaskingSession, generate_mask_key, public_key_bytes
from flchain.crypto.obfuscators import (
    DEFAULT_METHOD,
    ObfuscatorMethod,
    ObfuscatorPool,
    precompute_obfuscators,
)
from flchain.crypto.packing import PackingSpec, normalize_range
from flchain.crypto.paillier import (
    DecryptedSum,
    decrypt_packed,
    decryption_proof,
    encrypt_slots,
    generate_keypair,
    open_plaintexts,
    verify_decryption,
)
from flchain.crypto.quantize import as_float64_vector, ring_add

__all__ = [
    "RingAttack",
    "SecureAggregate",
    "SecureAggregationConfig",
    "encrypt_contribution",
    "secure_fedavg",
    "weight_shares",
]


RingAttack = Callable[[np.ndarray, PackingSpec, int], np.ndarray]
"""A Byzantine member's replacement of its quantized levels by any values in Z_{2^k} (called
with the levels, the packing spec and the number of members in the sum), before masking: what
nobody can check, since masked values are uniform (`flchain.attacks.ringshift`)."""


def weight_shares(weights: Mapping[int, float]) -> dict[int, float]:
    """Each member's share w_i / sum(w) of the public weights (sample counts), all > 0."""
    if not weights:
        raise QuantizationError("no members: cannot compute weight shares")
    for member, w in weights.items():
        if not math.isfinite(float(w)) or float(w) <= 0:
            raise QuantizationError(f"weight of member {member} must be finite and > 0, got {w!r}")
    total = math.fsum(float(w) for w in weights.values())
    return {member: float(w) / total for member, w in sorted(weights.items())}


@dataclass(frozen=True)
class SecureAggregationConfig:
    """Round parameters every member agrees on (they belong in the task config on chain).

    `value_range` bounds each coordinate of an update, (lo, hi) or c for (-c, c); `max_members`
    is N, the members registered for the round.
    """

    value_range: tuple[float, float]
    max_members: int
    bits: int = 16
    key_bits: int = 2048
    clip: bool = False
    # Distributed DP: each member adds its Skellam share in the ring (crypto/distributed_dp.py).
    noise: DistributedNoise | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "value_range", normalize_range(self.value_range))
        lo, hi = self.value_range
        if self.noise is not None and not lo < 0 < hi:
            raise QuantizationError(f"distributed DP needs a range around 0, got ({lo}, {hi})")
        self.spec({0: 1.0})  # validates bits, range, N and key size up front

    @property
    def ring_bits(self) -> int:
        """k = bits + ceil(log2 N): the masking ring."""
        return self.bits + (self.max_members - 1).bit_length()

    def spec(self, shares: Mapping[int, float]) -> PackingSpec:
        """The masked packing spec for these weight shares (range scaled to cover s_i * x);
        with distributed DP, widened so that the noise sum stays inside it (`noise.margin`)."""
        lo, hi = self.value_range
        spec = self._spec(shares, lo, hi)
        if self.noise is None:
            return spec
        s_max = max(shares.values())
        step = spec.quantizer.step
        for _ in range(16):  # the margin's level term grows with the step it widens: settle it
            m = self.noise.margin(s_max, self.max_members, step)
            spec = self._spec(shares, lo - m, hi + m)
            if spec.quantizer.step <= step:
                return spec
            step = spec.quantizer.step * 1.01
        raise QuantizationError(f"{self.bits} bits leave no room for the DP noise's tail margin")

    def _spec(self, shares: Mapping[int, float], lo: float, hi: float) -> PackingSpec:
        ends = [s * v for s in shares.values() for v in (lo, hi)]
        return PackingSpec(
            bits=self.bits,
            value_range=(min(ends), max(ends)),
            max_members=self.max_members,
            key_bits=self.key_bits,
            clip=False,
            masked=True,
        )

    def levels_per_unit(self, shares: Mapping[int, float]) -> float:
        """u = s_max / step: levels per unit of an update for the member with the largest share
        (distributed DP calibrates its noise in these units)."""
        return max(shares.values()) / self.spec(shares).quantizer.step

    def prepare(self, vector: object, share: float) -> np.ndarray:
        """Range-check (or clip, if allowed) a member's update in its own units, then scale it."""
        x = as_float64_vector(vector, "update")
        lo, hi = self.value_range
        if not np.isfinite(x).all():
            raise QuantizationError("update contains NaN or infinite values")
        outside = (x < lo) | (x > hi)
        if outside.any():
            if not self.clip:
                i = int(np.flatnonzero(outside)[0])
                raise QuantizationError(
                    f"{int(outside.sum())} value(s) outside the agreed range [{lo}, {hi}] "
                    f"(first: index {i} = {x[i]!r}); widen the range or set clip=True"
                )
            np.clip(x, lo, hi, out=x)
        return x * share


def encrypt_contribution(
    vector: object,
    *,
    session: MaskingSession,
    shares: Mapping[int, float],
    config: SecureAggregationConfig,
    public_key: PaillierPublicKey,
    obfuscators: ObfuscatorPool | Sequence[int] | None = None,
    workers: int | None = None,
    method: ObfuscatorMethod = DEFAULT_METHOD,
    ring_attack: RingAttack | None = None,
    noise_rng: np.random.Generator | None = None,
) -> PackedCiphertext:
    """One member's ciphertext bundle: share-scaled, quantized, masked, packed, encrypted.

    `shares` must cover exactly the session's member set: the masks only cancel when the sum
    holds every one of them. `ring_attack` (Byzantine members only) replaces the quantized
    levels by any ring values just before masking. With `config.noise` the member adds its
    Skellam share to the levels in the ring, drawn from `noise_rng` (None: fresh OS entropy,
    as a node must: whoever knows the draw can subtract it).
    """
    if set(shares) != set(session.members):
        raise MaskingError(
            f"shares cover members {sorted(shares)}, the masks cover {list(session.members)}"
        )
    if session.modulus_bits != config.ring_bits:
        raise MaskingError(
            f"session masks mod 2^{session.modulus_bits}, the config's ring is 2^{config.ring_bits}"
        )
    spec = config.spec(shares)
    levels = spec.quantizer.quantize(config.prepare(vector, shares[session.my_index]))
    if config.noise is not None:
        rng = noise_rng if noise_rng is not None else np.random.default_rng()
        share = config.noise.sample(levels.shape[0], config.levels_per_unit(shares), rng)
        levels = ring_add(levels, share, config.ring_bits)
    if ring_attack is not None:
        levels = ring_attack(levels, spec, len(shares))
    masked = session.mask(levels)
    return encrypt_slots(
        masked, public_key, spec, workers=workers, obfuscators=obfuscators, method=method
    )


@dataclass(frozen=True)
class SecureAggregate:
    """Result of `secure_fedavg`: the weighted mean of the members that made it into the sum."""

    update: torch.Tensor
    members: tuple[int, ...]
    dropped: tuple[int, ...]
    attempts: int
    error_bound: float
    verified: bool
    timings: dict[str, float] = field(default_factory=dict)
    # Distributed DP: u (levels per unit, for the accountant) and the noise the members' shares
    # put in `update`: known here only because one process plays every member.
    levels_per_unit: float | None = None
    noise: torch.Tensor | None = None


def _as_matrix(vectors: object) -> np.ndarray:
    if isinstance(vectors, torch.Tensor):
        array = vectors.detach().to(device="cpu", dtype=torch.float64).numpy()
    else:
        array = np.asarray(vectors, dtype=np.float64)
    if array.ndim != 2 or array.shape[0] < 2:
        raise QuantizationError(f"vectors must be [n >= 2, d], got shape {tuple(array.shape)}")
    return array


def _as_weights(weights: object, n: int) -> np.ndarray:
    if weights is None:
        return np.ones(n)
    if isinstance(weights, torch.Tensor):
        weights = weights.detach().cpu().double().numpy()
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (n,):
        raise QuantizationError(f"weights must have shape ({n},), got {tuple(w.shape)}")
    return w


def secure_fedavg(
    vectors: object,
    weights: object = None,
    *,
    value_range: tuple[float, float] | float,
    bits: int = 16,
    key_bits: int = 2048,
    clip: bool = False,
    dropped: Iterable[int] = (),
    keypair: tuple[PaillierPublicKey, PaillierPrivateKey] | None = None,
    mask_keys: Sequence[X25519PrivateKey] | None = None,
    task: bytes | str = b"flchain-simulate",
    round_index: int = 0,
    verify: bool = True,
    workers: int | None = None,
    method: ObfuscatorMethod = DEFAULT_METHOD,
    ring_attacks: Mapping[int, RingAttack] | None = None,
    noise: DistributedNoise | None = None,
    noise_seed: int | None = None,
) -> SecureAggregate:
    """Weighted FedAvg of `vectors` [n, d] through the full secure-aggregation protocol.

    Simulates one round in one process: n members with their own X25519 keys, one decryptor
    with the Paillier key (`keypair`, generated when None). Members in `dropped` never deliver;
    the survivors re-mask and re-encrypt. `verify=True` also checks the decryptor's proof.
    The result equals the plaintext weighted mean of the survivors within `error_bound`,
    unless `ring_attacks` (member index -> its ring attack) makes Byzantine members encrypt
    other ring values, exactly as a node's `SecureCodec.encrypt` would. With `noise` every
    delivering member adds its Skellam share (distributed DP), drawn from a stream of
    `noise_seed` (None: OS entropy), round, attempt and member; `noise` of the result is the
    sum of those shares in the mean's units.
    """
    timings: dict[str, float] = {}
    matrix = _as_matrix(vectors)
    n, d = matrix.shape
    w = _as_weights(weights, n)
    gone = sorted(set(dropped))
    if any(not 0 <= m < n for m in gone):
        raise MaskingError(f"dropped members {gone} must be indices in [0, {n})")
    config = SecureAggregationConfig(value_range, n, bits, key_bits, clip, noise)
    seed = np.random.SeedSequence(noise_seed).entropy
    start = time.perf_counter()
    public_key, private_key = keypair if keypair is not None else generate_keypair(key_bits)
    keys = list(mask_keys) if mask_keys is not None else [generate_mask_key() for _ in range(n)]
    if len(keys) != n:
        raise MaskingError(f"{len(keys)} mask keys for {n} members")
    registry = {i: public_key_bytes(k) for i, k in enumerate(keys)}
    sessions = {
        i: MaskingSession(i, keys[i], registry, config.ring_bits, task, round_index)
        for i in range(n)
    }
    timings["setup"] = time.perf_counter() - start
    live, attempts = list(range(n)), 0
    for key in ("obfuscators", "encrypt"):
        timings[key] = 0.0
    while True:
        attempts += 1
        shares = weight_shares({i: w[i] for i in live})
        delivering = [i for i in live if i not in gone]
        start = time.perf_counter()
        per_member = config.spec(shares).plaintexts_for(d)
        supply = precompute_obfuscators(
            public_key, per_member * len(delivering), workers, method=method
        )
        timings["obfuscators"] += time.perf_counter() - start
        start = time.perf_counter()
        bundles = [
            encrypt_contribution(
                matrix[i],
                session=sessions[i],
                shares=shares,
                config=config,
                public_key=public_key,
                obfuscators=supply[k * per_member : (k + 1) * per_member],
                ring_attack=(ring_attacks or {}).get(i),
                noise_rng=np.random.default_rng([seed, round_index, attempts, i]),
            )
            for k, i in enumerate(delivering)
        ]
        timings["encrypt"] += time.perf_counter() - start
        if len(delivering) == len(live):
            break
        if len(delivering) < 2:
            raise MaskingError(f"only {len(delivering)} member(s) delivered: need at least 2")
        live = delivering
        sessions = {i: sessions[i].remask(live) for i in live}
    honest = [i for i in live if i not in (ring_attacks or {})]  # a ring attack drops its noise
    start = time.perf_counter()
    total = sum_ciphertexts(bundles)
    timings["sum"] = time.perf_counter() - start
    start = time.perf_counter()
    if verify:
        proof = decryption_proof(total, private_key, workers=workers)
        timings["decrypt"] = time.perf_counter() - start
        start = time.perf_counter()
        plaintexts, randomness = [m for m, _ in proof], [r for _, r in proof]
        if not verify_decryption(total, plaintexts, randomness, public_key):
            raise PaillierError("the decryption proof does not verify: the decryptor lied")
        result: DecryptedSum = open_plaintexts(total, plaintexts)
        timings["verify"] = time.perf_counter() - start
    else:
        result = decrypt_packed(total, private_key, workers=workers)
        timings["decrypt"] = time.perf_counter() - start
    return SecureAggregate(
        update=torch.from_numpy(result.values),
        members=tuple(live),
        dropped=tuple(gone),
        attempts=attempts,
        error_bound=result.error_bound,
        verified=verify,
        timings=timings,
        **_noise_report(config, shares, d, seed, round_index, attempts, honest),
    )


def _noise_report(
    config: SecureAggregationConfig,
    shares: Mapping[int, float],
    length: int,
    seed: int,
    round_index: int,
    attempt: int,
    members: Sequence[int],
) -> dict[str, object]:
    """u and the summed noise shares of the final attempt, redrawn from the members' streams."""
    if config.noise is None:
        return {}
    u = config.levels_per_unit(shares)
    total = np.zeros(length, dtype=np.int64)
    for i in members:
        rng = np.random.default_rng([seed, round_index, attempt, i])
        total += config.noise.sample(length, u, rng)
    step = config.spec(shares).quantizer.step
    return {"levels_per_unit": u, "noise": torch.from_numpy(total.astype(np.float64) * step)}
