"""Hypothesis profiles for the fuzzing suite.

``ci`` (the default): few examples per target, derandomised (the same examples on every run,
so CI is reproducible), the whole suite well under a minute on two cores. ``long``
(``NNATLAS_FUZZ=long``): many examples, random seeds, for hunting; run it before a release::

    NNATLAS_FUZZ=long .venv/bin/python -m pytest -q tests/fuzz -p no:randomly --hypothesis-show-statistics
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

_COMMON = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
           "print_blob": True}
settings.register_profile("ci", max_examples=8, derandomize=True, **_COMMON)
settings.register_profile("long", max_examples=int(os.environ.get("NNATLAS_FUZZ_EXAMPLES", "400")), **_COMMON)
settings.load_profile("long" if os.environ.get("NNATLAS_FUZZ") == "long" else "ci")


def long_profile() -> bool:
    """Whether the long profile runs (tests scale their own loops with it)."""
    return os.environ.get("NNATLAS_FUZZ") == "long"
