"""tools/audit.py (`make audit`) reads pip-audit's report honestly; no network needed here.

pip-audit exits 0 with "No known vulnerabilities found" when every package was merely
skipped (PyPI's per-release JSON not served): that must read as "nothing was audited".
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

TOOL = Path(__file__).resolve().parents[2] / "tools" / "audit.py"


@pytest.fixture
def audit() -> ModuleType:
    spec = importlib.util.spec_from_file_location("vitrine_audit_tool", TOOL)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def reports(audit: ModuleType, monkeypatch: pytest.MonkeyPatch, **by_service: Any) -> None:
    """Make `run_pip_audit(service)` return (or raise) what `by_service` says."""

    def fake(service: str) -> dict[str, Any]:
        answer = by_service[service]
        if isinstance(answer, Exception):
            raise answer
        return dict(answer)

    monkeypatch.setattr(audit, "run_pip_audit", fake)


SKIPPED = {"dependencies": [{"name": "pillow", "skip_reason": "Dependency not found on PyPI"}]}
CLEAN = {"dependencies": [{"name": "pillow", "version": "13.0.0", "vulns": []}]}
VULNERABLE = {
    "dependencies": [
        {"name": "numpy", "version": "2.3.0", "vulns": []},
        {
            "name": "pillow",
            "version": "12.3.0",
            "vulns": [
                {
                    "id": "GHSA-8g5g-8vmr-9782",
                    "aliases": ["CVE-2026-112403"],
                    "fix_versions": ["13.0.0"],
                }
            ],
        },
    ]
}


def test_all_skipped_everywhere_is_unreachable_not_clean(
    audit: ModuleType, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    reports(audit, monkeypatch, pypi=SKIPPED, osv=audit.Unreachable("cannot connect to x"))
    assert audit.main(["pypi", "osv"]) == 3
    out = capsys.readouterr().out.strip()
    assert "\n" not in out and out.startswith("audit: FAILED: advisory data unreachable")
    assert "pypi: none of the 1 installed packages found" in out and "osv: cannot connect" in out


def test_the_next_service_is_tried(
    audit: ModuleType, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    reports(audit, monkeypatch, pypi=SKIPPED, osv=CLEAN)
    assert audit.main(["pypi", "osv"]) == 0
    assert "audit (osv): 1 packages audited, 0 known vulnerabilities" in capsys.readouterr().out


def test_vulnerabilities_are_listed(
    audit: ModuleType, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    reports(audit, monkeypatch, pypi=VULNERABLE)
    assert audit.main(["pypi"]) == 1
    out = capsys.readouterr().out
    assert "pillow 12.3.0: GHSA-8g5g-8vmr-9782, CVE-2026-112403 (fixed in 13.0.0)" in out
    assert "2 packages audited, 1 known vulnerabilities in 1" in out


def test_a_partial_audit_is_not_clean(
    audit: ModuleType, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    both = {"dependencies": CLEAN["dependencies"] + SKIPPED["dependencies"]}
    reports(audit, monkeypatch, pypi=both)
    assert audit.main(["pypi"]) == 4
    assert "not audited: pillow" in capsys.readouterr().out


def test_pip_audit_failing_is_its_own_status(
    audit: ModuleType, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    reports(audit, monkeypatch, pypi=RuntimeError("pip-audit: error: bad option"))
    assert audit.main(["pypi"]) == 2
    assert "pip-audit failed" in capsys.readouterr().out


def test_an_unreachable_service_is_a_message_not_a_traceback(audit: ModuleType) -> None:
    """The real pip-audit, asking an OSV address that never resolves (RFC 6761 .invalid)."""
    with pytest.raises(audit.Unreachable, match="cannot connect to osv.invalid"):
        audit.run_pip_audit("osv", "--osv-url", "https://osv.invalid/v1/query")
