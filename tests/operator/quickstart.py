"""The quickstart session: examples/trainingjob.yaml + examples/modelservice.yaml driven to READY.

Used by ``test_quickstart_cluster.py``, which asserts the ``kubectl get`` columns at every step.
(The README's quickstart is captured from the real-pod run instead: ``tests.e2e.capture_readme``.)

kwok plays the kubelet: it makes scheduled pods Running and Ready but runs no container. So the
steps a kubelet would report are written through the pods/status subresource, as envtest suites
do: the training ranks' terminal phase (rank 0 with its contract-3 termination message naming
the bundle) and the compression pod's (with its contract-3 report). Everything else -- the job
controller completing the Indexed Job, the Deployment controller, the scheduler, the garbage
collector and the operator -- is real.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.cluster.harness import ControlPlane
from tests.operator.support import bind_claims, get_json, poll, set_pod_status

REPO = Path(__file__).resolve().parents[2]
TRAININGJOB = Path("examples/trainingjob.yaml")
MODELSERVICE = Path("examples/modelservice.yaml")
MODELSERVICE_URI = Path("examples/modelservice-uri.yaml")
CLAIM = "kubemaas-models"
"""The model store claim: the TrainingJob example writes there, compression output goes there."""
TRAINED_SHA = "5e" * 32
COMPRESSED_SHA = "c0" * 32
INDEX = "batch.kubernetes.io/job-completion-index"
TIMEOUT = 90.0
NOW = "2026-01-01T00:00:00Z"


@dataclass
class Transcript:
    """The kubectl commands run, each with its real output, in order."""

    namespace: str
    steps: list[tuple[str, str]] = field(default_factory=list)

    def record(self, plane: ControlPlane, *args: str, shown: Sequence[str] = ()) -> str:
        """Run ``kubectl args`` and keep its output, under ``shown`` (the args as a user types them)."""
        out = plane.kubectl(*args).stdout
        self.steps.append(("kubectl " + " ".join(shown or args), out))
        return out

    def text(self) -> str:
        return "".join(f"$ {cmd}\n{out}{'' if out.endswith(chr(10)) else chr(10)}\n" for cmd, out in self.steps)


def table(text: str) -> list[dict[str, str]]:
    """Rows of ``kubectl get`` output as {COLUMN: cell}, cut at the header's column offsets
    (cells may be empty). Several tables (``get a,b``) are separated by blank lines."""
    rows: list[dict[str, str]] = []
    header: list[tuple[str, int]] = []
    for line in text.splitlines():
        if not line.strip():
            header = []
            continue
        if not header:
            header = []
            pos = 0
            for word in line.split():
                pos = line.index(word, pos)
                header.append((word, pos))
                pos += len(word)
            continue
        cells = {}
        for i, (name, start) in enumerate(header):
            end = header[i + 1][1] if i + 1 < len(header) else len(line)
            cells[name] = line[start:end].strip()
        rows.append(cells)
    return rows


def model_store(plane: ControlPlane, namespace: str) -> None:
    """PVC kubemaas-models, bound by the real PV controller to a hostPath PV (kind's default
    StorageClass would provision it; this control plane has none)."""
    bind_claims(plane, namespace, [CLAIM], timeout=TIMEOUT)


def _get(plane: ControlPlane, namespace: str, resource: str, name: str | None = None) -> list[dict[str, str]]:
    args = ["get", resource, "-n", namespace] + ([name] if name else [])
    return table(plane.kubectl(*args).stdout)


def _row_when(plane: ControlPlane, namespace: str, resource: str, name: str, want: dict[str, str],
              what: str) -> dict[str, str]:
    def check() -> dict[str, str] | None:
        (row,) = _get(plane, namespace, resource, name)
        return row if all(row.get(k) == v for k, v in want.items()) else None

    return poll(check, timeout=TIMEOUT, interval=0.3, what=what)


def _pods(plane: ControlPlane, namespace: str, selector: str) -> list[dict[str, Any]]:
    items = (get_json(plane, "pods", "-n", namespace, "-l", selector) or {}).get("items") or []
    return [p for p in items if not p["metadata"].get("deletionTimestamp")]


def _terminate(plane: ControlPlane, namespace: str, pod: str, container: str, message: str) -> None:
    """What a kubelet writes when the pod's one container exits 0 with ``message``."""
    set_pod_status(plane, namespace, pod, {
        "phase": "Succeeded",
        "conditions": [{"type": "Ready", "status": "False", "reason": "PodCompleted", "lastTransitionTime": NOW}],
        "containerStatuses": [{
            "name": container, "image": "kubemaas/kubemaas:test", "imageID": "", "ready": False, "restartCount": 0,
            "state": {"terminated": {"exitCode": 0, "reason": "Completed", "message": message,
                                     "startedAt": NOW, "finishedAt": NOW}},
        }],
    })


