"""Evidence: a model's verdict from its findings, and its place on the evidence ladder."""

from deceptwatch.evidence._ladder import (
    FAMILY_RUNGS,
    RUNGS,
    Criterion,
    LadderPlacement,
    PrecursorScore,
    RungEvidence,
    place_on_ladder,
)
from deceptwatch.evidence._verdict import (
    DECEPTIVE,
    INCONCLUSIVE,
    MISALIGNED,
    NO_EVIDENCE,
    VERDICTS,
    Verdict,
    decide,
)
from deceptwatch.stats import beyond_placebo, depends_on_oversight

__all__ = [
    "DECEPTIVE",
    "FAMILY_RUNGS",
    "INCONCLUSIVE",
    "MISALIGNED",
    "NO_EVIDENCE",
    "RUNGS",
    "VERDICTS",
    "Criterion",
    "LadderPlacement",
    "PrecursorScore",
    "RungEvidence",
    "Verdict",
    "beyond_placebo",
    "decide",
    "depends_on_oversight",
    "place_on_ladder",
]
