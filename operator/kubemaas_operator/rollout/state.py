"""The rollout state machine: one pure step from (state, what was observed) to (state, plan).

Semantics borrowed from Argo Rollouts' canary controller: steps run in order, each sets a
weight and holds; analysis runs in the background and a failed measurement aborts the rollout
(canary scaled to zero, stable untouched); ``promote`` skips the current step's hold,
``promote-full`` skips all remaining steps, ``abort`` rolls back; an aborted/rolled-back
revision is not retried until the spec changes. The first revision a ModelService ever serves
skips the steps (nothing to compare it with), as Argo's initial deploy does.

Phases: ``Stable`` (one revision, no canary), ``Progressing`` (a canary is being judged),
``Paused`` (a canary holds for a manual promote, or no interval was conclusive for
``inconclusiveLimit``; analysis still runs and still rolls back), ``Promoting`` (the stable
Deployment is moving to the promoted revision; the canary keeps serving until it has),
``RolledBack`` (the canary was removed; the rejected revision is remembered).

Two cases Argo Rollouts leaves implicit are decided here (each says why where it is handled):
``spec.replicas`` 0 holds the rollout instead of judging or promoting (nothing serves, so there
is no evidence), and a promotion whose stable pods cannot run the promoted revision rolls back
to the revision stable served before, as a failing canary does.

Times are seconds since the epoch (floats) here and RFC 3339 strings in ``status``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from kubemaas_operator.rollout.judgement import Verdict
from kubemaas_operator.rollout.spec import CanaryStep, RolloutSpec
from kubemaas_operator.rollout.split import Split

Phase = Literal["Stable", "Progressing", "Paused", "Promoting", "RolledBack"]
Command = Literal["promote", "promote-full", "abort"]
Outcome = Literal["Deployed", "Promoted", "RolledBack", "Aborted", "Superseded"]

ANNOTATION = "kubemaas.io/rollout"
"""``kubectl annotate msvc NAME kubemaas.io/rollout=promote|promote-full|abort`` (then removed)."""
COMMANDS: tuple[Command, ...] = ("promote", "promote-full", "abort")
HISTORY_LIMIT = 10
"""Revisions kept in ``status.history``, newest last."""


def parse_command(value: str | None) -> Command | None:
    """The command in the ``kubemaas.io/rollout`` annotation, None when absent.

    Raises ValueError naming the annotation and the value when it is not one of ``COMMANDS``.
    """
    if value is None or value == "":
        return None
    for command in COMMANDS:
        if value.strip() == command:
            return command
    raise ValueError(f"annotation {ANNOTATION}: expected one of {', '.join(COMMANDS)}, got {value!r}")


def spec_revision(spec: Mapping[str, Any]) -> str:
    """A digest of a ModelService ``spec`` without ``replicas`` (which the HPA writes through the
    scale subresource): a rejected revision is retried only when this or its sha256 changes."""
    body = json.dumps({k: v for k, v in spec.items() if k != "replicas"}, sort_keys=True, default=str)
    return hashlib.sha256(body.encode()).hexdigest()[:16]


def rfc3339(t: float) -> str:
    """Seconds since the epoch -> ``2026-01-01T00:00:00Z`` (whole seconds, as Kubernetes writes times)."""
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def from_rfc3339(s: str) -> float:
    """``2026-01-01T00:00:00Z`` -> seconds since the epoch; raises ValueError on another format."""
    return dt.datetime.strptime(s, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC).timestamp()


def _opt_time(value: Any) -> float | None:
    return from_rfc3339(value) if isinstance(value, str) and value else None


@dataclass(frozen=True)
class Revision:
    """What a set of pods serves: the artifact's sha256, the compression variant, where it is."""

    sha256: str
    uri: str = ""
    variant: str = ""

    @property
    def identity(self) -> str:
        """The sha256 when known, else the uri (a ``spec.model.uri`` the operator has not read)."""
        return self.sha256 or f"uri:{self.uri}"

    def same(self, other: Revision | None) -> bool:
        """Same model: equal identity (sha256, so the uri may move) and variant."""
        return other is not None and (self.identity, self.variant) == (other.identity, other.variant)

    def to_status(self) -> dict[str, str]:
        return {"sha256": self.sha256, "uri": self.uri, "variant": self.variant}

    @classmethod
    def from_status(cls, d: Mapping[str, Any] | None) -> Revision | None:
        if not d or not (d.get("sha256") or d.get("uri")):
            return None
        return cls(str(d["sha256"]), str(d.get("uri") or ""), str(d.get("variant") or ""))


