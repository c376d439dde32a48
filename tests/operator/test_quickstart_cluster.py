"""The quickstart against the real control plane: ``kubectl apply`` of examples/trainingjob.yaml
and examples/modelservice.yaml (the real kubectl), driven through WaitingForTraining ->
Compressing -> READY True with VARIANT int8-static.

kwok runs no containers, so the training ranks' and the compression pod's terminal phases and
termination messages (contract 3) are written through the pods/status subresource, as envtest
suites do (see tests/operator/quickstart.py); kwok makes the serving pods Ready. The operator is
the real ``kubemaas operator`` process. The README's quickstart is captured from the real-pod
run of ``make e2e`` (``python -m tests.e2e.capture_readme``), not from this simulated one.
"""

from __future__ import annotations

import pytest

from tests.cluster.harness import ControlPlane
from tests.operator import quickstart
from tests.operator.support import OperatorProcess

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


def test_both_examples_train_compress_and_serve(
    control_plane: ControlPlane, operator_process: OperatorProcess, namespace: str
) -> None:
    quickstart.model_store(control_plane, namespace)
    transcript = quickstart.run(control_plane, namespace)
    assert [cmd.split(" -n ")[0] for cmd, _ in transcript.steps] == [
        "kubectl apply -f examples/trainingjob.yaml",
        "kubectl apply -f examples/modelservice.yaml",
        "kubectl get tj,msvc",
        "kubectl get tj",
        "kubectl get msvc",
        "kubectl get msvc",
        "kubectl get deploy,svc,hpa,job -l kubemaas.io/modelservice=digits",
    ]


def test_table_cuts_cells_at_the_header_offsets() -> None:
    text = "NAME   READY   VARIANT   AGE\nd      False             3s\n\nNAME  PHASE\ntj    Running\n"
    assert quickstart.table(text) == [
        {"NAME": "d", "READY": "False", "VARIANT": "", "AGE": "3s"},
        {"NAME": "tj", "PHASE": "Running"},
    ]


def test_the_uri_example_is_served_as_is(
    control_plane: ControlPlane, operator_process: OperatorProcess, namespace: str
) -> None:
    quickstart.model_store(control_plane, namespace)
    transcript = quickstart.run_uri(control_plane, namespace)
    assert [cmd.split(" -n ")[0] for cmd, _ in transcript.steps] == [
        "kubectl apply -f examples/modelservice-uri.yaml",
        "kubectl get msvc digits-uri",
        "kubectl get deploy,svc,pods -l kubemaas.io/modelservice=digits-uri",
    ]
