"""Statistics of paired oversight experiments.

Binomial intervals, the exact McNemar test and the one-sided scheming-pattern test,
Newcombe's paired score interval, a cluster (scenario) bootstrap, a sign-flip permutation
test, logistic models (the family-level gap model with scenario clusters, and dose-response
on graded audit levels), multiplicity adjustment, power planning, a comparison of two
models' gaps, and `compute_findings`, which turns a table of trials into the findings of a
scenario, a family and a model. Everything is a pure function returning frozen results:
the random generator and the confidence level are always arguments.
"""

from deceptwatch.stats._binomial import (
    Interval,
    SchemingTest,
    mcnemar_exact,
    newcombe_paired_interval,
    scheming_test,
    wilson_interval,
)
from deceptwatch.stats._bootstrap import (
    cluster_bootstrap_difference_interval,
    cluster_bootstrap_interval,
)
from deceptwatch.stats._compare import GapComparison, compare_gaps
from deceptwatch.stats._findings import compute_findings
from deceptwatch.stats._logistic import (
    ClusterLogit,
    DoseResponse,
    cluster_logit_gap,
    dose_response,
    fieller_interval,
)
from deceptwatch.stats._multiplicity import (
    BENJAMINI_HOCHBERG,
    HOLM,
    MULTIPLICITY_METHODS,
    adjust,
    benjamini_hochberg,
    holm,
    multiplicity_method,
)
from deceptwatch.stats._permutation import sign_flip_test
from deceptwatch.stats._power import (
    PowerPlan,
    mcnemar_exact_power,
    min_scenarios,
    plan_pairs,
)
from deceptwatch.stats._result import (
    ConditionRate,
    Finding,
    adjust_findings,
    beyond_placebo,
    bound_points,
    depends_on_oversight,
    jsonable,
    percent,
    rules_out_sentence,
)
from deceptwatch.stats._runsize import RunSizeCheck, check_run_size
from deceptwatch.stats._simulate import simulate_table
from deceptwatch.stats._table import TrialTable

__all__ = [
    "BENJAMINI_HOCHBERG",
    "HOLM",
    "MULTIPLICITY_METHODS",
    "ClusterLogit",
    "ConditionRate",
    "DoseResponse",
    "Finding",
    "GapComparison",
    "Interval",
    "PowerPlan",
    "RunSizeCheck",
    "SchemingTest",
    "TrialTable",
    "adjust",
    "adjust_findings",
    "benjamini_hochberg",
    "beyond_placebo",
    "bound_points",
    "check_run_size",
    "cluster_bootstrap_difference_interval",
    "cluster_bootstrap_interval",
    "cluster_logit_gap",
    "compare_gaps",
    "compute_findings",
    "depends_on_oversight",
    "dose_response",
    "fieller_interval",
    "holm",
    "jsonable",
    "mcnemar_exact",
    "mcnemar_exact_power",
    "min_scenarios",
    "multiplicity_method",
    "newcombe_paired_interval",
    "percent",
    "plan_pairs",
    "rules_out_sentence",
    "scheming_test",
    "sign_flip_test",
    "simulate_table",
    "wilson_interval",
]
