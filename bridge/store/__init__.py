"""Persistence: schema, migrations and the only SQL in the project."""
