"""Dagster layer, transform stage: dbt-like SQL models."""
