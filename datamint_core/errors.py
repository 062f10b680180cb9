"""Errors a user can catch, below every module that raises them.

Each is exported from :mod:`datamint_core`. (Issue 17 item 3 gathers the library's other
public errors here.)
"""

from __future__ import annotations


class ResourceError(ValueError):
    """A resource could not be built or its pixel data could not be read."""
