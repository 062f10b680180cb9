"""The sliding-window bridge against MONAI's ``sliding_window_inference``, the reference."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from datamint_core import (
    ModelSettings,
    SegmentationAnnotation,
    VolumeResource,
    load_model,
    save_model,
)
from datamint_core.sliding_window import SlidingWindow, iter_blended_slabs, run_sliding_window
from datamint_torch import DatamintModel, TorchPatchArrays
from datamint_torch.sliding_window import first_argmax

monai_nets = pytest.importorskip("monai.networks.nets", reason="the reference needs monai")
from monai.inferers import sliding_window_inference  # noqa: E402


@pytest.fixture(autouse=True)
def one_torch_thread():
    """One intra-op thread: the shared CI machine has two cores and many test processes."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def seeded_unet(out_channels: int, in_channels: int = 1) -> torch.nn.Module:
    torch.manual_seed(0)
    return monai_nets.UNet(
        spatial_dims=3, in_channels=in_channels, out_channels=out_channels,
        channels=(4, 8), strides=(2,), num_res_units=1,
    ).eval()


class UNetSegmenter(DatamintModel):
    """A MONAI UNet behind a patch handler; the window comes from the settings."""

    def predict_patch(self, patches):
        return self.torch_model(patches)


def monai_reference(net, volume: np.ndarray, window: SlidingWindow) -> torch.Tensor:
    """MONAI's blended scores ``(K, D, H, W)`` for a channel-last or plain volume."""
    tensor = torch.from_numpy(volume)
    tensor = tensor.permute(3, 0, 1, 2)[None] if volume.ndim == 4 else tensor[None, None]
    with torch.inference_mode():
        return sliding_window_inference(
            tensor.float(), window.roi_size, window.sw_batch_size, net,
            overlap=window.overlap, mode=window.blend_mode, sigma_scale=window.sigma_scale,
            padding_mode=window.padding_mode, cval=window.padding_value,
        )[0]


def blended_scores(net, volume: np.ndarray, window: SlidingWindow) -> np.ndarray:
    with torch.inference_mode():
        slabs = [
            scores.cpu().numpy().copy()
            for _, _, scores in iter_blended_slabs(volume, net, window, TorchPatchArrays("cpu"))
        ]
    return np.concatenate(slabs, axis=1)


def label_map(annotations, shape, classes: int) -> np.ndarray:
    labels = np.zeros(shape, dtype=np.int64)
    for annotation in annotations:
        assert isinstance(annotation, SegmentationAnnotation)
        labels[annotation.mask] = int(annotation.identifier.removeprefix("class_"))
    assert all(int(a.identifier.removeprefix("class_")) < classes for a in annotations)
    return labels


@pytest.mark.parametrize("blend_mode", ["constant", "gaussian"])
@pytest.mark.parametrize("overlap", [0.0, 0.25, 0.5])
@pytest.mark.parametrize(
    ("shape", "roi_size"),
    [((13, 29, 22), (8, 16, 16)), ((7, 13, 11), (16, 16, 8))],  # the second pads d and h
    ids=["tiled", "smaller-than-the-window"],
)
def test_scores_and_labels_equal_monais_sliding_window_inference(
    blend_mode, overlap, shape, roi_size
):
    net = seeded_unet(3)
    volume = np.random.default_rng(1).normal(size=shape).astype(np.float32)
    settings = {"roi_size": list(roi_size), "overlap": overlap, "sw_batch_size": 3,
                "blend_mode": blend_mode, "sigma_scale": 0.2}
    model = UNetSegmenter(settings=ModelSettings(sliding_window=settings), torch_model=net)
    window = model.router.sliding_window()
    reference = monai_reference(net, volume, window)

    np.testing.assert_allclose(blended_scores(net, volume, window), reference.numpy(), atol=1e-4)
    (annotations,) = model.predict([VolumeResource(volume)], {"mode": "volume"})
    np.testing.assert_array_equal(label_map(annotations, shape, 3), reference.argmax(0).numpy())


@pytest.mark.parametrize("padding_mode", ["replicate", "reflect", "circular"])
def test_border_padding_modes_equal_monais(padding_mode):
    net = seeded_unet(2)
    volume = np.random.default_rng(2).normal(size=(9, 12, 20)).astype(np.float32)
    window = SlidingWindow(roi_size=(12, 16, 8), overlap=0.25, padding_mode=padding_mode)
    np.testing.assert_allclose(
        blended_scores(net, volume, window), monai_reference(net, volume, window).numpy(),
        atol=1e-4,
    )


def test_a_channel_last_volume_equals_monai_on_the_channel_first_tensor():
    net = seeded_unet(2, in_channels=4)
    volume = np.random.default_rng(3).normal(size=(10, 20, 18, 4)).astype(np.float32)
    window = SlidingWindow(roi_size=(8, 8, 8), overlap=0.5, sw_batch_size=4,
                           blend_mode="gaussian")
    reference = monai_reference(net, volume, window)

    np.testing.assert_allclose(blended_scores(net, volume, window), reference.numpy(), atol=1e-4)
    with torch.inference_mode():
        labels = run_sliding_window(volume, net, window, TorchPatchArrays("cpu"))
    np.testing.assert_array_equal(labels, reference.argmax(0).numpy())


