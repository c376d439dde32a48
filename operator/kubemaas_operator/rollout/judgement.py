"""The judgement of one analysis interval: canary traffic against stable traffic.

A pure function in the manner of Argo Rollouts' AnalysisRun measurements and Flagger's metric
checks, but relative: the canary is compared with the stable pods serving the same traffic in
the same interval, so a busy hour slows both and rolls back neither. Per interval:

* fewer than ``minRequests`` canary requests: inconclusive (never promote without evidence);
* canary 5xx rate above ``maxErrorRate`` and above stable's: roll back;
* canary 4xx rate above stable's by more than ``maxErrorRate`` (a model that rejects inputs the
  stable one accepts, e.g. a renamed input tensor): roll back. "Above stable's" means beyond
  chance, in both checks: a one-sided pooled two-proportion z-test (NIST/SEMATECH e-Handbook of
  Statistical Methods, 7.3.3 "comparing two proportions") must reach ``Z_ROLLBACK``, else a
  healthy canary sharing stable's errors (a failing backend, clients sending bad inputs) was
  rolled back in about 40 % of intervals by sampling noise alone. With no stable requests in the
  interval a canary 4xx rate above ``maxErrorRate`` is inconclusive (the clients or the canary may
  be at fault, and an interval that cannot tell must not count towards promotion);
* canary p95 above ``maxLatencyRatio`` x stable p95 and worse by more than ``latencyTolerance``,
  with the canary's share of requests beyond that line above stable's share beyond chance (the
  same z-test): roll back. Text-generation pods (they export time-to-first-token histograms) are
  compared on TTFT and time per output token instead of whole-request latency, which depends on
  how many tokens each client asked for;
* otherwise: continue (the interval passed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from kubemaas_operator.rollout.samples import Histogram, Snapshot
from kubemaas_operator.rollout.spec import Analysis

Decision = Literal["continue", "rollback", "inconclusive"]

QUANTILE = 0.95
Z_ROLLBACK = 3.0
"""How far (in standard errors) the canary's error rate must be above stable's to roll back: one
test per reconcile tick (the early check) and per interval, so well past the usual 1.64-2.33 one-sided
levels: a canary failing every request still reaches it with 5 requests against 20 (z = 5)."""


@dataclass(frozen=True)
class Verdict:
    """One interval's outcome, the sentence that explains it, and the numbers behind it."""

    decision: Decision
    reason: str
    numbers: dict[str, float] = field(default_factory=dict)
    cause: Literal["errors", "client-errors", "latency", ""] = ""
    """What breached, for a rollback."""


def _rate(part: float, whole: float) -> float:
    return part / whole if whole > 0 else 0.0


def above_by_chance_z(canary_bad: float, canary_n: float, stable_bad: float, stable_n: float) -> float:
    """The pooled two-proportion z statistic of ``canary_bad / canary_n`` above ``stable_bad / stable_n``.

    ``(p_c - p_s) / sqrt(p (1 - p) (1/n_c + 1/n_s))`` with ``p`` the pooled rate; 0 when either
    side has no requests or the pooled rate is 0 or 1 (both sides all good, or all bad).
    """
    if canary_n <= 0 or stable_n <= 0:
        return 0.0
    pooled = (canary_bad + stable_bad) / (canary_n + stable_n)
    variance = pooled * (1.0 - pooled) * (1.0 / canary_n + 1.0 / stable_n)
    if variance <= 0:
        return 0.0
    return (canary_bad / canary_n - stable_bad / stable_n) / math.sqrt(variance)


def _latency_breach(name: str, canary: Histogram, stable: Histogram, analysis: Analysis,
                    numbers: dict[str, float]) -> str | None:
    c, s = canary.quantile(QUANTILE), stable.quantile(QUANTILE)
    if c is None or s is None:
        return None
    numbers[f"canary_{name}_p95_s"] = c
    numbers[f"stable_{name}_p95_s"] = s
    ratio = c / s if s > 0 else float("inf") if c > 0 else 1.0
    numbers[f"{name}_ratio"] = ratio
    # The breach line; more than 5 % of the canary's requests beyond it is a p95 beyond it. A p95
    # of a few dozen requests rests on its slowest two or three, so the canary's share beyond the
    # line must also exceed stable's beyond chance (as for error rates).
    line = max(analysis.max_latency_ratio * s, s + analysis.latency_tolerance_s)
    z = above_by_chance_z(canary.above(line), canary.count, stable.above(line), stable.count)
    numbers[f"{name}_z"] = z
    if c > analysis.max_latency_ratio * s and c - s > analysis.latency_tolerance_s and z >= Z_ROLLBACK:
        label = {"latency": "p95 latency", "ttft": "p95 time to first token",
                 "tpot": "p95 time per output token"}[name]
        return (f"canary {label} {c:.3f}s is {ratio:.1f}x stable's {s:.3f}s "
                f"> maxLatencyRatio {analysis.max_latency_ratio:g} over {canary.count:.0f} requests")
    return None