@dataclass(frozen=True)
class HistoryEntry:
    """One revision's rollout, as ``status.history`` lists it."""

    sha256: str
    variant: str
    started: float
    finished: float
    outcome: Outcome
    why: str
    uri: str = ""

    def to_status(self) -> dict[str, str]:
        return {"sha256": self.sha256, "uri": self.uri, "variant": self.variant, "started": rfc3339(self.started),
                "finished": rfc3339(self.finished), "outcome": self.outcome, "why": self.why}

    @classmethod
    def from_status(cls, d: Mapping[str, Any]) -> HistoryEntry:
        return cls(str(d.get("sha256", "")), str(d.get("variant", "")), _opt_time(d.get("started")) or 0.0,
                   _opt_time(d.get("finished")) or 0.0, d.get("outcome", "Deployed"), str(d.get("why", "")),
                   str(d.get("uri", "")))


@dataclass(frozen=True)
class Rejected:
    """A rolled-back revision and the spec revision it failed under (no retry until either changes).

    The spec revision is ``spec_revision(spec)``, not ``metadata.generation``: an HPA scaling the
    ModelService through its scale subresource bumps the generation, and must not retry a
    rejected model.
    """

    sha256: str
    """The revision's ``identity`` (its sha256, or ``uri:<uri>`` when that is unknown)."""
    variant: str
    spec_revision: str


@dataclass(frozen=True)
class RolloutState:
    """What ``status.rollout`` (+ ``status.history``) remembers between reconciliations."""

    phase: Phase = "Stable"
    stable: Revision | None = None
    canary: Revision | None = None
    step: int = 0
    """Index into the canary steps."""
    canary_started: float | None = None
    step_started: float | None = None
    """When the step's canary pods were all Ready (holds and the inconclusive limit count from here)."""
    last_conclusive: float | None = None
    passed: int = 0
    """Passing intervals in the current step."""
    reason: str = ""
    rejected: Rejected | None = None
    history: tuple[HistoryEntry, ...] = ()
    previous: Revision | None = None
    """While ``Promoting``: the revision stable served before, to return to when the stable pods
    cannot run the promoted one."""

    def to_status(self) -> dict[str, Any]:
        """``status.rollout`` (history goes to ``status.history``, see ``history_status``)."""
        return {
            "phase": self.phase,
            "stable": self.stable.to_status() if self.stable else None,
            "canary": self.canary.to_status() if self.canary else None,
            "previous": self.previous.to_status() if self.previous else None,
            "step": self.step,
            "canaryStarted": rfc3339(self.canary_started) if self.canary_started is not None else None,
            "stepStarted": rfc3339(self.step_started) if self.step_started is not None else None,
            "lastConclusive": rfc3339(self.last_conclusive) if self.last_conclusive is not None else None,
            "passedIntervals": self.passed,
            "reason": self.reason,
            "rejected": ({"sha256": self.rejected.sha256, "variant": self.rejected.variant,
                          "specRevision": self.rejected.spec_revision} if self.rejected else None),
        }

    def history_status(self) -> list[dict[str, str]]:
        return [h.to_status() for h in self.history]

    @classmethod
    def from_status(cls, rollout: Mapping[str, Any] | None, history: Sequence[Mapping[str, Any]] | None) -> RolloutState:
        """Rebuild the state from ``status.rollout`` and ``status.history`` (missing means a fresh state)."""
        r = dict(rollout or {})
        rej = r.get("rejected") or None
        return cls(
            phase=r.get("phase") or "Stable",
            stable=Revision.from_status(r.get("stable")),
            canary=Revision.from_status(r.get("canary")),
            previous=Revision.from_status(r.get("previous")),
            step=int(r.get("step") or 0),
            canary_started=_opt_time(r.get("canaryStarted")),
            step_started=_opt_time(r.get("stepStarted")),
            last_conclusive=_opt_time(r.get("lastConclusive")),
            passed=int(r.get("passedIntervals") or 0),
            reason=str(r.get("reason") or ""),
            rejected=Rejected(str(rej["sha256"]), str(rej.get("variant") or ""), str(rej.get("specRevision") or "")) if rej else None,
            history=tuple(HistoryEntry.from_status(h) for h in history or ()),
        )


