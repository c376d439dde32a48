"""Step 3a of a ModelService sync: ``spec.rollout`` -- which revision the stable Deployment
serves, the canary Deployment beside it, the analysis of its traffic, and ``status.rollout`` /
``status.history``.

It runs before the roll-out step and tells it which bundle the stable Deployment keeps serving
(the stable revision while a canary is judged) and with how many replicas (the stable share of
the split); it applies or scales down the canary Deployment itself. The decisions are the pure
``rollout.state.step``; this module reads pods and metrics into an ``Observation`` and carries
out the ``Plan`` (children, Events, the ``kubemaas.io/rollout`` annotation consumed).

The split is of the ModelService's total (``spec.replicas``, which the HPA writes through the
scale subresource when ``spec.autoscaling`` is set): autoscaling sizes stable + canary together
and each step divides whatever it decides.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import kopf

from kubemaas_operator.controllers.context import Context
from kubemaas_operator.controllers.modelservice import children, route
from kubemaas_operator.controllers.modelservice.children import ServingBundle
from kubemaas_operator.controllers.modelservice.observe import deployment_health
from kubemaas_operator.controllers.modelservice.spec import ModelServiceSpec
from kubemaas_operator.controllers.modelservice.status import FATAL_POD_REASONS
from kubemaas_operator.kube import conditions, events
from kubemaas_operator.kube.client import ApiException
from kubemaas_operator.kube.conditions import Condition
from kubemaas_operator.kube.manifests import ANNOTATION_SPEC_HASH, API_VERSION
from kubemaas_operator.rollout import state as machine
from kubemaas_operator.rollout.analysis import Variants
from kubemaas_operator.rollout.children import LABEL_TRACK, canary_deployment, canary_name
from kubemaas_operator.rollout.podnames import (
    MAX_NAME_LENGTH,
    hash_survives,
    names_distinguish,
    names_pattern,
    pod_name_pattern,
)
from kubemaas_operator.rollout.spec import RolloutSpec, RolloutSpecError, parse_rollout
from kubemaas_operator.rollout.split import Split, split_replicas

KIND = "ModelService"
ACTIVE = frozenset({"Progressing", "Paused", "Promoting"})
CANARY_FATAL = FATAL_POD_REASONS | {"CrashLoopBackOff", "StorageInitializerFailed", "ReadinessProbeFailing",
                                    "ProgressDeadlineExceeded"}
"""Canary pod problems that roll it back (waiting cannot fix them)."""
TICK_S = 5.0
"""Reconcile at least this often while a canary is active (holds and pod readiness)."""


@dataclass(frozen=True)
class CanaryResult:
    """What the roll-out step needs from this one, and the status fields this step owns."""

    stable: ServingBundle | None
    """The bundle the stable Deployment serves (None: nothing to serve yet)."""
    stable_replicas: int | None
    """spec.replicas of the stable Deployment (None: no canary, so all of ``spec.replicas``)."""
    status: dict[str, Any]
    requeue_s: float | None = None
    consume: str | None = None
    """The ``kubemaas.io/rollout`` value to remove once ``status`` is written (``consume_command``)."""


def revision(bundle: ServingBundle) -> machine.Revision:
    """The state machine's view of a bundle: sha256 (may be empty for a plain uri), uri, variant."""
    return machine.Revision(bundle.sha256, bundle.uri, bundle.variant)


def rolled_out(deploy: Mapping[str, Any] | None) -> bool:
    """Every pod of the Deployment runs its current template and is Ready (and there is at least one).

    ``kubectl rollout status``'s test: the controller has seen the latest spec, ``spec.replicas``
    pods are updated and ready, and no pod of an older template is left (``status.replicas`` <=
    ``updatedReplicas``). Without the last clause a canary Deployment rolling from one revision
    to the next (maxUnavailable 0) counted the old revision's still-Ready surge pod as the new
    revision's, so a superseding canary's hold began before any of its own pods was Ready.
    """
    if not deploy:
        return False
    spec, st, meta = deploy.get("spec") or {}, deploy.get("status") or {}, deploy.get("metadata") or {}
    want = int(spec.get("replicas", 1))
    updated = int(st.get("updatedReplicas") or 0)
    return (want > 0 and int(st.get("observedGeneration") or 0) >= int(meta.get("generation") or 0)
            and updated >= want and int(st.get("readyReplicas") or 0) >= want
            and int(st.get("replicas") or 0) <= updated)


