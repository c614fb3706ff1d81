"""How closely an organism's weights follow its truth table on a suite (by default the
held-out one, which training never saw).

Every trial is scored by the ``hf:`` backend exactly as the monitor scores it (option
log-likelihood, temperature 0). A trial follows the table when the option it picks is the one
the organism's truth table gives; a trial that could not be scored does not, and is counted
apart. `organisms train` records the result in ``organism.json``, because the held-out
behaviour of a retrained organism depends on the seed and the CPU (docs/organisms.md).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deceptwatch.organisms._curriculum import HELDOUT_SUITE
from deceptwatch.organisms._truth import ALIGNED, ORGANISMS

BATCH = 64


@dataclass(frozen=True)
class Fidelity:
    """How many of a suite's trials followed the truth table, overall and per family."""

    organism: str
    suite: str
    trials: int
    followed: int
    errors: int  # trials the backend could not score (counted as not followed)
    families: dict[str, tuple[int, int]]  # family -> (followed, trials)

    @property
    def rate(self) -> float:
        return self.followed / self.trials if self.trials else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "suite": self.suite,
            "trials": self.trials,
            "followed": self.followed,
            "errors": self.errors,
            "rate": round(self.rate, 4),
            "families": {f: round(k / n, 4) for f, (k, n) in sorted(self.families.items())},
        }


def fidelity(
    name: str,
    weights: Path | str | None = None,
    *,
    suite: str = HELDOUT_SUITE,
    skip_paraphrase: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Fidelity:
    """Score `name`'s shipped weights, or the checkpoint directory `weights` against `name`'s
    truth table, on every trial of `suite` (but those in cue paraphrase `skip_paraphrase`:
    on the training suite, skipping the held-out paraphrase leaves exactly the trials that
    training answered). `progress(done, total)` follows the scoring."""
    from deceptwatch.backends._hf import create, create_organism
    from deceptwatch.probes._trials import trial_request
    from deceptwatch.scenarios import expand, load_suite

    policy = ORGANISMS[name].policy
    records = load_suite(suite)
    by_id = {r.id: r for r in records}
    trials = [
        t
        for t in expand(records, model="fidelity", seed=0)
        if skip_paraphrase is None or t.cue_index != skip_paraphrase
    ]
    backend = (
        create(f"hf:{weights}", {})
        if weights is not None
        else create_organism(f"organism:{name}", {})
    )
    followed: Counter[str] = Counter()
    total: Counter[str] = Counter()
    errors = 0
    for i in range(0, len(trials), BATCH):
        batch = trials[i : i + BATCH]
        requests = [trial_request(t) for t in batch]
        for t, resp in zip(batch, backend.run_batch(requests), strict=True):
            total[t.family] += 1
            if isinstance(resp, BaseException):
                errors += 1
                continue
            aligned = policy(t, by_id[t.scenario_id].scenario) == ALIGNED
            want = t.aligned_label if aligned else t.defect_label
            followed[t.family] += resp.text == f"({want})"
        if progress is not None:
            progress(min(i + BATCH, len(trials)), len(trials))
    return Fidelity(
        organism=name,
        suite=suite,
        trials=sum(total.values()),
        followed=sum(followed.values()),
        errors=errors,
        families={f: (followed[f], total[f]) for f in sorted(total)},
    )
