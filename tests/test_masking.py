"""flchain.crypto.masking: pairwise masks cancel in the sum, dropouts re-mask with fresh masks."""

from __future__ import annotations

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from flchain.crypto.errors import MaskingError
from flchain.crypto.masking import (
    MaskingSession,
    apply_mask,
    generate_mask_key,
    mask_context,
    mask_vector,
    pairwise_masks,
    public_key_bytes,
)

CONTEXT = mask_context(b"task-1", round_index=3)


def _members(indices: list[int]) -> tuple[dict[int, X25519PrivateKey], dict[int, bytes]]:
    keys = {i: generate_mask_key() for i in indices}
    return keys, {i: public_key_bytes(k) for i, k in keys.items()}


def _all_masks(indices, length, bits, context=CONTEXT) -> dict[int, np.ndarray]:
    keys, publics = _members(indices)
    return {
        i: pairwise_masks(i, keys[i], publics, length=length, modulus_bits=bits, context=context)
        for i in indices
    }


def _ring_sum(arrays, bits: int) -> np.ndarray:
    total = np.zeros_like(next(iter(arrays)))
    for a in arrays:
        total += a  # uint64 wraps mod 2^64, and 2^bits divides 2^64
    return total & np.uint64((1 << bits) - 1)


@pytest.mark.parametrize(
    ("indices", "bits"), [([0, 1], 8), ([0, 1, 2], 19), ([5, 2, 9, 40, 7, 3, 11], 64), ([1, 4], 1)]
)
def test_masks_sum_to_zero_for_any_member_set(indices, bits) -> None:
    masks = _all_masks(indices, 1000, bits)
    assert not _ring_sum(masks.values(), bits).any()
    assert all(int(m.max()) < 2**bits for m in masks.values())


def test_two_members_hold_opposite_masks() -> None:
    masks = _all_masks([3, 8], 50, 16)
    assert ((masks[3] + masks[8]) % 2**16 == 0).all()
    assert masks[3].any()


def test_masks_look_uniform() -> None:
    mask = _all_masks([0, 1, 2], 100_000, 20)[1]
    fraction = mask.astype(np.float64) / 2**20
    assert fraction.mean() == pytest.approx(0.5, abs=0.01)
    assert fraction.std() == pytest.approx(np.sqrt(1 / 12), abs=0.01)


def test_masks_are_deterministic_and_bound_to_the_context() -> None:
    keys, publics = _members([0, 1])
    args = {"length": 64, "modulus_bits": 32}
    a = pairwise_masks(0, keys[0], publics, context=CONTEXT, **args)
    b = pairwise_masks(0, keys[0], publics, context=CONTEXT, **args)
    c = pairwise_masks(0, keys[0], publics, context=mask_context(b"task-1", 4), **args)
    assert np.array_equal(a, b)
    assert np.mean(a == c) < 0.05  # a new round's mask is unrelated to the old one


def test_mask_is_a_prefix_of_a_longer_mask() -> None:
    keys, publics = _members([0, 1])
    short = pairwise_masks(0, keys[0], publics, length=10, modulus_bits=64, context=CONTEXT)
    long = pairwise_masks(0, keys[0], publics, length=30, modulus_bits=64, context=CONTEXT)
    assert np.array_equal(short, long[:10])


def test_apply_mask_hand_computed_and_masked_sum_is_the_true_sum() -> None:
    assert apply_mask(np.array([15, 0]), np.array([1, 3]), 4).tolist() == [0, 3]
    bits = 12
    keys, publics = _members([0, 1, 2])
    rng = np.random.default_rng(0)
    values = {i: rng.integers(0, 2**10, 500, dtype=np.uint64) for i in keys}
    masked = [
        mask_vector(values[i], i, keys[i], publics, modulus_bits=bits, context=CONTEXT)
        for i in keys
    ]
    assert np.array_equal(_ring_sum(masked, bits), sum(values.values()))