@dataclass(frozen=True)
class Observation:
    """What the reconciler saw this time round."""

    now: float
    desired: Revision
    """What the spec resolves to now (the uri's or the TrainingJob's artifact, the chosen variant)."""
    spec_revision: str
    """``spec_revision(spec)``: changes with every spec edit but the replica count."""
    canary_ready: bool = False
    """Every canary pod of the current split is Ready."""
    stable_current: bool = False
    """Every stable pod serves ``state.stable`` (the stable Deployment finished rolling)."""
    verdict: Verdict | None = None
    """The analysis interval that just ended, if one did."""
    command: Command | None = None
    canary_failure: str = ""
    """Why the canary's pods cannot become Ready (CrashLoopBackOff, ImagePullBackOff, a failed
    storage initializer, ProgressDeadlineExceeded ...); empty when nothing says so."""
    replicas: int = 1
    """``spec.replicas``: the total each step splits (0: scaled to zero, nothing serves)."""
    stable_failure: str = ""
    """While promoting: why the stable Deployment's pods of the promoted revision cannot become
    Ready (the same problems as ``canary_failure``); empty when nothing says so."""


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event to emit on the ModelService."""

    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass(frozen=True)
class Plan:
    """The next state, the canary weight the children should have (percent of pods), events."""

    state: RolloutState
    weight: int
    events: tuple[Event, ...] = ()


def _finish(state: RolloutState, now: float, outcome: Outcome, why: str) -> tuple[HistoryEntry, ...]:
    rev = state.canary
    if rev is None:
        return state.history
    entry = HistoryEntry(rev.sha256, rev.variant, state.canary_started if state.canary_started is not None else now, now,
                         outcome, why, rev.uri)
    return (*state.history, entry)[-HISTORY_LIMIT:]


def _short(rev: Revision) -> str:
    name = rev.sha256[:12] if rev.sha256 else rev.uri
    return name + (f" ({rev.variant})" if rev.variant and rev.variant != "none" else "")


def _roll_back(state: RolloutState, obs: Observation, outcome: Outcome, why: str) -> Plan:
    assert state.canary is not None
    canary = state.canary
    new = RolloutState(
        phase="RolledBack", stable=state.stable, canary=None, reason=why,
        rejected=Rejected(canary.identity, canary.variant, obs.spec_revision),
        history=_finish(state, obs.now, outcome, why),
    )
    event = Event("Warning", "RolledBack" if outcome == "RolledBack" else "Aborted",
                  f"canary {_short(canary)} {'rolled back' if outcome == 'RolledBack' else 'aborted'}: {why}")
    return Plan(new, 0, (event,))


def _start_canary(state: RolloutState, obs: Observation, spec: RolloutSpec,
                  history: tuple[HistoryEntry, ...]) -> Plan:
    weight = spec.canary_steps[0].weight
    new = RolloutState(phase="Progressing", stable=state.stable, canary=obs.desired, step=0,
                       canary_started=obs.now, reason=f"canary at step 1/{len(spec.canary_steps)} ({weight}%)",
                       rejected=state.rejected, history=history)
    return Plan(new, weight, (Event("Normal", "CanaryStarted",
                                    f"canary {_short(obs.desired)} at {weight}% against stable "
                                    f"{_short(state.stable) if state.stable else '-'}"),))


def _promote(state: RolloutState, spec: RolloutSpec, obs: Observation, why: str) -> Plan:
    assert state.canary is not None
    new = replace(state, phase="Promoting", stable=state.canary, previous=state.stable,
                  reason=f"promoting {_short(state.canary)}: {why}")
    return Plan(new, _weight(state, spec),
                (Event("Normal", "Promoting", f"canary {_short(state.canary)} promoted to stable: {why}"),))


def _promotion_failed(state: RolloutState, spec: RolloutSpec, obs: Observation) -> Plan:
    """The stable pods cannot run the promoted revision (they crash-loop, the image cannot be
    pulled at full size, the Deployment passed its progressDeadlineSeconds): the same treatment
    as a canary that cannot become Ready. Stable returns to the revision it served before
    (``previous``), the canary is scaled to zero, and the revision is rejected until the spec or
    its sha256 changes -- Argo Rollouts aborts a rollout past its progress deadline the same way
    (``progressDeadlineAbort``). Without ``previous`` (a status written before it was recorded)
    there is nothing to return to: the promotion holds and the reason says why."""
    assert state.canary is not None
    why = f"promotion failed: the stable pods cannot run {_short(state.canary)}: {obs.stable_failure}"
    if state.previous is None:
        held = replace(state, reason=f"{why}; no earlier revision recorded to return to: fix the pods or the spec")
        events = () if held.reason == state.reason else (Event("Warning", "PromotionStalled", held.reason),)
        return Plan(held, _weight(state, spec), events)
    back = replace(state, stable=state.previous)
    return _roll_back(back, obs, "RolledBack", why)


def _weight(state: RolloutState, spec: RolloutSpec) -> int:
    steps = spec.canary_steps
    return steps[min(state.step, len(steps) - 1)].weight


def _advance(state: RolloutState, spec: RolloutSpec, obs: Observation, why: str) -> Plan:
    steps = spec.canary_steps
    nxt = state.step + 1
    if nxt >= len(steps):
        return _promote(state, spec, obs, why)
    w = steps[nxt].weight
    new = replace(state, phase="Progressing", step=nxt, step_started=None, last_conclusive=None, passed=0,
                  reason=f"canary at step {nxt + 1}/{len(steps)} ({w}%)")
    return Plan(new, w, (Event("Normal", "CanaryStep", f"canary at step {nxt + 1}/{len(steps)} ({w}%): {why}"),))


SCALED_TO_ZERO = "scaled to zero"


def _scaled_to_zero(state: RolloutState, steps: Sequence[CanaryStep]) -> Plan:
    """``spec.replicas`` is 0 while a canary is judged: no pod serves either revision, so there is
    nothing to judge and the step's clocks (hold, inconclusive limit) would only count time without
    traffic. The rollout pauses and says so; when replicas come back the step starts over once its
    canary pods are Ready. Argo Rollouts at 0 replicas counts a step's replica targets (0 of 0) as
    reached and walks on to promotion; this does not, because the issue's rule is "never promote
    without evidence" (``promote-full`` still promotes by hand)."""
    current = steps[min(state.step, len(steps) - 1)]
    reason = (f"{SCALED_TO_ZERO}: spec.replicas is 0, so no pod serves either revision and nothing can be "
              f"judged; step {state.step + 1}/{len(steps)} ({current.weight}%) starts when spec.replicas > 0 "
              f"(or promote by hand: kubectl annotate modelservice NAME {ANNOTATION}=promote-full)")
    held = replace(state, phase="Paused", reason=reason, step_started=None, last_conclusive=None)
    events = () if state.reason == reason else (Event("Normal", "CanaryPaused", reason),)
    return Plan(held, current.weight, events)


