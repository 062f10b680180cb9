"""The one atomic file write (datamint_core._files) and that every writer goes through it."""

from __future__ import annotations

import ast
import os
import stat
import threading
from pathlib import Path

import pytest

import datamint_core
from datamint_core._files import INCOMPLETE_SUFFIX, atomic_path, write_atomically


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_write_atomically_replaces_the_file_and_leaves_nothing_beside_it(tmp_path) -> None:
    target = tmp_path / "deep" / "er" / "out.json"
    assert write_atomically(target, "first") == target
    write_atomically(target, b"second")
    write_atomically(target, lambda file: file.write(b"third"))
    assert target.read_bytes() == b"third"
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.json"]


def test_a_failed_write_keeps_the_old_file_and_removes_its_temporary_file(tmp_path) -> None:
    target = tmp_path / "out.bin"
    target.write_bytes(b"old and whole")

    def half_then_fail(file) -> None:
        file.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomically(target, half_then_fail)
    assert target.read_bytes() == b"old and whole"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_a_new_file_gets_the_mode_open_would_give_and_a_secret_gets_0600(tmp_path) -> None:
    plain = write_atomically(tmp_path / "plain.txt", "x")
    assert _mode(plain) == 0o666 & ~_umask()
    secret = write_atomically(tmp_path / "secret.json", "{}", mode=0o600)
    assert _mode(secret) == 0o600


def test_the_temporary_name_is_hidden_beside_the_target_and_keeps_the_format_suffix(
    tmp_path,
) -> None:
    with atomic_path(tmp_path / "mask.nii.gz", format_suffix=".nii.gz") as temporary:
        name = os.path.basename(temporary)
        assert os.path.dirname(temporary) == str(tmp_path)
        assert name.startswith(".mask.nii.gz.")
        assert name.endswith(INCOMPLETE_SUFFIX + ".nii.gz")
        assert not (tmp_path / "mask.nii.gz").exists()  # nothing published before the end
        Path(temporary).write_bytes(b"written by a library that takes a file name")
    assert (tmp_path / "mask.nii.gz").read_bytes().startswith(b"written by")
    assert not Path(temporary).exists()


def test_concurrent_writers_leave_one_whole_file(tmp_path) -> None:
    target = tmp_path / "shared.bin"
    contents = [bytes([index]) * 200_000 for index in range(8)]
    threads = [
        threading.Thread(target=write_atomically, args=(target, content)) for content in contents
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert target.read_bytes() in contents
    assert [p.name for p in tmp_path.iterdir()] == ["shared.bin"]


def test_no_product_module_writes_through_its_own_temporary_file_and_rename() -> None:
    """One atomic write: only ``_files`` calls ``os.replace`` on files or ``mkstemp``.

    The artifact cache renames whole directories into place (its own layout) and is the one
    deliberate exception.
    """
    root = Path(datamint_core.__file__).parent.parent
    offenders = []
    for package in ("datamint_core", "datamint_torch", "datamint_lightning"):
        for path in sorted((root / package).rglob("*.py")):
            if path.name == "_files.py" or path.name == "artifact_cache.py":
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Attribute) and node.attr in {
                    "replace",
                    "mkstemp",
                    "NamedTemporaryFile",
                } and isinstance(node.value, ast.Name) and node.value.id in {"os", "tempfile"}:
                    offenders.append(f"{path.relative_to(root)}:{node.lineno} {node.attr}")
    assert offenders == []
