"""``spec.rollout`` of a ModelService as a typed view: how a new model reaches clients.

The shape follows Argo Rollouts' canary strategy (``steps`` of ``setWeight`` + ``pause``, an
analysis with an interval and failure conditions), flattened: each step is a traffic weight and
how long to hold it. The CRD's CEL rules reject weights outside 1-99 and steps whose weights do
not strictly increase; ``RolloutSpec`` checks the same, so a spec built in Python (tests, the
operator run outside a cluster) fails the same way.

Durations are Go/Kubernetes duration strings (``"30s"``, ``"1m30s"``, ``"500ms"``, ``"1h"``) or
plain seconds (a number).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

Strategy = Literal["RollingUpdate", "Canary"]

DURATION = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
"""A Go duration with units (the subset Kubernetes users write): ``90s``, ``1m30s``, ``250ms``."""

_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}

DEFAULT_STEPS: tuple[tuple[int, str], ...] = ((20, "30s"), (50, "30s"))
"""Canary steps when ``spec.rollout.steps`` is empty: 20 % for 30 s, then 50 % for 30 s."""


class RolloutSpecError(ValueError):
    """``spec.rollout`` is invalid; the message names the field and the value."""


def parse_duration(value: str | float | int, field: str = "duration") -> float:
    """Seconds in a duration: ``"1m30s"`` -> 90.0, ``"250ms"`` -> 0.25, ``45`` -> 45.0.

    Raises RolloutSpecError naming ``field`` and the value when it is not a duration >= 0.
    """
    if isinstance(value, bool):
        raise RolloutSpecError(f"{field}: expected a duration such as '30s', got {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise RolloutSpecError(f"{field}: a duration cannot be negative, got {value!r}")
        return float(value)
    text = str(value).strip()
    if not re.fullmatch(DURATION, text):
        raise RolloutSpecError(f"{field}: expected a duration such as '30s', '1m30s' or '500ms', got {value!r}")
    return sum(float(n) * _UNIT_S[u] for n, _, u in re.findall(r"([0-9]+(\.[0-9]+)?)(ms|s|m|h)", text))


class _Spec(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True, frozen=True)


def _seconds(value: Any, field: str) -> float:
    if isinstance(value, str | int | float):
        return parse_duration(value, field)
    raise RolloutSpecError(f"{field}: expected a duration such as '30s', got {value!r}")


class CanaryStep(_Spec):
    """One step: send ``weight`` percent of the pods (so of the traffic) to the canary, then hold.

    ``hold_s`` None holds until a manual promote (Argo Rollouts' ``pause: {}``); analysis keeps
    running meanwhile, so a breach still rolls back.
    """

    weight: int = Field(ge=1, le=99)
    hold_s: float | None = Field(default=None, alias="hold")

    @field_validator("hold_s", mode="before")
    @classmethod
    def _hold(cls, value: Any) -> float | None:
        return None if value is None else _seconds(value, "hold")


class Analysis(_Spec):
    """``spec.rollout.analysis``: how each interval of canary traffic is judged against stable.

    Defaults: 15 s intervals, at least 20 canary requests per interval (fewer is inconclusive),
    canary error rate at most 1 % (and not above stable's), canary p95 latency at most 2x
    stable's (and at least 5 ms worse, so bucket noise on sub-millisecond models never rolls back), pause after
    5 minutes without a conclusive interval.
    """

    interval_s: float = Field(default=15.0, alias="interval", gt=0)
    min_requests: int = Field(default=20, alias="minRequests", ge=1)
    max_error_rate: float = Field(default=0.01, alias="maxErrorRate", ge=0, le=1)
    max_latency_ratio: float = Field(default=2.0, alias="maxLatencyRatio", ge=1)
    latency_tolerance_s: float = Field(default=0.005, alias="latencyTolerance", ge=0)
    """A latency breach also needs canary p95 - stable p95 above this (histogram buckets are coarse)."""
    inconclusive_limit_s: float = Field(default=300.0, alias="inconclusiveLimit", gt=0)
    """After this long without a conclusive interval the rollout pauses and says why."""
    prometheus_url: str | None = Field(default=None, alias="prometheusUrl")
    """Read the pods' series from this Prometheus (HTTP API) instead of scraping the pods."""

    @field_validator("interval_s", "latency_tolerance_s", "inconclusive_limit_s", mode="before")
    @classmethod
    def _duration(cls, value: Any, info: Any) -> float:
        names = {"interval_s": "interval", "latency_tolerance_s": "latencyTolerance",
                 "inconclusive_limit_s": "inconclusiveLimit"}
        return _seconds(value, names.get(info.field_name, info.field_name))

    @model_validator(mode="after")
    def _limit_covers_an_interval(self) -> Analysis:
        # Shorter, every step would pause (CanaryPaused) before its first interval could end.
        if self.inconclusive_limit_s < self.interval_s:
            raise ValueError(f"inconclusiveLimit ({self.inconclusive_limit_s:g}s) must be at least the interval "
                             f"({self.interval_s:g}s): every step would pause before its first interval ends")
        return self


class TrafficRouting(_Spec):
    """``spec.rollout.trafficRouting``: exact canary weights through a Gateway API HTTPRoute in the
    ModelService's namespace (Argo Rollouts' Gateway API plugin takes the same ``httpRoute`` name),
    instead of the split by pod count behind the one Service."""

    http_route: str | None = Field(default=None, alias="httpRoute")


class RolloutSpec(_Spec):
    """``spec.rollout``: ``RollingUpdate`` (replace every pod, the default) or ``Canary``."""

    strategy: Strategy = "RollingUpdate"
    steps: tuple[CanaryStep, ...] = ()
    analysis: Analysis = Field(default_factory=Analysis)
    traffic_routing: TrafficRouting = Field(default_factory=TrafficRouting, alias="trafficRouting")

    @model_validator(mode="after")
    def _increasing(self) -> RolloutSpec:
        for i in range(1, len(self.steps)):
            if self.steps[i].weight <= self.steps[i - 1].weight:
                raise ValueError(
                    f"steps[{i}].weight: weights must strictly increase, got {self.steps[i].weight} "
                    f"after {self.steps[i - 1].weight}"
                )
        return self

    @property
    def canary_steps(self) -> tuple[CanaryStep, ...]:
        """The steps, or ``DEFAULT_STEPS`` when none are given."""
        if self.steps:
            return self.steps
        return tuple(CanaryStep.model_validate({"weight": w, "hold": h}) for w, h in DEFAULT_STEPS)


def parse_rollout(spec: Mapping[str, Any] | None) -> RolloutSpec:
    """Validate ``spec.rollout`` (None means the default: RollingUpdate).

    Raises RolloutSpecError whose message names the field (``spec.rollout.steps[1].weight``)
    and the value.
    """
    try:
        return RolloutSpec.model_validate(dict(spec or {}))
    except RolloutSpecError as exc:
        raise RolloutSpecError(f"spec.rollout: {exc}") from exc
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"])
        cause = err.get("ctx", {}).get("error")
        if isinstance(cause, RolloutSpecError):
            raise RolloutSpecError(f"spec.rollout{loc}: {cause}") from exc
        msg = err["msg"].removeprefix("Value error, ")
        got = f" (got {err['input']!r})" if "input" in err and not isinstance(err["input"], dict) else ""
        raise RolloutSpecError(f"spec.rollout{loc}: {msg}{got}") from exc
