"""Step 2 of a ModelService sync: compress the bundle when ``spec.compression.mode`` asks for it.

One compression Job per (source bundle, compression spec), named by their digest; its pod
leaves a report (contract 3) that is judged here and recorded in ``status.compression``, so a
finished result survives the Job's pod.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kubemaas_operator.controllers.context import Context
from kubemaas_operator.controllers.modelservice import compression as jobs
from kubemaas_operator.controllers.modelservice.children import ServingBundle
from kubemaas_operator.controllers.modelservice.spec import ModelServiceSpec
from kubemaas_operator.kube.conditions import Condition, false, true
from kubemaas_operator.kube.events import child_refusal
from kubemaas_operator.kube.observe import job_outcome, pod_problem
from kubemaas_runtime import contracts

NOT_REQUESTED = true("Compressed", "NotRequested", "compression.mode is none: the bundle is served as given")


@dataclass(frozen=True)
class CompressionResult:
    """The Compressed condition, the bundle to serve once it is known, and ``status.compression``."""

    condition: Condition
    serving: ServingBundle | None
    status: dict[str, Any] | None
    running: bool = False
    failed: bool = False


def _served(report: jobs.Report, source: ServingBundle) -> ServingBundle | None:
    if report.bundle is None or not report.selected:
        return None
    chosen = report.variant(report.selected)
    generative = report.generative or source.task == contracts.TEXT_GENERATION
    return ServingBundle(
        uri=report.bundle.uri,
        sha256=report.bundle.sha256,
        variant=report.selected,
        size_bytes=chosen.size_bytes if chosen else None,
        source_uri=source.uri,
        source_sha256=source.sha256 or None,
        source=source.source,
        source_uid=source.source_uid,
        task=contracts.TEXT_GENERATION if generative else source.task,
        perplexity=chosen.perplexity if chosen and chosen.perplexity is not None else source.perplexity,
        tokens_per_second=chosen.tokens_per_second if chosen else None,
        bundle_bytes=report.bundle.size_bytes,
    )


def judge(
    report: jobs.Report, succeeded: bool, comp_status: Mapping[str, Any], source: ServingBundle,
    max_drop: float, *, fallback: str = "", fresh: bool = False,
) -> CompressionResult:
    """Pure: a finished compression (its report, whether the Job succeeded) -> condition and bundle.

    ``fresh``: the report comes straight from the Job, where no selection without a reason means
    the gate failed; a report without variants but with a reason (bad input: e.g. ``--methods prune``
    on a bundle without a recipe) and a recorded status without variants mean the Job failed before
    measuring any, and the Compressed condition carries the runtime's reason."""
    served = _served(report, source) if succeeded else None
    if served is not None:
        return CompressionResult(
            true("Compressed", "VariantSelected", f"selected {report.selected}: {report.reason}".strip(": ")),
            served, dict(comp_status),
        )
    if not report.selected and (report.variants or (fresh and not report.reason)):
        gate = (f"maxPerplexityIncrease {comp_status.get('maxPerplexityIncrease') or contracts.DEFAULT_MAX_PERPLEXITY_INCREASE}"
                if report.generative else f"maxAccuracyDrop {max_drop}")
        message = f"no variant within {gate}: {report.drops()} {report.omitted_note}".rstrip()
        return CompressionResult(false("Compressed", jobs.GATE_FAILED, message), None, dict(comp_status), failed=True)
    why = report.reason or fallback
    return CompressionResult(
        false("Compressed", "CompressionFailed", f"compression Job {comp_status.get('job')}: {why}"),
        None, dict(comp_status), failed=True,
    )


def judge_report(
    base: Mapping[str, Any], state: str, message: str, source: ServingBundle, max_drop: float
) -> CompressionResult:
    """Pure: a finished compression Job's termination message -> condition, bundle, status."""
    try:
        report = jobs.parse_report(message)
    except jobs.ReportError as exc:
        why = message.strip()[-800:] if state == "Failed" and message.strip() else str(exc)
        reason = "CompressionFailed" if state == "Failed" else "CompressionReportInvalid"
        return CompressionResult(
            false("Compressed", reason, f"compression Job {base['job']}: {why}"), None,
            {**base, "state": "Failed", "selected": None, "reason": why, "bundle": None, "variants": []},
            failed=True,
        )
    succeeded = state == "Succeeded" and _served(report, source) is not None
    comp_status = {**base, "state": "Succeeded" if succeeded else "Failed", **report.status()}
    return judge(report, succeeded, comp_status, source, max_drop, fallback=message[:500], fresh=True)


def from_status(old: Mapping[str, Any], source: ServingBundle, max_drop: float) -> CompressionResult:
    """A finished result recorded in status.compression (the Job's pod may be long gone)."""
    report = jobs.Report.model_validate(
        {k: old.get(k) for k in ("selected", "reason", "bundle", "variants") if old.get(k) is not None}
    )
    return judge(report, old.get("state") == "Succeeded", old, source, max_drop)


def running(base: Mapping[str, Any], job_name: str) -> CompressionResult:
    """A compression Job at work (status.compression.state Running)."""
    return CompressionResult(
        false("Compressed", "Compressing", f"compression Job {job_name} is measuring variants"), None,
        {**base, "state": "Running", "selected": None, "bundle": None, "variants": [], "reason": ""},
        running=True,
    )


async def compress(
    ctx: Context, msvc: Mapping[str, Any], spec: ModelServiceSpec, source: ServingBundle, old: Mapping[str, Any]
) -> CompressionResult:
    """Run (or read) the compression Job of ``source``; raises ApiException on API errors."""
    comp = spec.compression
    if comp.mode == "none":
        return CompressionResult(NOT_REQUESTED, source, None)
    namespace, name = msvc["metadata"]["namespace"], msvc["metadata"]["name"]
    identity = source.sha256 or f"uri:{source.uri}"
    textgen = source.task == contracts.TEXT_GENERATION
    job_name = jobs.job_name(name, identity, spec, textgen)
    base = {
        "job": job_name,
        "mode": comp.mode,
        "methods": list(comp.methods),
        "maxAccuracyDrop": comp.max_accuracy_drop,
        "maxPerplexityIncrease": jobs.perplexity_gate(spec, textgen),
        "sourceSha256": source.sha256 or None,
    }
    if old.get("job") == job_name and old.get("state") in ("Succeeded", "Failed"):
        return from_status(old, source, comp.max_accuracy_drop)
    job = await ctx.kube.get("batch/v1", "Job", namespace, job_name)
    if job is None:
        await ctx.kube.apply(jobs.job(msvc, spec, source.uri, identity, ctx.settings, textgen))
        return running(base, job_name)
    pods = await ctx.kube.list_objects(
        "v1", "Pod", namespace, label_selector=f"batch.kubernetes.io/job-name={job_name}"
    )
    outcome = job_outcome(job, pods, jobs.CONTAINER)
    if outcome.state == "Running":
        now = dt.datetime.now(dt.UTC)
        stuck = next((p for p in (pod_problem(pod, now=now, stuck_after_s=float("inf")) for pod in pods) if p), None)
        if stuck is None and not pods:  # e.g. a ResourceQuota refuses the pod: only the Job's Events say so
            stuck = await child_refusal(ctx.kube, "Job", namespace, job_name)
        result = running(base, job_name)
        if stuck is not None:  # e.g. the compression pod's image cannot be pulled
            return CompressionResult(false("Compressed", stuck.reason, stuck.message), None, result.status,
                                     running=True)
        return result
    message = outcome.message or f"{outcome.reason}: the Job's pod left no termination message"
    return judge_report(base, outcome.state, message, source, comp.max_accuracy_drop)