def finish_training(plane: ControlPlane, namespace: str, name: str, replicas: int, output: str) -> None:
    """Every rank of generation 0 exits 0; rank 0 reports the bundle (contract 3)."""

    def running() -> dict[int, str] | None:
        found = {int(p["metadata"]["annotations"][INDEX]): p["metadata"]["name"]
                 for p in _pods(plane, namespace, f"kubemaas.io/trainingjob={name}")
                 if p["status"].get("phase") == "Running"}
        return found if len(found) == replicas else None

    ranks = poll(running, timeout=TIMEOUT, what=f"{replicas} running ranks of TrainingJob {name}")
    artifact = {"artifact": {"uri": output, "sha256": TRAINED_SHA, "metrics": {"accuracy": 0.972, "loss": 0.094}}}
    for rank in sorted(ranks, reverse=True):
        _terminate(plane, namespace, ranks[rank], "trainer", json.dumps(artifact) if rank == 0 else "")


def compression_report(output: str) -> dict[str, Any]:
    """What ``kubemaas compress --mode auto --max-accuracy-drop 0.01`` reports (contract 3)."""

    def variant(name: str, size: int, p50: float, accuracy: float, passed: bool) -> dict[str, Any]:
        return {"name": name, "sizeBytes": size, "p50Batch1Ms": p50 / 8, "p95Batch1Ms": p50 / 6,
                "p50Batch32Ms": p50, "p95Batch32Ms": p50 * 1.2, "accuracy": accuracy,
                "accuracyDrop": round(0.972 - accuracy, 4), "agreement": 0.99, "passed": passed}

    return {
        "selected": "int8-static",
        "reason": "lowest p50 latency at batch 32 within maxAccuracyDrop 0.01",
        "bundle": {"uri": output, "sha256": COMPRESSED_SHA},
        "variants": [variant("fp32", 43_000, 0.80, 0.972, True), variant("int8-dynamic", 13_100, 0.95, 0.969, True),
                     variant("int8-static", 12_900, 0.55, 0.967, True), variant("fp16", 22_000, 0.90, 0.972, True)],
    }


