"""spec.rollout: defaults, durations, and the same rejections as the CRD's CEL rules."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kubemaas_operator.rollout.spec import RolloutSpecError, parse_duration, parse_rollout


def test_absent_rollout_is_rolling_update() -> None:
    spec = parse_rollout(None)
    assert spec.strategy == "RollingUpdate"
    assert [(s.weight, s.hold_s) for s in spec.canary_steps] == [(20, 30.0), (50, 30.0)]


def test_canary_steps_and_analysis_parse_durations() -> None:
    spec = parse_rollout({
        "strategy": "Canary",
        "steps": [{"weight": 10, "hold": "1m30s"}, {"weight": 40}],
        "analysis": {"interval": "500ms", "minRequests": 5, "maxErrorRate": 0.05, "inconclusiveLimit": 120},
    })
    assert [(s.weight, s.hold_s) for s in spec.steps] == [(10, 90.0), (40, None)]
    assert (spec.analysis.interval_s, spec.analysis.min_requests, spec.analysis.max_error_rate) == (0.5, 5, 0.05)
    assert spec.analysis.inconclusive_limit_s == 120.0


@pytest.mark.parametrize(("text", "seconds"), [("45s", 45.0), ("2m", 120.0), ("1h", 3600.0), ("1.5s", 1.5),
                                           ("250ms", 0.25), ("1m30s", 90.0), (7, 7.0)])
def test_durations(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "30", "5 min", "-1s", "s", True, -3])
def test_bad_durations_name_the_value(bad: object) -> None:
    with pytest.raises(RolloutSpecError, match="hold"):
        parse_rollout({"strategy": "Canary", "steps": [{"weight": 10, "hold": bad}]})


@pytest.mark.parametrize("weight", [0, 100, 150, -5])
def test_weights_outside_1_to_99_are_rejected(weight: int) -> None:
    with pytest.raises(RolloutSpecError, match=r"spec\.rollout\.steps\[0\]\.weight.*" + str(weight)):
        parse_rollout({"strategy": "Canary", "steps": [{"weight": weight}]})


@pytest.mark.parametrize("weights", [[20, 20], [50, 20], [10, 30, 30]])
def test_steps_must_strictly_increase(weights: list[int]) -> None:
    with pytest.raises(RolloutSpecError, match="strictly increase"):
        parse_rollout({"strategy": "Canary", "steps": [{"weight": w} for w in weights]})


def test_unknown_strategy_names_the_field() -> None:
    with pytest.raises(RolloutSpecError, match=r"spec\.rollout\.strategy.*BlueGreen"):
        parse_rollout({"strategy": "BlueGreen"})


def test_error_rate_above_one_is_rejected() -> None:
    with pytest.raises(RolloutSpecError, match=r"spec\.rollout\.analysis\.maxErrorRate"):
        parse_rollout({"analysis": {"maxErrorRate": 1.5}})


def test_crd_defaults_equal_the_operators() -> None:
    """What the API server fills in (crds/modelservice.yaml) is what parse_rollout assumes when absent."""
    crd = yaml.safe_load((Path(__file__).parents[3] / "crds" / "modelservice.yaml").read_text())
    props = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["rollout"]
    filled = {"strategy": props["properties"]["strategy"]["default"],
              "analysis": {k: v["default"] for k, v in props["properties"]["analysis"]["properties"].items()
                           if "default" in v}}
    assert parse_rollout(filled) == parse_rollout(None)


def test_inconclusive_limit_shorter_than_the_interval_is_rejected() -> None:
    # interval 10m with the default 5m limit: every step paused (a CanaryPaused Warning) before
    # its first interval could end, as the CRD's CEL rule now says at admission
    with pytest.raises(RolloutSpecError, match=r"^spec\.rollout\.analysis: inconclusiveLimit \(300s\) must be at "
                       r"least the interval \(600s\)"):
        parse_rollout({"strategy": "Canary", "analysis": {"interval": "10m"}})
    assert parse_rollout({"analysis": {"interval": "5m", "inconclusiveLimit": "5m"}}).analysis.interval_s == 300.0
