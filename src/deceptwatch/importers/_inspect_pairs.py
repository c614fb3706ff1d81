"""The paired design of an Inspect log, checked before anything is written: each sample
(× epoch) once, each pair within one scenario and one family, one sample per condition in
a pair; and the samples that were meant to be paired but found no partner, for the report.

A pair is formed only from samples that differ in their condition alone: the same pair id
(metadata ``pair_id`` or ``block_id``), the same scenario, the same epoch, the same log.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from deceptwatch._errors import InputError


def _sid(sample: Any) -> str:
    return f"{sample.id!r} (epoch {sample.epoch})"


def check_pairs(
    path: Path, rows: Sequence[Any], samples: Sequence[Any], paired: Sequence[bool]
) -> list[dict[str, Any]]:
    """Refuse a log whose samples the paired statistics cannot take (InputError, before
    any write): a sample id repeated within an epoch, a scenario under two families, a pair
    that spans two scenarios, or a pair with two samples of one condition. Returns the
    samples that form no pair although they were meant to (a pair id, or a condition other
    than ``baseline``): ``{"sample", "epoch", "condition", "pair"}`` each."""
    first: dict[tuple[type, Any, int], Any] = {}
    family: dict[str, tuple[str, Any]] = {}
    block_scenario: dict[str, tuple[str, Any]] = {}
    seen: dict[tuple[str, str], Any] = {}
    members: dict[str, list[int]] = {}
    for i, (r, s) in enumerate(zip(rows, samples, strict=True)):
        key = (type(s.id), s.id, s.epoch)
        if key in first:
            raise InputError(
                f"{path}: sample {_sid(s)} appears twice in the log; nothing was imported",
                hint="give every sample of a log its own id (Inspect's Sample(id=...)): a "
                "repeated one would be stored as one trial",
            )
        first[key] = s
        fam = family.setdefault(r.scenario_id, (r.family, s.id))
        if fam[0] != r.family:
            raise InputError(
                f"{path}: samples {fam[1]!r} and {s.id!r} share the scenario "
                f"{r.scenario_id!r} but not its family ({fam[0]!r}, {r.family!r}); "
                "nothing was imported",
                hint="give every sample of a pair (metadata pair_id or scenario_id) the same "
                "metadata family",
            )
        scen = block_scenario.setdefault(r.block_id, (r.scenario_id, s.id))
        if scen[0] != r.scenario_id:
            raise InputError(
                f"{path}: samples {scen[1]!r} and {s.id!r} share a pair (metadata pair_id or "
                f"block_id, epoch {s.epoch}) but not its scenario ({scen[0]!r}, "
                f"{r.scenario_id!r}); nothing was imported",
                hint="the samples of a pair differ only in their condition: give them the "
                "same metadata scenario_id (or none), or give the pairs other ids",
            )
        other = seen.setdefault((r.block_id, r.condition), s.id)
        if other != s.id:
            raise InputError(
                f"{path}: samples {other!r} and {s.id!r} are both the {r.condition!r} trial of "
                f"one pair (metadata pair_id or block_id, epoch {s.epoch}); nothing was "
                "imported",
                hint="a pair holds one sample per condition: give the other pairs other ids, "
                "or set each sample's metadata condition",
            )
        members.setdefault(r.block_id, []).append(i)
    unpaired = []
    for held in members.values():
        if len(held) != 1:
            continue
        i = held[0]
        r, s = rows[i], samples[i]
        if paired[i] or r.condition != "baseline":
            pair = (s.metadata or {}).get("pair_id", (s.metadata or {}).get("block_id"))
            unpaired.append(
                {"sample": s.id, "epoch": int(s.epoch), "condition": r.condition, "pair": pair}
            )
    return unpaired
