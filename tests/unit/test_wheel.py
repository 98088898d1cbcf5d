"""The installed distribution is the wheel, not the checkout: build it and read its list.

`make wheel-check` installs the same wheel into a fresh virtual environment and runs
`vitrine demo` there (it downloads dependencies, so this suite does not)."""

from __future__ import annotations

import importlib.util
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("wheel_check", ROOT / "tools" / "wheel_check.py")
assert _spec and _spec.loader
wheel_check = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(wheel_check)


def test_the_wheel_holds_vitrine_alone_with_its_data_and_no_tests(tmp_path: Path) -> None:
    wheel = wheel_check.build(tmp_path)
    assert wheel_check.problems(wheel) == []
    names = zipfile.ZipFile(wheel).namelist()
    # the links of vitrine/ became real files, every room's modules among them
    assert "vitrine/pipeline/inference/preprocess.py" in names
    assert "vitrine/bench/catalog.py" in names
    assert len([n for n in names if n.startswith("vitrine/db/migrations/versions/")]) == len(
        list((ROOT / "db" / "migrations" / "versions").glob("*.py"))
    )


def test_the_check_reports_a_wheel_that_ships_tests_or_another_name(tmp_path: Path) -> None:
    bad = tmp_path / "vitrine-0-py3-none-any.whl"
    with zipfile.ZipFile(bad, "w") as z:
        z.writestr("vitrine/__init__.py", "")
        z.writestr("pipeline/__init__.py", "")
        z.writestr("tests/unit/test_x.py", "")
    found = wheel_check.problems(bad)
    assert any("top-level names" in p for p in found)
    assert any("holds a test" in p for p in found)
    assert any("missing vitrine/models/fashion-cnn/model.keras" in p for p in found)
