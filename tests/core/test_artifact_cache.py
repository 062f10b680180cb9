"""The artifact cache on its own: atomic entries, checksums, list, clear, export."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from datamint_core import CacheError, CorruptedCacheEntryError
from datamint_core.artifact_cache import MANIFEST_NAME, ArtifactCache, default_cache_dir


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


# -- hostile entries ---------------------------------------------------------------------------


@pytest.mark.parametrize("planted", ["/etc/passwd", "../../outside.txt", "sub/../../x", "a//b"])
def test_a_manifest_naming_a_path_outside_its_entry_is_a_corrupted_entry(tmp_path, planted):
    cache = ArtifactCache(tmp_path / "cache")
    path = cache.fetch(("models", "seg", "1"), fake_download([]), source_uri="u")
    manifest = json.loads((path / MANIFEST_NAME).read_text())
    manifest["sha256"][planted] = "0" * 64
    manifest["sizes"][planted] = 1
    (path / MANIFEST_NAME).write_text(json.dumps(manifest))

    with pytest.raises(CorruptedCacheEntryError, match="a path outside the entry"):
        cache.get(("models", "seg", "1"))


def test_a_symlink_planted_in_an_entry_is_reported_and_never_exported(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("hospital credentials")
    cache = ArtifactCache(tmp_path / "cache")
    path = cache.fetch(("models", "seg", "1"), fake_download([]), source_uri="u")
    (path / "sub" / "weights.bin").unlink()
    (path / "sub" / "weights.bin").symlink_to(secret)

    with pytest.raises(CorruptedCacheEntryError, match=r"symbolic link, sub/weights\.bin"):
        cache.get(("models", "seg", "1"))
    with pytest.raises(CorruptedCacheEntryError):
        cache.export(tmp_path / "exported")
    exported_files = [p for p in (tmp_path / "exported").rglob("*") if p.is_file()]
    assert all("hospital" not in p.read_text(errors="replace") for p in exported_files)


def test_a_download_holding_a_symlink_is_refused(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("not yours")

    def download(into: Path) -> Path:
        (into / "MLmodel").write_text("flavors: {}\n")
        (into / "weights.bin").symlink_to(outside)
        return into

    with pytest.raises(CacheError, match=r"symbolic link, weights\.bin; the cache never follows"):
        ArtifactCache(tmp_path / "cache").fetch(("models", "m", "1"), download, source_uri="u")
    assert ArtifactCache(tmp_path / "cache").list() == []


def test_a_file_added_to_an_entry_is_reported_like_a_changed_one(tmp_path):
    cache = ArtifactCache(tmp_path)
    path = cache.fetch(("models", "seg", "1"), fake_download([]), source_uri="u")
    (path / "sub" / "extra.py").write_text("import os; os.system('evil')")

    with pytest.raises(CorruptedCacheEntryError, match=r"sub/extra\.py was added after"):
        cache.get(("models", "seg", "1"))


def test_export_copies_exactly_the_files_of_the_manifest(tmp_path):
    cache = ArtifactCache(tmp_path / "a")
    cache.fetch(("models", "seg", "1"), fake_download([]), source_uri="u")

    exported = cache.export(tmp_path / "b")

    copied = sorted(
        p.relative_to(tmp_path / "b").as_posix() for p in (tmp_path / "b").rglob("*") if p.is_file()
    )
    assert copied == [
        f"models/seg/1/{MANIFEST_NAME}",
        "models/seg/1/MLmodel",
        "models/seg/1/sub/weights.bin",
    ]
    assert exported.get(("models", "seg", "1")) is not None


def test_a_manifest_whose_key_names_another_entry_is_skipped_by_list_and_clear(tmp_path):
    cache = ArtifactCache(tmp_path)
    victim = cache.fetch(("models", "victim", "1"), fake_download([]), source_uri="u")
    rogue = cache.fetch(("models", "rogue", "1"), fake_download([]), source_uri="u")
    manifest = json.loads((rogue / MANIFEST_NAME).read_text())
    manifest["key"] = ["models", "victim", "1"]
    (rogue / MANIFEST_NAME).write_text(json.dumps(manifest))

    assert [e.key for e in cache.list()] == [("models", "victim", "1")]
    assert cache.clear() == 1
    assert rogue.exists() and not victim.exists()


def _drop_root_file_override() -> None:
    """In a child about to exec: drop root's power to write files whatever their mode
    (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER), so a read-only mode bites."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2, 3):
        if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "cannot drop a capability")


