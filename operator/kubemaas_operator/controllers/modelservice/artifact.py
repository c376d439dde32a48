"""Step 1 of a ModelService sync: which bundle to serve (``spec.model``), or why there is none yet.

One artifact rule for both halves: a TrainingJob that promises an artifact fails when rank 0
reports none or one without a checksum (``trainingjob.observe.assess``); one that promises none
succeeds without one, and a ModelService referencing it says it has nothing to serve.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kubemaas_operator.controllers.context import Context
from kubemaas_operator.controllers.modelservice.children import ServingBundle
from kubemaas_operator.controllers.modelservice.spec import ModelServiceSpec
from kubemaas_operator.kube.conditions import Condition, false, true
from kubemaas_operator.kube.manifests import API_VERSION
from kubemaas_runtime import contracts


@dataclass(frozen=True)
class Resolution:
    """The ArtifactReady condition and the (uncompressed) bundle; ``fatal`` when waiting cannot help."""

    condition: Condition
    bundle: ServingBundle | None
    fatal: bool = False


async def resolve_artifact(ctx: Context, namespace: str, spec: ModelServiceSpec) -> Resolution:
    """The bundle of ``spec.model`` (reads the referenced TrainingJob; raises ApiException on API errors)."""
    if spec.model.uri:
        uri = spec.model.uri
        return Resolution(true("ArtifactReady", "URIGiven", f"bundle {uri}"), ServingBundle(uri=uri, sha256=""))
    assert spec.model.training_job_ref is not None  # parse_modelservice guarantees exactly one
    ref = spec.model.training_job_ref.name
    tj = await ctx.kube.get(API_VERSION, "TrainingJob", namespace, ref)
    return resolve_training_job(namespace, ref, tj)


TEXTGEN_RECIPE = "textgen"


def training_task(tj: Mapping[str, Any]) -> str | None:
    """``text-generation`` for a TrainingJob of the textgen recipe, or whose artifact reports a
    held-out perplexity (user code writing a text-generation bundle); None when the operator
    cannot tell (it never opens the bundle; the compression report may tell later)."""
    recipe = ((tj.get("spec") or {}).get("recipe") or {}).get("name")
    metrics = (((tj.get("status") or {}).get("artifact") or {}).get("metrics")) or {}
    if recipe == TEXTGEN_RECIPE or "perplexity" in metrics:
        return contracts.TEXT_GENERATION
    return None


def _byte_count(value: Any) -> int | None:
    """A recorded ``sizeBytes`` (the CRD makes it a non-negative integer), else None."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def resolve_training_job(namespace: str, ref: str, tj: Mapping[str, Any] | None) -> Resolution:
    """Pure: a TrainingJob body (or None when it does not exist) -> its artifact, or why we wait."""
    if tj is None:
        return Resolution(
            false("ArtifactReady", "WaitingForTraining", f"TrainingJob {namespace}/{ref} does not exist yet"), None
        )
    st = tj.get("status") or {}
    phase = st.get("phase") or "Pending"
    artifact = st.get("artifact") or {}
    if phase == "Succeeded":
        if not (artifact.get("uri") and artifact.get("sha256")):
            what = "an artifact without a sha256" if artifact.get("uri") else "no artifact"
            return Resolution(
                false("ArtifactReady", "NoArtifact",
                      f"TrainingJob {ref} succeeded with {what}: nothing to serve "
                      "(set spec.output.uri on the TrainingJob so it must produce a bundle)"),
                None, True,
            )
        task = training_task(tj)
        perplexity = (artifact.get("metrics") or {}).get("perplexity")
        bundle = ServingBundle(
            uri=str(artifact["uri"]), sha256=str(artifact["sha256"]), source=("TrainingJob", namespace, ref),
            source_uid=str((tj.get("metadata") or {}).get("uid") or "") or None,
            task=task,
            perplexity=float(perplexity) if task == contracts.TEXT_GENERATION and perplexity is not None else None,
            bundle_bytes=_byte_count(artifact.get("sizeBytes")),
        )
        return Resolution(
            true("ArtifactReady", "TrainingSucceeded",
                 f"TrainingJob {ref} produced {artifact['uri']} (sha256 {str(artifact['sha256'])[:12]})"),
            bundle,
        )
    if phase == "Failed":
        detail = st.get("message") or "no message"
        return Resolution(false("ArtifactReady", "TrainingFailed", f"TrainingJob {ref} failed: {detail}"), None, True)
    return Resolution(
        false("ArtifactReady", "WaitingForTraining", f"waiting for TrainingJob {ref} to succeed (phase {phase})"), None
    )
