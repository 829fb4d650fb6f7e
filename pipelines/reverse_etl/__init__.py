"""Dagster layer, reverse ETL stage: segment push-back into Flow Retail customer groups."""
