"""The replica split behind one Service: how many stable and canary pods a weight means.

Without a mesh the Service spreads connections over ready pods, so traffic follows the pod
count (Argo Rollouts' "basic canary" without traffic routing does the same and says so in
its docs). The canary gets ``ceil(total * weight / 100)`` pods, at least one for any weight
above 0; stable keeps the rest but never drops below one pod while a canary is being judged
(so a one-replica service surges to two pods instead of sending everything to the canary).
The effective weight is the canary's share of the pods, which the status reports.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Split:
    """Pods per variant for one weight; ``effective_weight`` is the canary's share in percent."""

    stable: int
    canary: int

    @property
    def total(self) -> int:
        return self.stable + self.canary

    @property
    def effective_weight(self) -> float:
        """Canary pods / all pods x 100 (0 when there are no pods)."""
        return 100.0 * self.canary / self.total if self.total else 0.0

    def describe(self) -> str:
        """``"2 stable + 1 canary pods (canary 33%)"``, for status and events."""
        return f"{self.stable} stable + {self.canary} canary pods (canary {self.effective_weight:.0f}%)"


def split_replicas(total: int, weight: int) -> Split:
    """Stable and canary replicas for ``total`` replicas at ``weight`` percent to the canary.

    ``weight`` 0 is all stable, 100 all canary. Any weight in between gives the canary
    ``ceil(total * weight / 100)`` pods (at least 1) and stable the rest, at least 1 (a surge
    pod when ``total`` is 1). ``total`` 0 (scaled to zero) stays 0 for both.

    Raises ValueError naming the argument when ``total`` < 0 or ``weight`` is outside 0-100.
    """
    if total < 0:
        raise ValueError(f"total replicas must be >= 0, got {total}")
    if not 0 <= weight <= 100:
        raise ValueError(f"weight must be within 0-100 percent, got {weight}")
    if total == 0:
        return Split(0, 0)
    if weight == 0:
        return Split(total, 0)
    if weight == 100:
        return Split(0, total)
    canary = max(1, -(-total * weight // 100))  # integer ceil: no float rounding
    return Split(max(1, total - canary), canary)
