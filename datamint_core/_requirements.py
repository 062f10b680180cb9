"""The distributions a saved model needs, found without loading it in a subprocess.

MLflow infers a model's requirements by loading it in a child process and listing what it
imported (about 1.4 s for a trivial model). Here the same question is answered statically,
in the saving process:

- the modules the pickle references (``GLOBAL``/``STACK_GLOBAL`` opcodes, and cloudpickle's
  ``subimport`` of modules that by-value code uses), read with :mod:`pickletools`, nothing
  unpickled;
- the modules imported by the model's code file (models from code), by ``code_paths`` and by
  the model class's module (an AST walk of their ``import`` statements), following imports of
  local code (modules no installed distribution provides) transitively;
- each top-level module mapped to the installed distributions that provide it, pinned.

The standard library, MLflow (pinned separately as ``mlflow-skinny``) and datamint itself
(bundled as a wheel, see :mod:`datamint_core._wheel`) are left out of the mapping.

Why one module of some 550 lines: the static inference is one pipeline (pickle opcodes and
source imports, then modules to distributions, then pins and build labels) whose steps share
the module-to-distribution map; each step is a function of its own here.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import logging
import os
import sys
from collections.abc import Iterable, Iterator
from importlib import metadata as importlib_metadata
from pathlib import Path

from datamint_core._wheel import DISTRIBUTION, WHEELS_DIR, requirement_line
from datamint_core._wheel import PACKAGES as DATAMINT_PACKAGES

_logger = logging.getLogger(__name__)

#: Distributions never written as inferred requirements: MLflow comes pinned as
#: ``mlflow-skinny``, and setuptools is in every environment (MLflow skips it too).
_NOT_INFERRED = frozenset({"mlflow", "mlflow-skinny", "mlflow-tracing", "setuptools", "datamint"})
#: How many local source files one inference reads at most (a guard against huge trees).
_MAX_LOCAL_FILES = 2000
_STRING_OPCODES = frozenset(
    {
        "STRING",
        "BINSTRING",
        "SHORT_BINSTRING",
        "UNICODE",
        "SHORT_BINUNICODE",
        "BINUNICODE",
        "BINUNICODE8",
    }
)
_GET_OPCODES = frozenset({"GET", "BINGET", "LONG_BINGET"})
_PUT_OPCODES = frozenset({"PUT", "BINPUT", "LONG_BINPUT"})
#: cloudpickle rebuilds a module a by-value function uses with ``subimport('<module>')``.
_SUBIMPORT = ("subimport", "dynamic_subimport")


def modules_in_pickle(data: bytes) -> set[str]:
    """Names of the modules a pickle refers to, read from its opcodes (nothing is unpickled)."""
    import pickletools

    modules: set[str] = set()
    memo: dict[int, object] = {}
    pushed: list[object] = [None, None]
    expect_subimport = False
    for opcode, arg, _ in pickletools.genops(data):
        name = opcode.name
        if name == "MEMOIZE":
            memo[len(memo)] = pushed[-1]
            continue
        if name in _PUT_OPCODES:
            memo[arg] = pushed[-1]
            continue
        if name in ("PROTO", "FRAME", "STOP"):
            continue
        value: object = None
        if name in _STRING_OPCODES:
            value = arg
            if expect_subimport and isinstance(arg, str):
                modules.add(arg)
                expect_subimport = False
        elif name in _GET_OPCODES:
            value = memo.get(arg)
        elif name == "GLOBAL":
            module, _, attribute = str(arg).partition(" ")
            modules.add(module)
            expect_subimport = attribute in _SUBIMPORT
        elif name == "STACK_GLOBAL":
            module, attribute = pushed[-2], pushed[-1]
            if isinstance(module, str):
                modules.add(module)
            expect_subimport = attribute in _SUBIMPORT
        pushed = [pushed[-1], value]
    return modules


def modules_imported_by(path: str | os.PathLike[str], module_name: str | None = None) -> set[str]:
    """Absolute names of the modules the Python file ``path`` imports (an AST walk).

    Args:
        module_name: the file's own dotted name, to resolve its relative imports.
    """
    import ast

    try:
        tree = ast.parse(Path(path).read_bytes(), filename=os.fspath(path))
    except (OSError, SyntaxError, ValueError):
        return set()
    package = _package_of(module_name, path)
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                if package is None:
                    continue
                parts = package.split(".")
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join([*parts, base] if base else parts)
            if base:
                found.add(base)
                # `from pkg import name` may import the submodule pkg.name.
                found.update(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
    return found


def modules_of_sources(
    start: Iterable[str], files: Iterable[str | os.PathLike[str]] = ()
) -> set[str]:
    """``start`` plus every module that local code among them (or ``files``) imports.

    Local code is a module no installed distribution provides (the user's project, the
    directories of ``code_paths``); its imports are followed transitively. Installed
    packages are not entered: their own dependencies come with them.
    """
    modules = set(start)
    queue: list[tuple[str | None, Path]] = [(None, Path(f)) for f in _python_files(files)]
    pending = list(modules)
    seen_files: set[Path] = set()
    while (pending or queue) and len(seen_files) < _MAX_LOCAL_FILES:
        while pending:
            name = pending.pop()
            source = _local_source(name)
            if source is not None:
                queue.append((name, source))
        if not queue:
            break
        name, source = queue.pop()
        if source in seen_files:
            continue
        seen_files.add(source)
        for found in modules_imported_by(source, name) - modules:
            modules.add(found)
            pending.append(found)
    return modules


def requirements_for_modules(modules: Iterable[str]) -> list[str]:
    """Pinned requirements (``name==version``) of the distributions providing ``modules``."""
    providers = _distributions_by_module()
    distributions: set[str] = set()
    for module in modules:
        top = module.partition(".")[0]
        if not top or top in sys.stdlib_module_names or top in DATAMINT_PACKAGES:
            continue
        distributions.update(providers.get(top, ()))
    return sorted(pinned(name) for name in distributions - _NOT_INFERRED)


def pinned(distribution: str) -> str:
    """``name==<public version>`` of an installed distribution.

    A local version label (``2.13.0+cpu``: which build of a release) is left out, as MLflow
    means to do, so that any index, mirror or wheelhouse can satisfy the pin; PEP 440's
    ``==2.13.0`` also accepts ``2.13.0+cpu``, so the environment that installs the model
    picks the build (an extra index or a constraint, see the README's "Local version
    labels"). The label is never dropped silently: :func:`dropped_label_message` is logged.
    """
    try:
        version = importlib_metadata.version(distribution)
    except importlib_metadata.PackageNotFoundError:
        return distribution
    public = public_version(version)
    if public != version:
        _warn_dropped_label(distribution, version)
    return f"{distribution}=={public}"


def public_version(version: str) -> str:
    """``version`` without its local label (``2.13.0+cpu`` -> ``2.13.0``)."""
    from packaging.version import InvalidVersion, Version

    try:
        return Version(version).public
    except InvalidVersion:
        return version.split("+", 1)[0]


#: Distributions PyTorch publishes per build on its own index, one index per local label.
_PYTORCH_DISTRIBUTIONS = frozenset({"torch", "torchvision", "torchaudio", "torchtext"})
_PYTORCH_INDEX = "https://download.pytorch.org/whl"


def dropped_label_message(distribution: str, version: str) -> str:
    """What to tell a user whose installed ``distribution`` carries a local version label."""
    public = public_version(version)
    label = version[len(public) :].lstrip("+")
    message = (
        f"{distribution} {version} is installed here; the model's requirements.txt pins "
        f"{distribution}=={public}, without the build label +{label}, so that any index can "
        "install it."
    )
    if _normalise(distribution) in _PYTORCH_DISTRIBUTIONS:
        index = f"{_PYTORCH_INDEX}/{label}"
        return (
            f"{message} PyPI's Linux build of {distribution} {public} is the CUDA one (several "
            f"GB): install the model's environment with --extra-index-url {index} "
            f"(PIP_EXTRA_INDEX_URL or UV_EXTRA_INDEX_URL for mlflow's env managers) or the "
            f"constraint {distribution}=={version}, or pin the build yourself with "
            f"extra_pip_requirements=['--extra-index-url {index}', '{distribution}=={version}']."
        )
    return (
        f"{message} To install that very build, pin it yourself: "
        f"extra_pip_requirements=['{distribution}=={version}'] with the index that has it."
    )


@functools.cache
def _warn_dropped_label(distribution: str, version: str) -> None:
    _logger.warning(dropped_label_message(distribution, version))


def requirement_name(requirement: str) -> str:
    """The normalised distribution name of a requirement line (``Torch>=2`` -> ``torch``)."""
    name = requirement.strip()
    for stop in "[=<>!~;@ ":
        name = name.split(stop, 1)[0]
    return _normalise(name)


def _normalise(name: str) -> str:
    return name.strip().lower().replace("_", "-").replace(".", "-")


@functools.cache
def _distributions_by_module() -> dict[str, tuple[str, ...]]:
    """``{top-level module: distributions providing it}`` of the running environment.

    Like :func:`importlib.metadata.packages_distributions`, but reads ``top_level.txt`` or
    ``RECORD`` as plain text and the name from the ``.dist-info`` folder: several times
    faster, and cached for the process.
    """
    providers: dict[str, set[str]] = {}
    for distribution in importlib_metadata.distributions():
        name = _distribution_name(distribution)
        if name is None:
            continue
        top_level = distribution.read_text("top_level.txt")
        if top_level:
            modules = set(top_level.split())
        else:
            modules = set()
            for line in (distribution.read_text("RECORD") or "").splitlines():
                path = line.split(",", 1)[0]
                head, slash, _ = path.partition("/")
                if not slash:
                    if head.endswith(".py"):
                        modules.add(head[:-3])
                elif not head.endswith((".dist-info", ".data")) and head not in (
                    "..",
                    "__pycache__",
                ):
                    modules.add(head)
        for module in modules:
            providers.setdefault(module, set()).add(name)
    return {module: tuple(sorted(names)) for module, names in providers.items()}


def _distribution_name(distribution: importlib_metadata.Distribution) -> str | None:
    folder = getattr(distribution, "_path", None)
    if folder is not None and folder.name.endswith(".dist-info"):
        return _normalise(folder.name[: -len(".dist-info")].rsplit("-", 1)[0])
    name = distribution.metadata["Name"]
    return _normalise(name) if name else None


def _local_source(module: str) -> Path | None:
    """The source file of ``module`` when it is local code (no distribution provides it)."""
    top = module.partition(".")[0]
    if top in sys.stdlib_module_names or top in DATAMINT_PACKAGES or top == "__main__":
        return None
    if top in _distributions_by_module():
        return None
    loaded = sys.modules.get(module)
    file = getattr(loaded, "__file__", None) if loaded is not None else None
    if file is None:
        file = _find_without_importing(module)
    if file is None or not file.endswith(".py"):
        return None
    return Path(file)


def _find_without_importing(module: str) -> str | None:
    top, _, rest = module.partition(".")
    try:
        spec = importlib.util.find_spec(top)  # a top-level name: nothing is imported
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if not rest:
        return spec.origin
    for location in spec.submodule_search_locations or ():
        base = Path(location, *rest.split("."))
        for candidate in (base.with_suffix(".py"), base / "__init__.py"):
            if candidate.is_file():
                return os.fspath(candidate)
    return None


def _package_of(module_name: str | None, path: str | os.PathLike[str]) -> str | None:
    if module_name is None:
        return None
    if Path(path).name == "__init__.py":
        return module_name
    return module_name.rpartition(".")[0] or None


def _python_files(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    files = []
    for path in map(Path, paths):
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*.py") if "__pycache__" not in p.parts))
        elif path.suffix == ".py" and path.is_file():
            files.append(path)
    return files


def model_requirements(
    model: object,
    own_requirements: list[str],
    *,
    code_path: str | os.PathLike[str] | None = None,
    code_paths: Iterable[str | os.PathLike[str]] = (),
) -> list[str]:
    """The complete, pinned requirements of a model being saved.

    Args:
        model: the model instance (pickled here to read which modules it refers to, unless
            it is saved from ``code_path``).
        own_requirements: what the model's class asks for (``_pip_requirements()``:
            ``datamint[torch]==...`` and ``torch==...`` for the torch extra).
        code_path: the model's code file, for a model saved from code.
        code_paths: MLflow's ``code_paths``, files or directories.

    Returns:
        The bundled datamint wheel (with the extras the model needs) first, then the pinned
        core dependencies, then every distribution the model's code and pickle need.
    """
    if code_path is not None:
        start = modules_imported_by(code_path)
        files: list[str | os.PathLike[str]] = [code_path, *code_paths]
    else:
        import cloudpickle

        start = modules_in_pickle(cloudpickle.dumps(model))
        files = list(code_paths)
    start.add(type(model).__module__)
    inferred = requirements_for_modules(modules_of_sources(start, files))
    extras = set(_datamint_extras(own_requirements))
    if any(requirement_name(r) == "torch" for r in inferred):
        extras.add("torch")
    others = [r for r in own_requirements if requirement_name(r) != "datamint"]
    return unique_by_name(
        [
            requirement_line(tuple(extras)),
            *base_requirements(from_code=code_path is not None),
            *others,
            *inferred,
        ]
    )


def base_requirements(from_code: bool) -> list[str]:
    """What every saved model needs besides datamint, pinned to the versions in use:
    mlflow-skinny, numpy, pandas, and cloudpickle unless it is saved from code (a model from
    code is not unpickled)."""
    packages = ["mlflow-skinny", "numpy", "pandas"] + ([] if from_code else ["cloudpickle"])
    return [pinned(package) for package in packages]


def with_bundled_datamint(requirements: list[str]) -> list[str]:
    """``requirements`` with any ``datamint`` line pointed at the bundled wheel.

    On the public index ``datamint`` is another project: a saved model installs this one
    from its own ``wheels/`` directory. Extras are kept (``datamint[torch]==0.1.0`` becomes
    ``./wheels/datamint-0.1.0-py3-none-any.whl[torch]``).
    """
    return [
        requirement_line(tuple(_datamint_extras([r]))) if requirement_name(r) == "datamint" else r
        for r in requirements
    ]


def with_extra(requirements: list[str], extra: Iterable[str]) -> list[str]:
    """``requirements`` with ``extra`` (``extra_pip_requirements``) added; an extra naming a
    distribution already listed replaces that line, since the user said so explicitly."""
    extra = list(extra)
    by_name = {requirement_name(r): r for r in extra}
    merged = [by_name.pop(requirement_name(r), r) for r in requirements]
    return merged + [r for r in extra if requirement_name(r) in by_name]


def unique_by_name(requirements: Iterable[str]) -> list[str]:
    """The first requirement of each distribution, in order."""
    seen: set[str] = set()
    kept = []
    for requirement in requirements:
        name = requirement_name(requirement) if not requirement.startswith("./") else requirement
        if name.startswith(f"./{WHEELS_DIR}/{DISTRIBUTION}-"):
            name = DISTRIBUTION
        if name not in seen:
            seen.add(name)
            kept.append(requirement)
    return kept


def _datamint_extras(requirements: Iterable[str]) -> list[str]:
    extras: list[str] = []
    for requirement in requirements:
        if requirement_name(requirement) == "datamint" and "[" in requirement:
            inside = requirement.split("[", 1)[1].split("]", 1)[0]
            extras.extend(e.strip() for e in inside.split(",") if e.strip())
    return extras


@contextlib.contextmanager
def report_missing_dependencies(model_dir: str) -> Iterator[None]:
    """Turn a missing module met while loading ``model_dir`` into an error that says so.

    Raises:
        MlflowException: naming the module, the requirement providing it and the install
            command (see :func:`missing_dependency_message`).
    """
    try:
        yield
    except Exception as error:
        cause: BaseException | None = error
        while cause is not None and not isinstance(cause, ModuleNotFoundError):
            cause = cause.__cause__ or cause.__context__
        if cause is None:
            raise
        from mlflow.exceptions import MlflowException

        raise MlflowException(missing_dependency_message(cause, model_dir)) from error


def missing_dependency_message(error: ModuleNotFoundError, model_dir: str) -> str:
    """What to tell a user whose environment lacks a module the model needs.

    Names the missing module, the line of the model's ``requirements.txt`` that provides
    it (matched by name) and the command that installs it.
    """
    module = (error.name or str(error)).partition(".")[0]
    requirements_file = Path(model_dir, "requirements.txt")
    try:
        lines = [
            line.strip()
            for line in requirements_file.read_text().splitlines()
            if line.strip() and not line.startswith(("#", "-"))
        ]
    except OSError:
        lines = []
    wanted = _normalise(module)
    providing = [
        line
        for line in lines
        if requirement_name(line) in (wanted, f"python-{wanted}", f"py{wanted}")
        or (module in DATAMINT_PACKAGES and DISTRIBUTION in line)
    ]
    where = f"Loading the model in {model_dir!r} needs the module {module!r}, which is not "
    if providing:
        return (
            f"{where}installed here. The model's requirements.txt provides it with "
            f"{providing[0]!r}. Install the model's requirements: "
            f"pip install -r {os.fspath(requirements_file)!r} "
            f"(run from {model_dir!r}, where its bundled wheels are)."
        )
    return (
        f"{where}installed here and not among the model's requirements ({lines}), so it is "
        "the model's own code: make it importable (install the project that defines it, or "
        "save the model with code_paths=[...] or from a code file), or install the model's "
        f"requirements: pip install -r {os.fspath(requirements_file)!r}."
    )


def warn_requirement_mismatches(model_dir: str) -> None:
    """Warn, as ``mlflow.pyfunc.load_model`` does, when the environment misses a requirement.

    MLflow reads every requirement's ``METADATA`` to find its installed version (for torch
    that is most of a model's load time); the versions here come from the ``.dist-info``
    folder names, listed once per process.
    """
    from packaging.requirements import InvalidRequirement, Requirement

    try:
        lines = Path(model_dir, "requirements.txt").read_text().splitlines()
    except OSError:
        return
    installed = _installed_versions()
    mismatches = []
    for line in lines:
        try:
            requirement = Requirement(line.split("#", 1)[0].strip())
        except InvalidRequirement:
            continue  # a comment, an option, the bundled wheel's path
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        version = installed.get(_normalise(requirement.name))
        if version is None:
            mismatches.append(f"{requirement.name} (current: uninstalled, required: {line})")
        elif not requirement.specifier.contains(version, prereleases=True):
            mismatches.append(f"{requirement.name} (current: {version}, required: {line})")
    if mismatches:
        _logger.warning(
            "Detected one or more mismatches between the model's dependencies and the current "
            "Python environment:\n - %s\nTo fix the mismatches, run in the model directory: "
            "pip install -r requirements.txt",
            "\n - ".join(mismatches),
        )


@functools.cache
def _installed_versions() -> dict[str, str]:
    """``{normalised distribution name: version}``, from the ``.dist-info`` folder names."""
    versions: dict[str, str] = {}
    for distribution in importlib_metadata.distributions():
        folder = getattr(distribution, "_path", None)
        if folder is not None and folder.name.endswith(".dist-info"):
            name, _, version = folder.name[: -len(".dist-info")].rpartition("-")
        else:
            name, version = distribution.metadata["Name"] or "", distribution.version
        versions.setdefault(_normalise(name), version)
    return versions
