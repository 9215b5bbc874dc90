"""Alembic environment and the revision chain of the taskledger schema."""
