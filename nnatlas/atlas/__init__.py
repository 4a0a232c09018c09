"""The atlas: a static website generated from the code (``nnatlas atlas build``).

>>> from nnatlas.atlas import build  # doctest: +SKIP
>>> build("site", lang="both").pages  # doctest: +SKIP
"""

from nnatlas.atlas.build import BuildResult, build, read_run
from nnatlas.atlas.cli import add_atlas_parser

__all__ = ["BuildResult", "add_atlas_parser", "build", "read_run"]
