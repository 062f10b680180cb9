"""The torch suite runs only where torch is installed (the full environment)."""

import pytest

pytest.importorskip("torch", reason="the torch suite needs the [torch] extra")
