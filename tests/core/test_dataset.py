"""DatamintMLflowDataset (in the core: pure mlflow.data): digest, source, profile, schema."""

from __future__ import annotations

import json

import numpy as np
import pytest
from mlflow.data.dataset_source_registry import get_dataset_source_from_json

from datamint_core import (
    DatamintDatasetSource,
    DatamintMLflowDataset,
    ImageResource,
    VolumeResource,
)


def resources() -> list:
    return [
        ImageResource(np.zeros((4, 4), np.float32), id="a", modality="CR"),
        VolumeResource(np.ones((2, 4, 4), np.float32), id="b", modality="CT"),
        VolumeResource(np.full((2, 4, 4), 2, np.float32), id="c", modality="CT"),
    ]


def dataset(items, **kwargs) -> DatamintMLflowDataset:
    return DatamintMLflowDataset("proj-1", "Liver", "train", items, **kwargs)


def test_the_digest_ignores_order_and_changes_with_any_change_of_content():
    base = dataset(resources()).digest
    assert len(base) == 16
    assert dataset(resources()[::-1]).digest == base

    edited = resources()
    edited[1] = VolumeResource(np.ones((2, 4, 4), np.float32) * 1.001, id="b", modality="CT")
    relabelled = resources()
    relabelled[0].modality = "DX"
    changes = [
        resources()[:2],  # one removed
        [*resources(), ImageResource(np.zeros((4, 4)), id="d")],  # one added
        edited,  # pixels edited
        relabelled,  # descriptor edited
    ]
    digests = {dataset(items).digest for items in changes}
    digests |= {dataset(resources(), extra_params={"spacing": 1.0}).digest}
    digests |= {DatamintMLflowDataset("proj-2", "Liver", "train", resources()).digest}
    assert base not in digests and len(digests) == 6


def test_a_file_backed_resource_digests_the_same_loaded_or_not(tmp_path):
    np.save(tmp_path / "v.npy", np.ones((2, 4, 4), np.float32))
    cold = VolumeResource(path=tmp_path / "v.npy", id="v")
    warm = VolumeResource(path=tmp_path / "v.npy", id="v")
    warm.pixels
    assert dataset([cold]).digest == dataset([warm]).digest
    assert not cold.is_loaded


def test_ids_only_profile_schema_and_source_round_trip():
    ids = DatamintMLflowDataset("proj-1", "Liver", "val", ["r2", "r1"], {"fold": 3})
    assert ids.name == "Liver/val"
    assert (
        ids.digest
        == DatamintMLflowDataset("proj-1", "Liver", "val", ["r1", "r2"], {"fold": 3}).digest
    )
    assert ids.profile == {"num_resources": 2, "kinds": {"id_only": 2}, "modalities": {}}
    assert [c.name for c in ids.schema.inputs] == ["id"]

    full = dataset(resources())
    assert full.profile == {
        "num_resources": 3,
        "kinds": {"image": 1, "volume": 2},
        "modalities": {"CR": 1, "CT": 2},
    }
    assert [c.name for c in full.schema.inputs] == [
        "id",
        "kind",
        "modality",
        "filename",
        "mimetype",
    ]

    source = get_dataset_source_from_json(ids.source.to_json(), source_type="datamint")
    assert isinstance(source, DatamintDatasetSource) and source == ids.source
    assert source.load() == ["r1", "r2"]
    assert source.to_dict() == {
        "project_id": "proj-1",
        "project_name": "Liver",
        "split": "val",
        "resource_ids": ["r1", "r2"],
        "extra_params": {"fold": 3},
    }
    config = ids.to_dict()
    assert (
        config["source_type"] == "datamint" and json.loads(config["profile"])["num_resources"] == 2
    )


def test_bad_input_is_refused_with_what_is_accepted():
    with pytest.raises(ValueError, match="project_id='' is not valid; give a non-empty string"):
        DatamintMLflowDataset("", "Liver", "train", [])
    with pytest.raises(
        TypeError, match=r"resource ids \(str\) or datamint_core resources; got int"
    ):
        DatamintMLflowDataset("p", "Liver", "train", ["a", 3])
    with pytest.raises(ValueError, match="1 resource\\(s\\) have no id"):
        DatamintMLflowDataset("p", "Liver", "train", [ImageResource(np.zeros((2, 2)))])
    with pytest.raises(TypeError, match="extra_params must be JSON-ready"):
        DatamintMLflowDataset("p", "Liver", "train", ["a"], {"when": object()})
