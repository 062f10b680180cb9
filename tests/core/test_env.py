"""The one registry of environment variables (datamint_core._env) and what derives from it."""

from __future__ import annotations

import ast
import contextlib
import io
import os
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import datamint_core
from datamint_core import EnvVars
from datamint_core._env import (
    DATAMINT_OFFLINE,
    DATAMINT_SERVE_ALLOW_PATH_DIRS,
    DATAMINT_SERVE_MAX_REQUEST_SIZE,
    FLAG,
    REGISTRY,
    TEXT,
    EnvironmentVariable,
    datamint_variables,
)
from datamint_core.cli import main
from datamint_core.serving.config import SETTINGS, ServerConfig

REPO = Path(datamint_core.__file__).parent.parent
README = (REPO / "README.md").read_text()


def _product_strings() -> list[tuple[str, int, str]]:
    """Every string constant in the product code: (file, line, text)."""
    found = []
    for package in ("datamint_core", "datamint_torch", "datamint_lightning"):
        for path in sorted((REPO / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Constant) and isinstance(node.value, str):
                    found.append((str(path.relative_to(REPO)), node.lineno, node.value))
    return found


def test_every_datamint_variable_the_product_names_is_a_registry_entry() -> None:
    unknown = [
        f"{file}:{line} {name}"
        for file, line, text in _product_strings()
        for name in re.findall(r"\bDATAMINT_[A-Z0-9_]*[A-Z0-9]\b", text)
        if name not in REGISTRY
    ]
    assert unknown == []


def test_each_variable_is_defined_once_in_the_registry_and_nowhere_else() -> None:
    defined = [
        f"{file}:{line}"
        for file, line, text in _product_strings()
        if re.fullmatch(r"DATAMINT_[A-Z0-9_]*[A-Z0-9]", text) and file != "datamint_core/_env.py"
    ]
    assert defined == [], "a variable's name is written out as a constant outside _env.py"
    with pytest.raises(ValueError, match="DATAMINT_OFFLINE is defined twice"):
        EnvironmentVariable("DATAMINT_OFFLINE", FLAG, "false", "again")


def test_env_vars_lists_exactly_the_registry() -> None:
    names = [variable.name for variable in datamint_variables()]
    assert [member.value for member in EnvVars] == names
    assert EnvVars.DATAMINT_PROJECT_ID.value == "DATAMINT_PROJECT_ID"
    assert isinstance(EnvVars.DATAMINT_OFFLINE, str)


def test_the_readme_table_of_variables_is_exactly_the_registry() -> None:
    section = README.split("## Environment variables\n", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(DATAMINT_[A-Z0-9_]+)` \| (.+?) \| (.+?) \|$", section, re.M)
    assert rows == [(v.name, v.shown_default, v.doc) for v in datamint_variables()]


def test_the_readme_serving_table_shows_the_registry_flags_and_defaults() -> None:
    section = README.split("## Running in production\n", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(--[a-z-]+)` \| `(DATAMINT_[A-Z_]+)` \| ([^|]+?) \|", section, re.M)
    from datamint_core.cli import _SERVE_LIMITS

    flags = {variable.name: flag for flag, variable in _SERVE_LIMITS}
    flags[DATAMINT_SERVE_ALLOW_PATH_DIRS.name] = "--allow-path-dir"
    assert sorted(name for _, name, _ in rows) == sorted(flags)
    for flag, name, default in rows:
        variable = REGISTRY[name]
        assert flag == flags[name]
        assert default.removesuffix(" s") == (variable.default_text or "none"), name


def test_serve_help_takes_each_flag_s_variable_and_default_from_the_registry() -> None:
    out = io.StringIO()
    with pytest.raises(SystemExit), contextlib.redirect_stdout(out):
        main(["serve", "--help"])
    text = " ".join(out.getvalue().split())
    for variable in [*SETTINGS.values(), DATAMINT_SERVE_ALLOW_PATH_DIRS]:
        assert variable.help() in text, variable.name
    assert set(SETTINGS) == {
        field.name for field in ServerConfig.__dataclass_fields__.values()
    } - {"allow_path_dirs"}
    for name, variable in SETTINGS.items():
        assert ServerConfig.__dataclass_fields__[name].default == variable.default


def test_a_variable_reads_typed_and_blank_is_unset(monkeypatch) -> None:
    monkeypatch.delenv("DATAMINT_OFFLINE", raising=False)
    assert DATAMINT_OFFLINE.get() is False
    for raw, expected in [("TRUE", True), (" yes ", True), ("0", False), ("  ", False)]:
        monkeypatch.setenv("DATAMINT_OFFLINE", raw)
        assert DATAMINT_OFFLINE.get() is expected
    monkeypatch.setenv("DATAMINT_SERVE_MAX_REQUEST_SIZE", "2GiB")
    assert DATAMINT_SERVE_MAX_REQUEST_SIZE.get() == 2 * 1024**3
    monkeypatch.setenv("DATAMINT_SERVE_ALLOW_PATH_DIRS", os.pathsep.join(["/a", "", "/b"]))
    assert DATAMINT_SERVE_ALLOW_PATH_DIRS.get() == ("/a", "/b")
    assert os.environ[DATAMINT_OFFLINE] == "  "  # the variable is its name


@settings(max_examples=200, deadline=None)
@given(raw=st.text(alphabet=st.characters(blacklist_categories=("Cs",))))
def test_a_bad_value_of_any_variable_names_it_and_what_it_accepts(raw: str) -> None:
    raw = raw.replace("\x00", "")
    for variable in REGISTRY.values():
        if variable.kind is TEXT:
            continue
        saved = os.environ.get(variable)
        os.environ[variable] = raw
        try:
            value = variable.get()
        except ValueError as error:
            assert str(error) == (
                f"{variable.name}={raw.strip()!r} is not valid; accepted: "
                f"{variable.kind.accepted}."
            )
        else:
            assert value == (variable.default if not raw.strip() else value)
        finally:
            if saved is None:
                del os.environ[variable]
            else:
                os.environ[variable] = saved