def test_session_masks_cancel_and_remask_after_a_dropout() -> None:
    keys, publics = _members([0, 1, 2, 3])
    bits, length = 24, 300
    sessions = {i: MaskingSession(i, keys[i], publics, bits, "task", 7) for i in keys}
    first = {i: s.masks(length) for i, s in sessions.items()}
    assert not _ring_sum(first.values(), bits).any()
    # member 2 fails to deliver: without it the old masks do not cancel
    live = [0, 1, 3]
    assert _ring_sum([first[i] for i in live], bits).any()
    retry = {i: sessions[i].remask(live) for i in live}
    assert all(s.attempt == 1 and s.members == (0, 1, 3) for s in retry.values())
    second = {i: s.masks(length) for i, s in retry.items()}
    assert not _ring_sum(second.values(), bits).any()
    for i in live:  # fresh masks, unrelated to the first attempt's
        assert np.mean(first[i] == second[i]) < 0.01


def test_session_mask_applies_the_ring() -> None:
    keys, publics = _members([0, 1])
    s0 = MaskingSession(0, keys[0], publics, 8, b"t", 0)
    s1 = MaskingSession(1, keys[1], publics, 8, b"t", 0)
    q0, q1 = np.array([200, 5]), np.array([100, 7])
    assert ((s0.mask(q0) + s1.mask(q1)) % 256).tolist() == [44, 12]  # 300 mod 256, 12


def test_context_encodes_task_round_attempt_and_members() -> None:
    base = mask_context("t", 1, 0, [1, 2])
    assert base == mask_context(b"t", 1, 0, [2, 1])
    others = [
        mask_context("u", 1, 0, [1, 2]),
        mask_context("t", 2, 0, [1, 2]),
        mask_context("t", 1, 1, [1, 2]),
        mask_context("t", 1, 0, [1, 3]),
    ]
    assert len({base, *others}) == 5


def test_bad_keys_are_refused() -> None:
    keys, publics = _members([0, 1])
    args = {"length": 4, "modulus_bits": 8, "context": CONTEXT}
    with pytest.raises(MaskingError, match="member 1's X25519 public key is invalid"):
        pairwise_masks(0, keys[0], {1: b"short"}, **args)
    with pytest.raises(MaskingError, match="key agreement with member 1 failed"):
        pairwise_masks(0, keys[0], {1: bytes(32)}, **args)  # low-order point
    with pytest.raises(MaskingError, match="own public key"):
        pairwise_masks(0, keys[0], {0: publics[1], 1: publics[1]}, **args)
    # the own entry is ignored when it is the right key
    with_own = pairwise_masks(0, keys[0], publics, **args)
    assert np.array_equal(with_own, pairwise_masks(0, keys[0], {1: publics[1]}, **args))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"modulus_bits": 0}, "modulus_bits"), ({"modulus_bits": 65}, "modulus_bits"),
     ({"length": -1}, "length"), ({"my_index": -1}, "my_index")],
)  # fmt: skip
def test_pairwise_masks_rejects_bad_arguments(kwargs, message) -> None:
    keys, publics = _members([0, 1])
    args = {"my_index": 0, "length": 4, "modulus_bits": 8} | kwargs
    my_index = args.pop("my_index")
    with pytest.raises(MaskingError, match=message):
        pairwise_masks(my_index, keys[0], publics, context=CONTEXT, **args)


def test_apply_mask_rejects_values_outside_the_ring() -> None:
    with pytest.raises(MaskingError, match=r"\[0, 2\^4\)"):
        apply_mask(np.array([16]), np.array([0]), 4)
    with pytest.raises(MaskingError, match="equal 1-D shapes"):
        apply_mask(np.array([1, 2]), np.array([0]), 4)


def test_session_rejects_bad_member_sets() -> None:
    keys, publics = _members([0, 1, 2])
    session = MaskingSession(0, keys[0], publics, 16, "t", 0)
    with pytest.raises(MaskingError, match="not in the member set"):
        session.remask([0, 1, 5])
    with pytest.raises(MaskingError, match="is not live"):
        session.remask([1, 2])
    with pytest.raises(MaskingError, match="at least 2 members"):
        session.remask([0])
    with pytest.raises(MaskingError, match="not my key"):
        MaskingSession(0, keys[1], publics, 16, "t", 0)
    with pytest.raises(MaskingError, match="not in the member set"):
        MaskingSession(7, keys[0], publics, 16, "t", 0)