def _rolled_to(deploy: Mapping[str, Any] | None, rev: machine.Revision | None) -> bool:
    """The stable Deployment serves ``rev`` on all its pods (no old ones left).

    Scaled to zero (``spec.replicas`` 0), a Deployment whose template serves ``rev`` has rolled
    once the controller has seen it and no pod is left: a promotion at 0 replicas completes
    instead of waiting for pods that will never be asked for.
    """
    bundle = children.serving_bundle_of(deploy)
    if rev is None or bundle is None or not revision(bundle).same(rev):
        return False
    spec, st, meta = (deploy or {}).get("spec") or {}, (deploy or {}).get("status") or {}, (deploy or {}).get("metadata") or {}
    if int(spec.get("replicas", 1)) == 0:
        return (int(st.get("observedGeneration") or 0) >= int(meta.get("generation") or 0)
                and int(st.get("replicas") or 0) == 0)
    if not rolled_out(deploy):
        return False
    st = (deploy or {}).get("status") or {}
    return int(st.get("replicas") or 0) == int(((deploy or {}).get("spec") or {}).get("replicas", 1))


def scrape_targets(pods: Iterable[Mapping[str, Any]], port: int, canary_hash: str | None
                   ) -> tuple[dict[str, str], dict[str, str]]:
    """The ``/metrics`` URLs (pod name -> ``http://IP:PORT/metrics``) of the Ready stable and canary pods.

    Canary pods count only when they run the canary Deployment's current template (its
    ``kubemaas.io/spec-hash``, ``canary_hash``; None accepts any): when a third revision
    supersedes a canary, the canary Deployment rolls (maxUnavailable 0) and the previous
    revision's pods keep serving until the new ones are Ready. Counted, their whole lifetime's
    requests (a new canary's pods count from their start) were judged as the new revision's.
    Pods being deleted and pods that are not Ready are left out.
    """
    stable: dict[str, str] = {}
    canary: dict[str, str] = {}
    for pod in pods:
        meta = pod.get("metadata") or {}
        is_canary = ((meta.get("labels") or {}).get(LABEL_TRACK)) == "canary"
        if is_canary and canary_hash is not None and (
                (meta.get("annotations") or {}).get(ANNOTATION_SPEC_HASH) != canary_hash):
            continue
        st = pod.get("status") or {}
        ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in st.get("conditions") or [])
        if ready and st.get("podIP") and not meta.get("deletionTimestamp"):
            (canary if is_canary else stable)[meta["name"]] = f"http://{st['podIP']}:{port}/metrics"
    return stable, canary


def canary_selector(namespace: str, deploy_name: str, pods: Iterable[Mapping[str, Any]], canary_hash: str | None) -> str:
    """PromQL label matchers for the canary pods of the current template (``prometheusUrl``).

    Pod names are ``(<deployment>-<pod-template-hash>-)[:58]`` + 5 characters (``rollout.podnames``:
    the API server cuts long bases); the hashes are read from the pods that carry the canary
    Deployment's current ``kubemaas.io/spec-hash``, so a previous canary revision's pods (and those
    of a ModelService whose name starts with ``<deployment>-``) are not counted. Before such a pod
    exists, any template of the Deployment matches. When the name is so long that the cut falls
    into the hash (``<deployment>-`` of 48 characters or more), names no longer tell templates
    apart: the current template's pods are then named one by one. Names so long that even stable
    and canary pods look alike (``podnames.names_distinguish`` of the stable Deployment fails),
    with no pod of the current template yet, give ``""``: no canary traffic to read.
    """
    current: dict[str, str] = {}
    for pod in pods:
        meta = pod.get("metadata") or {}
        labels, annotations = meta.get("labels") or {}, meta.get("annotations") or {}
        if (canary_hash is not None and labels.get(LABEL_TRACK) == "canary" and labels.get("pod-template-hash")
                and annotations.get(ANNOTATION_SPEC_HASH) == canary_hash and meta.get("name")):
            current[str(meta["name"])] = str(labels["pod-template-hash"])
    if current and not all(hash_survives(deploy_name, h) for h in current.values()):
        return f'namespace="{namespace}",pod=~"{names_pattern(current)}"'
    if not current and len(deploy_name) >= MAX_NAME_LENGTH:  # canary_name() of a stable name of 56+
        return ""
    return f'namespace="{namespace}",pod=~"{pod_name_pattern(deploy_name, current.values())}"'


