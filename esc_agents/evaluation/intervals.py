"""A success rate's 95% interval that stays honest on few cases."""

from __future__ import annotations

import math


def wilson_interval(successes: float, n: int, z: float = 1.96) -> list[float] | None:
    """Wilson score interval: unlike a bootstrap or normal interval it stays open at SR = 0 or 1
    on few cases (10 of 10 gives [0.72, 1.0], not [1.0, 1.0]). None for no case."""
    if n == 0:
        return None
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [max(0.0, centre - half), min(1.0, centre + half)]
