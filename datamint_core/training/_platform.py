"""A Datamint platform project as training data: its resources and segmentation annotations.

Listing the project reads descriptors only (see :mod:`datamint_core.platform.client` for
the API). A case's files are downloaded the first time it is read, into the cache::

    <cache_dir>/training/<project id>/<resource id>/<filename>           the image
    <cache_dir>/training/<project id>/<resource id>/<annotation id>.<ext>  each mask

written under a temporary name and renamed into place, so a reader never sees half a file.
A segmentation annotation's file is a NIfTI volume mask, or a PNG mask of one slice (its
``frame_index``); the label names are the annotations' ``identifier``s, sorted.
"""

from __future__ import annotations

import os
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from datamint_core._files import write_atomically
from datamint_core.errors import ProjectDataError
from datamint_core.platform.client import PlatformClient
from datamint_core.platform.projects import Project, resolve_project


@dataclass(frozen=True)
class PlatformCase:
    """One resource of a platform project and its segmentation annotations (descriptors)."""

    case_id: str
    resource: dict[str, Any]
    annotations: tuple[dict[str, Any], ...]


@dataclass(frozen=True)
class PlatformProject:
    """A platform project's labelled resources, listed (nothing downloaded)."""

    project: Project
    label_names: tuple[str, ...]
    cases: tuple[PlatformCase, ...]
    unlabelled: int


def list_platform_project(project: str, client: PlatformClient) -> PlatformProject:
    """List the project's resources and their segmentation annotations.

    Raises:
        ProjectNotFoundError: the platform has no such project.
        ProjectDataError: the project has no resource with a segmentation annotation.
    """
    resolved = resolve_project(project, client)
    resources = client.list_project_resources(resolved.name)
    annotations = client.search_annotations([str(r["id"]) for r in resources])
    by_resource: dict[str, list[dict[str, Any]]] = {}
    for annotation in annotations:
        if annotation.get("type", "segmentation") == "segmentation":
            by_resource.setdefault(str(annotation.get("resource_id")), []).append(annotation)
    cases = tuple(
        PlatformCase(str(r["id"]), r, tuple(by_resource[str(r["id"])]))
        for r in resources
        if str(r["id"]) in by_resource
    )
    if not cases:
        raise ProjectDataError(
            f"The Datamint project {resolved.name!r} has {len(resources)} resource(s) and none "
            "with a segmentation annotation; annotate some (or upload segmentations) first."
        )
    names = sorted({str(a.get("identifier")) for case in cases for a in case.annotations})
    return PlatformProject(resolved, tuple(names), cases, len(resources) - len(cases))


def fetch(client: PlatformClient, api_path: str, target: Path) -> Path:
    """Download ``api_path`` into ``target`` unless it is there already; return ``target``.

    Raises:
        ProjectDataError: the platform has no such file (404).
    """
    if target.is_file():
        return target
    data = client.download(api_path)
    if data is None:
        raise ProjectDataError(f"The Datamint platform has no file at {api_path} (HTTP 404).")
    return write_atomically(target, data)


def _safe_name(name: str, fallback: str) -> str:
    base = os.path.basename(name or "")
    return base if base and base not in (".", "..") else fallback


def download_case(
    client: PlatformClient, project: Project, case: PlatformCase, cache_dir: Path
) -> tuple[Path, list[tuple[dict[str, Any], Path]]]:
    """Download a case's image and mask files; return their local paths."""
    folder = cache_dir / "training" / _safe_name(project.id, "project") / _safe_name(
        case.case_id, "resource"
    )
    resource_id = urllib.parse.quote(case.case_id, safe="")
    filename = _safe_name(str(case.resource.get("filename") or ""), "image")
    image = fetch(client, f"resources/{resource_id}/file", folder / filename)
    masks = []
    for annotation in case.annotations:
        annotation_id = str(annotation["id"])
        suffix = ".png" if annotation.get("frame_index") is not None else ".nii.gz"
        path = fetch(
            client,
            f"annotations/{resource_id}/annotations/{urllib.parse.quote(annotation_id, safe='')}"
            "/file",
            folder / "annotations" / f"{_safe_name(annotation_id, 'mask')}{suffix}",
        )
        masks.append((annotation, path))
    return image, masks


def label_map_from_masks(
    masks: list[tuple[dict[str, Any], Path]], shape: tuple[int, ...],
    label_names: tuple[str, ...], case_id: str,
) -> np.ndarray:
    """Merge binary masks (volume NIfTI, or a PNG per slice) into one ``(D, H, W)`` label map.

    Raises:
        ProjectDataError: a mask that does not fit the image, naming the annotation.
    """
    from datamint_core.io._read import decode_path

    labels = np.zeros(shape, dtype=np.uint8 if len(label_names) < 256 else np.uint16)
    for annotation, path in masks:
        index = label_names.index(str(annotation.get("identifier"))) + 1
        frame = annotation.get("frame_index")
        try:
            pixels = decode_path(str(path)).pixels
        except Exception as error:
            raise ProjectDataError(
                f"Case {case_id!r}: annotation {annotation['id']} ({annotation.get('identifier')!r}"
                f"): cannot read its mask file: {error}"
            ) from None
        if pixels.ndim == 3 and pixels.shape[-1] in (3, 4) and frame is not None:
            pixels = pixels[..., 0]
        target = labels if frame is None else (
            labels[int(frame)] if 0 <= int(frame) < shape[0] else None
        )
        if target is None or pixels.shape != target.shape:
            raise ProjectDataError(
                f"Case {case_id!r}: annotation {annotation['id']} "
                f"({annotation.get('identifier')!r}) has a mask of shape {pixels.shape} "
                f"(frame {frame}), which does not fit the image of shape {tuple(shape)}."
            )
        target[pixels > 0] = index
    return labels
