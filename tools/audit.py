"""`make audit`: known vulnerabilities in the packages installed in this environment.

Runs pip-audit (PyPA) against the running interpreter's environment, trying each
vulnerability service named on the command line in turn (default: pypi, then osv) until
one answers, and prints one line per known vulnerability.

pip-audit alone can report "No known vulnerabilities found" after auditing nothing: when
PyPI's per-release JSON (`/pypi/NAME/VERSION/json`, where the advisories are) is not
served, every package is merely *skipped*, and it exits 0. This script counts what was
really audited and says so plainly instead; an unreachable service (osv.dev from a
machine without general network access) is one line, never a traceback.

Exit status: 0 nothing known, 1 vulnerabilities found, 2 pip-audit itself failed,
3 no service had advisory data (nothing was audited), 4 some packages were not audited.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

TIMEOUT_S = 300
#: Signs in pip-audit's stderr that the service could not be reached at all.
UNREACHABLE = (
    "ConnectionError",
    "NameResolutionError",
    "Max retries exceeded",
    "ConnectTimeout",
    "ReadTimeout",
    "SSLError",
    "ServiceError",
)


class Unreachable(Exception):
    """The service gave no advisory data; the message says what happened instead."""


def run_pip_audit(service: str, *extra: str) -> dict[str, Any]:
    """pip-audit's JSON report for this environment from `service` (`extra`: options)."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        cmd = [sys.executable, "-m", "pip_audit", "--vulnerability-service", service]
        cmd += ["--skip-editable", "--progress-spinner", "off", "--format", "json"]
        cmd += ["--output", str(report), *extra]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired as exc:
            raise Unreachable(f"no answer within {TIMEOUT_S} s") from exc
        if report.exists() and report.stat().st_size:
            return dict(json.loads(report.read_text()))
    lines = [line.strip() for line in done.stderr.splitlines() if line.strip()]
    last = lines[-1] if lines else f"exit status {done.returncode}"
    if any(sign in done.stderr for sign in UNREACHABLE):
        host = re.search(r"host='([^']+)'", done.stderr)
        why = "name does not resolve" if "NameResolution" in done.stderr else "no connection"
        raise Unreachable(f"cannot connect to {host.group(1) if host else 'the service'}: {why}")
    raise RuntimeError(last[:300])


def main(services: list[str]) -> int:
    failures = []
    for service in services:
        try:
            report = run_pip_audit(service)
        except Unreachable as exc:
            failures.append(f"{service}: {exc}")
            continue
        except RuntimeError as exc:
            print(f"audit: pip-audit failed with --vulnerability-service {service}: {exc}")
            return 2
        deps = report.get("dependencies", [])
        skipped = [d for d in deps if d.get("skip_reason")]
        audited = [d for d in deps if not d.get("skip_reason")]
        if not audited:
            failures.append(
                f"{service}: none of the {len(deps)} installed packages found "
                "(the index serves no per-release JSON)"
            )
            continue
        return report_result(service, audited, skipped)
    print(
        "audit: FAILED: advisory data unreachable, nothing was audited ("
        + "; ".join(failures)
        + ")"
    )
    return 3


def report_result(
    service: str, audited: list[dict[str, Any]], skipped: list[dict[str, Any]]
) -> int:
    vulnerable = [d for d in audited if d.get("vulns")]
    for dep in vulnerable:
        for vuln in dep["vulns"]:
            ids = ", ".join([vuln["id"], *vuln.get("aliases", [])])
            fixed = ", ".join(vuln.get("fix_versions", [])) or "no fixed release"
            print(f"{dep['name']} {dep['version']}: {ids} (fixed in {fixed})")
    for dep in skipped:
        print(f"not audited: {dep['name']}: {dep['skip_reason']}")
    count = sum(len(d["vulns"]) for d in vulnerable)
    print(
        f"audit ({service}): {len(audited)} packages audited, {count} known vulnerabilities "
        f"in {len(vulnerable)}, {len(skipped)} not audited"
    )
    if vulnerable:
        return 1
    return 4 if skipped else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or ["pypi", "osv"]))
