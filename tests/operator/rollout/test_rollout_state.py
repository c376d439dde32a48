"""The rollout state machine, driven tick by tick with made-up observations."""

from __future__ import annotations

import pytest

from kubemaas_operator.rollout.judgement import Verdict
from kubemaas_operator.rollout.spec import RolloutSpec, parse_rollout
from kubemaas_operator.rollout.split import Split, split_replicas
from kubemaas_operator.rollout.state import (
    Command,
    Observation,
    Plan,
    Revision,
    RolloutState,
    column,
    parse_command,
    spec_revision,
    step,
)

V1 = Revision("a" * 64, "s3://m/v1")
V2 = Revision("b" * 64, "s3://m/v2")
V3 = Revision("c" * 64, "s3://m/v3")
CANARY = parse_rollout({"strategy": "Canary", "steps": [{"weight": 20, "hold": "30s"}, {"weight": 50, "hold": "30s"}],
                        "analysis": {"interval": "10s", "inconclusiveLimit": "2m"}})
PASS = Verdict("continue", "canary passed")
FAIL = Verdict("rollback", "canary error rate 1.00 > 0.01 over 40 requests (stable 0.00 over 160)")
QUIET = Verdict("inconclusive", "canary answered 3 requests in the interval, fewer than minRequests 20")


def tick(state: RolloutState, now: float, desired: Revision = V2, *, spec: RolloutSpec = CANARY, gen: str = "spec-1",
         ready: bool = True, current: bool = False, verdict: Verdict | None = None,
         command: Command | None = None) -> Plan:
    return step(state, spec, Observation(now, desired, gen, ready, current, verdict, command))


STABLE_V1 = RolloutState(stable=V1)


def test_first_revision_is_served_without_steps() -> None:
    plan = step(RolloutState(), CANARY, Observation(0, V1, "spec-1"))
    assert (plan.state.phase, plan.state.stable, plan.weight) == ("Stable", V1, 0)
    assert [(h.outcome, h.why) for h in plan.state.history] == [("Deployed", "first revision")]


def test_rolling_update_replaces_at_once() -> None:
    plan = tick(STABLE_V1, 5, spec=parse_rollout(None))
    assert (plan.state.phase, plan.state.stable, plan.weight) == ("Stable", V2, 0)
    assert plan.state.history[-1].outcome == "Promoted"


def test_good_canary_walks_the_steps_and_is_promoted() -> None:
    p = tick(STABLE_V1, 0, ready=False)
    assert (p.state.phase, p.state.canary, p.weight) == ("Progressing", V2, 20)
    assert [e.reason for e in p.events] == ["CanaryStarted"]
    p = tick(p.state, 5, ready=False)            # pods not Ready yet: the hold has not begun
    assert p.state.step_started is None
    p = tick(p.state, 10)                        # Ready at t=10
    p = tick(p.state, 20, verdict=PASS)
    p = tick(p.state, 39, verdict=PASS)          # 29 s held < 30 s
    assert (p.state.step, p.weight) == (0, 20)
    p = tick(p.state, 40)                        # 30 s held, 2 passing intervals
    assert (p.state.step, p.weight, p.state.passed) == (1, 50, 0)
    p = tick(p.state, 41)
    p = tick(p.state, 80, verdict=PASS)
    assert (p.state.phase, p.state.stable) == ("Promoting", V2)  # stable Deployment rolls to v2
    assert p.weight == 50                        # canary pods serve until stable has rolled
    p = tick(p.state, 85, current=False)
    assert (p.state.phase, p.weight) == ("Promoting", 50)
    p = tick(p.state, 90, current=True)
    assert (p.state.phase, p.state.stable, p.state.canary, p.weight) == ("Stable", V2, None, 0)
    entry = p.state.history[-1]
    assert (entry.sha256, entry.outcome, entry.started, entry.finished) == (V2.sha256, "Promoted", 0, 90)
    assert entry.why == "held 30s with 1 passing intervals"


def test_hold_alone_never_promotes_without_evidence() -> None:
    p = tick(STABLE_V1, 0)
    p = tick(p.state, 1)
    for t in range(10, 110, 10):
        p = tick(p.state, t, verdict=QUIET)
        assert (p.state.step, p.weight) == (0, 20)


