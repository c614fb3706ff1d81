"""Scoring: read the chosen option from a reply and map it to an outcome."""

from deceptwatch.scoring._choice import (
    ALIGNED,
    DEFECT,
    ERROR,
    OTHER,
    OUTCOMES,
    ChoiceParse,
    Scored,
    parse_choice,
    score_choice,
)

__all__ = [
    "ALIGNED",
    "DEFECT",
    "ERROR",
    "OTHER",
    "OUTCOMES",
    "ChoiceParse",
    "Scored",
    "parse_choice",
    "score_choice",
]