def test_an_int16_ct_volume_is_cut_without_a_float_copy_and_equals_monai():
    net = seeded_unet(2)
    volume = np.random.default_rng(4).integers(-1024, 2000, size=(12, 24, 20), dtype=np.int16)
    window = SlidingWindow(roi_size=(8, 16, 16), overlap=0.25)
    reference = monai_reference(net, volume, window)
    with torch.inference_mode():
        labels = run_sliding_window(volume, net, window, TorchPatchArrays("cpu"))
    np.testing.assert_array_equal(labels, reference.argmax(0).numpy())


def test_a_saved_unet_segmenter_predicts_the_same_volume_after_loading(tmp_path):
    net = seeded_unet(3)
    settings = {"roi_size": [8, 8, 8], "overlap": 0.5, "blend_mode": "gaussian"}
    model = UNetSegmenter(settings={"sliding_window": settings}, torch_model=net)
    volume = VolumeResource(np.random.default_rng(5).normal(size=(11, 14, 9)).astype(np.float32))
    expected = model.predict([volume], {"mode": "volume"})

    save_model(model, tmp_path / "m")
    assert load_model(tmp_path / "m").predict([volume], {"mode": "volume"}) == expected


# -- memory -------------------------------------------------------------------------------

_PEAK_OF_ONE_RUN = """
import numpy as np, torch
from datamint_core.sliding_window import SlidingWindow, run_sliding_window
from datamint_torch import TorchPatchArrays

torch.set_num_threads(1)
torch.manual_seed(0)
net = torch.nn.Conv3d(1, {classes}, kernel_size=1).eval()  # a class map at no cost
volume = np.random.default_rng(6).normal(size=(256, 96, 96)).astype(np.float32)
window = SlidingWindow(roi_size=(16, 48, 48), overlap=0.25, sw_batch_size=2)


def status_bytes(field):
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith(field + ":"))
    return int(line.split()[1]) * 1024


with open("/proc/self/clear_refs", "w") as clear:
    clear.write("5")  # reset the peak resident size (VmHWM) to the current one
before = status_bytes("VmRSS")
with torch.inference_mode():
    labels = run_sliding_window(volume, net, window, TorchPatchArrays("cpu"))
print(status_bytes("VmHWM") - before - labels.nbytes)
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="reads Linux's VmHWM")
def test_a_14_class_models_aggregation_peak_memory_does_not_grow_with_the_class_count(
    run_python,
):
    # Each in a fresh process, so that no allocator cache of one run hides the other's peak,
    # and every buffer of 64 KiB or more mapped on its own, so that freeing it gives it back.
    env = {"MALLOC_MMAP_THRESHOLD_": str(64 * 1024)}
    peaks = {
        classes: int(run_python(_PEAK_OF_ONE_RUN.format(classes=classes), env=env))
        for classes in (2, 14)
    }

    growth_per_class = (peaks[14] - peaks[2]) / 12
    volume_bytes = 256 * 96 * 96 * 4  # what MONAI keeps per class: a float32 volume
    slab_bytes = 16 * 96 * 96 * 4  # one class of the slab: roi_d planes
    # a class costs its share of the slab, of a patch batch's output and of their
    # temporaries (about three slabs' worth here) ...
    assert growth_per_class < 4 * slab_bytes, peaks
    # ... never a volume's worth
    assert growth_per_class < volume_bytes / 4, peaks


@pytest.mark.parametrize("value", [-1, 3])
def test_torch_label_patches_outside_the_declared_classes_are_refused_as_the_numpy_ones_are(
    value,
):
    from datamint_core import PatchResultError

    window = SlidingWindow(roi_size=4, class_names=("background", "liver", "tumour"))
    volume = np.zeros((5, 5, 5), np.float32)
    with pytest.raises(PatchResultError, match="accepted: class indices 0 to 2"):
        run_sliding_window(
            volume, lambda p: torch.full((len(p), 4, 4, 4), value), window, TorchPatchArrays()
        )


@settings(max_examples=200, deadline=None)
@given(
    scores=arrays(
        np.float32,
        st.tuples(st.integers(1, 6), st.integers(1, 3), st.integers(1, 5), st.integers(1, 5)),
        # Few distinct values: ties everywhere; infinities and NaN among them.
        elements=st.sampled_from([-1.0, 0.0, 0.5, 2.0, np.inf, -np.inf, np.nan]),
    ),
    crop=st.booleans(),
)
def test_the_class_by_class_argmax_gives_torchs_argmax_labels_ties_and_nan_included(
    scores: np.ndarray, crop: bool
):
    tensor = torch.from_numpy(scores)
    if crop:  # the cropped, non-contiguous view a padded slab hands over
        tensor = tensor[:, :, 1:, :-1]
    for dtype in (torch.uint8, torch.int32):
        np.testing.assert_array_equal(
            first_argmax(tensor, dtype).numpy(), tensor.argmax(dim=0).to(dtype).numpy()
        )

