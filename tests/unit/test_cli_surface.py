"""What a new user meets first: version, help, flags that read as flags, settings."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from vitrine.cli.app import app
from vitrine.settings import Settings

runner = CliRunner()


def test_version() -> None:
    from importlib.metadata import version

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"vitrine {version('vitrine')}"


@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_short_and_long_help(flag: str) -> None:
    result = runner.invoke(app, [flag], prog_name="vitrine")
    assert result.exit_code == 0
    assert "Usage: vitrine" in result.stdout and "submit" in result.stdout


COMMANDS_WITH_JSON = [
    ["submit"],
    ["ingest"],
    ["backfill"],
    ["requeue"],
    ["similar"],
    ["status"],
    ["train"],
    ["eval"],
    ["bench"],
    ["demo"],
    ["db", "upgrade"],
    ["services", "status"],
    ["models", "list"],
    ["forget"],
]


@pytest.mark.parametrize("command", COMMANDS_WITH_JSON, ids=" ".join)
def test_json_is_shown_as_a_flag(command: list[str]) -> None:
    result = runner.invoke(app, [*command, "-h"])
    assert result.exit_code == 0, result.output
    line = next(line for line in result.stdout.splitlines() if "--json" in line)
    assert "<bool>" not in line and "BOOLEAN" not in line
    assert "Print one JSON object" in line


def _app_commands() -> set[str]:
    import typer.main

    group = typer.main.get_group(app)
    names: set[str] = set()
    for name, command in group.commands.items():
        sub = getattr(command, "commands", None)
        names |= {f"{name} {s}" for s in sub} if sub else {name}
        if sub and getattr(command, "invoke_without_command", False):
            names.add(name)  # a group that also runs on its own, as `bench`
    return names


def _readme_commands() -> set[str]:
    """First cells of the README's CLI table: `models add DIR` -> "models add"."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## The CLI", 1)[1].split("\n## ", 1)[0]
    listed = set()
    for row in section.splitlines():
        if not row.startswith("| `"):
            continue
        words = []
        for word in row.split("`")[1].split():
            if word.startswith("-") or not (word.replace("-", "").isalpha() and word.islower()):
                break
            words.append(word)
        listed.add(" ".join(words))
    return listed


def test_readme_lists_every_command() -> None:
    assert _app_commands() == _readme_commands()


def test_data_dir_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("VITRINE_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert Settings().data_dir == tmp_path / "xdg" / "vitrine"
    monkeypatch.setenv("VITRINE_DATA_DIR", str(tmp_path / "mine"))
    assert Settings().data_dir == tmp_path / "mine"  # an explicit setting wins
    monkeypatch.delenv("VITRINE_DATA_DIR")
    monkeypatch.setenv("XDG_DATA_HOME", "relative/path")  # invalid per the XDG spec: ignored
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert Settings().data_dir == tmp_path / "home" / ".local" / "share" / "vitrine"
