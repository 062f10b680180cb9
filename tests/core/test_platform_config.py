"""Datamint platform settings: the config file, the environment, URL safety, the scoped key."""

from __future__ import annotations

import json
import os
import stat

import mlflow
import numpy as np
import pytest
import requests
from hypothesis import given
from hypothesis import strategies as st

from datamint_core import (
    BaseDatamintModel,
    CategoryAnnotation,
    ImageResource,
    PlatformConfigError,
    log_model,
    save_model,
)
from datamint_core.cli import main
from datamint_core.platform import (
    EnvVars,
    ensure_mlflow_configured,
    load_settings,
    setup_mlflow_environment,
    write_config_file,
)
from datamint_core.platform.auth import PlatformKeyAuth
from datamint_core.platform.config import check_url

KEY = "dm-unit-test-key-0123456789abcdef"


@pytest.fixture
def config_file(tmp_path, monkeypatch):
    path = tmp_path / "cfg" / "config.json"
    monkeypatch.setenv("DATAMINT_CONFIG_FILE", str(path))
    return path


@pytest.fixture
def mlflow_env(monkeypatch):
    """Restore MLflow's tracking settings that setup_mlflow_environment may change."""
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_AUTH"):
        monkeypatch.delenv(name, raising=False)
    yield
    mlflow.set_tracking_uri(None)
    mlflow.set_registry_uri(None)


def test_env_vars_name_the_seed_and_sdk_variables():
    assert EnvVars.DATAMINT_PROJECT_ID.value == "DATAMINT_PROJECT_ID"
    assert EnvVars.DATAMINT_PROJECT_NAME.value == "DATAMINT_PROJECT_NAME"
    assert {"DATAMINT_API_KEY", "DATAMINT_API_URL"} <= {v.value for v in EnvVars}


def test_datamint_config_writes_a_private_file_and_never_prints_the_key(config_file, capsys,
                                                                          monkeypatch):
    monkeypatch.setattr("sys.stdin", __import__("io").StringIO(KEY + "\n"))
    assert main(["config", "--api-key", "-", "--api-url", "https://platform.example.org"]) == 0
    out = capsys.readouterr().out
    assert stat.S_IMODE(os.stat(config_file).st_mode) == 0o600
    assert json.loads(config_file.read_text())["api_key"] == KEY
    assert KEY not in out and KEY[8:] not in out
    assert "api_key      dm-u…(33 chars)  (file)" in out
    assert "tracking URI datamint://platform.example.org:5000" in out
    assert main(["config", "--unset", "api_key"]) == 0
    assert "api_key" not in json.loads(config_file.read_text())


def test_the_environment_wins_over_the_config_file(config_file, monkeypatch):
    write_config_file({"api_key": "from-file", "api_url": "https://file.example.org",
                       "project_name": "File project"})
    monkeypatch.setenv("DATAMINT_API_URL", "https://env.example.org")
    settings = load_settings()
    assert (settings.api_key, settings.api_url, settings.project_name) == (
        "from-file", "https://env.example.org", "File project")
    assert settings.sources == {"api_key": "file", "api_url": "env", "project_name": "file",
                                "mlflow_url": "default"}
    assert settings.mlflow_url == "https://env.example.org:5000"
    assert "from-file" not in repr(settings)


def test_plain_http_to_another_machine_is_refused_at_write_and_at_use(config_file, monkeypatch):
    with pytest.raises(PlatformConfigError, match="plain HTTP to example.com.*use https://"):
        write_config_file({"api_url": "http://example.com"})
    monkeypatch.setenv("DATAMINT_API_KEY", KEY)
    monkeypatch.setenv("DATAMINT_API_URL", "http://example.com")
    with pytest.raises(PlatformConfigError, match="DATAMINT_API_URL='http://example.com' uses "
                       "plain HTTP"):
        load_settings().check()


