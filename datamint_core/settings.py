"""Deployment settings saved with a model and read by whatever serves it."""

from __future__ import annotations

import dataclasses
from typing import Any

from datamint_core.sliding_window import check_partial_window


@dataclasses.dataclass(frozen=True)
class ModelSettings:
    """Deployment and inference configuration for a Datamint model.

    Serialized into the MLmodel ``datamint`` block so that a server can prepare the right
    runtime before it loads the model.

    Args:
        need_gpu: the model needs a GPU to run at a useful speed. Loading it on a machine
            without one warns; it does not fail.
        sliding_window: the sliding window ``volume`` mode runs the model's patch handler
            over, as a dict of :class:`~datamint_core.sliding_window.SlidingWindow`
            settings (``{"roi_size": [96, 96, 96], "overlap": 0.5}``); it updates what the
            handler's ``@patch_handler`` declares.
        max_batch_size: how many inputs (resources) one ``predict`` call can take at once;
            a server that batches (the MLServer runtime, see
            :mod:`datamint_core.serving.batching`) coalesces concurrent requests up to it.
            ``None`` (the default): requests are never batched together.
    """

    need_gpu: bool = False
    sliding_window: dict[str, Any] | None = dataclasses.field(default=None, hash=False)
    max_batch_size: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.need_gpu, bool):
            raise TypeError(f"ModelSettings.need_gpu must be True or False, got {self.need_gpu!r}.")
        if self.max_batch_size is not None and (
            not isinstance(self.max_batch_size, int)
            or isinstance(self.max_batch_size, bool)
            or self.max_batch_size < 1
        ):
            raise ValueError(
                "ModelSettings.max_batch_size must be an integer >= 1 (inputs one predict call "
                f"takes) or None, got {self.max_batch_size!r}."
            )
        if self.sliding_window is not None:
            object.__setattr__(self, "sliding_window", check_partial_window(self.sliding_window))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSettings:
        """Build settings from a dict, refusing keys that are not settings.

        Raises:
            ValueError: ``data`` holds unknown keys; the message names them and the valid ones.
        """
        if not isinstance(data, dict):
            raise TypeError(f"ModelSettings.from_dict expects a dict, got {type(data).__name__}.")
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"Unknown ModelSettings key(s): {', '.join(map(repr, unknown))}; "
                f"valid keys are: {', '.join(map(repr, sorted(known)))}."
            )
        return cls(**data)

    @classmethod
    def coerce(cls, settings: ModelSettings | dict[str, Any] | None) -> ModelSettings:
        """Accept settings as an instance, a dict (validated) or ``None`` (defaults)."""
        if settings is None:
            return cls()
        if isinstance(settings, cls):
            return settings
        if isinstance(settings, dict):
            return cls.from_dict(settings)
        raise TypeError(
            f"settings must be a ModelSettings, a dict or None, got {type(settings).__name__}."
        )

    def to_dict(self) -> dict[str, Any]:
        """Return the settings as a JSON-ready dict (optional settings left unset omitted)."""
        data = dataclasses.asdict(self)
        if data["sliding_window"] is None:
            del data["sliding_window"]
        if data["max_batch_size"] is None:
            del data["max_batch_size"]
        return data
