"""The serving pieces in process: the FlavorBackend, the server config, the model lock."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from mlflow.exceptions import MlflowException

from datamint_core import BaseDatamintModel, CategoryAnnotation, save_model
from datamint_core.serving import DatamintBackend, ServerConfig
from datamint_core.serving.config import parse_size
from datamint_core.serving.dockerfile import needs_torch
from tests.core.sample_models import MeanClassifier, ThresholdSegmenter


@pytest.fixture
def model_path(tmp_path: Path) -> Path:
    path = tmp_path / "segmenter"
    save_model(ThresholdSegmenter(), path)
    return path


def _docker_engine_runs() -> bool:
    docker = shutil.which("docker")
    return (
        docker is not None and subprocess.run([docker, "info"], capture_output=True).returncode == 0
    )


@pytest.mark.skipif(_docker_engine_runs(), reason="a Docker engine runs here")
def test_build_image_without_a_docker_engine_says_to_use_generate_dockerfile(model_path):
    with pytest.raises(MlflowException) as raised:
        DatamintBackend({}).build_image(str(model_path), "liver-seg:1")

    message = raised.value.message
    assert "no Docker engine is running here" in message
    assert f"datamint generate-dockerfile -m {model_path} -o DIR" in message
    assert "docker build -t liver-seg:1 DIR" in message


@pytest.mark.skipif(
    importlib.util.find_spec("mlserver") is not None, reason="MLServer is installed here"
)
def test_serving_with_mlserver_without_the_extra_names_it(model_path):
    with pytest.raises(MlflowException, match=r'pip install "datamint\[mlserver\]"'):
        DatamintBackend({}).serve(str(model_path), 8080, "127.0.0.1", 60, enable_mlserver=True)


def test_generate_dockerfile_with_mlserver_serves_the_datamint_runtime(tmp_path):
    import json

    from datamint_core import ModelSettings

    batched = tmp_path / "liver-seg"
    save_model(ThresholdSegmenter(settings=ModelSettings(max_batch_size=8)), batched)
    context = tmp_path / "image"
    DatamintBackend({}).generate_dockerfile(str(batched), str(context), enable_mlserver=True)

    settings = json.loads((context / "model-settings.json").read_text())
    assert settings == {
        "name": "liver-seg",
        "implementation": "datamint_core.serving.mlserver_runtime.DatamintRuntime",
        "parameters": {"uri": "/opt/datamint/model"},
        "max_batch_size": 8,
        "max_batch_time": 0.01,
    }
    dockerfile = (context / "Dockerfile").read_text()
    assert 'CMD ["mlserver", "start", "/opt/datamint"]' in dockerfile
    assert "COPY --chown=datamint:datamint model-settings.json /opt/datamint/" in dockerfile
    assert '"mlserver>=1.7,<1.8"' in dockerfile and "MLSERVER_PARALLEL_WORKERS=0" in dockerfile
    assert (context / "model" / "MLmodel").is_file()


def test_a_model_without_a_batch_size_gets_no_batching_settings(model_path, tmp_path):
    import json

    backend = DatamintBackend({})
    backend.generate_dockerfile(str(model_path), str(tmp_path / "c"), enable_mlserver=True)
    settings = json.loads((tmp_path / "c" / "model-settings.json").read_text())
    assert "max_batch_size" not in settings and "max_batch_time" not in settings


def test_options_that_do_not_apply_to_the_image_are_refused_by_name(model_path, tmp_path):
    with pytest.raises(MlflowException, match=r"\['install_java'\] not supported"):
        DatamintBackend({}).generate_dockerfile(str(model_path), str(tmp_path), install_java=True)


def test_a_numpy_model_can_be_scored_here(model_path):
    from mlflow.models import Model

    config = Model.load(str(model_path)).flavors["datamint"]

    assert DatamintBackend(config).can_score_model() is True


@pytest.mark.both_envs
def test_a_torch_model_can_be_scored_only_where_torch_is_installed(caplog):
    backend = DatamintBackend({"model_class": "datamint_torch.model.DatamintModel"})
    torch_installed = importlib.util.find_spec("torch") is not None

    assert backend.can_score_model() is torch_installed
    if not torch_installed:
        assert 'pip install "datamint[torch]"' in caplog.text


def test_prepare_env_finds_nothing_missing_for_a_model_saved_here(model_path):
    assert DatamintBackend({}).prepare_env(str(model_path)) == []


def test_prepare_env_checks_nothing_for_a_model_saved_without_requirements(model_path):
    (model_path / "requirements.txt").unlink()
    assert DatamintBackend({}).prepare_env(str(model_path)) == []


def test_prepare_env_of_a_missing_model_says_so_instead_of_checking_nothing(tmp_path):
    with pytest.raises(MlflowException):
        DatamintBackend({}).prepare_env(str(tmp_path / "no-model-here"))


def test_prepare_env_names_a_missing_requirement_and_the_command_that_installs_it(model_path):
    requirements = model_path / "requirements.txt"
    requirements.write_text(requirements.read_text() + "\nno-such-package-for-datamint==1.0\n")

    with pytest.raises(MlflowException) as raised:
        DatamintBackend({}).prepare_env(str(model_path))

    assert "['no-such-package-for-datamint==1.0']" in raised.value.message
    assert 'pip install "no-such-package-for-datamint==1.0"' in raised.value.message


def test_backend_predict_reads_an_npz_with_one_resource_per_array(model_path, tmp_path):
    import json

    pixels = np.random.default_rng(0).random((3, 16, 16)).astype(np.float32)
    np.savez(tmp_path / "batch.npz", left=pixels[0], right=pixels[1])
    output = tmp_path / "out.json"

    DatamintBackend({}).predict(str(model_path), str(tmp_path / "batch.npz"), str(output), "npz")

    predictions = json.loads(output.read_text())["predictions"]
    assert len(predictions) == 2
    assert [p[0]["identifier"] for p in predictions] == ["bright", "bright"]
    assert not list(tmp_path.glob(".*.incomplete"))


def test_backend_predict_writes_its_output_atomically_into_a_new_directory(model_path, tmp_path):
    np.save(tmp_path / "image.npy", np.ones((8, 8), np.float32))
    output = tmp_path / "results" / "out.json"
    output.parent.mkdir()
    output.write_text("the previous answer")

    with pytest.raises(MlflowException):
        DatamintBackend({}).predict(str(model_path), str(tmp_path / "image.npy"), str(output), "x")
    assert output.read_text() == "the previous answer"

    DatamintBackend({}).predict(str(model_path), str(tmp_path / "image.npy"), str(output), "npy")
    assert output.read_text().startswith('{"predictions"')
    assert [p.name for p in output.parent.iterdir()] == ["out.json"]


def test_backend_predict_refuses_an_unknown_content_type(model_path):
    with pytest.raises(MlflowException, match=r"content_type='csv' is not supported"):
        DatamintBackend({}).predict(str(model_path), None, None, "csv")


@pytest.mark.parametrize(
    ("requirements", "expected"),
    [
        ("datamint==0.1.0\nnumpy==2.0\n", False),
        ("datamint[torch]==0.1.0\nnumpy==2.0\n", True),
        ("datamint==0.1.0\ntorch==2.13.0\n", True),
    ],
)
def test_the_image_needs_torch_only_when_the_requirements_ask_for_it(requirements, expected):
    assert needs_torch(requirements) is expected


def test_explicit_server_settings_beat_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("DATAMINT_SERVE_MAX_REQUEST_SIZE", "1K")
    monkeypatch.setenv("DATAMINT_SERVE_REQUEST_TIMEOUT", "5")
    monkeypatch.setenv("DATAMINT_SERVE_ALLOW_PATH_DIRS", str(tmp_path))

    from_env = ServerConfig.resolve()
    explicit = ServerConfig.resolve(max_request_size="2M", request_timeout=7, allow_path_dirs=[])

    assert from_env == ServerConfig(1024, 5.0, (str(tmp_path.resolve()),))
    assert explicit == ServerConfig(2 * 1024**2, 7.0, ())


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"max_request_size": "lots"}, "max_request_size='lots' is not valid; accepted: a byte"),
        ({"request_timeout": 0}, "request_timeout=0 is not valid; accepted: a positive number"),
        ({"max_slices": "many"}, "max_slices='many' is not valid; accepted: a positive integer"),
        ({"allow_path_dirs": ["/no/such/dir"]}, "'/no/such/dir', which is not an existing"),
    ],
)
def test_bad_server_settings_are_refused_with_what_is_accepted(setting, message):
    with pytest.raises(ValueError, match=message):
        ServerConfig.resolve(**setting)


def test_sizes_read_with_binary_units():
    assert [parse_size(s) for s in ("100", "512K", "1.5M", "1G", 7)] == [
        100,
        512 * 1024,
        int(1.5 * 1024**2),
        1024**3,
        7,
    ]


class _SlowClassifier(MeanClassifier):
    inside = 0
    most_inside = 0

    def predict_default(self, model_input, **kwargs):
        cls = type(self)
        cls.inside += 1
        cls.most_inside = max(cls.most_inside, cls.inside)
        time.sleep(0.05)
        cls.inside -= 1
        return [[CategoryAnnotation("brightness", "dark")] for _ in model_input]


class _ThreadSafeSlowClassifier(_SlowClassifier):
    thread_safe = True
    inside = 0
    most_inside = 0


@pytest.mark.parametrize(
    ("model_class", "most_inside"), [(_SlowClassifier, 1), (_ThreadSafeSlowClassifier, 4)]
)
def test_the_model_is_entered_by_one_thread_at_a_time_unless_it_says_it_is_thread_safe(
    model_class: type[BaseDatamintModel], most_inside: int
):
    from datamint_core import ImageResource
    from datamint_core.serving.app import ServedModel

    served = ServedModel(model_class(), {})
    image = [ImageResource(np.zeros((4, 4)))]
    threads = [threading.Thread(target=served.predict, args=(image, {})) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert model_class.most_inside == most_inside


class _SlicedClassifier(MeanClassifier):
    """Runs 200 'slices' of 20 ms, checking the request's deadline between them."""

    ended_by_deadline: list[bool] = []

    def predict_default(self, model_input, **kwargs):
        from datamint_core import RequestDeadlineExceeded
        from datamint_core._limits import check_deadline

        try:
            for _ in range(200):
                check_deadline()
                time.sleep(0.02)
        except RequestDeadlineExceeded:
            type(self).ended_by_deadline.append(True)
            raise
        type(self).ended_by_deadline.append(False)
        return [[CategoryAnnotation("brightness", "dark")] for _ in model_input]