@given(host=st.from_regex(r"[a-z][a-z0-9-]{0,20}(\.[a-z]{2,6}){1,2}", fullmatch=True),
       port=st.one_of(st.none(), st.integers(1, 65535)))
def test_no_plain_http_url_to_a_named_host_is_ever_accepted(host, port):
    url = f"http://{host}{f':{port}' if port else ''}/api"
    with pytest.raises(PlatformConfigError, match="plain HTTP"):
        check_url(url, "DATAMINT_API_URL")
    assert check_url(url.replace("http://", "https://"), "DATAMINT_API_URL").startswith("https://")


@given(st.text(max_size=60))
def test_any_url_text_is_either_accepted_as_safe_or_refused_with_the_setting_named(text):
    try:
        accepted = check_url(text, "DATAMINT_MLFLOW_URL")
    except PlatformConfigError as error:
        assert "DATAMINT_MLFLOW_URL" in str(error) or "base URL" in str(error)
    else:
        assert accepted.startswith("https://") or accepted.startswith("http://")


@pytest.mark.parametrize("url", ["http://localhost:8080", "http://127.0.0.1", "http://[::1]:9"])
def test_plain_http_is_accepted_for_this_machine_only(url):
    assert check_url(url, "DATAMINT_API_URL") == url


def test_the_key_is_added_only_to_requests_for_the_platform(monkeypatch):
    monkeypatch.setenv("DATAMINT_API_KEY", KEY)
    monkeypatch.setenv("DATAMINT_API_URL", "https://api.example.org")
    monkeypatch.setenv("DATAMINT_MLFLOW_URL", "https://mlflow.example.org:8443/base")
    auth = PlatformKeyAuth()

    def headers_for(url):
        return auth(requests.Request("GET", url).prepare()).headers

    assert headers_for("https://api.example.org/projects")["Authorization"] == f"Bearer {KEY}"
    assert headers_for("https://mlflow.example.org:8443/base/api/2.0/x")["Authorization"]
    for elsewhere in ("https://evil.example.org/", "http://api.example.org/",
                      "https://mlflow.example.org/base", "https://api.example.org.evil.com/"):
        assert "Authorization" not in headers_for(elsewhere), elsewhere


def test_without_a_key_setup_changes_nothing_and_ensure_names_the_setting(mlflow_env):
    assert setup_mlflow_environment() is False
    assert "MLFLOW_TRACKING_URI" not in os.environ
    assert "MLFLOW_TRACKING_AUTH" not in os.environ
    with pytest.raises(ValueError, match="DATAMINT_API_KEY is not set"):
        ensure_mlflow_configured()


def test_setup_points_mlflow_at_the_platform_but_never_over_an_explicit_uri(mlflow_env,
                                                                            monkeypatch):
    monkeypatch.setenv("DATAMINT_API_KEY", KEY)
    monkeypatch.setenv("DATAMINT_API_URL", "https://api.example.org")
    assert setup_mlflow_environment() is True
    assert os.environ["MLFLOW_TRACKING_URI"] == "datamint://api.example.org:5000"
    assert mlflow.get_tracking_uri() == "datamint://api.example.org:5000"
    assert os.environ["MLFLOW_TRACKING_AUTH"] == "datamint"
    assert [name for name, value in os.environ.items() if KEY in value] == ["DATAMINT_API_KEY"]
    mlflow.set_tracking_uri(None)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///mine.db")
    assert setup_mlflow_environment() is True
    assert os.environ["MLFLOW_TRACKING_URI"] == "sqlite:///mine.db"
    assert setup_mlflow_environment(overwrite=True) is True
    assert os.environ["MLFLOW_TRACKING_URI"] == "datamint://api.example.org:5000"


def test_a_datamint_uri_for_another_host_is_refused(monkeypatch):
    monkeypatch.setenv("DATAMINT_API_KEY", KEY)
    monkeypatch.setenv("DATAMINT_API_URL", "https://api.example.org")
    with pytest.raises(PlatformConfigError, match="'datamint://other.example.org:5000' is not "
                       "the configured Datamint platform"):
        load_settings().http_url_for("datamint://other.example.org:5000")