def test_breach_rolls_back_and_is_not_retried_until_the_spec_changes() -> None:
    p = tick(STABLE_V1, 0)
    p = tick(p.state, 10, verdict=FAIL)
    assert (p.state.phase, p.state.stable, p.state.canary, p.weight) == ("RolledBack", V1, None, 0)
    assert p.state.reason == FAIL.reason
    assert [(e.type, e.reason) for e in p.events] == [("Warning", "RolledBack")]
    assert (p.state.history[-1].outcome, p.state.history[-1].why) == ("RolledBack", FAIL.reason)
    again = tick(p.state, 500)                   # same artifact, same spec: stays rolled back
    assert (again.state.phase, again.weight, again.events) == ("RolledBack", 0, ())
    retry = tick(p.state, 600, gen="spec-2")            # the spec changed: try again
    assert (retry.state.phase, retry.state.canary, retry.weight) == ("Progressing", V2, 20)
    other = tick(p.state, 600, desired=V3)       # another artifact: try it
    assert other.state.canary == V3


def test_breach_while_pods_are_still_starting_rolls_back() -> None:
    p = tick(STABLE_V1, 0, ready=False)
    p = tick(p.state, 10, ready=False, verdict=FAIL)
    assert p.state.phase == "RolledBack"


def test_abort_annotation_rolls_back_and_promote_skips_a_hold() -> None:
    p = tick(STABLE_V1, 0)
    aborted = tick(p.state, 1, command="abort")
    assert (aborted.state.phase, aborted.state.history[-1].outcome) == ("RolledBack", "Aborted")
    assert aborted.state.reason == "aborted by annotation kubemaas.io/rollout=abort"
    promoted = tick(p.state, 1, command="promote")
    assert (promoted.state.step, promoted.weight) == (1, 50)
    full = tick(p.state, 1, command="promote-full")
    assert (full.state.phase, full.state.stable, full.weight) == ("Promoting", V2, 20)


def test_no_conclusive_interval_pauses_and_says_why_then_resumes() -> None:
    p = tick(STABLE_V1, 0)
    p = tick(p.state, 1)
    p = tick(p.state, 60, verdict=QUIET)
    assert p.state.phase == "Progressing"
    p = tick(p.state, 121, verdict=QUIET)        # 120 s since the step's pods were Ready
    assert p.state.phase == "Paused"
    assert p.state.reason.startswith("paused: no conclusive analysis for 2m (canary answered 3 requests")
    assert [e.reason for e in p.events] == ["CanaryPaused"]
    assert column(p.state, p.weight) == "paused 20%"
    p = tick(p.state, 130, verdict=PASS)         # traffic came back
    assert p.state.phase == "Progressing"
    p = tick(p.state, 131, verdict=FAIL)
    assert p.state.phase == "RolledBack"


def test_step_without_hold_waits_for_promote_but_still_rolls_back() -> None:
    spec = parse_rollout({"strategy": "Canary", "steps": [{"weight": 10}]})
    p = tick(STABLE_V1, 0, spec=spec)
    p = tick(p.state, 1, spec=spec, verdict=PASS)
    p = tick(p.state, 10_000, spec=spec, verdict=PASS)
    assert (p.state.phase, p.weight) == ("Paused", 10)
    assert "kubemaas.io/rollout=promote" in p.state.reason
    assert tick(p.state, 10_001, spec=spec, verdict=FAIL).state.phase == "RolledBack"
    assert tick(p.state, 10_001, spec=spec, command="promote").state.phase == "Promoting"


def test_new_artifact_mid_canary_supersedes_it() -> None:
    p = tick(STABLE_V1, 0)
    p = tick(p.state, 5, desired=V3)
    assert (p.state.canary, p.state.step, p.weight) == (V3, 0, 20)
    assert (p.state.history[-1].sha256, p.state.history[-1].outcome) == (V2.sha256, "Superseded")


def test_spec_back_to_stable_removes_the_canary() -> None:
    p = tick(STABLE_V1, 0)
    p = tick(p.state, 5, desired=V1)
    assert (p.state.phase, p.state.canary, p.weight) == ("Stable", None, 0)


