"""Kubernetes-style status conditions (the metav1.Condition shape).

``lastTransitionTime`` changes only when a condition's ``status`` flips; reason and
message may change without moving it. Pure functions, no I/O.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

Status = Literal["True", "False", "Unknown"]


@dataclass(frozen=True)
class Condition:
    """A desired condition; ``merge_conditions`` adds lastTransitionTime and observedGeneration."""

    type: str
    status: Status
    reason: str
    message: str = ""

    @property
    def ok(self) -> bool:
        """Whether the status is True."""
        return self.status == "True"


def now_rfc3339() -> str:
    """The current UTC time as the API writes it, e.g. ``2026-01-02T03:04:05Z``."""
    return dt.datetime.now(dt.UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def true(type_: str, reason: str, message: str = "") -> Condition:
    """A condition with status True."""
    return Condition(type_, "True", reason, message)


def false(type_: str, reason: str, message: str = "") -> Condition:
    """A condition with status False."""
    return Condition(type_, "False", reason, message)


def unknown(type_: str, reason: str, message: str = "") -> Condition:
    """A condition with status Unknown."""
    return Condition(type_, "Unknown", reason, message)


def merge_conditions(
    old: Sequence[Mapping[str, Any]] | None,
    new: Iterable[Condition],
    *,
    generation: int | None,
    now: str | None = None,
) -> list[dict[str, Any]]:
    """The full new ``conditions`` list, in ``new``'s order.

    A condition keeps its old ``lastTransitionTime`` when its status did not change.
    """
    stamp = now or now_rfc3339()
    previous = {c.get("type"): c for c in (old or [])}
    out: list[dict[str, Any]] = []
    for cond in new:
        before = previous.get(cond.type)
        changed = before is None or before.get("status") != cond.status
        item: dict[str, Any] = {
            "type": cond.type,
            "status": cond.status,
            "reason": cond.reason,
            "message": cond.message[:32768],
            "lastTransitionTime": stamp if changed or before is None else before.get("lastTransitionTime", stamp),
        }
        if generation is not None:
            item["observedGeneration"] = generation
        out.append(item)
    return out


def find(conditions: Sequence[Mapping[str, Any]] | None, type_: str) -> Mapping[str, Any] | None:
    """The condition of ``type_`` in a status' conditions list, if any."""
    for cond in conditions or []:
        if cond.get("type") == type_:
            return cond
    return None


def is_true(conditions: Sequence[Mapping[str, Any]] | None, type_: str) -> bool:
    """Whether the condition of ``type_`` in a conditions list is True."""
    cond = find(conditions, type_)
    return cond is not None and cond.get("status") == "True"


def first_failing(conditions: Iterable[Condition]) -> Condition | None:
    """The first condition that is not True (the one REASON should name)."""
    for cond in conditions:
        if not cond.ok:
            return cond
    return None
