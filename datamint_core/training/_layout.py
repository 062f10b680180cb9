"""A project directory in the layout the field shares: the Medical Segmentation Decathlon's
and nnU-Net v2's raw layout.

::

    <project>/
        dataset.json        MSD:     {"name", "labels": {"0": "background", "1": "liver"},
                                      "modality": {"0": "CT"},
                                      "training": [{"image": "./imagesTr/liver_0.nii.gz",
                                                    "label": "./labelsTr/liver_0.nii.gz"}],
                                      "test": ["./imagesTs/liver_9.nii.gz"]}
                            nnU-Net: {"labels": {"background": 0, "liver": 1},
                                      "channel_names": {"0": "CT"}, "file_ending": ".nii.gz"}
        imagesTr/           one image per case: ``<case>.nii.gz`` (a 4-D file holds its
                            channels), ``<case>_0000.nii.gz`` ... one file per channel, or
                            ``<case>/`` (``<case>_0000/`` ...) a DICOM series directory
        labelsTr/           ``<case>.nii.gz`` label map, or ``<case>.dcm`` DICOM SEG
        imagesTs/           unlabelled cases, named as in imagesTr

Without a ``training`` list (nnU-Net), the cases are the label files in ``labelsTr``.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datamint_core.errors import ProjectDataError

#: The file a project directory is recognised by.
DATASET_FILE = "dataset.json"
_CHANNEL_SUFFIX = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


@dataclass(frozen=True)
class CaseFiles:
    """Where one case's data lies.

    Attributes:
        case_id: the case's name (its label file's name without the extension).
        images: one path per channel (a NIfTI file or a DICOM series directory); a single
            4-D NIfTI file holds all the channels.
        label: the label map (NIfTI) or DICOM SEG file; ``None`` for an unlabelled case.
    """

    case_id: str
    images: tuple[str, ...]
    label: str | None


@dataclass(frozen=True)
class ProjectLayout:
    """A project directory, read from its ``dataset.json`` and folders (no pixels read).

    Attributes:
        root: the project directory.
        name: the project's name (``dataset.json``'s ``name``, else the directory's).
        label_names: the labels, background excluded, in label-value order.
        label_values: the value of each label in the label files.
        channel_names: one name per image channel.
        training: the labelled cases (``imagesTr`` + ``labelsTr``).
        test: the unlabelled cases (``imagesTs``).
        layout: ``msd`` or ``nnunet``.
    """

    root: Path
    name: str
    label_names: tuple[str, ...]
    label_values: tuple[int, ...]
    channel_names: tuple[str, ...]
    training: tuple[CaseFiles, ...]
    test: tuple[CaseFiles, ...]
    layout: str


def is_project_dir(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a directory holding a ``dataset.json``."""
    return (Path(path) / DATASET_FILE).is_file()


def find_project_dir(name: str, projects_dir: str | os.PathLike[str]) -> Path | None:
    """The project called ``name`` under ``projects_dir``: the directory of that name, else the
    one whose ``dataset.json`` says ``"name": name``; ``None`` when there is none.

    Raises:
        ProjectDataError: several directories claim that name.
    """
    root = Path(projects_dir).expanduser()
    direct = root / name
    if is_project_dir(direct):
        return direct
    if not root.is_dir():
        return None
    claimed = []
    for child in sorted(root.iterdir()):
        if not is_project_dir(child):
            continue
        try:
            declared = json.loads((child / DATASET_FILE).read_text()).get("name")
        except (OSError, ValueError, AttributeError):
            continue
        if declared == name:
            claimed.append(child)
    if len(claimed) > 1:
        raise ProjectDataError(
            f"Several projects under {root} are named {name!r}: "
            f"{', '.join(p.name for p in claimed)}; pass the directory's path instead."
        )
    return claimed[0] if claimed else None


def list_projects(projects_dir: str | os.PathLike[str]) -> list[str]:
    """The project directories under ``projects_dir`` (their directory names)."""
    root = Path(projects_dir).expanduser()
    if not root.is_dir():
        return []
    return sorted(child.name for child in root.iterdir() if is_project_dir(child))


