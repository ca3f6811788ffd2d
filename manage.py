#!/usr/bin/env python
"""Django-style entry point: ``python manage.py --help`` lists every command."""

from app.cli import cli

if __name__ == "__main__":
    cli()
