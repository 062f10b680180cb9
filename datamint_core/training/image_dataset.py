"""``ImageDataset``: a project's images and segmentation labels, read one case at a time."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, overload

from datamint_core.errors import ProjectDataError
from datamint_core.training._layout import (
    CaseFiles,
    find_project_dir,
    is_project_dir,
    list_projects,
    read_layout,
)
from datamint_core.training._volumes import TrainingCase, read_image_channels, read_label_map

#: Where a project can come from.
SOURCES = ("auto", "local", "platform")
#: Which cases of a local project: the labelled ones or the unlabelled test images.
SUBSETS = ("training", "test")


class ImageDataset(Sequence[TrainingCase]):
    """A segmentation project's cases: images (channels last), label maps and geometry.

    Nothing is read when the dataset is made but the project's description: each case's
    pixels are read when it is indexed (``dataset[i]``, ``dataset.load(case_id)``) and
    not kept, so memory follows one case, not the project. Reading needs no torch.

    Where ``project`` is found, first match wins:

    1. a path to a project directory (``dataset.json``, ``imagesTr/``, ``labelsTr/``,
       ``imagesTs/``: the Medical Segmentation Decathlon's or nnU-Net v2's raw layout;
       NIfTI files, or DICOM series directories with DICOM SEG labels);
    2. a project of that name under the projects root: ``projects_dir=``, else
       ``DATAMINT_PROJECTS_DIR``, else ``projects_dir`` in the Datamint config file
       (a directory named after the project, or whose ``dataset.json`` has that ``name``);
    3. the Datamint platform, when an API key is configured: the project's resources and
       their segmentation annotations, downloaded on first read into the cache
       (``DATAMINT_CACHE_DIR``).

    Example::

        from datamint_core.training import ImageDataset
        dataset = ImageDataset(project="Liver Segmentation")
        dataset.label_names          # ('liver', 'tumour')
        case = dataset[0]            # read now: case.image (D, H, W[, C]), case.label,
        case.spacing, case.affine    # ... and the geometry, in RAS millimetres

    Args:
        project: a project name, or a path to a project directory.
        projects_dir: the directory of local projects (beats the environment and config).
        source: ``auto`` (the order above), ``local`` or ``platform``.
        subset: ``training`` (labelled cases) or ``test`` (a local project's ``imagesTs``).
        cache_dir: where platform files are downloaded (default: the Datamint cache).

    Raises:
        ProjectNotFoundError: no such project anywhere it was looked for (the message says
            where it looked and which projects are there).
        ProjectDataError: the project is there but is not readable training data.
        ValueError: a bad ``source`` or ``subset``.
    """

    def __init__(
        self,
        project: str | os.PathLike[str],
        *,
        projects_dir: str | os.PathLike[str] | None = None,
        source: str = "auto",
        subset: str = "training",
        cache_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        if source not in SOURCES:
            raise ValueError(
                f"ImageDataset(source={source!r}) is not accepted; give one of {SOURCES}."
            )
        if subset not in SUBSETS:
            raise ValueError(
                f"ImageDataset(subset={subset!r}) is not accepted; give one of {SUBSETS}."
            )
        if not isinstance(project, (str, os.PathLike)) or not os.fspath(project).strip():
            raise ValueError(
                f"ImageDataset(project={project!r}) is not a project; give a project name or the "
                "path of a project directory."
            )
        self.subset = subset
        self._cache_dir = Path(cache_dir) if cache_dir is not None else None
        self._platform: Any = None
        self._local_cases: tuple[CaseFiles, ...] = ()
        root = None if source == "platform" else _local_root(project, projects_dir)
        if root is not None:
            layout = read_layout(root)
            self.source = "local"
            # Found by name: the name asked for (an experiment is named after it); by path:
            # the name dataset.json gives.
            by_name = not is_project_dir(Path(project).expanduser())
            self.project_name = os.fspath(project) if by_name else layout.name
            self.project_id = f"local:{layout.root}"
            self.root: Path | None = layout.root
            self.layout = layout.layout
            self.label_names = layout.label_names
            self._label_values = layout.label_values
            self.channel_names = layout.channel_names
            self._local_cases = layout.training if subset == "training" else layout.test
            self.case_ids = tuple(case.case_id for case in self._local_cases)
        elif source in ("auto", "platform") and _platform_configured():
            if subset != "training":
                raise ValueError(
                    "ImageDataset(subset='test') reads a local project's imagesTs; a platform "
                    "project's cases are its annotated resources (subset='training')."
                )
            self._init_platform(os.fspath(project))
        else:
            raise _not_found(os.fspath(project), projects_dir, source)

    def _init_platform(self, project: str) -> None:
        from datamint_core.platform.client import PlatformClient
        from datamint_core.training._platform import list_platform_project

        client = PlatformClient()
        listed = list_platform_project(project, client)
        self.source = "platform"
        self.project_name = listed.project.name
        self.project_id = listed.project.id
        self.root = None
        self.layout = "platform"
        self.label_names = listed.label_names
        self._label_values = tuple(range(1, len(listed.label_names) + 1))
        self.channel_names = ("image",)
        self.case_ids = tuple(case.case_id for case in listed.cases)
        self._platform = (client, listed)

    # -- the sequence -------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.case_ids)

    @overload
    def __getitem__(self, index: int) -> TrainingCase: ...
    @overload
    def __getitem__(self, index: slice) -> list[TrainingCase]: ...
    def __getitem__(self, index: int | slice) -> TrainingCase | list[TrainingCase]:
        """Read case ``index`` (its pixels and labels, now)."""
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if not isinstance(index, int) or isinstance(index, bool):
            raise TypeError(f"ImageDataset indices are integers, got {type(index).__name__}.")
        if not -len(self) <= index < len(self):
            raise IndexError(f"case index {index} is out of range for {len(self)} cases.")
        return self.load(self.case_ids[index])

    def __iter__(self) -> Iterator[TrainingCase]:
        for case_id in self.case_ids:
            yield self.load(case_id)

    def __repr__(self) -> str:
        return (
            f"ImageDataset(project={self.project_name!r}, source={self.source!r}, "
            f"cases={len(self)}, labels={list(self.label_names)}, "
            f"channels={list(self.channel_names)})"
        )

    def load(self, case_id: str) -> TrainingCase:
        """Read one case by id.

        Raises:
            KeyError: no case of that id (the message shows some that exist).
            ProjectDataError: the case's files cannot be read or do not agree.
        """
        if case_id not in self.case_ids:
            shown = ", ".join(repr(c) for c in self.case_ids[:5])
            raise KeyError(f"No case {case_id!r} in project {self.project_name!r}; cases: {shown}"
                           f"{' ...' if len(self) > 5 else ''}.")
        if self._platform is not None:
            return self._load_platform(case_id)
        files = self._local_cases[self.case_ids.index(case_id)]
        image, affine = read_image_channels(files.images, self.channel_names, case_id)
        label = None
        if files.label is not None:
            label = read_label_map(
                files.label, case_id=case_id, shape=image.shape[:3], affine=affine,
                label_names=self.label_names, label_values=self._label_values,
                source_series=files.images[0] if os.path.isdir(files.images[0]) else None,
            )
        return self._case(case_id, image, label, affine,
                          {"image_paths": list(files.images), "label_path": files.label})

    def _load_platform(self, case_id: str) -> TrainingCase:
        from datamint_core.artifact_cache import default_cache_dir
        from datamint_core.training._platform import download_case, label_map_from_masks

        client, listed = self._platform
        case = listed.cases[self.case_ids.index(case_id)]
        image_path, masks = download_case(
            client, listed.project, case, self._cache_dir or default_cache_dir()
        )
        image, affine = read_image_channels((str(image_path),), self.channel_names, case_id)
        label = label_map_from_masks(masks, image.shape[:3], self.label_names, case_id)
        return self._case(case_id, image, label, affine, {
            "resource_id": case_id, "filename": case.resource.get("filename"),
            "modality": case.resource.get("modality"),
            "annotation_ids": [str(a["id"]) for a in case.annotations],
        })

    def _case(self, case_id: str, image: Any, label: Any, affine: Any,
              metadata: dict[str, Any]) -> TrainingCase:
        from datamint_core.io.geometry import spacing_of

        return TrainingCase(
            case_id=case_id, image=image, label=label, spacing=spacing_of(affine),
            affine=affine, label_names=self.label_names, channel_names=self.channel_names,
            metadata={"project": self.project_name, **metadata},
        )


def projects_root(projects_dir: str | os.PathLike[str] | None = None) -> Path | None:
    """The local projects root: the argument, else ``DATAMINT_PROJECTS_DIR``, else the config
    file's ``projects_dir``; ``None`` when none is set."""
    if projects_dir is not None:
        return Path(projects_dir).expanduser()
    from datamint_core.platform.config import load_settings

    configured = load_settings().projects_dir
    return Path(configured).expanduser() if configured else None


def _local_root(
    project: str | os.PathLike[str], projects_dir: str | os.PathLike[str] | None
) -> Path | None:
    path = Path(project).expanduser()
    if is_project_dir(path):
        return path
    if isinstance(project, os.PathLike) or os.sep in os.fspath(project):
        if path.exists():
            raise ProjectDataError(
                f"{path} is not a project directory: it has no dataset.json. Accepted: the "
                "Medical Segmentation Decathlon or nnU-Net v2 raw layout (dataset.json, "
                "imagesTr/, labelsTr/, imagesTs/)."
            )
        return None
    root = projects_root(projects_dir)
    return find_project_dir(os.fspath(project), root) if root is not None else None


def _platform_configured() -> bool:
    from datamint_core.platform.config import load_settings

    return load_settings().configured


def _not_found(project: str, projects_dir: Any, source: str) -> Exception:
    from datamint_core.errors import ProjectNotFoundError

    root = projects_root(projects_dir)
    looked = []
    if source != "platform":
        if root is None:
            looked.append("no local projects root is set (projects_dir=, DATAMINT_PROJECTS_DIR "
                          "or `datamint config --projects-dir DIR`)")
        else:
            present = list_projects(root)
            looked.append(f"the local projects under {root} are: "
                          f"{', '.join(map(repr, present)) or 'none'}")
    if source != "local":
        looked.append("the Datamint platform is not configured (DATAMINT_API_KEY or "
                      "`datamint config --api-key -`)")
    return ProjectNotFoundError(
        f"No project {project!r} was found: {'; '.join(looked)}. Give the path of a project "
        "directory (dataset.json, imagesTr/, labelsTr/), or set the projects root."
    )
