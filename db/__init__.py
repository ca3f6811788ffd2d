"""Data layer: models, the owner-scoped repository, engine setup and alembic migrations."""
