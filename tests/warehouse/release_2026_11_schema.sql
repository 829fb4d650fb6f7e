-- The warehouse DDL of the release before `flowretail migrate` (main at f4a1917), rendered from
-- that release's DDL strings (create_tables_sql() and PUSH_TABLES_SQL): tests build an old warehouse with it and upgrade it in place.

CREATE SCHEMA IF NOT EXISTS "flowretail";

CREATE TABLE IF NOT EXISTS "flowretail".customer_groups (
    tenant_uid text NOT NULL,
    customer_group_uid text NOT NULL,
    "name" text,
    "created_by" text,
    "created_at" timestamptz,
    "last_modified_by" text,
    "last_modified_at" timestamptz,
    _loaded_at timestamptz NOT NULL,
    _run_id text NOT NULL,
    PRIMARY KEY (tenant_uid, customer_group_uid)
);

CREATE TABLE IF NOT EXISTS "flowretail".customer_group_memberships (
    tenant_uid text NOT NULL,
    customer_group_uid text NOT NULL,
    customer_uid text NOT NULL,
    _loaded_at timestamptz NOT NULL,
    _run_id text NOT NULL,
    PRIMARY KEY (tenant_uid, customer_group_uid, customer_uid)
);

CREATE TABLE IF NOT EXISTS "flowretail".customer_group_membership_history (
    tenant_uid text NOT NULL,
    customer_group_uid text NOT NULL,
    customer_uid text NOT NULL,
    valid_from timestamptz NOT NULL,
    valid_to timestamptz,
    _run_id text NOT NULL,
    PRIMARY KEY (tenant_uid, customer_group_uid, customer_uid, valid_from)
);

CREATE UNIQUE INDEX IF NOT EXISTS customer_group_membership_history_open
    ON "flowretail".customer_group_membership_history (tenant_uid, customer_group_uid, customer_uid)
    WHERE valid_to IS NULL;

CREATE TABLE IF NOT EXISTS "flowretail".customer_snapshots (
    tenant_uid text NOT NULL,
    customer_uid text NOT NULL,
    "address" text,
    "city" text,
    "company_name" text,
    "country_code" text,
    "created_at" timestamptz,
    "customer_parent_uid" text,
    "customer_type" text,
    "email" text,
    "external_id" text,
    "firstname" text,
    "last_modified_at" timestamptz,
    "lastname" text,
    "ledger_number" text,
    "mobile" text,
    "postal_code" text,
    "pricelist_uid" text,
    "vat_number" text,
    "origin" text,
    "addresses" jsonb,
    "contacts" jsonb,
    "extensions" jsonb,
    "consents" jsonb,
    "loyalty_id" text,
    "display_name" text,
    "credit" jsonb,
    "payment_terms" bigint,
    "internal_note" text,
    "account_manager" jsonb,
    "ehf_enabled" boolean,
    "ehf" jsonb,
    "customer_group_uids" jsonb,
    "default_store" jsonb,
    "relevance" numeric,
    valid_from timestamptz NOT NULL,
    valid_to timestamptz,
    row_hash text NOT NULL,
    _run_id text NOT NULL,
    PRIMARY KEY (tenant_uid, customer_uid, valid_from)
);

CREATE UNIQUE INDEX IF NOT EXISTS customer_snapshots_current
    ON "flowretail".customer_snapshots (tenant_uid, customer_uid) WHERE valid_to IS NULL;

CREATE TABLE IF NOT EXISTS "flowretail".load_runs (
    run_id text NOT NULL,
    tenant_uid text NOT NULL,
    started_at timestamptz NOT NULL,
    finished_at timestamptz,
    status text NOT NULL,
    groups_rows bigint,
    memberships_rows bigint,
    customers_rows bigint,
    membership_periods_opened bigint,
    membership_periods_closed bigint,
    customer_versions_opened bigint,
    customer_versions_closed bigint,
    pages bigint,
    requests bigint,
    retries bigint,
    rate_limited bigint,
    error text,
    PRIMARY KEY (run_id, tenant_uid)
);

CREATE SCHEMA IF NOT EXISTS "flowretail";

CREATE TABLE IF NOT EXISTS "flowretail".segment_push_groups (
    tenant_uid text NOT NULL,
    customer_group_uid text NOT NULL,
    segment text NOT NULL,
    ownership text NOT NULL CHECK (ownership IN ('created', 'adopted')),
    since timestamptz NOT NULL,
    first_push_done_at timestamptz,
    PRIMARY KEY (tenant_uid, customer_group_uid)
);

CREATE TABLE IF NOT EXISTS "flowretail".segment_push_runs (
    run_id text NOT NULL,
    tenant_uid text NOT NULL,
    segment text NOT NULL,
    customer_group_uid text NOT NULL,
    status text NOT NULL,
    dry_run boolean NOT NULL DEFAULT false,
    plan_hash text NOT NULL,
    group_action text NOT NULL,
    mode text NOT NULL,
    segment_count bigint NOT NULL,
    live_count bigint NOT NULL,
    planned_adds bigint NOT NULL,
    planned_removes bigint NOT NULL,
    withheld_removes bigint NOT NULL,
    drift_added bigint NOT NULL,
    drift_removed bigint NOT NULL,
    applied_adds bigint NOT NULL DEFAULT 0,
    applied_removes bigint NOT NULL DEFAULT 0,
    rejected_uids jsonb NOT NULL DEFAULT '[]',
    blocked jsonb NOT NULL DEFAULT '[]',
    verified boolean,
    calls bigint NOT NULL DEFAULT 0,
    duration_seconds double precision,
    plan jsonb NOT NULL,
    planned_at timestamptz NOT NULL,
    finished_at timestamptz,
    error text,
    PRIMARY KEY (run_id, tenant_uid, segment)
);

CREATE TABLE IF NOT EXISTS "flowretail".segment_push_log (
    id bigserial PRIMARY KEY,
    run_id text NOT NULL,
    tenant_uid text NOT NULL,
    segment text NOT NULL,
    customer_group_uid text NOT NULL,
    action text NOT NULL,
    uid_count bigint NOT NULL DEFAULT 0,
    batch_number integer,
    http_status integer,
    error text,
    add_uids jsonb NOT NULL DEFAULT '[]',
    remove_uids jsonb NOT NULL DEFAULT '[]',
    at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS "flowretail".segment_push_members (
    tenant_uid text NOT NULL,
    segment text NOT NULL,
    customer_group_uid text NOT NULL,
    customer_uid text NOT NULL,
    PRIMARY KEY (tenant_uid, segment, customer_group_uid, customer_uid)
);