def stable_selector(namespace: str, stable_deploy: str, pods: Iterable[Mapping[str, Any]] = ()) -> str:
    """PromQL label matchers for the stable pods (``prometheusUrl``): any template of the stable
    Deployment. Its pattern never matches a canary pod while the names tell them apart (up to 55
    characters, ``podnames.names_distinguish``); beyond that the stable pods in ``pods`` (those
    without ``kubemaas.io/track: canary``) are named one by one."""
    if not names_distinguish(stable_deploy):
        names = [str(p["metadata"]["name"]) for p in pods
                 if ((p.get("metadata") or {}).get("labels") or {}).get(LABEL_TRACK) != "canary"
                 and (p.get("metadata") or {}).get("name")]
        if names:
            return f'namespace="{namespace}",pod=~"{names_pattern(names)}"'
    return f'namespace="{namespace}",pod=~"{pod_name_pattern(stable_deploy)}"'


def _variants(ctx: Context, namespace: str, name: str, canary_deploy: Mapping[str, Any] | None) -> Variants:
    pods = ctx.cache.select("Pod", namespace, children.match_labels(name))
    port = ctx.settings.runtime_port
    stable_deploy = children.predictor_name(name)
    canary_hash = (((canary_deploy or {}).get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_SPEC_HASH)
    stable, canary = scrape_targets(pods, port, canary_hash)
    return Variants(
        stable=stable, canary=canary,
        stable_selector=stable_selector(namespace, stable_deploy, pods),
        canary_selector=canary_selector(namespace, canary_name(stable_deploy), pods, canary_hash),
    )


def _same(have: Mapping[str, Any] | None, want: Mapping[str, Any]) -> bool:
    """The canary Deployment already has this pod template (spec hash) and replica count."""
    if not have:
        return False
    ann = (have.get("metadata") or {}).get("annotations") or {}
    return bool(ann.get(ANNOTATION_SPEC_HASH) == want["metadata"]["annotations"].get(ANNOTATION_SPEC_HASH)
                and (have.get("spec") or {}).get("replicas") == want["spec"]["replicas"])


def stable_serving(stable: machine.Revision | None, serving: ServingBundle,
                   current: ServingBundle | None) -> ServingBundle:
    """The bundle the stable Deployment serves: ``serving`` once it is the stable revision, else
    what the Deployment serves now (``current``) when that is the stable revision; otherwise the
    stable revision rebuilt from ``status.rollout.stable`` -- with no Deployment (deleted by hand
    mid-canary), or after a failed promotion returned stable to the revision it served before
    while the Deployment's template still names the promoted one -- never the canary's bundle,
    which would then be served by every pod without being judged."""
    if stable is None or stable.same(revision(serving)):
        return serving
    if current is not None and (stable.same(revision(current)) or not stable.uri):
        return current
    if stable.uri:  # the task (text generation or not) is the model's, so the same across revisions
        return ServingBundle(uri=stable.uri, sha256=stable.sha256, variant=stable.variant or "none",
                             task=current.task if current is not None else None)
    return serving


def serves_split(deploy: Mapping[str, Any] | None, want: Mapping[str, Any]) -> bool:
    """The canary Deployment is rolled out with the template and replica count ``want`` asks for now.

    What an exact HTTPRoute weight needs, as Argo Rollouts scales the canary before it shifts the
    weight: on the tick a step grows (or a third revision supersedes the canary) the Deployment is
    still Ready at the old size (or with the old revision's pods), and the new weight would load
    pods sized for the previous step.
    """
    return rolled_out(deploy) and _same(deploy, want)


def _failure(ctx: Context, namespace: str, name: str, deploy: Mapping[str, Any] | None, *, canary: bool = True) -> str:
    """Why the canary (or, ``canary=False``, the stable) Deployment's current pods cannot become
    Ready ("" when nothing says so).

    Only pods of its current template count (a previous revision's pods may still be going), and
    only problems a wait cannot fix (not Unschedulable: the cluster may make room, until the
    Deployment's progressDeadlineSeconds says ProgressDeadlineExceeded).
    """
    if deploy is None:
        return ""
    current = ((deploy.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_SPEC_HASH)
    pods = [p for p in ctx.cache.select("Pod", namespace, children.match_labels(name))
            if not p["metadata"].get("deletionTimestamp")
            and (((p["metadata"].get("labels") or {}).get(LABEL_TRACK) == "canary") == canary)
            and (p["metadata"].get("annotations") or {}).get(ANNOTATION_SPEC_HASH) == current]
    health = deployment_health(deploy, pods, desired_hash=None, now=dt.datetime.now(dt.UTC),
                               stuck_after_s=ctx.settings.stuck_after_s)
    problem = health.problem
    return f"{problem.reason}: {problem.message}" if problem is not None and problem.reason in CANARY_FATAL else ""


def _promotion_failure(ctx: Context, namespace: str, name: str, stable_deploy: Mapping[str, Any] | None,
                       st: machine.RolloutState) -> str:
    """While promoting: why the stable Deployment's pods of the promoted revision cannot become
    Ready ("" before its template names that revision, i.e. before it started rolling to it)."""
    current = children.serving_bundle_of(stable_deploy)
    if st.phase != "Promoting" or st.stable is None or current is None or not st.stable.same(revision(current)):
        return ""
    return _failure(ctx, namespace, name, stable_deploy, canary=False)


def _split(spec: ModelServiceSpec, weight: int, phase: str) -> Split:
    """The split of ``spec.replicas`` at ``weight``; while promoting, stable rolls to the
    promoted revision at full size and the canary keeps its pods until stable is Ready."""
    total = spec.replicas
    if phase == "Promoting":
        return Split(total, split_replicas(total, weight).canary)
    return split_replicas(total, weight)


async def step_rollout(
    ctx: Context, msvc: Mapping[str, Any], spec: ModelServiceSpec, serving: ServingBundle | None,
    stable_deploy: Mapping[str, Any] | None,
) -> CanaryResult:
    """Run the rollout state machine once; apply/scale the canary Deployment; Events.

    Raises kopf.PermanentError naming the field for an invalid ``spec.rollout``, ApiException on
    API errors (the work queue retries).
    """
    meta = msvc["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    key = (namespace, name)
    raw_spec = msvc.get("spec") or {}
    try:
        rspec: RolloutSpec = parse_rollout(raw_spec.get("rollout"))
    except RolloutSpecError as exc:
        raise kopf.PermanentError(str(exc)) from exc
    old = msvc.get("status") or {}
    st = machine.RolloutState.from_status(old.get("rollout"), old.get("history"))
    current = children.serving_bundle_of(stable_deploy)
    if st.stable is None and current is not None:
        st = machine.RolloutState(stable=revision(current), history=st.history)  # adopt what runs
    if serving is None:
        held = _status(st, 0, None)
        held["rollout"]["commandApplied"] = (old.get("rollout") or {}).get("commandApplied")  # keep the mark
        return CanaryResult(current, None, held)

    ann = meta.get("annotations") or {}
    raw = ann.get(machine.ANNOTATION) or None
    command: machine.Command | None = None
    bad_command = None
    if raw is not None and raw == (old.get("rollout") or {}).get("commandApplied"):
        pass  # acted on by an earlier sync whose removal of the annotation failed: only remove it
    else:
        try:
            command = machine.parse_command(raw)
        except ValueError as exc:
            bad_command = str(exc)

    canary_deploy_name = canary_name(children.predictor_name(name))
    canary_deploy = ctx.cache.get("Deployment", namespace, canary_deploy_name)
    if canary_deploy is None and st.canary is not None:
        canary_deploy = await ctx.kube.get("apps/v1", "Deployment", namespace, canary_deploy_name)
    now = time.time()
    verdict = None
    if st.canary is not None and st.phase in ("Progressing", "Paused") and st.canary.same(revision(serving)):
        verdict = await ctx.analyses.measure(key, st.canary.identity, _variants(ctx, namespace, name, canary_deploy),
                                             rspec.analysis, time.monotonic())
    obs = machine.Observation(
        now=now, desired=revision(serving), spec_revision=machine.spec_revision(raw_spec),
        canary_ready=rolled_out(canary_deploy), stable_current=_rolled_to(stable_deploy, st.stable),
        verdict=verdict, command=command,
        canary_failure=_failure(ctx, namespace, name, canary_deploy) if st.canary is not None else "",
        replicas=spec.replicas, stable_failure=_promotion_failure(ctx, namespace, name, stable_deploy, st),
    )
    plan = machine.step(st, rspec, obs)
    new = plan.state

    # The canary Deployment: its share of the split while a canary is judged, else zero pods.
    split = _split(spec, plan.weight, new.phase)
    canary_bundle = serving if new.canary is not None and new.canary.same(revision(serving)) else (
        children.serving_bundle_of(canary_deploy))
    canary_serves = obs.canary_ready
    if new.canary is not None and plan.weight > 0 and canary_bundle is not None:
        want = canary_deployment(children.deployment(msvc, spec, canary_bundle, ctx.settings), split.canary)
        canary_serves = serves_split(canary_deploy, want)
        if not _same(canary_deploy, want):
            ctx.cache.put(await ctx.kube.apply(want))
    elif canary_deploy is not None and int((canary_deploy.get("spec") or {}).get("replicas") or 0) > 0:
        await ctx.kube.merge_patch("apps/v1", "Deployment", namespace, canary_deploy_name, {"spec": {"replicas": 0}})
    if new.phase not in ("Progressing", "Paused"):
        ctx.analyses.forget(key)
    routed = None
    if rspec.traffic_routing.http_route:  # exact weights on the named HTTPRoute's backendRefs
        judged = new.canary is not None and new.phase in ACTIVE
        weight = route.weight_to_route(plan.weight if judged else 0, canary_serves,
                                       route.stable_labelled(stable_deploy))
        routed = await route.set_route_weights(ctx, msvc, rspec.traffic_routing.http_route, weight)

    body = {**msvc, "kind": KIND, "apiVersion": API_VERSION}
    for event in plan.events:
        await events.record(ctx.kube, body, event.type, event.reason, event.message)
    if bad_command is not None:
        await events.record(ctx.kube, body, "Warning", "InvalidRolloutCommand", bad_command)

    # The stable Deployment: the stable revision (the promoted one once promoting), its share.
    stable_bundle = stable_serving(new.stable, serving, current)
    stable_replicas = split.stable if new.phase in ACTIVE else None
    requeue = None
    if new.phase in ACTIVE:
        due = ctx.analyses.next_in(key, time.monotonic())
        requeue = min(TICK_S, due) if due is not None else TICK_S
        requeue = max(requeue, 0.5)
    status = _status(new, plan.weight, split, routed.weight if routed is not None else None)
    if routed is not None and status["rollout"]["split"] is not None:
        status["rollout"]["split"]["mode"] = routed.note
        if routed.weight:  # exact; at 0 the route sends to the one Service, so the pod count decides
            status["rollout"]["split"]["effectiveWeight"] = float(routed.weight)
    last = ctx.analyses.last(key) if new.phase in ("Progressing", "Paused") else None
    status["rollout"]["lastAnalysis"] = {"decision": last.decision, "reason": last.reason} if last else None
    # The command's effect goes into this status; the annotation is removed only after it is
    # written (consume_command), and ``commandApplied`` marks it taken until then.
    status["rollout"]["commandApplied"] = raw
    return CanaryResult(stable_bundle, stable_replicas, status, requeue, consume=raw)


async def consume_command(ctx: Context, msvc: Mapping[str, Any], value: str) -> None:
    """Remove the ``kubemaas.io/rollout`` annotation ``value`` once its effect is in the status.

    The order makes a command durable and single: an API error before the status write leaves the
    annotation for the next sync to act on (nothing was recorded), and one between the write and
    this removal leaves it with ``status.rollout.commandApplied`` equal to it, which the next sync
    reads as already done and only removes. (Argo Rollouts' ``kubectl argo rollouts promote`` writes
    the status itself, so it never has the gap.) The removal carries the resourceVersion the status
    write left, so a command annotated again in between (which changes the object) is not removed
    unread: the 409 is left to the sync that the change triggers. The same value re-annotated in
    that instant is taken for the one just applied. Raises ApiException on other API errors.
    """
    meta = msvc["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    current = ctx.cache.get(KIND, namespace, name) or msvc
    version = (current.get("metadata") or {}).get("resourceVersion")
    if ((current.get("metadata") or {}).get("annotations") or {}).get(machine.ANNOTATION) != value:
        return
    body: dict[str, Any] = {"metadata": {"annotations": {machine.ANNOTATION: None}}}
    if version:
        body["metadata"]["resourceVersion"] = version
    try:
        written = await ctx.kube.merge_patch(API_VERSION, KIND, namespace, name, body)
    except ApiException as exc:
        if exc.status == 409:
            ctx.log.info(f"ModelService {namespace}/{name} changed before {machine.ANNOTATION}={value} was removed; "
                         "the next sync decides")
            return
        raise
    if written is not None:
        ctx.cache.put(written)


def decorate(status: dict[str, Any], result: CanaryResult, old: Mapping[str, Any], generation: int) -> dict[str, Any]:
    """Add this step's fields to the status ``build_status`` made: ``rollout``, ``history``, the
    condition ``RolledBack`` (True while the newest revision is rolled back, with why), and
    REASON ``RolledBack: <why>`` while the stable revision is Ready (a not-ready REASON wins).
    """
    out = {**status, **result.status}
    rollout = result.status.get("rollout") or {}
    phase = rollout.get("phase")
    if phase == "RolledBack":
        why = str(rollout.get("reason") or "")
        kind = ("Aborted" if why.startswith("aborted") else
                "PromotionFailed" if why.startswith("promotion failed") else "AnalysisFailed")
        cond = Condition("RolledBack", "True", kind, why)
        if status.get("phase") == "Ready":
            out["reason"], out["message"] = f"RolledBack: {why}", why
    else:
        cond = Condition("RolledBack", "False", "NotRolledBack", f"rollout {phase or 'Stable'}")
    theirs = [Condition(str(c["type"]), c["status"], str(c.get("reason") or ""), str(c.get("message") or ""))
              for c in status.get("conditions") or [] if c.get("type") != "RolledBack"]
    merged = conditions.merge_conditions(old.get("conditions"), [*theirs, cond], generation=generation)
    # keep build_status's own transition times for its conditions
    by_type = {c["type"]: c for c in status.get("conditions") or []}
    out["conditions"] = [by_type.get(c["type"], c) for c in merged]
    return out


def _status(st: machine.RolloutState, weight: int, split: Split | None, routed: int | None = None) -> dict[str, Any]:
    """``status.rollout`` and ``status.history``: ``weight`` is the step's, ``split`` the pods behind
    it and ``routed`` the HTTPRoute's canary weight (None without a route); the ROLLOUT column
    shows the step's weight and, where traffic differs from it, what traffic sees."""
    rollout = st.to_status()
    rollout["weight"] = weight
    rollout["column"] = machine.column(st, weight, split if st.phase in ACTIVE else None, routed)
    if split is not None and st.phase in ACTIVE:
        rollout["split"] = {"stable": split.stable, "canary": split.canary,
                            "effectiveWeight": round(split.effective_weight, 1),
                            "mode": "replicas: traffic follows the pod count behind the one Service"}
    else:
        rollout["split"] = None
    return {"rollout": rollout, "history": st.history_status() or None}