def test_state_round_trips_through_status() -> None:
    p = tick(STABLE_V1, 1_700_000_000)
    p = tick(p.state, 1_700_000_010, verdict=PASS)
    p = tick(p.state, 1_700_000_020, verdict=FAIL)
    back = RolloutState.from_status(p.state.to_status(), p.state.history_status())
    assert back == p.state
    mid = tick(STABLE_V1, 1_700_000_000).state
    assert RolloutState.from_status(mid.to_status(), mid.history_status()) == mid
    by_uri = tick(RolloutState(stable=Revision("", "s3://m/a")), 1_700_000_000, desired=Revision("", "s3://m/b")).state
    assert RolloutState.from_status(by_uri.to_status(), by_uri.history_status()) == by_uri


def test_history_keeps_the_last_ten() -> None:
    s = STABLE_V1
    for i in range(15):
        s = tick(s, 10 * i, desired=Revision(f"{i:064d}"), spec=parse_rollout(None)).state
    assert len(s.history) == 10
    assert s.history[-1].sha256 == f"{14:064d}"


def test_commands_parse_strictly() -> None:
    assert parse_command(None) is None
    assert parse_command("promote-full") == "promote-full"
    with pytest.raises(ValueError, match=r"^annotation kubemaas.io/rollout: expected one of promote, "
                       r"promote-full, abort, got 'yes-please'$"):
        parse_command("yes-please")


def test_spec_revision_ignores_the_replica_count() -> None:
    spec = {"model": {"uri": "s3://m/v2"}, "replicas": 3, "rollout": {"strategy": "Canary"}}
    assert spec_revision(spec) == spec_revision({**spec, "replicas": 7})  # the HPA scaled
    assert spec_revision(spec) != spec_revision({**spec, "rollout": {"strategy": "Canary", "steps": [{"weight": 5}]}})


def test_revisions_without_sha256_are_told_apart_by_uri() -> None:
    a, b = Revision("", "s3://m/a"), Revision("", "s3://m/b")
    assert not a.same(b)
    p = tick(RolloutState(stable=a), 0, desired=b)
    assert (p.state.canary, p.weight) == (b, 20)
    p = tick(p.state, 1, desired=b, verdict=FAIL)
    assert tick(p.state, 2, desired=b).state.phase == "RolledBack"  # not retried under the same spec


def test_canary_that_cannot_start_is_rolled_back() -> None:
    p = tick(STABLE_V1, 0, ready=False)
    p = step(p.state, CANARY, Observation(30, V2, "spec-1", canary_failure="CrashLoopBackOff: pod m-canary-x"))
    assert (p.state.phase, p.weight) == ("RolledBack", 0)
    assert p.state.reason == "canary cannot become ready: CrashLoopBackOff: pod m-canary-x"


def test_a_rolled_back_revision_asked_for_again_after_the_spec_moved_away_is_retried() -> None:
    # v2 fails under spec "uri v2"; the user goes back to v1 ("uri v1"), then applies v2 again.
    # The spec text is the one v2 failed under, but it changed twice since: as in Argo Rollouts
    # (an abort lasts until the next change of the desired state), v2 is tried again.
    p = tick(STABLE_V1, 0, gen="spec-v2")
    p = tick(p.state, 10, gen="spec-v2", verdict=FAIL)
    assert p.state.phase == "RolledBack"
    p = tick(p.state, 20, desired=V1, gen="spec-v1")
    p = tick(p.state, 30, desired=V2, gen="spec-v2")
    assert (p.state.phase, p.state.canary, p.weight) == ("Progressing", V2, 20)


def test_a_rolled_back_revision_is_retried_after_another_one_was_promoted() -> None:
    p = tick(STABLE_V1, 0, gen="spec-v2")
    p = tick(p.state, 10, gen="spec-v2", verdict=FAIL)
    p = tick(p.state, 20, desired=V3, gen="spec-v3", command="promote-full")
    p = tick(p.state, 21, desired=V3, gen="spec-v3", command="promote-full")
    p = tick(p.state, 30, desired=V3, gen="spec-v3", current=True)
    assert (p.state.phase, p.state.stable) == ("Stable", V3)
    p = tick(p.state, 40, desired=V2, gen="spec-v2")
    assert (p.state.phase, p.state.canary, p.state.reason) == ("Progressing", V2, "canary at step 1/2 (20%)")


def test_only_replicas_changing_after_a_rollback_does_not_retry() -> None:
    spec = {"model": {"uri": "s3://m/v2"}, "replicas": 3, "rollout": {"strategy": "Canary"}}
    p = tick(STABLE_V1, 0, gen=spec_revision(spec))
    p = tick(p.state, 10, gen=spec_revision(spec), verdict=FAIL)
    p = tick(p.state, 20, gen=spec_revision({**spec, "replicas": 9}))  # the HPA scaled
    assert (p.state.phase, p.state.canary, p.weight) == ("RolledBack", None, 0)


