"""Peak memory of writing a clinical-size case's masks: NIfTI label map and DICOM SEG.

A ``SLICES`` x ``SIZE`` x ``SIZE`` CT series (pydicom's ``CT_small.dcm`` header) and
``LABELS`` volume masks (ellipsoids, one per label); ``write_nifti`` and ``write_dicom_seg``
are each measured with ``tracemalloc`` after a warm-up write (imports and highdicom's
tables of the standard are loaded once per process, not per case). The peak is shown
against the voxel count: the one ``uint8`` label map both writers build is 1.0x; a dense
per-label copy would add 1.0x per label (the masks themselves are the model's output and
exist before the writer runs).

Run: ``.venv/full/bin/python bench/mask_writers.py [SLICES SIZE LABELS]`` (300 512 14)
"""

from __future__ import annotations

import sys
import tempfile
import time
import tracemalloc
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def main() -> None:
    import numpy as np

    from datamint_core import AnnotationScope, SegmentationAnnotation
    from datamint_core.io import read
    from datamint_core.io.writers import write_dicom_seg, write_nifti
    from tests.core.dicom_files import write_series

    warnings.simplefilter("ignore")
    depth, size, labels = (int(v) for v in (sys.argv[1:4] if len(sys.argv) > 3 else (300, 512, 14)))
    work = Path(tempfile.mkdtemp(prefix="datamint-bench-masks-"))
    write_series(work / "series", depth, size=size)
    write_series(work / "warm", 2, size=16)

    def masks(depth: int, size: int) -> list:
        z, y, x = np.ogrid[:depth, :size, :size]
        return [
            SegmentationAnnotation(
                f"label-{i}",
                ((z - depth / 2) / (depth / 3)) ** 2
                + ((y - size / 2 - i * size // 32) ** 2 + (x - size / 2) ** 2) / (size / 4) ** 2
                <= 1,
                scope=AnnotationScope.VOLUME,
            )
            for i in range(labels)
        ]

    write_dicom_seg(masks(2, 16), work / "warm.dcm", source=work / "warm")
    write_nifti(masks(2, 16), work / "warm.nii.gz", source=read(work / "warm"))
    volume, found = read(work / "series"), masks(depth, size)
    voxels = depth * size * size
    print(
        f"masks of a {depth}x{size}x{size} case, {labels} labels ({voxels / 2**20:.0f} Mi voxels)"
    )
    for name, write in (
        ("NIfTI label map", lambda: write_nifti(found, work / "m.nii.gz", source=volume)),
        ("DICOM SEG", lambda: write_dicom_seg(found, work / "m.dcm", source=work / "series")),
    ):
        tracemalloc.start()
        started = time.perf_counter()
        write()
        seconds = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        print(
            f"{name}: peak {peak / 2**20:.0f} MiB = {peak / voxels:.2f}x the voxel count, "
            f"{seconds:.1f} s"
        )


if __name__ == "__main__":
    main()
