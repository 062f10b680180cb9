"""Training data: a segmentation project's images and labels, read lazily, with no torch.

A project is a directory in the Medical Segmentation Decathlon / nnU-Net v2 raw layout
(found by path, or by name under ``DATAMINT_PROJECTS_DIR``), or a Datamint platform project
when the platform is configured. See :class:`ImageDataset`.
"""

from datamint_core.errors import ProjectDataError
from datamint_core.training._volumes import TrainingCase
from datamint_core.training.image_dataset import ImageDataset, projects_root

__all__ = ["ImageDataset", "ProjectDataError", "TrainingCase", "projects_root"]
