"""Replica split per weight: canary rounded up, at least one pod each while judging."""

from __future__ import annotations

import pytest

from kubemaas_operator.rollout.split import Split, split_replicas


@pytest.mark.parametrize(("total", "weight", "stable", "canary"), [
    (10, 20, 8, 2),    # 10 x 20 % = 2 exactly
    (5, 20, 4, 1),
    (4, 10, 3, 1),     # 0.4 rounds up to 1: any weight > 0 gets a canary pod
    (3, 50, 1, 2),     # 1.5 rounds up to 2
    (1, 20, 1, 1),     # one replica surges to two pods rather than 100 % canary
    (2, 99, 1, 2),     # stable keeps one pod while the canary is judged
    (7, 0, 7, 0),
    (7, 100, 0, 7),
    (0, 50, 0, 0),     # scaled to zero stays at zero
])
def test_split(total: int, weight: int, stable: int, canary: int) -> None:
    assert split_replicas(total, weight) == Split(stable, canary)


def test_split_reports_the_effective_weight() -> None:
    split = split_replicas(3, 10)
    assert split.effective_weight == pytest.approx(100 * 1 / 3)
    assert split.describe() == "2 stable + 1 canary pods (canary 33%)"


def test_no_float_rounding_on_exact_products() -> None:
    # 0.29 * 100 is 28.999999999999996 in floats; the split uses integer arithmetic
    assert split_replicas(100, 29).canary == 29


@pytest.mark.parametrize(("total", "weight", "field"), [(-1, 10, "total"), (3, 101, "weight"), (3, -1, "weight")])
def test_bad_arguments_name_themselves(total: int, weight: int, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        split_replicas(total, weight)
