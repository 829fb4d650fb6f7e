-- Dagster's run, event and schedule storage lives in its own database beside the warehouse.
CREATE DATABASE dagster OWNER flowretail;
