"""``datamint predict`` of a CT series with a 3-D UNet through the sliding-window bridge, vs
the same pipeline written by hand (SimpleITK + MONAI ``sliding_window_inference`` + nibabel).

The series (default 300 slices of 512x512 int16) is written with pydicom from the header of
pydicom's ``CT_small.dcm`` (``bench/dicom_read.py``'s writer: positions along the slice
normal, shuffled file names). The network is MONAI's ``UNet`` (3-D, 1 -> 2 channels, seeded),
window 64x128x128, overlap 0.25, patch batch 2, constant blending.

- datamint: ``datamint predict -m MODEL -i SERIES -o labels.nii.gz --mode volume`` in a fresh
  process, the model saved with ``save_model`` (``bench/_torch_models.UNetPatchSegmenter``,
  whose ``predict_patch`` calls the UNet);
- by hand: a fresh process that reads the series with SimpleITK's ``ImageSeriesReader``, runs
  ``sliding_window_inference`` on the float32 tensor, takes the ``argmax`` as uint8 and writes
  it with nibabel with the series' affine (LPS turned to RAS).

Both outputs are checked equal (voxels, in RAS). Per run: wall time of the whole process,
its peak resident set (``ru_maxrss`` from ``wait4``) and minor page faults. Runs alternate;
medians and ratios. One more run of each with a forward hook on the UNet says how long the
network itself ran in each process, with how many torch threads, on what input.

Targets (issue #18 (a)): wall time <= 1.05x, peak RSS <= 1.0x.

Run: ``.venv/full/bin/python bench/sliding_window_predict.py [--slices 300] [--runs 3]``
(``--slices 96`` for a quick look on a busy machine).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent
ROI = (64, 128, 128)
OVERLAP = 0.25
SW_BATCH_SIZE = 2

_BUILD_UNET = """
def build_unet():
    import torch
    from monai.networks.nets import UNet

    torch.manual_seed(0)
    return UNet(spatial_dims=3, in_channels=1, out_channels=2, channels=(8, 16),
                strides=(2,), num_res_units=0).eval()
"""

_BY_HAND = _BUILD_UNET + """
import sys
import nibabel
import numpy as np
import SimpleITK as sitk
import torch
from monai.inferers import sliding_window_inference

series_dir, weights, output = sys.argv[1:4]
reader = sitk.ImageSeriesReader()
reader.SetFileNames(reader.GetGDCMSeriesFileNames(series_dir))
image = reader.Execute()
volume = sitk.GetArrayViewFromImage(image)  # (D, H, W), a view of the image
net = build_unet()
net.load_state_dict(torch.load(weights, weights_only=True))
with torch.inference_mode():
    inputs = torch.from_numpy(np.asarray(volume, dtype=np.float32))[None, None]
    scores = sliding_window_inference(inputs, {roi}, {sw_batch_size}, net, overlap={overlap})
    labels = scores[0].argmax(0).to(torch.uint8).numpy()
del scores, inputs
# (i, j, k) = (W, H, D) in LPS millimetres, turned to RAS for NIfTI
direction = np.array(image.GetDirection()).reshape(3, 3)
affine = np.eye(4)
affine[:3, :3] = direction * np.array(image.GetSpacing())
affine[:3, 3] = image.GetOrigin()
affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine
nibabel.Nifti1Image(labels.transpose(2, 1, 0), affine).to_filename(output)
"""

# A forward hook on the UNet (installed before anything else runs) and, at exit, what the
# network saw: its time, the torch threads, the input's dtype and layout, the env.
_NETWORK_PROBE = """
import atexit, json, os, resource, time
import torch

_seen = {"network_seconds": 0.0, "calls": 0}


def _before(module, inputs):
    if type(module).__name__ == "UNet":
        _seen["start"] = time.perf_counter()
        _seen["input"] = [str(inputs[0].dtype), inputs[0].is_contiguous(), list(inputs[0].shape)]


def _after(module, inputs, output):
    if type(module).__name__ == "UNet":
        _seen["network_seconds"] += time.perf_counter() - _seen.pop("start")
        _seen["calls"] += 1


torch.nn.modules.module.register_module_forward_pre_hook(_before)
torch.nn.modules.module.register_module_forward_hook(_after)


@atexit.register
def _report():
    _seen["torch_threads"] = torch.get_num_threads()
    _seen["interop_threads"] = torch.get_num_interop_threads()
    _seen["minor_faults"] = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    _seen["env"] = {k: v for k, v in os.environ.items()
                    if k.startswith(("OMP_", "MKL_", "OPENBLAS", "MALLOC", "KMP_"))}
    with open(os.environ["BENCH_PROBE_OUT"], "w") as out:
        json.dump(_seen, out)