def read_layout(root: str | os.PathLike[str]) -> ProjectLayout:
    """Read a project directory's ``dataset.json`` and find its cases' files.

    Raises:
        ProjectDataError: no or unreadable ``dataset.json``, labels or channels that are not
            in the MSD or nnU-Net form, a listed file that is missing, a label without its
            image, or no labelled case at all.
    """
    root = Path(root).expanduser().resolve()
    description_path = root / DATASET_FILE
    try:
        description = json.loads(description_path.read_text())
    except FileNotFoundError:
        raise ProjectDataError(
            f"{root} is not a project directory: it has no {DATASET_FILE}. Accepted: the "
            "Medical Segmentation Decathlon or nnU-Net v2 raw layout (dataset.json, imagesTr/, "
            "labelsTr/, imagesTs/)."
        ) from None
    except ValueError as error:
        raise ProjectDataError(f"{description_path} is not valid JSON: {error}.") from None
    if not isinstance(description, dict):
        raise ProjectDataError(f"{description_path} must hold a JSON object.")
    layout = "nnunet" if "channel_names" in description or "file_ending" in description else "msd"
    label_names, label_values = _labels(description.get("labels"), description_path)
    channel_names = _channels(
        description.get("channel_names", description.get("modality")), description_path
    )
    file_ending = str(description.get("file_ending") or ".nii.gz")
    if "training" in description:
        training = _listed_training(description["training"], root, file_ending, description_path)
    else:
        training = _discovered(root / "labelsTr", root / "imagesTr", file_ending, labelled=True)
    if "test" in description and isinstance(description["test"], list):
        test = tuple(_listed_test(description["test"], root, file_ending, description_path))
    else:
        test = tuple(_discovered(root / "imagesTs", root / "imagesTs", file_ending, labelled=False))
    if not training:
        raise ProjectDataError(
            f"The project {root} has no labelled case: {DATASET_FILE} lists no 'training' "
            f"cases and labelsTr/ holds no '*{file_ending}' or '*.dcm' label file."
        )
    return ProjectLayout(
        root=root,
        name=str(description.get("name") or root.name),
        label_names=label_names,
        label_values=label_values,
        channel_names=channel_names,
        training=tuple(training),
        test=test,
        layout=layout,
    )


def _labels(labels: Any, where: Path) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """``(names, values)`` without the background, from either layout's ``labels``."""
    accepted = (
        'accepted: {"0": "background", "1": "liver"} (MSD) or {"background": 0, "liver": 1} '
        "(nnU-Net)"
    )
    if not isinstance(labels, dict) or not labels:
        raise ProjectDataError(f"{where} has no 'labels' object; {accepted}.")
    pairs: list[tuple[int, str]] = []
    for key, value in labels.items():
        if isinstance(value, bool):
            raise ProjectDataError(f"{where}: label {key!r}: {value!r} is not a label; {accepted}.")
        if isinstance(value, int):
            pairs.append((value, str(key)))
        elif isinstance(value, str) and str(key).strip().isdigit():
            pairs.append((int(key), value))
        elif isinstance(value, list):
            raise ProjectDataError(
                f"{where}: label {key!r} is an nnU-Net region ({value}); region-based labels "
                f"are not supported, give one value per label; {accepted}."
            )
        else:
            raise ProjectDataError(f"{where}: label {key!r}: {value!r} is not a label; {accepted}.")
    values = [value for value, _ in pairs]
    if len(set(values)) != len(values) or any(v < 0 for v in values):
        raise ProjectDataError(
            f"{where}: label values must be distinct and non-negative, got {sorted(values)}."
        )
    foreground = sorted((v, n) for v, n in pairs if v != 0)
    if not foreground:
        raise ProjectDataError(f"{where}: 'labels' names no label besides the background.")
    return tuple(n for _, n in foreground), tuple(v for v, _ in foreground)


def _channels(channels: Any, where: Path) -> tuple[str, ...]:
    if channels is None:
        return ("image",)
    if not isinstance(channels, dict) or not channels or not all(
        str(k).strip().isdigit() for k in channels
    ):
        raise ProjectDataError(
            f"{where}: 'channel_names' (or 'modality') must map channel numbers to names, "
            f'such as {{"0": "T2", "1": "ADC"}}; got {channels!r}.'
        )
    ordered = sorted((int(k), str(v)) for k, v in channels.items())
    if [k for k, _ in ordered] != list(range(len(ordered))):
        raise ProjectDataError(
            f"{where}: the channels must be numbered 0, 1, 2, ...; got {[k for k, _ in ordered]}."
        )
    return tuple(v for _, v in ordered)


