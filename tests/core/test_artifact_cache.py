"""The artifact cache on its own: atomic entries, checksums, list, clear, export."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from datamint_core.artifact_cache import (
    MANIFEST_NAME,
    ArtifactCache,
    CacheError,
    CorruptedCacheEntryError,
    default_cache_dir,
)


def fake_download(calls: list[Path], content: bytes = b"weights"):
    def download(into: Path) -> Path:
        calls.append(into)
        model = into / "model"
        (model / "sub").mkdir(parents=True)
        (model / "MLmodel").write_text("flavors: {}\n")
        (model / "sub" / "weights.bin").write_bytes(content)
        return model

    return download


def test_a_fetched_entry_is_downloaded_once_and_then_served_from_the_cache(tmp_path):
    cache = ArtifactCache(tmp_path)
    calls: list[Path] = []
    first = cache.fetch(("models", "seg", "3"), fake_download(calls), source_uri="models:/seg/3")
    second = cache.fetch(("models", "seg", "3"), fake_download(calls), source_uri="models:/seg/3")

    assert first == second == tmp_path / "models" / "seg" / "3"
    assert len(calls) == 1
    assert (first / "sub" / "weights.bin").read_bytes() == b"weights"
    manifest = json.loads((first / MANIFEST_NAME).read_text())
    assert set(manifest["sha256"]) == {"MLmodel", "sub/weights.bin"}
    assert not any((tmp_path / ".incomplete").iterdir())


def test_a_failed_download_leaves_no_entry_and_no_partial_files(tmp_path):
    cache = ArtifactCache(tmp_path)

    def broken(into: Path) -> Path:
        (into / "half.bin").write_bytes(b"x" * 10)
        raise ConnectionError("network went away")

    with pytest.raises(ConnectionError):
        cache.fetch(("models", "seg", "1"), broken, source_uri="models:/seg/1")
    assert cache.get(("models", "seg", "1")) is None
    assert not any((tmp_path / ".incomplete").iterdir())


def test_one_changed_byte_is_reported_naming_the_file(tmp_path):
    cache = ArtifactCache(tmp_path)
    path = cache.fetch(("models", "seg", "1"), fake_download([]), source_uri="models:/seg/1")
    (path / "sub" / "weights.bin").write_bytes(b"weightz")

    with pytest.raises(CorruptedCacheEntryError, match=r"sub/weights\.bin does not match"):
        cache.get(("models", "seg", "1"))
    with pytest.raises(CorruptedCacheEntryError):
        cache.fetch(
            ("models", "seg", "1"),
            fake_download([]),
            source_uri="models:/seg/1",
            allow_download=False,
        )
    calls: list[Path] = []
    cache.fetch(("models", "seg", "1"), fake_download(calls), source_uri="models:/seg/1")
    assert len(calls) == 1
    assert (path / "sub" / "weights.bin").read_bytes() == b"weights"


def test_offline_fetch_of_a_missing_entry_names_the_source_and_the_cache(tmp_path):
    with pytest.raises(
        CacheError,
        match=rf"'models:/seg/9' is not in the artifact cache at "
        rf"{tmp_path}",
    ):
        ArtifactCache(tmp_path).fetch(
            ("models", "seg", "9"),
            fake_download([]),
            source_uri="models:/seg/9",
            allow_download=False,
        )


def test_refresh_downloads_again_even_when_cached(tmp_path):
    cache = ArtifactCache(tmp_path)
    calls: list[Path] = []
    cache.fetch(("models", "m", "1"), fake_download(calls), source_uri="u")
    cache.fetch(("models", "m", "1"), fake_download(calls, b"new"), source_uri="u", refresh=True)
    assert len(calls) == 2
    assert (cache.get(("models", "m", "1")) / "sub" / "weights.bin").read_bytes() == b"new"


def test_names_with_slashes_and_spaces_stay_inside_the_cache(tmp_path):
    cache = ArtifactCache(tmp_path)
    path = cache.fetch(("models", "team/lung seg", "2"), fake_download([]), source_uri="u")
    assert path.parent.parent == tmp_path / "models"
    assert [e.key for e in cache.list()] == [("models", "team/lung seg", "2")]


def test_list_clear_and_export_make_a_cache_usable_elsewhere(tmp_path):
    cache = ArtifactCache(tmp_path / "a")
    cache.fetch(("models", "seg", "1"), fake_download([]), source_uri="models:/seg/1")
    cache.fetch(("runs", "abc123", "model"), fake_download([]), source_uri="runs:/abc123/model")

    entries = cache.list()
    assert sorted(e.key for e in entries) == [("models", "seg", "1"), ("runs", "abc123", "model")]
    assert all(e.size_bytes == len("flavors: {}\n") + len(b"weights") for e in entries)

    exported = cache.export(tmp_path / "b")
    assert exported.get(("models", "seg", "1")) is not None
    assert cache.clear() == 2
    assert cache.list() == []
    assert exported.get(("runs", "abc123", "model")) is not None


def test_the_cache_directory_comes_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("DATAMINT_CACHE_DIR", str(tmp_path / "here"))
    assert default_cache_dir() == tmp_path / "here"
    monkeypatch.delenv("DATAMINT_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "datamint"


def test_an_unreadable_manifest_is_a_corrupted_entry_that_is_fetched_again(tmp_path):
    cache = ArtifactCache(tmp_path)
    path = cache.fetch(("models", "seg", "1"), fake_download([]), source_uri="u")
    (path / MANIFEST_NAME).write_text('{"sha256": ')
    with pytest.raises(CorruptedCacheEntryError, match="manifest .* is unreadable"):
        cache.get(("models", "seg", "1"))
    assert cache.list() == []
    calls: list[Path] = []
    cache.fetch(("models", "seg", "1"), fake_download(calls), source_uri="u")
    assert len(calls) == 1 and cache.get(("models", "seg", "1")) is not None


@pytest.mark.parametrize("name", ["..", ".", ".hidden"])
def test_dot_names_never_leave_or_hide_in_the_cache(tmp_path, name):
    cache = ArtifactCache(tmp_path / "cache")
    path = cache.fetch(("models", name, "1"), fake_download([]), source_uri="u")
    assert path.resolve().is_relative_to((tmp_path / "cache" / "models").resolve())
    assert not path.parent.name.startswith(".")
    assert [e.key for e in cache.list()] == [("models", name, "1")]