def test_a_batched_request_past_its_deadline_stops_the_model_at_the_next_slice():
    import asyncio

    from datamint_core import ImageResource, ModelSettings, RequestDeadlineExceeded
    from datamint_core._limits import RequestLimits, applying
    from datamint_core.serving.app import ServedModel

    _SlicedClassifier.ended_by_deadline.clear()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    served = ServedModel(_SlicedClassifier(settings=ModelSettings(max_batch_size=4)), {})
    served.enable_batching(loop, RequestLimits())
    try:
        with pytest.raises(RequestDeadlineExceeded):
            with applying(RequestLimits(deadline=time.monotonic() + 0.3)):
                served.predict([ImageResource(np.zeros((4, 4)))], {})
        ran = time.monotonic()
        while not _SlicedClassifier.ended_by_deadline and time.monotonic() - ran < 10:
            time.sleep(0.02)
        # Without the request's deadline the batch would run all 200 slices (4 s) and end.
        assert _SlicedClassifier.ended_by_deadline[:1] == [True]
    finally:
        asyncio.run_coroutine_threadsafe(served.batcher.close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def _ticks_during(work) -> tuple[int, object]:
    """Run ``work()`` while another thread ticks every millisecond; return how many ticks it
    got in while ``work`` ran, and ``work``'s result.

    A C call that holds the GIL (one ``json.dumps``) lets no tick in until it returns;
    work that returns to the interpreter between pieces hands the GIL over at each of them.
    Counting ticks, not timing the gaps between them, keeps this true on a loaded machine,
    where the whole process may be descheduled for longer than any piece takes."""
    ticks: list[float] = []
    ticking = threading.Event()
    done = threading.Event()

    def tick() -> None:
        ticking.set()
        while not done.is_set():
            ticks.append(time.perf_counter())
            time.sleep(0.001)

    ticker = threading.Thread(target=tick)
    ticker.start()
    ticking.wait()
    time.sleep(0.01)
    try:
        start = time.perf_counter()
        result = work()
        end = time.perf_counter()
    finally:
        done.set()
        ticker.join()
    return sum(start < t < end for t in ticks), result


def test_an_answer_with_millions_of_mask_runs_is_written_without_holding_other_threads_off():
    import json

    from datamint_core import AnnotationScope, SegmentationAnnotation
    from datamint_core.serving.payload import predictions_to_json

    mask = np.random.default_rng(0).random((64, 256, 256)) > 0.5  # about 2 million runs
    result = [[SegmentationAnnotation("noise", mask, scope=AnnotationScope.VOLUME)]]
    forms = {"predictions": [[annotation.to_dict() for annotation in result[0]]]}
    runs = len(forms["predictions"][0][0]["mask"]["rle"])
    assert runs > 1_500_000
    # One json.dumps call of the same runs: other threads (a server's event loop) wait it out.
    whole_ticks, expected = _ticks_during(lambda: json.dumps(forms, separators=(",", ":")))
    ticks, body = _ticks_during(lambda: predictions_to_json(result))
    assert body == expected.encode()
    # The runs go out 65536 at a time: other threads get the GIL between those pieces (about
    # 170 ticks against 1-8 for the one call, measured with four busy processes on 2 cores).
    assert ticks >= (runs // 65536) // 4, (ticks, runs // 65536)
    assert ticks > 4 * max(whole_ticks, 2), (ticks, whole_ticks)


def test_serve_workers_get_a_supervisor_healthcheck_long_enough_for_a_busy_node():
    # uvicorn kills a worker that leaves its supervisor's ping unanswered for 5 s by default:
    # on a loaded node a worker importing MLflow and loading its model misses that and is
    # replaced in a loop that never serves (seen in CI at load 19 on 2 cores).
    import uvicorn

    from datamint_core.cli import WORKER_HEALTHCHECK_TIMEOUT_S, _worker_healthcheck_option

    option = _worker_healthcheck_option(uvicorn.run)
    assert option == {"timeout_worker_healthcheck": WORKER_HEALTHCHECK_TIMEOUT_S}
    assert WORKER_HEALTHCHECK_TIMEOUT_S >= 30
    config = uvicorn.Config("datamint_core.serving.app:create_app_from_env", **option)
    assert config.timeout_worker_healthcheck == WORKER_HEALTHCHECK_TIMEOUT_S

    def older_run(app, *, host="127.0.0.1", port=8000, workers=None):  # uvicorn before 0.30
        pass

    assert _worker_healthcheck_option(older_run) == {}