def test_switching_to_rolling_update_mid_canary_records_the_canary_it_ends() -> None:
    p = tick(STABLE_V1, 100)
    p = tick(p.state, 110, verdict=PASS)
    p = tick(p.state, 120, spec=parse_rollout({"strategy": "RollingUpdate"}))  # spec.rollout edited
    assert (p.state.phase, p.state.stable, p.state.canary, p.weight) == ("Stable", V2, None, 0)
    entry = p.state.history[-1]
    assert (entry.sha256, entry.outcome, entry.started, entry.finished) == (V2.sha256, "Promoted", 100, 120)
    assert entry.why == "RollingUpdate strategy: the canary's revision replaced every pod"
    # a canary of another revision than the one now rolled out is superseded, then the new one recorded
    q = tick(tick(STABLE_V1, 100).state, 120, desired=V3, spec=parse_rollout(None))
    assert [(h.sha256, h.outcome, h.started) for h in q.state.history[-2:]] == [
        (V2.sha256, "Superseded", 100), (V3.sha256, "Promoted", 120)]


@pytest.mark.parametrize("phase", ["Stable", "Promoting", "RolledBack"])
def test_a_command_with_no_canary_to_act_on_is_ignored_with_a_warning(phase: str) -> None:
    p = tick(STABLE_V1, 0)
    if phase == "Promoting":
        p = tick(p.state, 1, command="promote-full")
    elif phase == "RolledBack":
        p = tick(p.state, 1, command="abort")
    else:
        p = tick(p.state, 1, desired=V1)
    assert p.state.phase == phase
    after = tick(p.state, 2, desired=V1 if phase == "Stable" else V2, command="abort")
    assert after.state.phase == phase  # nothing changed ...
    assert [(e.type, e.reason, e.message) for e in after.events] == [(  # ... and the user is told so
        "Warning", "RolloutCommandIgnored",
        f"annotation kubemaas.io/rollout=abort ignored: no canary is being judged (rollout phase {phase})")]


def test_commands_acting_on_a_canary_raise_no_warning() -> None:
    p = tick(STABLE_V1, 0)
    assert [e.reason for e in tick(p.state, 1, command="promote").events] == ["CanaryStep"]


def test_reverting_the_spec_to_stable_after_a_rollback_clears_it() -> None:
    # Argo Rollouts: an aborted rollout is Healthy again once the desired state goes back to the
    # stable version. Until the spec changes, the rollback (and its why) stays in the status.
    p = tick(STABLE_V1, 0, gen="spec-v2")
    p = tick(p.state, 10, gen="spec-v2", verdict=FAIL)
    assert tick(p.state, 20, desired=V1, gen="spec-v2").state.phase == "RolledBack"  # serving fell back, same spec
    back = tick(p.state, 20, desired=V1, gen="spec-v1")
    assert (back.state.phase, back.state.reason, back.state.rejected, back.weight) == ("Stable", "", None, 0)
    assert column(back.state, back.weight) == "stable"


def test_scaled_to_zero_holds_and_says_why_then_starts_the_step_when_pods_return() -> None:
    p = tick(STABLE_V1, 0, ready=False)
    zero = step(p.state, CANARY, Observation(5, V2, "spec-1", replicas=0))
    assert (zero.state.phase, zero.weight, zero.state.step_started) == ("Paused", 20, None)
    assert zero.state.reason.startswith("scaled to zero: spec.replicas is 0, so no pod serves either revision")
    assert [e.reason for e in zero.events] == ["CanaryPaused"]
    # hours at zero: no inconclusive pause, no promotion without evidence, no repeated Event
    later = step(zero.state, CANARY, Observation(10_000, V2, "spec-1", replicas=0, verdict=QUIET))
    assert (later.state.phase, later.state.reason, later.events) == ("Paused", zero.state.reason, ())
    # scaled back up: the step runs again, its clocks starting when the canary pods are Ready
    back = tick(later.state, 10_001, ready=False)
    assert (back.state.phase, back.state.step_started) == ("Progressing", None)
    back = tick(back.state, 10_010)
    assert back.state.step_started == 10_010