def _run_as_a_user_who_cannot_write(cache_dir: Path, code: str) -> dict:
    """Run ``code`` (which prints JSON) in a process that cannot write ``cache_dir``."""
    import os
    import subprocess
    import sys

    from tests.conftest import REPO_ROOT

    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "CACHE_DIR": str(cache_dir)}
    for path in [*cache_dir.rglob("*"), cache_dir]:
        path.chmod(path.stat().st_mode & ~0o222)
    extra = {"preexec_fn": _drop_root_file_override} if os.geteuid() == 0 else {}
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd="/",
        timeout=120, **extra,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


def test_a_read_only_cache_serves_its_entries_and_refuses_writes_with_library_errors(tmp_path):
    cache_dir = tmp_path / "cache"
    cache = ArtifactCache(cache_dir)
    cache.fetch(("models", "seg", "1"), fake_download([]), source_uri="u")

    outcome = _run_as_a_user_who_cannot_write(
        cache_dir,
        """
import json, os
from pathlib import Path
from datamint_core.artifact_cache import ArtifactCache, CacheNotWritableError
cache = ArtifactCache(os.environ["CACHE_DIR"])
found = {}
with cache.holding(lambda: cache.fetch(("models", "seg", "1"), None, source_uri="u")) as path:
    found["held"] = (path / "MLmodel").read_text()
def attempt(name, action):
    try:
        action()
        found[name] = "no error"
    except CacheNotWritableError as error:
        found[name] = ["CacheNotWritableError", isinstance(error, PermissionError), str(error)]
    except Exception as error:
        found[name] = [type(error).__name__, str(error)]
attempt("download", lambda: cache.fetch(("models", "other", "1"),
                                        lambda into: into, source_uri="models:/other/1"))
attempt("remove", lambda: cache.remove(("models", "seg", "1")))
attempt("clear", cache.clear)
print(json.dumps(found))
""",
    )

    assert outcome["held"] == "flavors: {}\n"
    for action in ("download", "remove", "clear"):
        name, is_permission_error, message = outcome[action]
        assert (name, is_permission_error) == ("CacheNotWritableError", True), outcome
        assert f"the artifact cache at {cache_dir} is not writable" in message
        assert "DATAMINT_CACHE_DIR" in message
    assert cache.get(("models", "seg", "1")) is not None


def test_a_read_only_cache_reports_an_offline_miss_and_a_corrupted_entry_as_themselves(
    tmp_path,
):
    from datamint_core.artifact_cache import model_key

    cache_dir = tmp_path / "cache"
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"  # never created: offline asks no store
    cache = ArtifactCache(cache_dir)
    broken = cache.fetch(model_key(store, "broken", "1"), fake_download([]), source_uri="u")
    (broken / "sub" / "weights.bin").write_bytes(b"tampered")

    outcome = _run_as_a_user_who_cannot_write(
        cache_dir,
        f"""
import json, os
from datamint_core import load_model
from datamint_core.artifact_cache import ArtifactCache
cache = ArtifactCache(os.environ["CACHE_DIR"])
found = {{}}
def attempt(name, action):
    try:
        action()
        found[name] = "no error"
    except Exception as error:
        found[name] = [type(error).__name__, str(error)]
attempt("miss", lambda: cache.fetch(("models", "other", "1"), None, source_uri="models:/other/1",
                                    allow_download=False))
attempt("corrupted", lambda: cache.fetch({model_key(store, "broken", "1")!r}, None,
                                         source_uri="u", allow_download=False))
os.environ.update(DATAMINT_CACHE_DIR=os.environ["CACHE_DIR"], DATAMINT_OFFLINE="true",
                  MLFLOW_TRACKING_URI={store!r}, MLFLOW_REGISTRY_URI={store!r})
attempt("load_miss", lambda: load_model("models:/missing/1"))
attempt("load_corrupted", lambda: load_model("models:/broken/1"))
print(json.dumps(found))
""",
    )

    name, message = outcome["miss"]
    assert name == "CacheError"
    assert f"'models:/other/1' is not in the artifact cache at {cache_dir}" in message
    name, message = outcome["corrupted"]
    assert name == "CorruptedCacheEntryError"
    assert "weights.bin does not match the checksum" in message
    name, message = outcome["load_miss"]
    assert name == "LinkedModelNotFoundError"
    assert "Model (models:/missing/1) is not in the artifact cache" in message
    assert "offline mode (DATAMINT_OFFLINE) forbids downloading it" in message
    name, message = outcome["load_corrupted"]
    assert name == "LinkedModelError"
    assert "weights.bin does not match the checksum" in message
    assert "Offline mode is on" in message
    assert "not writable" not in json.dumps(outcome)


