-- What main at 2107543 (the last release that wrote its DDL as text) created on top of the release
-- before it: the statements of its ddl_steps() that release_2026_11_schema.sql lacks, in order, plus
-- the model registry its SQL runner created. Applied after that file on an empty database, they build
-- the schema exactly as that release built it; test_tables.py compares a fresh migrate with it.

CREATE SCHEMA IF NOT EXISTS "analytics";

DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = 'flowretail.customer_snapshots'::regclass AND attname = '_spec_deviations' AND NOT attisdropped) THEN ALTER TABLE "flowretail"."customer_snapshots" ADD COLUMN "_spec_deviations" jsonb; END IF; END $$;

DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = 'flowretail.customer_groups'::regclass AND attname = '_spec_deviations' AND NOT attisdropped) THEN ALTER TABLE "flowretail"."customer_groups" ADD COLUMN "_spec_deviations" jsonb; END IF; END $$;

DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = 'flowretail.load_runs'::regclass AND attname = 'spec_deviations' AND NOT attisdropped) THEN ALTER TABLE "flowretail"."load_runs" ADD COLUMN "spec_deviations" jsonb; END IF; END $$;

CREATE TABLE IF NOT EXISTS "flowretail".api_budgets (
    token_key text PRIMARY KEY,
    tat timestamptz NOT NULL DEFAULT '-infinity',
    paused_until timestamptz NOT NULL DEFAULT '-infinity',
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS "flowretail".api_budget_leases (
    token_key text NOT NULL,
    holder uuid NOT NULL,
    slots integer NOT NULL,
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (token_key, holder)
);

ALTER TABLE "flowretail".customer_snapshots ADD COLUMN IF NOT EXISTS "extra_fields" jsonb;

CREATE TABLE IF NOT EXISTS "flowretail".customer_fields (
    api_field text PRIMARY KEY,
    pg_type text NOT NULL,
    status text NOT NULL CHECK (status IN ('pending', 'column', 'extra')),
    column_name text UNIQUE,
    first_seen_at timestamptz NOT NULL DEFAULT now(),
    first_seen_run_id text,
    decided_at timestamptz
);

CREATE TABLE IF NOT EXISTS "flowretail".schema_version (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    fingerprint text NOT NULL,
    migrated_at timestamptz NOT NULL
);

ALTER TABLE "flowretail".segment_push_groups ADD COLUMN IF NOT EXISTS status text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'retired'));

ALTER TABLE "flowretail".segment_push_groups ADD COLUMN IF NOT EXISTS retired_at timestamptz;

CREATE TABLE IF NOT EXISTS "flowretail".segment_push_orphans (
    run_id text NOT NULL,
    tenant_uid text NOT NULL,
    customer_group_uid text NOT NULL,
    segment text NOT NULL,
    ownership text NOT NULL,
    live_size bigint,
    last_push_at timestamptz,
    noted_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, tenant_uid, customer_group_uid)
);

CREATE TABLE IF NOT EXISTS "flowretail".segment_push_retirements (
    run_id text NOT NULL,
    tenant_uid text NOT NULL,
    customer_group_uid text NOT NULL,
    segment text,
    dry_run boolean NOT NULL,
    keep_group boolean NOT NULL,
    status text NOT NULL,
    live_before bigint,
    removed bigint NOT NULL DEFAULT 0,
    deleted boolean NOT NULL DEFAULT false,
    detail text,
    at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, tenant_uid, customer_group_uid)
);

CREATE TABLE IF NOT EXISTS "flowretail".segment_push_batch_limits (
    api_base_url text NOT NULL,
    tenant_uid text NOT NULL,
    accepted integer NOT NULL,
    refused integer,
    learned_at timestamptz NOT NULL,
    PRIMARY KEY (api_base_url, tenant_uid)
);

CREATE TABLE IF NOT EXISTS "analytics"."_sql_model_relations" (name text PRIMARY KEY, materialized text NOT NULL, built_at timestamptz NOT NULL);
