"""datamint_lightning: the ``[lightning]`` extra (MLflow checkpointing, dataset lineage).

Importing it without Lightning fails at once with the command that installs it.
"""

try:
    import lightning  # noqa: F401
except ImportError:
    raise ImportError(
        "datamint_lightning needs Lightning, which is not installed; run: "
        "pip install \"datamint[lightning]\""
    ) from None

raise ImportError(
    "datamint_lightning is not built yet in this version of datamint (tracked in issue #6)."
)
