"""The system of record: one SQL implementation of the state interface for SQLite (embedded) and PostgreSQL (distributed), its migrations and retention; the Redis rate limiter."""
