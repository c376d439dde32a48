"""tests/e2e/capture_readme.py splices the e2e transcript between the quickstart markers."""

from __future__ import annotations

import pytest

from tests.e2e.capture_readme import END, START, splice


def test_replaces_only_the_marked_block() -> None:
    readme = f"intro\n{START}\nold capture\n{END}\noutro\n"
    out = splice(readme, ["$ kubectl get tj\nNAME\ndigits\n"], {"training_apply_to_succeeded_s": 34.6})
    assert out.startswith(f"intro\n{START}\n")
    assert out.endswith(f"{END}\noutro\n")
    assert "old capture" not in out
    assert "```console\n$ kubectl get tj\nNAME\ndigits\n```\n" in out
    assert "training apply to succeeded 35 s" in out


def test_missing_marker_is_an_error() -> None:
    with pytest.raises(ValueError, match="quickstart:start"):
        splice("no markers here\n", ["$ kubectl get tj\n"], {})
