"""The runner: bounded concurrency, retries, resume by trial id, batched recording."""

from deceptwatch.runner._runner import (
    Counters,
    ModelRun,
    RunnerConfig,
    describe_models,
    run_id_for,
    run_trials,
)

__all__ = ["Counters", "ModelRun", "RunnerConfig", "describe_models", "run_id_for", "run_trials"]
