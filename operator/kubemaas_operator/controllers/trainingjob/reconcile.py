"""TrainingJob reconciliation: one level-based ``sync`` per TrainingJob, driven through the work
queue by the TrainingJob itself and by watches on the Jobs and pods it owns.

Gang semantics:

- Generation ``g`` (``status.restarts``) is the Indexed Job ``<tj>-r<g>`` with
  ``backoffLimit: 0``. When any of its ranks fails, the job controller fails that Job and
  stops its other ranks, and the operator starts generation ``g+1`` as a new Job (a new
  name, so it never waits for the old one's deletion), until ``runPolicy.backoffLimit``
  restarts are used up; then the TrainingJob is Failed. All ranks resume from the
  checkpoint in ``output.uri``.
- ``cleanPodPolicy``: ``None`` (default) keeps every earlier generation's Job and its
  failed pods (``kubectl logs`` works on them; they go when the TrainingJob is deleted, as
  owned objects); ``Running`` also keeps them but deletes any pod still running when the
  TrainingJob finishes; ``All`` deletes a failed generation's Job (Background propagation)
  at each restart and every pod when the TrainingJob finishes.
- ``suspend``: sets the Job's ``spec.suspend``; the job controller deletes the pods, and
  recreates them on resume. A TrainingJob created suspended gets a suspended Job.
- The gang's shape (replicas, procsPerNode, recipe, image/command/args) changes only while
  suspended (the CRD's transition rule, JobSet's semantics); a suspended Job of another shape
  is replaced, so a resumed gang runs the spec as edited and the status counts its ranks.
- ``activeDeadlineSeconds`` bounds the run from ``status.startTime``, which is set when the gang
  first runs and again on every resume (Kubernetes Job semantics: suspended time does not count);
  each generation's Job gets what is left.
- ``ttlSecondsAfterFinished``: that long after Succeeded/Failed the operator deletes the
  children (Jobs, their pods, the Service). The TrainingJob and its status stay, because a
  ModelService's ``trainingJobRef`` reads ``status.artifact`` from it.
- Succeeded and Failed are terminal: a finished TrainingJob never gets new children.
- A TrainingJob that promises an artifact (a recipe, or ``output.uri``) fails when rank 0
  reports none or one without a sha256.
- Refusals: a headless Service name taken by another resource is a Conflict (checked again
  every CONFLICT_RECHECK_S); a child the API server refuses (400/422) fails the run with the
  API's message; pods the Job controller cannot create (a quota) show as REASON FailedCreate.
- Every phase change is written to ``status`` and recorded as an Event (a Warning naming the
  failed rank, its exit code and the tail of its termination message for each gang restart).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping
from typing import Any

from kubemaas_operator.controllers.context import Context
from kubemaas_operator.controllers.trainingjob import children as mf
from kubemaas_operator.controllers.trainingjob import observe as ts
from kubemaas_operator.controllers.trainingjob.spec import TrainingJobSpec, parse_spec
from kubemaas_operator.kube import conditions, events
from kubemaas_operator.kube.client import ApiException, api_message
from kubemaas_operator.kube.manifests import API_VERSION, LABEL_TRAININGJOB
from kubemaas_operator.kube.observe import parse_time
from kubemaas_operator.kube.ownership import foreign_controller
from kubemaas_operator.kube.patching import write_status

KIND = "TrainingJob"
PERMANENT_STATUSES = frozenset({400, 422})
CONFLICT_RECHECK_S = 30.0
WAITING_RECHECK_S = 10.0
"""While the gang's Job has no active pod, look again this often: the Job controller reports a
refused pod (a quota, pod admission) only as an Event, which no watch of ours sees."""
RETRYING = "RetryingAPIError"


def remaining_deadline(spec: TrainingJobSpec, start_time: str | None, now: str) -> int | None:
    """Seconds left of ``runPolicy.activeDeadlineSeconds`` since ``status.startTime`` (all of it when
    the gang has not started yet); None without a deadline."""
    limit = spec.run_policy.active_deadline_seconds
    if limit is None:
        return None
    started, current = parse_time(start_time), parse_time(now)
    if started is None or current is None:
        return limit
    return limit - int((current - started).total_seconds())


def start_time(old: Mapping[str, Any], suspend: bool, now: str) -> str | None:
    """``status.startTime``: unset while the gang never ran, set when it first runs and reset on
    resume (Kubernetes Job semantics), so time spent suspended does not count against the deadline."""
    before = old.get("startTime")
    if suspend:
        return str(before) if before else None
    if not before or old.get("phase") == "Suspended":
        return now
    return str(before)


def _pod_selector(name: str, restarts: int | None = None) -> str:
    selector = f"{LABEL_TRAININGJOB}={name}"
    return selector if restarts is None else f"{selector},{mf.LABEL_RESTART}={restarts}"


async def _pods(ctx: Context, ns: str, name: str, restarts: int | None = None) -> list[dict[str, Any]]:
    return await ctx.kube.list_objects("v1", "Pod", ns, label_selector=_pod_selector(name, restarts))


async def sync(ctx: Context, namespace: str, name: str) -> float | None:
    """Reconcile one TrainingJob; seconds until it wants another sync (a TTL, a Conflict), or None.

    A transient API error is shown in the status (REASON ``RetryingAPIError``) and re-raised, so
    the work queue retries it with back-off.
    """
    tj = await ctx.kube.get(API_VERSION, KIND, namespace, name)
    if tj is None or tj["metadata"].get("deletionTimestamp"):
        return None
    try:
        return await _sync(ctx, tj)
    except ApiException as exc:
        if exc.status == 404:
            raise
        old = tj.get("status") or {}
        message = f"API error {exc.status}: {api_message(exc)}; retrying with back-off"
        await _write(ctx, tj, {**old, "reason": RETRYING, "message": message})
        raise


async def _sync(ctx: Context, tj: dict[str, Any]) -> float | None:
    meta = tj["metadata"]
    ns = str(meta["namespace"])
    spec = parse_spec(tj.get("spec") or {})
    old: dict[str, Any] = dict(tj.get("status") or {})
    if old.get("phase") in ts.TERMINAL:
        return await _after_finish(ctx, tj, spec, old)

    now = conditions.now_rfc3339()
    restarts = int(old.get("restarts") or 0)
    started = start_time(old, spec.run_policy.suspend, now)
    service = mf.build_service(tj, spec)
    owner = foreign_controller(await ctx.kube.get("v1", "Service", ns, service["metadata"]["name"]), meta["uid"])
    if owner is not None:
        found = ts.Assessment("Pending", "Conflict",
                              f"Service {ns}/{service['metadata']['name']} is controlled by {owner}; not taking "
                              "it over (rename this TrainingJob or delete the other resource)", "wait")
        await _write(ctx, tj, _status(tj, old, found, restarts, started, now, created=False))
        return CONFLICT_RECHECK_S
    try:
        await ctx.kube.apply(service)
        found, restarts, job = await _gang(ctx, tj, spec, restarts, started, now)
    except ApiException as exc:
        if exc.status not in PERMANENT_STATUSES:
            raise
        found = ts.Assessment("Failed", "ChildRefused",
                              f"the API server refused a child of this TrainingJob: {exc.status} {api_message(exc)}",
                              "finish")
        job = None
    created = job is not None or restarts > 0 or conditions.is_true(old.get("conditions"), "Created")
    new = _status(tj, old, found, restarts, started, now, created=created)
    await _write(ctx, tj, new)
    if found.action == "finish":
        return await _after_finish(ctx, tj, spec, {**old, **new})
    if found.phase in ("Pending", "Restarting") and found.replicas.active == 0:
        return WAITING_RECHECK_S
    return None


async def _gang(
    ctx: Context, tj: dict[str, Any], spec: TrainingJobSpec, restarts: int, started: str | None, now: str
) -> tuple[ts.Assessment, int, dict[str, Any] | None]:
    """Assess the current generation and act on it: replace, restart, create or (un)suspend its Job."""
    ns, name = str(tj["metadata"]["namespace"]), str(tj["metadata"]["name"])
    job = await ctx.kube.get("batch/v1", "Job", ns, mf.job_name(name, restarts))
    if job is not None and _stale_shape(job, spec):
        # Edited while suspended: the Job's pod template and completions are immutable, so the
        # edited gang gets a new Job of the same generation (a suspended Job has no pods to lose).
        await ctx.kube.delete("batch/v1", "Job", ns, mf.job_name(name, restarts), propagation="Background")
        ctx.log.info(f"TrainingJob {ns}/{name}: replaced the suspended Job of the old gang shape")
        job = None
    pods = await _pods(ctx, ns, name, restarts) if job is not None else []
    found = ts.assess(
        replicas=spec.replicas, restarts=restarts, backoff_limit=spec.run_policy.backoff_limit,
        suspend=spec.run_policy.suspend, job=job, pods=pods, promises_artifact=spec.promises_artifact,
    )
    if found.action == "restart":
        await _stop_generation(ctx, ns, name, restarts, spec)
        restarts += 1
        job = None
        found = ts.Assessment("Restarting", found.reason, found.message, "create", ts.ReplicaCounts())
    if found.action == "create":
        left = remaining_deadline(spec, started, now)
        if left is not None and left <= 0:
            found = ts.Assessment(
                "Failed", "DeadlineExceeded",
                f"runPolicy.activeDeadlineSeconds={spec.run_policy.active_deadline_seconds} exceeded "
                f"before generation r{restarts} could start", "finish", found.replicas,
            )
        else:
            job = await ctx.kube.apply(_job(ctx, tj, spec, restarts, left))
    elif job is not None and bool((job.get("spec") or {}).get("suspend")) != spec.run_policy.suspend:
        await ctx.kube.merge_patch("batch/v1", "Job", ns, str(job["metadata"]["name"]),
                                   {"spec": {"suspend": spec.run_policy.suspend}})
    elif job is not None and found.reason == "WaitingForRanks" and found.replicas.active == 0:
        refusal = await events.child_refusal(ctx.kube, "Job", ns, str(job["metadata"]["name"]))
        if refusal is not None:  # e.g. a ResourceQuota: the Job controller says so only in Events
            found = dataclasses.replace(found, reason=refusal.reason, message=refusal.message)
    return found, restarts, job


def _stale_shape(job: Mapping[str, Any], spec: TrainingJobSpec) -> bool:
    """Whether ``job`` is suspended and runs another gang shape than ``spec`` (Jobs made before the
    shape annotation existed are left alone)."""
    shape = ((job.get("metadata") or {}).get("annotations") or {}).get(mf.ANNOTATION_SHAPE)
    suspended = bool((job.get("spec") or {}).get("suspend"))
    return suspended and shape is not None and shape != spec.shape_hash() and not job["metadata"].get(
        "deletionTimestamp")


def _status(
    tj: Mapping[str, Any], old: Mapping[str, Any], found: ts.Assessment, restarts: int, started: str | None,
    now: str, *, created: bool,
) -> dict[str, Any]:
    generation = tj["metadata"].get("generation")
    return {
        "phase": found.phase,
        "reason": found.reason,
        "message": found.message,
        "observedGeneration": generation,
        "restarts": restarts,
        "jobName": mf.job_name(str(tj["metadata"]["name"]), restarts),
        "startTime": started,
        "completionTime": now if found.action == "finish" else old.get("completionTime"),
        "replicaStatuses": found.replicas.as_status(),
        "artifact": found.artifact if found.artifact is not None else old.get("artifact"),
        "conditions": conditions.merge_conditions(
            old.get("conditions"), ts.desired_conditions(found, created=created), generation=generation, now=now,
        ),
    }


async def _write(ctx: Context, tj: Mapping[str, Any], new: Mapping[str, Any]) -> None:
    """Write the status; log and record an Event when the phase or the reason changed."""
    meta = tj["metadata"]
    old = tj.get("status") or {}
    patch = await write_status(ctx.kube, KIND, meta["namespace"], meta["name"], old, new)
    if not patch or not ({"phase", "reason", "restarts"} & patch.keys()):
        return
    phase, reason = new.get("phase"), str(new.get("reason") or new.get("phase") or "Updated")
    ctx.log.info(f"TrainingJob {meta['namespace']}/{meta['name']}: {old.get('phase')} -> {phase}: {new.get('message')}")
    warning = (phase in ("Restarting", "Failed") and reason != "Creating") or reason in (
        "Conflict", "FailedCreate", RETRYING)
    await events.record(ctx.kube, {**tj, "kind": KIND, "apiVersion": API_VERSION},
                        "Warning" if warning else "Normal", reason, str(new.get("message") or ""))


def _job(ctx: Context, tj: dict[str, Any], spec: TrainingJobSpec, restarts: int, left: int | None) -> dict[str, Any]:
    s = ctx.settings
    uri = mf.output_uri(spec, s.model_store_uri, str(tj["metadata"]["namespace"]), str(tj["metadata"]["name"]))
    return mf.build_job(
        tj, spec, restarts=restarts, output=uri, image=s.training_image,
        image_pull_policy=s.image_pull_policy, run_as_user=s.run_as_user, pvc_root=s.pvc_root,
        active_deadline_seconds=left, storage_secret_name=s.storage_secret_name,
        image_pull_secrets=s.image_pull_secrets,
    )


async def _stop_generation(ctx: Context, ns: str, name: str, restarts: int, spec: TrainingJobSpec) -> None:
    """End a failed generation: its ranks must not run on beside the next one."""
    if spec.run_policy.clean_pod_policy == "All":
        await ctx.kube.delete("batch/v1", "Job", ns, mf.job_name(name, restarts), propagation="Background")
        return
    # None/Running keep the Job and its finished pods for debugging; the job controller
    # stops the rest too (backoffLimit 0), this just does not wait for it.
    for pod in await _pods(ctx, ns, name, restarts):
        if (pod.get("status") or {}).get("phase") in ("Pending", "Running"):
            await ctx.kube.delete("v1", "Pod", ns, pod["metadata"]["name"])


async def _after_finish(ctx: Context, tj: dict[str, Any], spec: TrainingJobSpec, st: Mapping[str, Any]) -> float | None:
    """cleanPodPolicy at the end of the run, then the TTL of the children; seconds until the TTL is due."""
    meta = tj["metadata"]
    ns, name = str(meta["namespace"]), str(meta["name"])
    policy = spec.run_policy.clean_pod_policy
    if policy != "None":
        for pod in await _pods(ctx, ns, name):
            phase = (pod.get("status") or {}).get("phase")
            if policy == "All" or phase in ("Pending", "Running"):
                await ctx.kube.delete("v1", "Pod", ns, pod["metadata"]["name"])
    ttl = spec.run_policy.ttl_seconds_after_finished
    finished = parse_time(st.get("completionTime"))
    if ttl is None or finished is None:
        return None
    due = (finished + dt.timedelta(seconds=ttl) - dt.datetime.now(dt.UTC)).total_seconds()
    if due > 0:
        return due
    await _delete_children(ctx, tj, ttl)
    return None


async def _delete_children(ctx: Context, tj: Mapping[str, Any], ttl: int) -> None:
    """Delete the TrainingJob's Jobs (with their pods) and its headless Service, if it is ours."""
    ns, name, uid = str(tj["metadata"]["namespace"]), str(tj["metadata"]["name"]), tj["metadata"]["uid"]
    jobs = await ctx.kube.list_objects("batch/v1", "Job", ns, label_selector=_pod_selector(name))
    service = await ctx.kube.get("v1", "Service", ns, mf.service_name(name))
    if service is not None and foreign_controller(service, uid) is not None:
        service = None
    if not jobs and service is None:
        return
    for job in jobs:
        await ctx.kube.delete("batch/v1", "Job", ns, job["metadata"]["name"], propagation="Background")
    if service is not None:
        await ctx.kube.delete("v1", "Service", ns, mf.service_name(name))
    ctx.log.info(f"TrainingJob {ns}/{name}: deleted {len(jobs)} Jobs and the Service (ttlSecondsAfterFinished={ttl})")