def run(plane: ControlPlane, namespace: str, files: Sequence[Path] = (TRAININGJOB, MODELSERVICE)) -> Transcript:
    """Apply both examples and drive the lineage to READY=True, asserting the printer columns."""
    tj_file, msvc_file = files
    tj_doc = yaml.safe_load((REPO / tj_file).read_text())
    msvc_doc = yaml.safe_load((REPO / msvc_file).read_text())
    tj, msvc = tj_doc["metadata"]["name"], msvc_doc["metadata"]["name"]
    assert msvc_doc["spec"]["model"] == {"trainingJobRef": {"name": tj}}
    replicas, output = int(tj_doc["spec"]["replicas"]), str(tj_doc["spec"]["output"]["uri"])
    assert output.startswith(f"pvc://{CLAIM}/"), f"the TrainingJob example writes to {output}, not the model store"
    ns = ["-n", namespace]
    out = Transcript(namespace)

    # The harness's kubectl has its own working directory: run with the absolute path, show the
    # repository-relative one (as typed from the repository root).
    for path, kind, name in ((tj_file, "trainingjob", tj), (msvc_file, "modelservice", msvc)):
        applied = out.record(plane, "apply", "-f", str(REPO / path), *ns, shown=("apply", "-f", str(path), *ns))
        assert applied == f"{kind}.kubemaas.io/{name} created\n"

    _row_when(plane, namespace, "tj", tj, {"PHASE": "Running", "REPLICAS": str(replicas)}, f"TrainingJob {tj} Running")
    _row_when(plane, namespace, "msvc", msvc, {"READY": "False", "REASON": "WaitingForTraining"},
              f"ModelService {msvc} REASON WaitingForTraining")
    waiting = table(out.record(plane, "get", "tj,msvc", *ns))
    assert [(r["NAME"], r.get("PHASE"), r.get("READY"), r.get("REASON")) for r in waiting] == [
        (f"trainingjob.kubemaas.io/{tj}", "Running", None, "AllRanksRunning"),
        (f"modelservice.kubemaas.io/{msvc}", None, "False", "WaitingForTraining"),
    ]
    assert waiting[1]["VARIANT"] == ""

    finish_training(plane, namespace, tj, replicas, output)
    done = _row_when(plane, namespace, "tj", tj, {"PHASE": "Succeeded"}, f"TrainingJob {tj} Succeeded")
    assert (done["REPLICAS"], done["ARTIFACT"]) == (str(replicas), output)

    def compression_job() -> dict[str, Any] | None:
        items = (get_json(plane, "jobs", *ns, "-l", f"kubemaas.io/modelservice={msvc}") or {}).get("items") or []
        return items[0] if items else None

    job = poll(compression_job, timeout=TIMEOUT, what=f"the compression Job of ModelService {msvc}")
    job_name = job["metadata"]["name"]
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[:3] == ["compress", "--bundle", output]
    assert args[5:] == ["--mode", "auto", "--max-accuracy-drop", "0.01"]
    compressing = _row_when(plane, namespace, "msvc", msvc, {"READY": "False", "REASON": "Compressing"},
                            f"ModelService {msvc} REASON Compressing")
    assert compressing["VARIANT"] == ""
    table(out.record(plane, "get", "tj", *ns))
    table(out.record(plane, "get", "msvc", *ns))

    pod = poll(lambda: _pods(plane, namespace, f"batch.kubernetes.io/job-name={job_name}"), timeout=TIMEOUT,
               what=f"the pod of Job {job_name}")[0]
    _terminate(plane, namespace, pod["metadata"]["name"], "compress", json.dumps(compression_report(args[4])))

    url = f"http://{msvc}.{namespace}.svc.cluster.local/v2/models/{msvc}"
    _row_when(plane, namespace, "msvc", msvc, {"READY": "True"}, f"ModelService {msvc} READY True")
    (final,) = table(out.record(plane, "get", "msvc", *ns))
    assert (final["NAME"], final["READY"], final["URL"], final["VARIANT"], final["REASON"]) == (
        msvc, "True", url, "int8-static", "")
    assert final["REPLICAS"] == str(msvc_doc["spec"]["replicas"])
    children = table(out.record(plane, "get", "deploy,svc,hpa,job", "-l", f"kubemaas.io/modelservice={msvc}", *ns))
    assert sorted(r["NAME"] for r in children) == sorted(
        [f"deployment.apps/{msvc}", f"service/{msvc}", f"job.batch/{job_name}"])
    return out


def run_uri(plane: ControlPlane, namespace: str, file: Path = MODELSERVICE_URI) -> Transcript:
    """Apply examples/modelservice-uri.yaml (a bundle by URI, served as is) and wait for READY=True."""
    doc = yaml.safe_load((REPO / file).read_text())
    name = doc["metadata"]["name"]
    ns = ["-n", namespace]
    out = Transcript(namespace)
    applied = out.record(plane, "apply", "-f", str(REPO / file), *ns, shown=("apply", "-f", str(file), *ns))
    assert applied == f"modelservice.kubemaas.io/{name} created\n"
    _row_when(plane, namespace, "msvc", name, {"READY": "True"}, f"ModelService {name} READY True")
    (row,) = table(out.record(plane, "get", "msvc", name, *ns))
    url = f"http://{name}.{namespace}.svc.cluster.local/v2/models/{name}"
    assert (row["READY"], row["URL"], row["VARIANT"], row["REPLICAS"]) == ("True", url, "none", "2")
    children = table(out.record(plane, "get", "deploy,svc,pods", "-l", f"kubemaas.io/modelservice={name}", *ns))
    assert [r["NAME"] for r in children][:2] == [f"deployment.apps/{name}", f"service/{name}"]
    return out
