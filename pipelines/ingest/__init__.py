"""Dagster layer, ingest stage: raw Flow Retail tables."""
