"""Statistics of paired oversight experiments.

Binomial intervals and the exact McNemar test, Newcombe's paired score interval, a cluster
(scenario) bootstrap, a sign-flip permutation test, multiplicity adjustment, and
`compute_findings`, which turns a table of trials into the findings of a scenario, a family
and a model. Everything is a pure function: the random generator and the confidence level
are always arguments.
"""

from deceptwatch.stats._binomial import (
    Interval,
    mcnemar_exact,
    newcombe_paired_interval,
    wilson_interval,
)
from deceptwatch.stats._bootstrap import cluster_bootstrap_interval
from deceptwatch.stats._findings import ConditionRate, Finding, compute_findings
from deceptwatch.stats._multiplicity import benjamini_hochberg, holm
from deceptwatch.stats._permutation import sign_flip_test
from deceptwatch.stats._table import TrialTable

__all__ = [
    "ConditionRate",
    "Finding",
    "Interval",
    "TrialTable",
    "benjamini_hochberg",
    "cluster_bootstrap_interval",
    "compute_findings",
    "holm",
    "mcnemar_exact",
    "newcombe_paired_interval",
    "sign_flip_test",
    "wilson_interval",
]
