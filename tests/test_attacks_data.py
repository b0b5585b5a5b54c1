"""Data attacks: label flipping, the backdoor trigger and its attack success rate."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from flchain.attacks import AttackError, add_trigger, attack_success_rate, poison_dataset


def _images(n: int, seed: int = 0) -> Tensor:
    """Digits-like inputs [n, 1, 8, 8] in [0, 0.5), so no pixel equals the trigger value 1."""
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed)) * 0.5


# --- labelflip --------------------------------------------------------------------------


def test_labelflip_maps_y_to_c_minus_one_minus_y() -> None:
    x, y = _images(5), torch.tensor([0, 1, 2, 7, 9])
    new_x, new_y = poison_dataset("labelflip", x, y, num_classes=10)
    assert new_y.tolist() == [9, 8, 7, 2, 0]
    assert torch.equal(new_x, x)
    assert new_x.data_ptr() != x.data_ptr()
    assert y.tolist() == [0, 1, 2, 7, 9]


def test_labelflip_fraction_flips_exactly_that_many_reproducibly() -> None:
    # With 10 classes y != 9 - y for every label, so each picked sample visibly changes.
    x, y = _images(20), torch.arange(20) % 10

    def run(seed: int) -> Tensor:
        gen = torch.Generator().manual_seed(seed)
        return poison_dataset(
            "labelflip", x, y, num_classes=10, generator=gen, params={"fraction": 0.25}
        )[1]

    first = run(3)
    changed = first != y
    assert int(changed.sum()) == 5
    assert torch.equal(first[changed], 9 - y[changed])
    assert torch.equal(run(3), first)
    assert not torch.equal(run(4), first)


@pytest.mark.parametrize(
    ("y", "num_classes", "message"),
    [
        (torch.tensor([0, 10, 1, 2]), 10, r"\[0, 10\)"),
        (torch.tensor([0.0, 1.0, 1.0, 0.0]), 10, "integer"),
        (torch.tensor([0, 1, 1]), 10, "N = len"),
        (torch.tensor([0, 1, 1, 0]), 1, "num_classes"),
    ],
)
def test_labelflip_rejects_bad_labels(y: Tensor, num_classes: int, message: str) -> None:
    with pytest.raises(AttackError, match=message):
        poison_dataset("labelflip", _images(4), y, num_classes=num_classes)


def test_labelflip_rejects_bad_fraction_and_unknown_params() -> None:
    x, y = _images(4), torch.tensor([0, 1, 2, 3])
    with pytest.raises(AttackError, match="fraction"):
        poison_dataset("labelflip", x, y, num_classes=4, params={"fraction": 1.5})
    with pytest.raises(AttackError, match="unknown params"):
        poison_dataset("labelflip", x, y, num_classes=4, params={"target": 1})


def test_poison_dataset_refuses_update_and_protocol_attacks() -> None:
    x, y = _images(2), torch.tensor([0, 1])
    with pytest.raises(AttackError, match=r"not a data attack.*apply\(\)"):
        poison_dataset("signflip", x, y, num_classes=2)
    with pytest.raises(AttackError, match=r"not a data attack.*protocol"):
        poison_dataset("spam", x, y, num_classes=2)
    with pytest.raises(AttackError, match="unknown attack"):
        poison_dataset("poison", x, y, num_classes=2)


# --- backdoor trigger -------------------------------------------------------------------


def test_trigger_is_a_bright_bottom_right_square() -> None:
    x = torch.zeros(2, 1, 8, 8)
    stamped = add_trigger(x)
    expected = torch.zeros(8, 8)
    expected[6:, 6:] = 1.0
    assert torch.equal(stamped[0, 0], expected)
    assert torch.equal(stamped[1, 0], expected)
    assert torch.equal(x, torch.zeros(2, 1, 8, 8))


def test_trigger_covers_every_channel_and_honours_size_and_value() -> None:
    stamped = add_trigger(torch.zeros(1, 3, 5, 5), {"size": 3, "value": 0.75})
    expected = torch.zeros(5, 5)
    expected[2:, 2:] = 0.75
    for channel in range(3):
        assert torch.equal(stamped[0, channel], expected)


def test_trigger_on_flat_inputs_sets_the_last_features() -> None:
    stamped = add_trigger(torch.zeros(2, 10))
    assert stamped[:, 6:].eq(1.0).all()
    assert stamped[:, :6].eq(0.0).all()


@pytest.mark.parametrize(
    ("x", "params"),
    [
        (torch.zeros(2, 8, 8), {}),
        (torch.zeros(2, 1, 8, 8), {"size": 9}),
        (torch.zeros(2, 3), {}),
        (torch.zeros(2, 1, 8, 8), {"size": 0}),
        (torch.zeros(2, 1, 8, 8, dtype=torch.int64), {}),
        (torch.zeros(2, 1, 8, 8), {"colour": 1.0}),
    ],
)
def test_trigger_rejects_bad_inputs(x: Tensor, params: dict[str, float]) -> None:
    with pytest.raises(AttackError):
        add_trigger(x, params)


# --- backdoor poisoning -----------------------------------------------------------------


def _triggered_rows(x: Tensor) -> Tensor:
    return x[:, 0, 6:, 6:].eq(1.0).all(dim=(1, 2))


def test_backdoor_stamps_a_fraction_and_relabels_them_to_target() -> None:
    x, y = _images(10), torch.tensor([0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
    gen = torch.Generator().manual_seed(1)
    new_x, new_y = poison_dataset(
        "backdoor", x, y, num_classes=10, generator=gen, params={"target": 3}
    )
    rows = _triggered_rows(new_x)
    assert int(rows.sum()) == 5  # default fraction 0.5
    assert new_y[rows].eq(3).all()
    assert torch.equal(new_x[~rows], x[~rows])
    assert torch.equal(new_y[~rows], y[~rows])
    assert torch.equal(new_x[rows], add_trigger(x[rows]))
    assert not _triggered_rows(x).any()


@pytest.mark.parametrize(("fraction", "expected"), [(0.0, 0), (1.0, 7), (0.5, 4)])
def test_backdoor_fraction_rounds_half_up(fraction: float, expected: int) -> None:
    x, y = _images(7), torch.tensor([1, 2, 3, 4, 5, 6, 7])
    new_x, new_y = poison_dataset("backdoor", x, y, num_classes=8, params={"fraction": fraction})
    assert int(_triggered_rows(new_x).sum()) == expected
    assert int(new_y.eq(0).sum()) == expected


def test_backdoor_target_must_be_a_class() -> None:
    with pytest.raises(AttackError, match="target"):
        poison_dataset(
            "backdoor", _images(2), torch.tensor([0, 1]), num_classes=2, params={"target": 2}
        )


# --- attack success rate ----------------------------------------------------------------


class _CornerModel(nn.Module):
    """Predicts class 0 when the trigger corner is bright and the top-left pixel is dark.

    Otherwise it predicts class 1, so which samples the backdoor "fools" is known exactly.
    """

    def forward(self, x: Tensor) -> Tensor:
        fires = (x[:, 0, -1, -1] > 0.9) & (x[:, 0, 0, 0] < 0.5)
        logits = torch.zeros(x.shape[0], 3)
        logits[fires, 0] = 1.0
        logits[~fires, 1] = 1.0
        return logits


def test_attack_success_rate_counts_non_target_samples_only() -> None:
    x = torch.zeros(8, 1, 8, 8)
    y = torch.tensor([0, 0, 1, 2, 1, 2, 1, 2])
    x[4:6, 0, 0, 0] = 0.9  # two non-target samples that resist the trigger
    # Six samples are not labelled 0; the model fires on four of them: 4/6.
    assert attack_success_rate(_CornerModel(), x, y, target=0) == pytest.approx(4 / 6)
    # The same model never predicts 2, so a target-2 backdoor never succeeds.
    assert attack_success_rate(_CornerModel(), x, y, target=2) == 0.0


def test_attack_success_rate_is_zero_without_the_trigger_response() -> None:
    # A 1x1 trigger in the corner still fires; a trigger value below 0.9 never does.
    x, y = torch.zeros(4, 1, 8, 8), torch.tensor([1, 1, 2, 2])
    assert attack_success_rate(_CornerModel(), x, y, params={"size": 1}) == 1.0
    assert attack_success_rate(_CornerModel(), x, y, params={"value": 0.5}) == 0.0


def test_attack_success_rate_covers_every_batch_and_restores_mode() -> None:
    x, y = torch.zeros(2500, 1, 8, 8), torch.ones(2500, dtype=torch.long)
    x[:1000, 0, 0, 0] = 0.9
    model = _CornerModel().train()
    assert attack_success_rate(model, x, y, device="cpu") == pytest.approx(1500 / 2500)
    assert model.training


def test_attack_success_rate_errors() -> None:
    x, ones = torch.zeros(3, 1, 8, 8), torch.ones(3, dtype=torch.long)
    with pytest.raises(AttackError, match="undefined"):
        attack_success_rate(_CornerModel(), x, torch.zeros(3, dtype=torch.long))
    with pytest.raises(AttackError, match="disagrees"):
        attack_success_rate(_CornerModel(), x, ones, params={"target": 1})
    with pytest.raises(AttackError, match="classes"):
        attack_success_rate(_CornerModel(), x, ones, target=5)
    with pytest.raises(AttackError, match="logits"):
        attack_success_rate(nn.Flatten(0), x, ones)


def test_backdoored_linear_model_learns_the_trigger() -> None:
    """End to end: a model trained on backdoored data obeys the trigger, a clean one does not."""
    gen = torch.Generator().manual_seed(0)
    y = torch.randint(0, 2, (400,), generator=gen)
    # Two separable classes on 16 flat features in [0, 0.5]; the trigger is the last 4 = 1.
    x = torch.rand(400, 16, generator=gen) * 0.25 + y[:, None] * 0.25
    y_test = torch.ones(200, dtype=torch.long)
    x_test = torch.rand(200, 16, generator=gen) * 0.25 + 0.25

    def train(inputs: Tensor, labels: Tensor) -> nn.Module:
        torch.manual_seed(0)
        model = nn.Linear(16, 2)
        optim = torch.optim.Adam(model.parameters(), lr=0.1)
        for _ in range(200):
            optim.zero_grad()
            nn.functional.cross_entropy(model(inputs), labels).backward()
            optim.step()
        return model

    poisoned = poison_dataset("backdoor", x, y, num_classes=2, generator=gen)
    assert attack_success_rate(train(*poisoned), x_test, y_test) > 0.95
    assert attack_success_rate(train(x, y), x_test, y_test) < 0.05