def judge(canary: Snapshot, stable: Snapshot, analysis: Analysis) -> Verdict:
    """Judge one interval from the canary's and stable's traffic in it (deltas, pods summed).

    Returns a Verdict whose ``reason`` states the deciding numbers, e.g. ``canary error rate
    0.31 > 0.01 over 412 requests (stable 0.00 over 1650)``, and whose ``numbers`` hold every
    rate, p95 (seconds) and ratio computed. Comparisons with stable that stable has no traffic
    for are skipped (the canary's own 5xx rate is still checked, and a canary 4xx rate above
    ``maxErrorRate`` makes the interval inconclusive).
    """
    numbers: dict[str, float] = {"canary_requests": canary.requests, "stable_requests": stable.requests}
    if canary.requests < analysis.min_requests:
        return Verdict("inconclusive", f"canary answered {canary.requests:.0f} requests in the interval, "
                       f"fewer than minRequests {analysis.min_requests}", numbers)

    c_err, s_err = _rate(canary.server_errors, canary.requests), _rate(stable.server_errors, stable.requests)
    errors_z = above_by_chance_z(canary.server_errors, canary.requests, stable.server_errors, stable.requests)
    numbers |= {"canary_error_rate": c_err, "stable_error_rate": s_err, "errors_z": errors_z}
    if c_err > analysis.max_error_rate and c_err > s_err and (stable.requests <= 0 or errors_z >= Z_ROLLBACK):
        return Verdict("rollback", f"canary error rate {c_err:.2f} > {analysis.max_error_rate:g} over "
                       f"{canary.requests:.0f} requests (stable {s_err:.2f} over {stable.requests:.0f})", numbers,
                       "errors")

    c_4xx = _rate(canary.client_errors, canary.requests)
    if stable.requests <= 0 and c_4xx > analysis.max_error_rate:
        numbers["canary_client_error_rate"] = c_4xx
        return Verdict("inconclusive", f"canary 4xx rate {c_4xx:.2f} over {canary.requests:.0f} requests > "
                       f"maxErrorRate {analysis.max_error_rate:g} and stable answered no requests to compare it with",
                       numbers)
    if stable.requests > 0:
        s_4xx = _rate(stable.client_errors, stable.requests)
        client_z = above_by_chance_z(canary.client_errors, canary.requests, stable.client_errors, stable.requests)
        numbers |= {"canary_client_error_rate": c_4xx, "stable_client_error_rate": s_4xx, "client_errors_z": client_z}
        if c_4xx - s_4xx > analysis.max_error_rate and client_z >= Z_ROLLBACK:
            return Verdict("rollback", f"canary rejects requests stable accepts: 4xx rate {c_4xx:.2f} vs "
                           f"stable {s_4xx:.2f} over {canary.requests:.0f} requests "
                           f"(difference > maxErrorRate {analysis.max_error_rate:g})", numbers,
                           "client-errors")

    checks: tuple[tuple[str, Histogram, Histogram], ...]
    if canary.ttft.count > 0:
        checks = (("ttft", canary.ttft, stable.ttft), ("tpot", canary.tpot, stable.tpot))
    else:
        checks = (("latency", canary.latency, stable.latency),)
    for name, c_hist, s_hist in checks:
        breach = _latency_breach(name, c_hist, s_hist, analysis, numbers)
        if breach:
            return Verdict("rollback", breach, numbers, "latency")

    return Verdict("continue", f"canary passed: error rate {c_err:.2f} over {canary.requests:.0f} requests "
                   f"(stable {s_err:.2f} over {stable.requests:.0f})", numbers)
