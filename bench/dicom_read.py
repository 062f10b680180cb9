"""Reading a 240-slice DICOM series: ``datamint_core.io.read`` vs SimpleITK's series reader.

The series is written with pydicom from the header of pydicom's own ``CT_small.dcm``:
240 slices of 512x512 int16 (RescaleIntercept -1024), files named and numbered in shuffled
order, into a temporary directory. Both readers start from the directory and end with the
voxels in a numpy array ordered along the slice normal: ours is ``read(dir).pixels``;
SimpleITK's is ``ImageSeriesReader`` on ``GetGDCMSeriesFileNames(dir)`` (its own
position sort), then ``GetArrayViewFromImage`` (no copy). 9 runs each, interleaved, after
one warm-up run of each (the files are in the page cache for both).

Memory (Linux): each reader reads the series once in a fresh process; the growth of the
process's peak resident set (VmHWM) over its peak before reading is shown beside the
volume's own size (one contiguous volume means a growth of about 1x).

Anchor: SimpleITK. Target (issue #11): <= 1.2x.

Run: ``.venv/core/bin/python bench/dicom_read.py``
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

N_RUNS = 9
SLICES = 240
SIZE = 512
REPO = Path(__file__).resolve().parent.parent

# Peak resident set from /proc (VmHWM, reset at exec); ru_maxrss would carry the parent's.
_MEMORY_PROBE = """
import sys, warnings
warnings.simplefilter("ignore")
def peak():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
import numpy as np
reader = sys.argv[1]
if reader == "datamint":
    from datamint_core.io import read
    import pydicom
else:
    import SimpleITK as sitk
before = peak()
if reader == "datamint":
    volume = read(sys.argv[2]).pixels
else:
    series = sitk.ImageSeriesReader()
    series.SetFileNames(series.GetGDCMSeriesFileNames(sys.argv[2]))
    image = series.Execute()
    volume = sitk.GetArrayViewFromImage(image)  # a view: image stays alive below
print(peak() - before, volume.nbytes)
"""


def write_series(directory: Path, slices: int = SLICES) -> None:
    import numpy as np
    import pydicom
    import pydicom.data
    from pydicom.uid import generate_uid

    source = pydicom.dcmread(pydicom.data.get_testdata_file("CT_small.dcm"))
    rng = np.random.default_rng(0)
    series_uid = generate_uid()
    numbers = rng.permutation(slices)
    _, y, x = np.ogrid[:1, :SIZE, :SIZE]
    for index in range(slices):
        dataset = source.copy()
        dataset.Rows = dataset.Columns = SIZE
        dataset.SeriesInstanceUID = series_uid
        dataset.SOPInstanceUID = generate_uid()
        dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
        dataset.InstanceNumber = int(numbers[index]) + 1
        dataset.ImagePositionPatient = [-160.0, -160.0, -300.0 + 1.25 * index]
        disc = ((y - 256) ** 2 + (x - 256) ** 2) < (150 - abs(index - slices // 2)) ** 2
        pixels = rng.integers(-30, 30, (SIZE, SIZE)) + 1000 + 200 * disc[0]
        dataset.PixelData = pixels.astype(np.int16).tobytes()
        dataset.save_as(directory / f"IM{int(numbers[index]):05d}", enforce_file_format=True)


def main() -> None:
    warnings.simplefilter("ignore")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import numpy as np
    import SimpleITK as sitk
    from _common import Summary, print_header, print_ratio, print_table

    from datamint_core.io import read

    def ours(directory: str) -> np.ndarray:
        return read(directory).pixels

    def simpleitk(directory: str) -> sitk.Image:
        series = sitk.ImageSeriesReader()
        series.SetFileNames(series.GetGDCMSeriesFileNames(directory))
        image = series.Execute()
        sitk.GetArrayViewFromImage(image)  # the voxels as numpy, no copy (a view of image)
        return image

    print_header(f"Read a {SLICES}-slice {SIZE}x{SIZE} DICOM series: datamint vs SimpleITK")
    work = Path(tempfile.mkdtemp(prefix="datamint-bench-dicom-"))
    try:
        write_series(work)
        directory = str(work)
        mine, theirs = ours(directory), sitk.GetArrayFromImage(simpleitk(directory))
        assert np.array_equal(mine, theirs), "the two readers disagree on the voxels"
        del mine, theirs
        timings: dict[str, list[float]] = {"datamint read": [], "SimpleITK series": []}
        for _ in range(N_RUNS):
            for label, reader in (("datamint read", ours), ("SimpleITK series", simpleitk)):
                started = time.perf_counter()
                reader(directory)
                timings[label].append((time.perf_counter() - started) * 1000)
        print_table([(label, Summary.of(values)) for label, values in timings.items()], "ms")
        print_ratio(
            "datamint / SimpleITK",
            timings["datamint read"],
            timings["SimpleITK series"],
            target=1.2,
        )
        print()
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        for reader in ("datamint", "simpleitk"):
            output = subprocess.run(
                [sys.executable, "-c", _MEMORY_PROBE, reader, directory],
                capture_output=True, text=True, env=env, check=True,
            ).stdout.split()
            growth, volume = int(output[0]), int(output[1])
            print(
                f"peak memory growth, {reader:<9}: {growth / 2**20:7.1f} MiB for a "
                f"{volume / 2**20:.1f} MiB volume ({growth / volume:.2f}x the volume)"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
