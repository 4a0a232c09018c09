"""The inspector's tests share one helper: ``svg_warnings(dot_text)`` renders with Graphviz's dot."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable

import pytest


def _svg_warnings(dot_text: str) -> str:
    """Render ``dot_text`` to SVG; return what dot wrote on stderr (warnings), failing on a bad exit."""
    done = subprocess.run(["dot", "-Tsvg", "-o", "/dev/null"], input=dot_text.encode(), capture_output=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr.decode()
    return done.stderr.decode()


@pytest.fixture
def svg_warnings() -> Callable[[str], str]:
    if shutil.which("dot") is None:
        pytest.skip("Graphviz's dot is not installed (apt-get install graphviz)")
    return _svg_warnings
