"""The three layers of ``datamint_core`` (DESIGN §10), written down and enforced.

domain (0) -> MLflow integration (1) -> applications (2): a module may import its own layer
and the layers below it, never a higher one -- not even inside a function or under
``TYPE_CHECKING``. Where a lower layer needs a higher one's behaviour, the higher one
registers a hook (see ``datamint_core._extensions``).

Every module must be classified here: a new module fails :func:`test_every_module_has_a_layer`
until it is added to ``LAYERS`` (or sits in a package listed there).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import datamint_core

DOMAIN, INTEGRATION, APPLICATIONS = 0, 1, 2
LAYER_NAMES = {DOMAIN: "domain", INTEGRATION: "MLflow integration", APPLICATIONS: "applications"}

#: The layer of each module (``datamint_core.`` left off). A name ending in ``.*`` covers a
#: whole package (the package and everything under it); a plain name covers one module.
#: The most specific entry wins.
LAYERS: dict[str, int] = {
    # domain: the standard library and numpy only
    "_env": DOMAIN,
    "_extensions": DOMAIN,
    "_extras": DOMAIN,  # the one "needs the extra" ImportError
    "_files": DOMAIN,  # the one atomic file write
    "_limits": DOMAIN,
    "_numbers": DOMAIN,  # the one parser of numbers users type
    "_messages": DOMAIN,
    "_npy": DOMAIN,  # the safe .npy/.npz decoder
    "_request_paths": DOMAIN,  # which local files a request may name
    "annotations": DOMAIN,
    "dataset": DOMAIN,
    "enums": DOMAIN,
    "errors": DOMAIN,  # every error a user can catch, with its HTTP status and code
    "input_example": DOMAIN,  # the blank resource saved with a model that is given none
    "metrics": DOMAIN,
    "model": DOMAIN,
    "prompts": DOMAIN,
    "resources": DOMAIN,
    "routing": DOMAIN,
    "settings": DOMAIN,
    "sliding_window": DOMAIN,
    "version": DOMAIN,
    "wire": DOMAIN,  # dicts, table cells and arrays in; resources out
    # MLflow integration: domain, mlflow-skinny, optional readers
    "_loader": INTEGRATION,
    "_mlflow_internals": INTEGRATION,  # MLflow's private internals, wrapped
    "_mlmodel": INTEGRATION,
    "_pyfunc": INTEGRATION,  # what mlflow.pyfunc.load_model returns, and its predict
    "_requirements": INTEGRATION,
    "_wheel": INTEGRATION,
    "artifact_cache": INTEGRATION,
    "flavor": INTEGRATION,
    "linked_models.*": INTEGRATION,
    "validation": INTEGRATION,
    "io.*": INTEGRATION,  # the readers and writers
    # applications: everything below
    "": APPLICATIONS,  # the package's __init__: the public facade re-exports every layer
    "cli": APPLICATIONS,
    "cli_predict": APPLICATIONS,  # the `datamint predict` command: files in, files out
    "batch.*": APPLICATIONS,
    "evaluation.*": APPLICATIONS,
    "platform.*": APPLICATIONS,
    "serving.*": APPLICATIONS,
    "serving._uvicorn_internals": APPLICATIONS,  # the adapter over uvicorn's H11Protocol
    "training.*": APPLICATIONS,
}

#: Upward imports that exist today, each to be replaced by a hook registered from above.
#: The list only shrinks: a pair that no longer exists fails the test, so remove it here.
KNOWN_UPWARD: set[tuple[str, str]] = set()

PACKAGE_ROOT = Path(datamint_core.__file__).parent


def _modules() -> dict[str, Path]:
    modules = {}
    for path in sorted(PACKAGE_ROOT.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE_ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


MODULES = _modules()


def layer_of(module: str) -> int | None:
    """The layer of ``module`` (relative name), or ``None`` when it is not classified."""
    if module in LAYERS:
        return LAYERS[module]
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        entry = ".".join(parts[:end]) + ".*"
        if entry in LAYERS:
            return LAYERS[entry]
    return None


def imports_of(module: str, source: str) -> set[str]:
    """Every ``datamint_core`` module that ``source`` imports, anywhere in the file.

    Names are relative to the package (``""`` is the package itself). ``from pkg import x``
    counts as importing ``pkg.x`` when that is a module, else ``pkg``; relative imports are
    resolved against ``module``.
    """
    is_package = MODULES[module].name == "__init__.py"
    found: set[str] = set()

    def add(absolute: str) -> None:
        if absolute == "datamint_core" or absolute.startswith("datamint_core."):
            found.add(absolute.removeprefix("datamint_core").removeprefix("."))

    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                here = ["datamint_core", *filter(None, module.split("."))]
                base = here if is_package else here[:-1]
                base = base[: len(base) - (node.level - 1)]
                source_module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                source_module = node.module or ""
            for alias in node.names:
                submodule = f"{source_module}.{alias.name}"
                relative = submodule.removeprefix("datamint_core").removeprefix(".")
                add(submodule if relative in MODULES else source_module)
    found.discard(module)
    return found


def upward_imports() -> set[tuple[str, str]]:
    upward = set()
    for module, path in MODULES.items():
        own = layer_of(module)
        for imported in imports_of(module, path.read_text(encoding="utf-8")):
            theirs = layer_of(imported)
            if own is not None and theirs is not None and theirs > own:
                upward.add((module, imported))
    return upward


def test_every_module_has_a_layer():
    unmapped = sorted(module for module in MODULES if layer_of(module) is None)
    assert not unmapped, (
        f"datamint_core modules without a layer: {unmapped}. Add each to LAYERS in "
        f"{__file__}: DOMAIN if it needs only the standard library and numpy (resources, "
        "routing, settings, the model), INTEGRATION if it talks to MLflow or reads/writes "
        "files (flavor, loader, cache, io readers), APPLICATIONS if it is a command, a "
        "server or the platform (serving, batch, cli, platform, evaluation, training). "
        "A module may import only its own layer and those below it (DESIGN §10)."
    )


def test_no_module_imports_a_higher_layer():
    new = sorted(upward_imports() - KNOWN_UPWARD)
    described = [
        f"datamint_core.{module or '__init__'} ({LAYER_NAMES[layer_of(module)]}) imports "
        f"datamint_core.{imported} ({LAYER_NAMES[layer_of(imported)]})"
        for module, imported in new
    ]
    assert not new, (
        "A lower layer imports a higher one (DESIGN §10: domain -> MLflow integration -> "
        "applications). Have the higher layer register a hook instead (as the torch extra "
        "registers device detection through datamint_core._extensions), or move the code "
        "down a layer:\n  " + "\n  ".join(described)
    )


def test_the_known_upward_imports_only_shrink():
    gone = sorted(KNOWN_UPWARD - upward_imports())
    assert not gone, (
        f"These upward imports are gone: {gone}. Remove them from KNOWN_UPWARD in {__file__} "
        "so that they cannot come back."
    )


def test_known_upward_pairs_name_real_modules():
    for module, imported in KNOWN_UPWARD:
        assert module in MODULES and imported in MODULES, (module, imported)


@pytest.mark.parametrize(
    ("module", "source", "expected"),
    [
        ("model", "import datamint_core.serving.app", {"serving.app"}),
        ("model", "def f():\n    from datamint_core.serving import app", {"serving.app"}),
        ("model", "from .serving import payload", {"serving.payload"}),
        ("io.image", "from .. import flavor", {"flavor"}),
        ("io.image", "from ._checks import x", {"io._checks"}),
        ("io", "from .writers import write_nifti", {"io.writers"}),
        ("model", "from datamint_core import resources, enums", {"resources", "enums"}),
        ("model", "from datamint_core import __version__", {""}),
        ("model", "import numpy\nfrom mlflow import pyfunc", set()),
    ],
)
def test_imports_are_found_in_every_form(module, source, expected):
    assert imports_of(module, source) == expected


def test_an_upward_import_in_a_function_is_caught():
    # The checker itself: the domain's routing importing the server, hidden in a function.
    source = "def handler():\n    from datamint_core.serving.app import create_app\n"
    imported = imports_of("routing", source)
    assert imported == {"serving.app"}
    assert layer_of("routing") < layer_of("serving.app")


#: A product module longer than this says in its docstring why it is one module ("Why one
#: module of some N lines: ...") or is split by concern (issue 17).
MODULE_LINES = 500


def test_every_long_product_module_says_why_it_is_one_module():
    import re

    unexplained = []
    for package in ("datamint_core", "datamint_torch", "datamint_lightning"):
        root = PACKAGE_ROOT.parent / package
        for path in sorted(root.rglob("*.py")):
            source = path.read_text(encoding="utf-8")
            if source.count("\n") <= MODULE_LINES:
                continue
            docstring = ast.get_docstring(ast.parse(source)) or ""
            if not re.search(r"\b\d{3,4} lines\b", docstring):
                lines = source.count("\n")
                unexplained.append(f"{path.relative_to(root.parent)} ({lines} lines)")
    assert not unexplained, (
        f"Product modules over {MODULE_LINES} lines without a reason in their docstring: "
        f"{unexplained}. Split the module by concern, or say in its docstring why it is one "
        "module ('Why one module of some N lines: ...')."
    )