class PlatformModel(BaseDatamintModel):
    def predict_image(self, model_input):  # no **kwargs: platform params must not reach it
        return [[CategoryAnnotation("label", "yes")] for _ in model_input]


def test_platform_params_never_reach_a_handler_without_kwargs():
    image = ImageResource(np.zeros((4, 4)))
    result = PlatformModel().predict([image], params={"model_name": "seg", "mode": "image"})
    assert [a.value for a in result[0]] == ["yes"]


def test_log_predictions_without_a_platform_returns_the_result_and_warns_once():
    image = ImageResource(np.zeros((4, 4)), id="r1")
    with pytest.warns(RuntimeWarning, match="no Datamint platform is configured"):
        result = PlatformModel().predict([image], params={"log_predictions": "true"})
    assert [a.value for a in result[0]] == ["yes"]


def test_a_saved_model_carries_a_default_input_example_and_mlflow_serves_it(tmp_path):
    save_model(PlatformModel(), tmp_path / "model")
    serving_input = mlflow.models.Model.load(tmp_path / "model").get_serving_input(
        str(tmp_path / "model"))
    example = json.loads(serving_input)
    assert example["params"] == {"mode": "default"}
    assert example["inputs"][0]["kind"] == "image"
    model = mlflow.pyfunc.load_model(str(tmp_path / "model"))
    predicted = model.predict(example["inputs"], params={**example["params"],
                                                         "model_name": "seg"})
    assert predicted == [[{"type": "category", "identifier": "label", "scope": "image",
                           "value": "yes"}]]


def test_logging_a_model_no_longer_warns_about_a_missing_input_example(sqlite_tracking_uri,
                                                                      recwarn):
    with mlflow.start_run():
        log_model(PlatformModel(), name="model")
    assert not [w for w in recwarn if "input example was not provided" in str(w.message)]


def test_every_datamint_plugin_registers_even_when_mlflow_is_imported_first(run_python):
    completed = run_python(
        """
        import mlflow
        from mlflow.store.artifact.artifact_repository_registry import (
            _artifact_repository_registry as artifacts)
        from mlflow.tracking._model_registry.utils import _get_store_registry
        from mlflow.tracking._tracking_service.utils import _tracking_store_registry as stores
        from mlflow.tracking.default_experiment.registry import (
            _default_experiment_provider_registry as experiments)
        from mlflow.tracking.request_auth.registry import (
            _request_auth_provider_registry as auths)
        print(sorted([
            stores._registry["datamint"].__name__,
            _get_store_registry()._registry["datamint"].__name__,
            artifacts._registry["datamint"].__name__,
            *(type(p).__name__ for p in experiments if "Datamint" in type(p).__name__),
            *(type(p).__name__ for p in auths if "Datamint" in type(p).__name__),
        ]))
        """,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "Failure attempting to register" not in completed.stderr
    assert completed.stdout.strip() == str(sorted([
        "DatamintStore", "DatamintRegistryStore", "DatamintArtifactsRepository",
        "DatamintExperimentProvider", "DatamintAuthProvider"]))


def test_importing_the_core_imports_no_mlflow_until_a_model_name_is_used(run_python):
    out = run_python(
        "import sys, datamint_core\n"
        "before = 'mlflow' in sys.modules\n"
        "datamint_core.BaseDatamintModel\n"
        "print(before, 'mlflow.pyfunc' in sys.modules)"
    )
    assert out.split() == ["False", "True"]


def non_loopback_address() -> str:
    """An address of this machine that is not loopback: "another machine" to a URL check."""
    import socket

    for family, _, _, _, address in socket.getaddrinfo(socket.gethostname(), None):
        if family == socket.AF_INET and not address[0].startswith("127."):
            return address[0]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("192.0.2.1", 9))  # no packet is sent: this only picks a route
        address = probe.getsockname()[0]
    if address.startswith("127."):
        pytest.skip("this machine has no non-loopback IPv4 address")
    return address


