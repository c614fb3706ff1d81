"""The store: SQLite by default, any SQLAlchemy URL via ``--db``; ordered migrations."""

from deceptwatch.store._rows import TrialRow
from deceptwatch.store._schema import MIGRATIONS, SCHEMA_VERSION
from deceptwatch.store._store import COMPLETE, INCOMPLETE, RUNNING, Store, model_id
from deceptwatch.store._url import DB_ENV, default_db_path, resolve_db_url

__all__ = [
    "COMPLETE",
    "DB_ENV",
    "INCOMPLETE",
    "MIGRATIONS",
    "RUNNING",
    "SCHEMA_VERSION",
    "Store",
    "TrialRow",
    "default_db_path",
    "model_id",
    "resolve_db_url",
]
