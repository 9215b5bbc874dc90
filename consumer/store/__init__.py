"""PostgreSQL: pool, transactions, error classification, named SQL, migrations, the schema models."""
