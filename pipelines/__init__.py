"""Flow Retail API v2 pipeline: load customer groups into PostgreSQL, model segments, push them back."""