"""


def run_process(command: list[str], env: dict[str, str]) -> dict[str, float]:
    """Run ``command``; return its wall seconds, peak RSS (MiB) and minor page faults."""
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    stderr = process.stderr.read().decode() if process.stderr else ""
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"{command[:3]} failed ({process.returncode}):\n{stderr[-3000:]}")
    return {"seconds": seconds, "rss": usage.ru_maxrss / 1024, "minflt": usage.ru_minflt}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    sys.path.insert(0, str(BENCH))
    import nibabel
    import numpy as np
    import torch
    from _common import Summary, print_header, print_ratio, print_table
    from _torch_models import UNetPatchSegmenter
    from dicom_read import write_series

    from datamint_core import ModelSettings, save_model

    print_header(
        f"datamint predict of a {args.slices}x512x512 CT series, 3-D UNet over a "
        f"{'x'.join(map(str, ROI))} window (overlap {OVERLAP}), vs SimpleITK + MONAI + nibabel"
    )
    work = Path(tempfile.mkdtemp(prefix="datamint-bench-window-"))
    try:
        series = work / "series"
        series.mkdir()
        write_series(series, args.slices)
        namespace: dict = {}
        exec(_BUILD_UNET, namespace)
        net = namespace["build_unet"]()
        torch.save(net.state_dict(), work / "unet.pt")
        window = {"roi_size": list(ROI), "overlap": OVERLAP, "sw_batch_size": SW_BATCH_SIZE}
        model = UNetPatchSegmenter(settings=ModelSettings(sliding_window=window),
                                   torch_model=net)
        save_model(model, work / "model")
        del model, net

        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(BENCH)])}
        by_hand = _BY_HAND.format(roi=ROI, sw_batch_size=SW_BATCH_SIZE, overlap=OVERLAP)
        commands = {
            "datamint predict": [sys.executable, "-c", "from datamint_core.cli import main; "
                                 "raise SystemExit(main())", "predict", "-m",
                                 str(work / "model"), "-i", str(series), "-o",
                                 str(work / "datamint.nii.gz"), "--mode", "volume"],
            "by hand": [sys.executable, "-c", by_hand, str(series), str(work / "unet.pt"),
                        str(work / "by_hand.nii.gz")],
        }
        results: dict[str, list[dict[str, float]]] = {name: [] for name in commands}
        for _ in range(args.runs):
            for name, command in commands.items():
                results[name].append(run_process(command, env))

        ours, theirs = (nibabel.as_closest_canonical(nibabel.load(work / name))
                        for name in ("datamint.nii.gz", "by_hand.nii.gz"))
        same_voxels = np.array_equal(np.asarray(ours.dataobj), np.asarray(theirs.dataobj))
        same_affine = np.allclose(ours.affine, theirs.affine, atol=1e-3)
        print(f"label maps equal: {same_voxels}; affines equal: {same_affine}\n")

        print_table([(f"{name} wall", Summary.of([r["seconds"] for r in runs]))
                     for name, runs in results.items()], "s")
        print_table([(f"{name} peak RSS", Summary.of([r["rss"] for r in runs]))
                     for name, runs in results.items()], "MiB", digits=0)
        print_table([(f"{name} minor faults", Summary.of([r["minflt"] / 1000 for r in runs]))
                     for name, runs in results.items()], "thousands", digits=0)
        print()
        pair = [[r[key] for r in results[name]] for key in ("seconds", "rss")
                for name in commands]
        print_ratio("wall time, datamint predict / by hand", pair[0], pair[1], target=1.05)
        print_ratio("peak RSS, datamint predict / by hand", pair[2], pair[3], target=1.0)

        print("\nthe network inside each process (one more run each, forward hook on the UNet):")
        for name, command in commands.items():
            probe_out = work / "probe.json"
            probed = [command[0], "-c", _NETWORK_PROBE + "\n" + command[2], *command[3:]]
            run_process(probed, {**env, "BENCH_PROBE_OUT": str(probe_out)})
            seen = json.loads(probe_out.read_text())
            print(f"  {name:<17} network {seen['network_seconds']:7.2f} s in {seen['calls']} "
                  f"calls, input {seen.get('input')}, torch threads {seen['torch_threads']} "
                  f"(inter-op {seen['interop_threads']}), minor faults "
                  f"{seen['minor_faults'] / 1000:.0f}k, env {seen['env']}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
