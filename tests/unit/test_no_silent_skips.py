"""E2e modules fail, not skip, when TOLLGATE_REQUIRE_E2E is set (CI must not pass by skipping)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import harness

E2E = Path(__file__).resolve().parents[1] / "e2e"


def test_require_built_fails_under_require_e2e(monkeypatch):
    monkeypatch.setattr(harness, "missing_artifacts", lambda: ["the control plane binary"])
    monkeypatch.setenv("TOLLGATE_REQUIRE_E2E", "1")
    with pytest.raises(pytest.fail.Exception, match="the control plane binary"):
        harness.require_built()
    monkeypatch.setenv("TOLLGATE_REQUIRE_E2E", "0")
    with pytest.raises(pytest.skip.Exception):
        harness.require_built()
    monkeypatch.setattr(harness, "missing_artifacts", lambda: [])
    harness.require_built()  # built: neither


@pytest.mark.parametrize("path", sorted(E2E.glob("*.py")), ids=lambda p: p.name)
def test_every_e2e_skip_is_guarded_by_a_fail(path):
    """Each `pytest.skip(` in an e2e module comes right after a `pytest.fail(` taken when
    TOLLGATE_REQUIRE_E2E is set; `importorskip` is not used at all."""
    lines = path.read_text().splitlines()
    assert not any("importorskip" in line for line in lines)
    for i, line in enumerate(lines):
        if re.search(r"\bpytest\.skip\(", line):
            assert i and "pytest.fail(" in lines[i - 1], f"{path.name}:{i + 1}: unguarded skip"