def _fmt_s(seconds: float) -> str:
    return f"{seconds / 60:.0f}m" if seconds >= 60 and seconds % 60 == 0 else f"{seconds:g}s"


def _judged(state: RolloutState, spec: RolloutSpec, obs: Observation) -> bool:
    """A canary of the desired revision is being judged (Progressing or Paused): what commands act on."""
    return (state.stable is not None and state.canary is not None and state.phase in ("Progressing", "Paused")
            and spec.strategy == "Canary" and obs.desired.same(state.canary) and not obs.desired.same(state.stable))


def step(state: RolloutState, spec: RolloutSpec, obs: Observation) -> Plan:
    """One reconciliation of the rollout: the next state, the canary weight, and the events.

    Pure: the caller reads pods and metrics into ``obs``, applies ``Plan.weight`` to the
    stable/canary Deployments (``split.split_replicas``), writes ``Plan.state`` to status and
    emits ``Plan.events``. A command (``obs.command``) with no canary being judged to act on
    (Stable, Promoting, RolledBack) changes nothing and adds a ``RolloutCommandIgnored`` Warning,
    so an ``abort`` that comes too late is not silently dropped with its annotation.
    """
    plan = _step(state, spec, obs)
    if obs.command is None or _judged(state, spec, obs):
        return plan
    warning = Event("Warning", "RolloutCommandIgnored", f"annotation {ANNOTATION}={obs.command} ignored: no canary "
                    f"is being judged (rollout phase {state.phase})")
    return replace(plan, events=(*plan.events, warning))


