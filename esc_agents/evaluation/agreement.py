"""Agreement between raters on categorical labels: Krippendorff's alpha among any number of
annotators (the maintained `krippendorff` package) and Cohen's kappa between two raters."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np


def krippendorff_alpha(ratings: Sequence[Sequence[str | None]], categories: Sequence[str]) -> float | None:
    """`ratings[r][i]`: rater r's label of item i, None where missing. Nominal level."""
    import krippendorff

    codes = {label: index for index, label in enumerate(categories)}
    matrix = np.array([[np.nan if label is None else codes[label] for label in rater] for rater in ratings], dtype=float)
    pairable = (~np.isnan(matrix)).sum(axis=0) >= 2
    if len(ratings) < 2 or not pairable.any() or len(np.unique(matrix[:, pairable][~np.isnan(matrix[:, pairable])])) < 2:
        return None
    return float(krippendorff.alpha(reliability_data=matrix, level_of_measurement="nominal"))


def cohen_kappa(a: Sequence[str], b: Sequence[str]) -> float | None:
    """(p_observed - p_chance) / (1 - p_chance) over items both raters labelled."""
    if len(a) != len(b) or not a:
        return None
    observed = float(np.mean([x == y for x, y in zip(a, b)]))
    count_a, count_b, n = Counter(a), Counter(b), len(a)
    chance = sum(count_a[label] * count_b[label] for label in count_a) / (n * n)
    if chance == 1.0:
        return None
    return (observed - chance) / (1 - chance)
