"""Per-attempt time limits: see `deceptwatch._deadlines` (shared with the ``openai:`` backend)."""

from deceptwatch._deadlines import Deadlines

__all__ = ["Deadlines"]