def _step(state: RolloutState, spec: RolloutSpec, obs: Observation) -> Plan:
    desired = obs.desired
    steps = spec.canary_steps

    # First revision ever: nothing to compare with, serve it (Argo's initial deploy skips steps).
    if state.stable is None:
        entry = HistoryEntry(desired.sha256, desired.variant, obs.now, obs.now, "Deployed", "first revision", desired.uri)
        # No Event: the roll-out step records one for every new revision of the Deployment.
        return Plan(RolloutState(stable=desired, history=(*state.history, entry)[-HISTORY_LIMIT:]), 0)

    # A rejection holds only while the spec (apart from replicas) is the one the revision failed
    # under: any edit since ends it, as an Argo Rollouts abort lasts until the desired state next
    # changes. Otherwise v2 rolled back, then v1 or v3 applied, then v2 applied again -- the very
    # spec text v2 failed under, but two edits later -- was never tried again.
    if state.rejected is not None and state.rejected.spec_revision != obs.spec_revision:
        state = replace(state, rejected=None)

    if state.phase == "Promoting" and state.canary is not None:
        # The stable Deployment rolls to the promoted revision (maxUnavailable 0) while the
        # canary pods keep serving; they go only once every stable pod serves it.
        if obs.stable_failure and not obs.stable_current:
            return _promotion_failed(state, spec, obs)
        if not obs.stable_current:
            return Plan(state, _weight(state, spec))
        why = state.reason.split(": ", 1)[1] if ": " in state.reason else "all steps passed"
        new = RolloutState(phase="Stable", stable=state.canary, rejected=state.rejected,
                           history=_finish(state, obs.now, "Promoted", why))
        return Plan(new, 0, (Event("Normal", "Promoted", f"{_short(state.canary)} is the stable revision"),))

    # The spec went back to what stable serves: drop any canary.
    if desired.same(state.stable):
        if state.canary is not None:
            why = "spec returned to the stable revision"
            new = RolloutState(stable=state.stable, rejected=state.rejected,
                               history=_finish(state, obs.now, "Superseded", why))
            return Plan(new, 0, (Event("Normal", "Superseded", f"canary {_short(state.canary)} removed: {why}"),))
        if state.phase == "RolledBack" and state.rejected is not None:
            # Same spec as the rollback (e.g. a new artifact's compression has not finished):
            # still rolled back. A spec edited back to the stable revision ends the rollback, as
            # an Argo Rollouts abort ends when the desired state returns to the stable version.
            return Plan(state, 0)
        return Plan(replace(state, phase="Stable", reason=""), 0)

    # A revision that was rolled back under this same spec is not retried.
    rej = state.rejected
    if rej and (rej.sha256, rej.variant, rej.spec_revision) == (desired.identity, desired.variant, obs.spec_revision):
        return Plan(replace(state, phase="RolledBack", canary=None), 0)

    if spec.strategy == "RollingUpdate":
        # A canary in flight when spec.rollout switches to RollingUpdate (or goes away) ends: its
        # revision, when it is the desired one, is promoted by replacing every pod (its history
        # entry keeps when the canary started); another revision's canary is superseded.
        if state.canary is not None and desired.same(state.canary):
            history = _finish(state, obs.now, "Promoted", "RollingUpdate strategy: the canary's revision replaced every pod")
        else:
            history = state.history
            if state.canary is not None:
                history = _finish(state, obs.now, "Superseded", f"spec moved on to {_short(desired)}")
            entry = HistoryEntry(desired.sha256, desired.variant, obs.now, obs.now, "Promoted",
                                 "RollingUpdate strategy", desired.uri)
            history = (*history, entry)[-HISTORY_LIMIT:]
        new = RolloutState(stable=desired, rejected=state.rejected, history=history)
        return Plan(new, 0)  # the roll-out step's RollingOut Event says it

    if state.canary is None or not desired.same(state.canary):
        history = state.history
        if state.canary is not None:
            history = _finish(state, obs.now, "Superseded", f"spec moved on to {_short(desired)}")
        return _start_canary(state, obs, spec, history)

    # A canary of the desired revision is in flight.
    current = steps[min(state.step, len(steps) - 1)]
    if obs.command == "abort":
        return _roll_back(state, obs, "Aborted", f"aborted by annotation {ANNOTATION}=abort")
    if obs.verdict is not None and obs.verdict.decision == "rollback":
        return _roll_back(state, obs, "RolledBack", obs.verdict.reason)
    if obs.canary_failure:
        return _roll_back(state, obs, "RolledBack", f"canary cannot become ready: {obs.canary_failure}")
    if obs.command == "promote-full":
        return _promote(state, spec, obs, f"annotation {ANNOTATION}=promote-full")
    if obs.command == "promote":
        return _advance(state, spec, obs, f"annotation {ANNOTATION}=promote")

    if obs.replicas == 0:
        return _scaled_to_zero(state, steps)
    s = state
    if s.phase == "Paused" and s.reason.startswith(SCALED_TO_ZERO):
        s = replace(s, phase="Progressing", reason=f"canary at step {s.step + 1}/{len(steps)} ({current.weight}%)")
    started = s.step_started
    if started is None:
        if not obs.canary_ready:
            return Plan(s, current.weight)
        started = obs.now
        s = replace(s, step_started=started)

    if obs.verdict is not None and obs.verdict.decision == "continue":
        s = replace(s, passed=s.passed + 1, last_conclusive=obs.now)
        if s.phase == "Paused" and current.hold_s is not None:
            s = replace(s, phase="Progressing", reason=f"canary at step {s.step + 1}/{len(steps)} ({current.weight}%)")

    held = obs.now - started
    if current.hold_s is None:
        if s.phase != "Paused" or not s.reason.startswith("step"):
            s = replace(s, phase="Paused", reason=f"step {s.step + 1}/{len(steps)} ({current.weight}%) holds until "
                        f"promoted: kubectl annotate modelservice NAME {ANNOTATION}=promote")
        return Plan(s, current.weight)
    if held >= current.hold_s and s.passed >= 1:
        return _advance(s, spec, obs, f"held {_fmt_s(current.hold_s)} with {s.passed} passing intervals")

    quiet = obs.now - (s.last_conclusive if s.last_conclusive is not None else started)
    limit = spec.analysis.inconclusive_limit_s
    if quiet >= limit and s.phase != "Paused":
        last = obs.verdict.reason if obs.verdict is not None else "no analysis interval completed"
        s = replace(s, phase="Paused", reason=f"paused: no conclusive analysis for {_fmt_s(limit)} ({last}); "
                    f"promote or abort with annotation {ANNOTATION}")
        return Plan(s, current.weight, (Event("Warning", "CanaryPaused", s.reason),))
    return Plan(s, current.weight)


