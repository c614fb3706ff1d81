"""Evidence: a model's verdict from its findings (and, later, the evidence ladder)."""

from deceptwatch.evidence._verdict import (
    DECEPTIVE,
    INCONCLUSIVE,
    MISALIGNED,
    NO_EVIDENCE,
    VERDICTS,
    Verdict,
    beyond_placebo,
    decide,
)

__all__ = [
    "DECEPTIVE",
    "INCONCLUSIVE",
    "MISALIGNED",
    "NO_EVIDENCE",
    "VERDICTS",
    "Verdict",
    "beyond_placebo",
    "decide",
]
