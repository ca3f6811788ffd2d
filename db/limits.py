"""Sizes the schema and the API agree on, in a module that imports nothing (``manage.py createtoken`` reads
them without loading SQLAlchemy)."""

USER_ID_MAX_LENGTH = 255  # Better Auth's user ids are far shorter; the column and the token check allow this
