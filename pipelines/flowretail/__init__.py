"""Plain library for the Flow Retail API v2: client, paging, schemas and a simulator. Never imports dagster."""
