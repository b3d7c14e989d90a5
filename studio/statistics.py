"""The statistics of A/B experiments (pure functions), on scipy.stats.

scipy is maintained and tested against reference values, so the distributions (Student's t,
the normal), Welch's test and the Wilson interval come from it rather than from code of our
own. scipy has no interval for the difference of two proportions, so Newcombe's is the few
lines of its formula on top of scipy's Wilson bounds, and the pooled two-proportion z-test is
its formula on scipy's normal distribution.

scipy.stats is imported in the functions that use it: importing it takes most of a second and
some 75 MB, every Django process loads this module (through the experiments' admin), and only
an experiment's report needs it.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import fmean, variance

import numpy as np

CONFIDENCE = 0.95


def z_for(confidence: float = CONFIDENCE) -> float:
    """The two-sided normal quantile of a confidence level (1.96 for 95 %)."""
    from scipy.stats import norm

    return float(norm.ppf(1 - (1 - confidence) / 2))


def wilson(events: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Wilson score interval of a proportion; (0, 1) without data."""
    from scipy.stats import binomtest

    if n <= 0:
        return (0.0, 1.0)
    interval = binomtest(events, n).proportion_ci(confidence_level=confidence, method="wilson")
    return (float(interval.low), float(interval.high))


def newcombe(
    events_a: int, n_a: int, events_b: int, n_b: int, confidence: float = CONFIDENCE
) -> tuple[float, float]:
    """Newcombe's hybrid score interval of p_b - p_a (method 10)."""
    p_a, p_b = events_a / n_a, events_b / n_b
    low_a, high_a = wilson(events_a, n_a, confidence)
    low_b, high_b = wilson(events_b, n_b, confidence)
    difference = p_b - p_a
    low = difference - math.sqrt((p_b - low_b) ** 2 + (high_a - p_a) ** 2)
    high = difference + math.sqrt((high_b - p_b) ** 2 + (p_a - low_a) ** 2)
    return (low, high)


def two_proportion_p(events_a: int, n_a: int, events_b: int, n_b: int) -> float:
    """Two-sided p-value of the pooled two-proportion z-test."""
    from scipy.stats import norm

    pooled = (events_a + events_b) / (n_a + n_b)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    if se == 0:
        return 1.0
    z = (events_b / n_b - events_a / n_a) / se
    return float(2 * norm.sf(abs(z)))


def t_quantile(p: float, df: float) -> float:
    """The p quantile of Student's t with df degrees of freedom."""
    from scipy.stats import t

    return float(t.ppf(p, df))


@dataclass(frozen=True)
class MeanDifference:
    difference: float  # mean_b - mean_a
    low: float
    high: float
    df: float
    p_value: float


def welch(a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE) -> MeanDifference:
    """Welch's t interval and two-sided p-value of mean(b) - mean(a); needs 2+ values each."""
    from scipy.stats import ttest_ind

    difference = fmean(b) - fmean(a)
    if variance(a) == 0 and variance(b) == 0:  # exact, and raises with fewer than 2 values
        # No spread at all: scipy's t statistic would be 0/0; the difference is exact.
        return MeanDifference(
            difference, difference, difference, math.inf, 1.0 if not difference else 0.0
        )
    with warnings.catch_warnings():
        # One arm without spread (every rating 5) is common: scipy then warns of "nearly
        # identical" data, but that arm's variance is 0 or a rounding error and the result holds.
        warnings.filterwarnings("ignore", "Precision loss", RuntimeWarning)
        result = ttest_ind(b, a, equal_var=False)  # b first: the interval of mean(b) - mean(a)
    interval = result.confidence_interval(confidence_level=confidence)
    return MeanDifference(
        difference,
        float(interval.low),
        float(interval.high),
        float(result.df),
        float(result.pvalue),
    )


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated percentile (q in 0..100), None without values."""
    if not values:
        return None
    return float(np.percentile(values, q))
