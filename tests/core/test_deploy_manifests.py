"""The README's KServe and Seldon manifests: their YAML shape, and that they name our runtime.

They cannot be applied here (no cluster); this checks what a typo would break.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from datamint_core.serving.dockerfile import MLSERVER_IMPLEMENTATION

README = Path(__file__).resolve().parents[2] / "README.md"


def _section() -> str:
    text = README.read_text()
    start = text.index("### MLServer, KServe and Seldon")
    return text[start : text.index("\n## ", start)]


def _documents() -> dict[str, dict]:
    blocks = re.findall(r"```yaml\n(.*?)```", _section(), re.S)
    documents = [doc for block in blocks for doc in yaml.safe_load_all(block)]
    by_kind = {doc["kind"]: doc for doc in documents}
    assert len(by_kind) == len(documents) == 4, [doc["kind"] for doc in documents]
    return by_kind


def test_the_kserve_manifests_name_the_datamint_runtime():
    docs = _documents()
    runtime, service = docs["ServingRuntime"], docs["InferenceService"]
    assert runtime["apiVersion"] == "serving.kserve.io/v1alpha1"
    assert service["apiVersion"] == "serving.kserve.io/v1beta1"
    (container,) = runtime["spec"]["containers"]
    env = {item["name"]: item["value"] for item in container["env"]}
    assert env["MLSERVER_MODEL_IMPLEMENTATION"] == MLSERVER_IMPLEMENTATION
    assert env["MLSERVER_PARALLEL_WORKERS"] == "0"
    assert "v2" in runtime["spec"]["protocolVersions"]
    model = service["spec"]["predictor"]["model"]
    assert model["runtime"] == runtime["metadata"]["name"]
    assert model["modelFormat"]["name"] in {
        fmt["name"] for fmt in runtime["spec"]["supportedModelFormats"]
    }
    assert model["protocolVersion"] == "v2" and model["storageUri"]


def test_the_seldon_manifests_schedule_the_model_on_the_datamint_server():
    docs = _documents()
    server, model = docs["Server"], docs["Model"]
    assert server["apiVersion"] == model["apiVersion"] == "mlops.seldon.io/v1alpha1"
    assert server["spec"]["serverConfig"] == "mlserver"
    assert set(model["spec"]["requirements"]) <= set(server["spec"]["capabilities"])
    assert model["spec"]["storageUri"]
    (settings_block,) = re.findall(r"```json\n(\{\"name\".*?)```", _section(), re.S)
    settings = json.loads(settings_block)
    assert settings["implementation"] == MLSERVER_IMPLEMENTATION
    assert settings["name"] == model["metadata"]["name"]


def test_the_runtime_the_manifests_name_exists():
    module, _, name = MLSERVER_IMPLEMENTATION.rpartition(".")
    source = Path(__file__).resolve().parents[2] / (module.replace(".", "/") + ".py")
    assert f"class {name}(" in source.read_text()