@pytest.fixture
def recording_server():
    """A real HTTP server on a non-loopback address that records every request's headers."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    seen: list[dict[str, str]] = []

    class Recorder(BaseHTTPRequestHandler):
        def do_GET(self):
            seen.append(dict(self.headers))
            body = b'{"experiments": []}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_POST = do_GET

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer((non_loopback_address(), 0), Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    try:
        yield f"http://{host}:{port}", seen
    finally:
        server.shutdown()
        server.server_close()


def test_setup_returns_false_and_logs_why_for_plain_http_off_machine_and_never_sends_the_key(
    mlflow_env, monkeypatch, recording_server, caplog
):
    url, seen = recording_server
    monkeypatch.setenv("DATAMINT_API_KEY", KEY)
    monkeypatch.setenv("DATAMINT_API_URL", url)
    monkeypatch.setenv("DATAMINT_MLFLOW_URL", url)
    tracking_before = mlflow.get_tracking_uri()

    with caplog.at_level("WARNING", logger="datamint_core.platform.environment"):
        assert setup_mlflow_environment() is False
    (record,) = caplog.records
    assert record.levelname == "WARNING"
    assert f"DATAMINT_API_URL={url!r} uses plain HTTP" in record.getMessage()
    assert "use https://" in record.getMessage() and KEY not in record.getMessage()
    assert "MLFLOW_TRACKING_URI" not in os.environ and "MLFLOW_TRACKING_AUTH" not in os.environ
    assert mlflow.get_tracking_uri() == tracking_before
    with pytest.raises(ValueError, match="uses plain HTTP"):
        ensure_mlflow_configured()

    # Pointed there by hand, MLflow talks to the server, but the key never goes along ...
    monkeypatch.setenv("MLFLOW_TRACKING_AUTH", "datamint")
    mlflow.set_tracking_uri(url)
    assert mlflow.search_experiments() == []
    # ... and the datamint:// store refuses before sending anything.
    mlflow.set_tracking_uri(url.replace("http://", "datamint://"))
    with pytest.raises(PlatformConfigError, match="uses plain HTTP"):
        mlflow.search_experiments()
    assert seen, "the recording server saw no request at all"
    assert not [headers for headers in seen if KEY in json.dumps(headers)]
    assert not [headers for headers in seen if "Authorization" in headers]


@pytest.mark.parametrize(
    "setting, value, reason",
    [
        ("DATAMINT_API_URL", "ftp://platform.example.org", "is not a URL the Datamint platform"),
        ("DATAMINT_MLFLOW_URL", "https://user:pw@mlflow.example.org", "plain base URL"),
        ("DATAMINT_PLATFORM_TIMEOUT", "soon", "'soon' is not valid; accepted: a positive number"),
    ],
)
def test_setup_returns_false_for_a_malformed_setting_and_logs_which(
    mlflow_env, monkeypatch, caplog, setting, value, reason
):
    monkeypatch.setenv("DATAMINT_API_KEY", KEY)
    monkeypatch.setenv(setting, value)
    with caplog.at_level("WARNING", logger="datamint_core.platform.environment"):
        assert setup_mlflow_environment() is False
    assert reason in caplog.text and setting in caplog.text
    assert "MLFLOW_TRACKING_URI" not in os.environ
    with pytest.raises(ValueError, match=reason):
        ensure_mlflow_configured()


def test_setup_returns_false_for_an_unreadable_config_file_and_names_it(
    mlflow_env, config_file, caplog
):
    config_file.parent.mkdir(parents=True)
    config_file.write_text("{not json")
    with caplog.at_level("WARNING", logger="datamint_core.platform.environment"):
        assert setup_mlflow_environment() is False
    assert str(config_file) in caplog.text
    assert "MLFLOW_TRACKING_URI" not in os.environ
    with pytest.raises(ValueError, match="config"):
        ensure_mlflow_configured()
