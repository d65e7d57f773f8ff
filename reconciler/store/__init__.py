"""State and blob stores: SQLite or PostgreSQL for state, a local directory or S3 for binaries."""