def column(state: RolloutState, weight: int, split: Split | None = None, routed: int | None = None) -> str:
    """The ROLLOUT printer column: ``stable``, ``canary 20%``, ``paused 20%``, ``promoting``, ``rolled back``.

    The step's weight is what the user asked for; what traffic sees is shown beside it whenever
    it differs: the pod split behind the one Service (``canary 20% (1/2 pods)``: one canary pod
    of two takes half the connections), or the weight an HTTPRoute sends (``routed``, exact;
    ``canary 20% (route 0%)`` while the route waits for ready pods). ``split`` is the pods of a
    judged canary (None: not known); ``routed`` None means no route decides the traffic.
    """
    match state.phase:
        case "Progressing" | "Paused":
            word = "canary" if state.phase == "Progressing" else "paused"
            return f"{word} {weight}%{_traffic(weight, split, routed)}"
        case "Promoting":
            return "promoting"
        case "RolledBack":
            return "rolled back"
        case _:
            return "stable"


def _traffic(weight: int, split: Split | None, routed: int | None) -> str:
    """`` (1/2 pods)`` / `` (route 0%)`` when traffic does not follow ``weight`` exactly, else ``""``."""
    if routed:  # an exact route weight decides; at 0 the one Service (so the pod count) does
        return "" if routed == weight else f" (route {routed}%)"
    if split is None:
        return ""
    if split.total == 0:
        return " (0 pods)"
    return "" if split.canary * 100 == weight * split.total else f" ({split.canary}/{split.total} pods)"