_HOSTS = st.from_regex(r"[A-Za-z][A-Za-z0-9-]{0,20}(\.[A-Za-z0-9-]{1,10}){0,2}", fullmatch=True)
_SECRETS = st.text(alphabet="abcXYZ019_-", min_size=4, max_size=12).map(lambda s: f"pw{s}")


@given(
    scheme=st.sampled_from(["http", "HTTPS", "datamint", "postgresql"]),
    host=_HOSTS,
    port=st.one_of(st.none(), st.integers(1, 65535)),
    secret=_SECRETS,
    path=st.from_regex(r"(/[a-z0-9._-]{1,8}){0,3}/?", fullmatch=True),
)
def test_a_server_store_identity_is_stable_and_never_holds_its_credentials(
    scheme, host, port, secret, path
):
    from datamint_core.artifact_cache import _store_dir, model_key, store_identity

    spelled = f"{scheme}://user:{secret}@{{}}{f':{port}' if port else ''}{path}"
    uri = spelled.format(host)
    identity = store_identity(uri)

    assert secret not in identity and "user" not in identity.split("://", 1)[1].split("/")[0]
    assert store_identity(identity) == identity  # one spelling per store
    assert identity == store_identity(spelled.format(host.upper()).rstrip("/") + "/")
    part = _store_dir(identity)
    assert "/" not in part and part not in (".", "..") and secret not in part
    assert model_key(uri, "m", "1")[1] == part


@given(path=st.from_regex(r"[a-z0-9]{1,8}(/[a-z0-9.]{1,8}){0,2}", fullmatch=True))
def test_every_spelling_of_one_database_or_directory_is_one_store(path):
    import os

    from datamint_core.artifact_cache import store_identity

    absolute = os.path.realpath(path)
    assert store_identity(f"sqlite:///{path}") == store_identity(f"sqlite:///{absolute}")
    assert store_identity(f"sqlite:///{path}") == f"sqlite:///{absolute}"
    assert store_identity(path) == store_identity(f"file://{absolute}") == f"file://{absolute}"
    assert store_identity(f"sqlite:///{path}") != store_identity(f"sqlite:///{path}x")


def test_refreshing_a_held_entry_keeps_it_when_unchanged_and_never_waits_forever(
    tmp_path, monkeypatch
):
    import time

    from datamint_core import artifact_cache

    cache = ArtifactCache(tmp_path)
    key = ("models", "served", "1")
    calls: list[Path] = []
    with cache.hold(key, fake_download(calls), source_uri="u") as held:
        started = time.monotonic()
        assert cache.fetch(key, fake_download(calls), source_uri="u", refresh=True) == held
        assert time.monotonic() - started < 5  # the same download: nothing to replace
        assert len(calls) == 2 and (held / "sub" / "weights.bin").read_bytes() == b"weights"

        monkeypatch.setattr(artifact_cache, "REPLACE_WAIT_S", 0.5)
        with pytest.raises(CacheError, match="differs from the cache entry .* holds"):
            cache.fetch(key, fake_download(calls, b"newer"), source_uri="u", refresh=True)
        assert (held / "sub" / "weights.bin").read_bytes() == b"weights"  # still its own

    path = cache.fetch(key, fake_download(calls, b"newer"), source_uri="u", refresh=True)
    assert (path / "sub" / "weights.bin").read_bytes() == b"newer"  # let go: replaced
    assert not list((tmp_path / ".incomplete").iterdir())


def test_clear_leaves_a_held_entry_in_place_and_remove_waits_for_it(tmp_path, caplog):
    import threading

    cache = ArtifactCache(tmp_path)
    kept = ("models", "served", "1")
    cache.fetch(("models", "idle", "1"), fake_download([]), source_uri="u")
    with cache.hold(kept, fake_download([]), source_uri="u") as held:
        with caplog.at_level("WARNING", logger="datamint_core.artifact_cache"):
            assert cache.clear() == 1  # only the idle one
        assert f"Left the cache entry {held} in place: a process holds it" in caplog.text
        assert (held / "MLmodel").is_file()
        removing = threading.Thread(target=cache.remove, args=(kept,))
        removing.start()
        removing.join(timeout=0.5)
        assert removing.is_alive() and (held / "MLmodel").is_file()  # waits for the hold
    removing.join(timeout=30)
    assert not removing.is_alive() and cache.list() == []
