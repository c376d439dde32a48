"""TrainingJob handlers: one reconcile per TrainingJob, driven by the TrainingJob itself and by
watches on the Jobs and pods it owns (label ``kubemaas.io/trainingjob``).

Gang semantics (what ``reconcile`` does):

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
- ``activeDeadlineSeconds`` bounds the whole run: each generation's Job gets what is left.
- ``ttlSecondsAfterFinished``: that long after Succeeded/Failed the operator deletes the
  children (Jobs, their pods, the Service). The TrainingJob and its status stay, because a
  ModelService's ``trainingJobRef`` reads ``status.artifact`` from it.
- Succeeded and Failed are terminal: a finished TrainingJob never gets new children.
- Spec changes other than ``runPolicy.suspend`` take effect from the next generation (a
  Job's pod template is immutable); the running gang is not disturbed.
- Status and Events: every phase change is written to ``status`` and posted as an Event on
  the TrainingJob (a Warning naming the failed rank, its exit code and the tail of its
  termination message or log, for each gang restart and for the final failure).

Concurrency: events for one TrainingJob (from itself, its Jobs and its pods) are serialised
by a per-TrainingJob asyncio lock, and every reconcile re-reads the TrainingJob first, so a
burst of pod events restarts the gang once.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from typing import Any, cast

import kopf

from kubemaas_operator import cluster, status
from kubemaas_operator import training_status as ts
from kubemaas_operator.manifests import common
from kubemaas_operator.manifests import trainingjob as mf
from kubemaas_operator.settings import OperatorSettings

PLURAL = "trainingjobs"
KIND = "TrainingJob"
RETRY_DELAY_S = 5.0
log = logging.getLogger("kubemaas.trainingjob")


def _parse_time(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    return dt.datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)


def remaining_deadline(spec: mf.TrainingJobSpec, start_time: str | None, now: str) -> int | None:
    """Seconds left of ``runPolicy.activeDeadlineSeconds`` since ``status.startTime``."""
    limit = spec.run_policy.active_deadline_seconds
    if limit is None:
        return None
    started, current = _parse_time(start_time), _parse_time(now)
    if started is None or current is None:
        return limit
    return limit - int((current - started).total_seconds())


class Reconciler:
    """Holds the settings, the per-TrainingJob locks and the pending TTL/retry tasks."""

    def __init__(self, settings: OperatorSettings) -> None:
        self.settings = settings
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._timers: dict[tuple[str, str], asyncio.Task[None]] = {}

    # -- entry point ------------------------------------------------------------------------

    async def reconcile(self, namespace: str, name: str) -> None:
        key = (namespace, name)
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            tj = await cluster.get(common.API_VERSION, KIND, namespace, name)
            if tj is None or tj["metadata"].get("deletionTimestamp"):
                self._locks.pop(key, None)
                self._cancel(key)
                return
            await self._reconcile(tj)

    async def reconcile_or_retry(self, namespace: str, name: str) -> None:
        """For watch events, which kopf does not retry: log a failure and try again later."""
        try:
            await self.reconcile(namespace, name)
        except (cluster.ApiException, OSError) as exc:
            log.warning("TrainingJob %s/%s: reconcile failed (%s); retrying in %ss", namespace, name, exc,
                        RETRY_DELAY_S)
            self._schedule((namespace, name), RETRY_DELAY_S, self.reconcile_or_retry(namespace, name))

    def shutdown(self) -> None:
        for task in self._timers.values():
            task.cancel()
        self._timers.clear()

    # -- the state machine ------------------------------------------------------------------

    async def _reconcile(self, tj: dict[str, Any]) -> None:
        meta = tj["metadata"]
        ns, name = str(meta["namespace"]), str(meta["name"])
        spec = mf.parse_spec(tj.get("spec") or {})
        old: dict[str, Any] = dict(tj.get("status") or {})
        if old.get("phase") in ts.TERMINAL:
            await self._after_finish(tj, spec, old)
            return

        now = status.now_rfc3339()
        restarts = int(old.get("restarts") or 0)
        out = self.settings
        uri = mf.output_uri(spec, out.model_store_uri, ns, name)
        await cluster.apply(mf.build_service(tj, spec))

        job = await cluster.get("batch/v1", "Job", ns, mf.job_name(name, restarts))
        pods = await self._pods(ns, name, restarts)
        found = ts.assess(
            replicas=spec.replicas, restarts=restarts, backoff_limit=spec.run_policy.backoff_limit,
            suspend=spec.run_policy.suspend, job=job, pods=pods,
        )
        start_time = old.get("startTime") or now
        completion: str | None = None

        if found.action == "restart":
            await self._stop_generation(ns, name, restarts, spec)
            restarts += 1
            job, pods = None, []
            found = ts.Assessment("Restarting", found.reason, found.message, "create", ts.ReplicaCounts())

        if found.action == "create":
            left = remaining_deadline(spec, start_time, now)
            if left is not None and left <= 0:
                found = ts.Assessment(
                    "Failed", "DeadlineExceeded",
                    f"runPolicy.activeDeadlineSeconds={spec.run_policy.active_deadline_seconds} exceeded "
                    f"before generation r{restarts} could start", "finish", found.replicas,
                )
            else:
                job = await cluster.apply(self._job(tj, spec, restarts, uri, left))
        elif job is not None and bool((job.get("spec") or {}).get("suspend")) != spec.run_policy.suspend:
            await cluster.merge_patch("batch/v1", "Job", ns, str(job["metadata"]["name"]),
                                      {"spec": {"suspend": spec.run_policy.suspend}})

        if found.action == "finish":
            completion = now
        created = job is not None or restarts > 0 or status.is_true(old.get("conditions"), "Created")
        new_status: dict[str, Any] = {
            "phase": found.phase,
            "message": found.message,
            "observedGeneration": meta.get("generation"),
            "restarts": restarts,
            "jobName": mf.job_name(name, restarts),
            "startTime": start_time,
            "replicaStatuses": found.replicas.as_status(),
            "conditions": status.merge_conditions(
                old.get("conditions"), ts.desired_conditions(found, created=created),
                generation=meta.get("generation"), now=now,
            ),
        }
        if completion is not None:
            new_status["completionTime"] = completion
        if found.artifact is not None:
            new_status["artifact"] = found.artifact
        if _changed(old, new_status):
            await cluster.patch_status(common.API_VERSION, KIND, ns, name, new_status)
        if found.phase != old.get("phase") or found.reason == "RankFailed":
            _announce(tj, old.get("phase"), found)
        if found.action == "finish":
            await self._after_finish(tj, spec, {**old, **new_status})

    def _job(
        self, tj: dict[str, Any], spec: mf.TrainingJobSpec, restarts: int, uri: str, left: int | None
    ) -> dict[str, Any]:
        s = self.settings
        return mf.build_job(
            tj, spec, restarts=restarts, output=uri, image=s.runtime_image,
            image_pull_policy=s.image_pull_policy, run_as_user=s.run_as_user, pvc_root=s.pvc_root,
            active_deadline_seconds=left, storage_secret_name=s.storage_secret_name,
            image_pull_secrets=s.image_pull_secrets,
        )

    async def _pods(self, ns: str, name: str, restarts: int | None = None) -> list[dict[str, Any]]:
        selector = f"{common.LABEL_TRAININGJOB}={name}"
        if restarts is not None:
            selector += f",{mf.LABEL_RESTART}={restarts}"
        return await cluster.list_objects("v1", "Pod", ns, label_selector=selector)

    async def _stop_generation(self, ns: str, name: str, restarts: int, spec: mf.TrainingJobSpec) -> None:
        """End a failed generation: its ranks must not run on beside the next one."""
        if spec.run_policy.clean_pod_policy == "All":
            await cluster.delete("batch/v1", "Job", ns, mf.job_name(name, restarts), propagation="Background")
            return
        # None/Running keep the Job and its finished pods for debugging; the job controller
        # stops the rest too (backoffLimit 0), this just does not wait for it.
        for pod in await self._pods(ns, name, restarts):
            if (pod.get("status") or {}).get("phase") in ("Pending", "Running"):
                await cluster.delete("v1", "Pod", ns, pod["metadata"]["name"])

    async def _after_finish(self, tj: dict[str, Any], spec: mf.TrainingJobSpec, st: dict[str, Any]) -> None:
        """cleanPodPolicy at the end of the run, then the TTL of the children."""
        meta = tj["metadata"]
        ns, name = str(meta["namespace"]), str(meta["name"])
        policy = spec.run_policy.clean_pod_policy
        if policy != "None":
            for pod in await self._pods(ns, name):
                phase = (pod.get("status") or {}).get("phase")
                if policy == "All" or phase in ("Pending", "Running"):
                    await cluster.delete("v1", "Pod", ns, pod["metadata"]["name"])
        ttl = spec.run_policy.ttl_seconds_after_finished
        finished = _parse_time(st.get("completionTime"))
        if ttl is None or finished is None:
            return
        due = (finished + dt.timedelta(seconds=ttl) - dt.datetime.now(dt.UTC)).total_seconds()
        if due > 0:
            self._schedule((ns, name), due, self.reconcile_or_retry(ns, name))
            return
        await self._delete_children(ns, name, ttl)

    async def _delete_children(self, ns: str, name: str, ttl: int) -> None:
        jobs = await cluster.list_objects("batch/v1", "Job", ns, label_selector=f"{common.LABEL_TRAININGJOB}={name}")
        service = await cluster.get("v1", "Service", ns, mf.service_name(name))
        if not jobs and service is None:
            return
        for job in jobs:
            await cluster.delete("batch/v1", "Job", ns, job["metadata"]["name"], propagation="Background")
        await cluster.delete("v1", "Service", ns, mf.service_name(name))
        log.info("TrainingJob %s/%s: deleted %d Jobs and the Service (ttlSecondsAfterFinished=%d)",
                 ns, name, len(jobs), ttl)

    # -- timers -----------------------------------------------------------------------------

    def _schedule(self, key: tuple[str, str], delay: float, work: Any) -> None:
        """Run ``work`` (a coroutine) after ``delay`` seconds, replacing a pending one for ``key``."""
        self._cancel(key)

        async def later() -> None:
            await asyncio.sleep(delay)
            self._timers.pop(key, None)
            await work

        self._timers[key] = asyncio.get_running_loop().create_task(later())

    def _cancel(self, key: tuple[str, str]) -> None:
        task = self._timers.pop(key, None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()


def _announce(tj: dict[str, Any], before: str | None, found: ts.Assessment) -> None:
    """Log a phase change and post it as a Kubernetes Event on the TrainingJob (a Warning for
    a failed rank or a failed run, so `kubectl describe tj` shows why it restarted)."""
    meta = tj["metadata"]
    log.info("TrainingJob %s/%s: %s -> %s: %s", meta["namespace"], meta["name"], before, found.phase, found.message)
    try:
        warning = found.phase in ("Restarting", "Failed") and found.reason != "Creating"
        body = cast(kopf.Body, tj)  # kopf walks any Mapping; its stubs name only Body
        kopf.event(body, type="Warning" if warning else "Normal", reason=found.reason, message=found.message)
    except Exception as exc:  # an Event is best effort; never fail the reconcile for one
        log.debug("could not post an event: %s", exc)


def _changed(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """Whether writing ``new`` would change anything (lastTransitionTime aside, it is stable)."""
    return any(old.get(k) != v for k, v in new.items())


def register(registry: kopf.OperatorRegistry, settings: OperatorSettings) -> None:
    """Register the TrainingJob handlers into ``registry``."""
    reconciler = Reconciler(settings)
    group, version = common.GROUP, common.VERSION
    owned = {common.LABEL_TRAININGJOB: kopf.PRESENT}

    # Explicit ids: kopf keys its progress annotations by handler id.
    @kopf.on.resume(group, version, PLURAL, id="trainingjob", registry=registry)
    @kopf.on.create(group, version, PLURAL, id="trainingjob", registry=registry)
    @kopf.on.update(group, version, PLURAL, field="spec", id="trainingjob", registry=registry)
    async def trainingjob_changed(name: str, namespace: str | None, **_: Any) -> None:
        try:
            await reconciler.reconcile(namespace or "", name)
        except cluster.ApiException as exc:
            raise kopf.TemporaryError(f"TrainingJob {namespace}/{name}: API error {exc.status}: {exc.reason}",
                                      delay=RETRY_DELAY_S) from exc

    @kopf.on.event("batch", "v1", "jobs", labels=owned, id="trainingjob-job", registry=registry)
    async def job_event(labels: kopf.Labels, namespace: str | None, **_: Any) -> None:
        await reconciler.reconcile_or_retry(namespace or "", labels[common.LABEL_TRAININGJOB])

    @kopf.on.event("", "v1", "pods", labels=owned, id="trainingjob-pod", registry=registry)
    async def pod_event(labels: kopf.Labels, namespace: str | None, **_: Any) -> None:
        await reconciler.reconcile_or_retry(namespace or "", labels[common.LABEL_TRAININGJOB])

    @kopf.on.cleanup(registry=registry)
    async def stop_timers(**_: Any) -> None:
        with contextlib.suppress(Exception):
            reconciler.shutdown()