def _strip(name: str, file_ending: str) -> str:
    for ending in (file_ending, ".nii.gz", ".nii", ".dcm"):
        if ending and name.endswith(ending):
            return name[: -len(ending)]
    return name


def _channel_files(folder: Path, case_id: str, file_ending: str) -> tuple[str, ...]:
    """``<case>_0000<ending>``, ``<case>_0001<ending>``, ... (or such series directories)."""
    found = []
    for channel in range(10_000):
        stem = folder / f"{case_id}_{channel:04d}"
        candidates = [Path(f"{stem}{file_ending}"), stem]
        existing = next((c for c in candidates if c.exists()), None)
        if existing is None:
            break
        found.append(str(existing))
    return tuple(found)


def _image_files(folder: Path, case_id: str, file_ending: str) -> tuple[str, ...]:
    channels = _channel_files(folder, case_id, file_ending)
    if channels:
        return channels
    for candidate in (folder / f"{case_id}{file_ending}", folder / f"{case_id}.nii.gz",
                      folder / f"{case_id}.nii", folder / case_id):
        if candidate.exists():
            return (str(candidate),)
    return ()


def _listed_training(
    entries: Any, root: Path, file_ending: str, where: Path
) -> list[CaseFiles]:
    if not isinstance(entries, list):
        raise ProjectDataError(f"{where}: 'training' must be a list of {{image, label}} objects.")
    cases = []
    for number, entry in enumerate(entries):
        if not isinstance(entry, dict) or not entry.get("image") or not entry.get("label"):
            raise ProjectDataError(
                f"{where}: training[{number}] = {entry!r} is not an object with 'image' and "
                "'label' paths."
            )
        label = (root / entry["label"]).resolve()
        if not label.exists():
            raise ProjectDataError(
                f"{where}: training[{number}] names the label {entry['label']!r}, which is not "
                f"in {root}."
            )
        image = (root / entry["image"]).resolve()
        case_id = _strip(label.name, file_ending)
        if image.exists():
            images: tuple[str, ...] = (str(image),)
        else:
            # nnU-Net v1 / converted MSD: the list names the case, the files carry _0000.
            images = _channel_files(image.parent, _strip(image.name, file_ending), file_ending)
        if not images:
            raise ProjectDataError(
                f"{where}: training[{number}] names the image {entry['image']!r}, which is not "
                f"in {root} (nor as per-channel files '{_strip(image.name, file_ending)}_0000"
                f"{file_ending}', ...)."
            )
        cases.append(CaseFiles(case_id, images, str(label)))
    return cases


def _listed_test(entries: list[Any], root: Path, file_ending: str, where: Path) -> list[CaseFiles]:
    cases = []
    for entry in entries:
        path = entry.get("image") if isinstance(entry, dict) else entry
        if not isinstance(path, str):
            continue
        image = (root / path).resolve()
        case_id = _strip(image.name, file_ending)
        images = (str(image),) if image.exists() else _channel_files(
            image.parent, case_id, file_ending
        )
        if images:
            cases.append(CaseFiles(case_id, images, None))
    return cases


def _discovered(
    listing: Path, images: Path, file_ending: str, *, labelled: bool
) -> list[CaseFiles]:
    if not listing.is_dir():
        return []
    case_ids: list[str] = []
    for entry in sorted(listing.iterdir()):
        if entry.name.startswith("."):
            continue
        if labelled and not entry.name.endswith((file_ending, ".dcm")):
            continue
        case_id = _strip(entry.name, file_ending)
        if not labelled:
            match = _CHANNEL_SUFFIX.match(case_id)
            case_id = match.group("case") if match else case_id
        if case_id not in case_ids:
            case_ids.append(case_id)
    cases = []
    for case_id in case_ids:
        files = _image_files(images, case_id, file_ending)
        if not files:
            if labelled:
                raise ProjectDataError(
                    f"The label of case {case_id!r} in {listing} has no image in {images}: "
                    f"expected {case_id}_0000{file_ending} (one file per channel), "
                    f"{case_id}{file_ending} or a DICOM series directory {case_id}/."
                )
            continue
        label = None
        if labelled:
            label = next(
                str(p) for p in (listing / f"{case_id}{file_ending}", listing / f"{case_id}.dcm")
                if p.exists()
            )
        cases.append(CaseFiles(case_id, files, label))
    return cases
