"""datamint_torch: the ``[torch]`` extra (device detection, ``DatamintModel`` with torch modules).

Importing it without torch fails at once with the command that installs it.
"""

try:
    import torch  # noqa: F401
except ImportError:
    raise ImportError(
        "datamint_torch needs PyTorch, which is not installed; run: pip install \"datamint[torch]\""
    ) from None

raise ImportError(
    "datamint_torch is not built yet in this version of datamint (tracked in issue #4); "
    "use datamint_core.BaseDatamintModel for numpy models."
)
