"""Shared pytest fixtures: the real control plane (tests/cluster/harness.py).

- `control_plane` (session): etcd, kube-apiserver, kube-controller-manager, kube-scheduler
  and kwok with one Ready Node (`kwok-node-0`); CRDs from crds/ applied and Established.
- `api_server` (session): at least etcd + kube-apiserver, with the CRDs. It is the same
  ControlPlane object as `control_plane`: started without the controllers when
  `api_server` is the first to ask (a few seconds cheaper), and given the controllers
  on the spot when a later test asks for `control_plane`. So a test that takes
  `api_server` must not rely on controllers being absent.
- `namespace` (function): a fresh namespace, deleted afterwards.

If the binaries are missing these fixtures FAIL with the command that builds them
(`make cluster-binaries`); `make test` always builds them first. Tests that use them
should carry `@pytest.mark.cluster`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.cluster.harness import ControlPlane, ControlPlaneError, missing_binaries
from tests.operator.support import OperatorProcess


@pytest.fixture(scope="session")
def _shared_control_plane() -> Iterator[ControlPlane]:
    plane = ControlPlane(full=False)
    try:
        yield plane
    finally:
        plane.stop()


def _started(plane: ControlPlane, *, controllers: bool) -> ControlPlane:
    missing = missing_binaries(plane.bin_dir)
    if missing:
        pytest.fail(
            f"missing {', '.join(missing)} in {plane.bin_dir}: run `make cluster-binaries` "
            "(bash tests/cluster/build.sh) to build the pinned control-plane binaries",
            pytrace=False,
        )
    problem = None
    try:
        plane.start()
        if controllers:
            plane.start_controllers()
    except ControlPlaneError as error:
        problem = str(error)
    if problem is not None:
        pytest.fail(f"the test control plane did not start:\n{problem}", pytrace=False)
    return plane


@pytest.fixture(scope="session")
def api_server(_shared_control_plane: ControlPlane) -> ControlPlane:
    """etcd + kube-apiserver (controllers may be running too; see the module docstring)."""
    return _started(_shared_control_plane, controllers=False)


@pytest.fixture(scope="session")
def control_plane(_shared_control_plane: ControlPlane) -> ControlPlane:
    """The full control plane: API server, controllers, scheduler and a kwok Node."""
    return _started(_shared_control_plane, controllers=True)


@pytest.fixture
def namespace(request: pytest.FixtureRequest, api_server: ControlPlane) -> Iterator[str]:
    """A new namespace `t-<8 hex>`; deleted (without waiting) after the test.

    When the controllers run, it also waits for the namespace's `default`
    ServiceAccount, without which the API server refuses Pods in it.
    """
    if "control_plane" in request.fixturenames:
        request.getfixturevalue("control_plane")  # controllers first, whatever the argument order
    name = f"t-{uuid.uuid4().hex[:8]}"
    api_server.kubectl("create", "namespace", name)
    if api_server.controllers_started:
        api_server.wait_for(
            f"ServiceAccount {name}/default",
            lambda: (
                api_server.kubectl("get", "serviceaccount", "default", "-n", name, check=False).returncode
                == 0
            ),
        )
    try:
        yield name
    finally:
        api_server.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found", check=False)


@pytest.fixture(scope="session")
def _operator(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    """The shared ``kubemaas operator --all-namespaces`` process of the operator tests (started once).

    It lives here, not in tests/operator/conftest.py, so that tests elsewhere which run an
    operator of their own (tests/chart's RBAC test) can pause it whatever order pytest picks.
    """
    control_plane.apply_crds()
    proc = OperatorProcess(control_plane, tmp_path_factory.mktemp("operator"))
    try:
        yield proc.start()
    finally:
        proc.stop()


@pytest.fixture
def shared_operator_paused(_operator: OperatorProcess) -> Iterator[None]:
    """Stop the shared operator for one test (one that runs its own operator, or writes a
    ModelService's status by hand and must not have it reconciled away); restart it afterwards."""
    _operator.stop()
    try:
        yield
    finally:
        _operator.start()