def test_scaled_to_zero_after_a_ready_step_restarts_its_clocks() -> None:
    p = tick(STABLE_V1, 0)
    p = tick(p.state, 1, verdict=PASS)
    zero = step(p.state, CANARY, Observation(200, V2, "spec-1", replicas=0))
    back = tick(zero.state, 400, verdict=QUIET)      # 400 s after the step began, but 0 s with pods
    assert (back.state.phase, back.state.step_started) == ("Progressing", 400)
    full = step(zero.state, CANARY, Observation(201, V2, "spec-1", command="promote-full", replicas=0))
    assert full.state.phase == "Promoting"           # a manual promote still works at zero


def test_a_promotion_whose_stable_pods_cannot_run_rolls_back_to_the_previous_stable() -> None:
    p = tick(STABLE_V1, 0)
    p = tick(p.state, 1, command="promote-full")
    assert (p.state.phase, p.state.stable, p.state.previous) == ("Promoting", V2, V1)
    p = tick(p.state, 30)                            # stable still rolling: keep waiting
    assert (p.state.phase, p.weight) == ("Promoting", 20)
    failed = step(p.state, CANARY, Observation(60, V2, "spec-1", stable_failure="CrashLoopBackOff: pod m-7d-x"))
    why = f"promotion failed: the stable pods cannot run {V2.sha256[:12]}: CrashLoopBackOff: pod m-7d-x"
    assert (failed.state.phase, failed.state.stable, failed.state.canary, failed.weight) == ("RolledBack", V1, None, 0)
    assert (failed.state.reason, failed.state.previous) == (why, None)
    assert [(e.type, e.reason) for e in failed.events] == [("Warning", "RolledBack")]
    assert (failed.state.history[-1].outcome, failed.state.history[-1].why) == ("RolledBack", why)
    assert tick(failed.state, 70).state.phase == "RolledBack"   # not retried under the same spec
    assert tick(failed.state, 70, gen="spec-2").state.canary == V2


def test_a_promotion_with_no_earlier_revision_recorded_holds_and_says_why() -> None:
    promoting = RolloutState(phase="Promoting", stable=V2, canary=V2, step=1, reason="promoting x: all steps passed")
    held = step(promoting, CANARY, Observation(5, V2, "spec-1", stable_failure="ImagePullBackOff: pod m-1"))
    assert (held.state.phase, held.weight) == ("Promoting", 50)
    assert held.state.reason.endswith("ImagePullBackOff: pod m-1; no earlier revision recorded to return to: "
                                      "fix the pods or the spec")
    assert [e.reason for e in held.events] == ["PromotionStalled"]
    assert step(held.state, CANARY, Observation(6, V2, "spec-1", stable_failure="ImagePullBackOff: pod m-1")).events == ()


def test_previous_round_trips_through_status() -> None:
    p = tick(tick(STABLE_V1, 0).state, 1, command="promote-full")
    back = RolloutState.from_status(p.state.to_status(), p.state.history_status())
    assert back.previous == V1


@pytest.mark.parametrize(("total", "weight", "shown"), [
    (2, 20, "canary 20% (1/2 pods)"),   # ceil(2 x 0.2) = 1 canary pod of 2: half the traffic
    (10, 20, "canary 20%"),             # 2 of 10: exactly the step's weight
    (1, 20, "canary 20% (1/2 pods)"),   # a one-replica service surges to 1 stable + 1 canary
    (3, 50, "canary 50% (2/3 pods)"),   # ceil(3 x 0.5) = 2 canary, stable keeps the other 1
    (0, 20, "canary 20% (0 pods)"),
])
def test_the_rollout_column_shows_the_pod_split_when_it_differs_from_the_step(total: int, weight: int,
                                                                               shown: str) -> None:
    state = RolloutState(phase="Progressing", stable=V1, canary=V2)
    assert column(state, weight, split_replicas(total, weight)) == shown


def test_the_rollout_column_shows_the_route_weight_when_a_route_decides() -> None:
    state = RolloutState(phase="Paused", stable=V1, canary=V2)
    assert column(state, 20, Split(1, 1), routed=20) == "paused 20%"           # exact weights on the route
    assert column(state, 20, Split(1, 1), routed=0) == "paused 20% (1/2 pods)"  # route at 0: the pods decide
    assert column(RolloutState(phase="Promoting", stable=V2, canary=V2), 50, Split(4, 2)) == "promoting"
