"""Plain library for the PostgreSQL warehouse: connections, the embedded default, COPY loads and merges."""
