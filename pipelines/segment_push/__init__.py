"""Plain library for pushing warehouse segments into Flow Retail customer groups. Never imports dagster."""
