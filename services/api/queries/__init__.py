"""SQL for the API, one module per resource (sync SQLAlchemy Core on a Connection)."""
