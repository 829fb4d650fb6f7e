-- The least privilege flowretail needs, for the role it runs as (loads, models, pushes).
-- A DBA runs it once per warehouse database, e.g.
--   psql -d warehouse -v etl_role=flowretail_etl -f deploy/grants/etl_role.sql
-- It creates the role when missing (LOGIN, no password: set one with \password or use your own
-- authentication), the schemas flowretail and analytics owned by it (or hands existing ones and
-- their tables and views over to it), and grants CONNECT and TEMPORARY on this database: the load
-- stages pages in temporary tables. Nothing else: no CREATE on the database, no other schema.
-- The product then creates and upgrades its own tables (`flowretail migrate`) inside these schemas.
\set ON_ERROR_STOP on

SELECT format('CREATE ROLE %I LOGIN', :'etl_role')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'etl_role') \gexec

SELECT format('GRANT CONNECT, TEMPORARY ON DATABASE %I TO %I', current_database(), :'etl_role') \gexec

CREATE SCHEMA IF NOT EXISTS flowretail AUTHORIZATION :"etl_role";
CREATE SCHEMA IF NOT EXISTS analytics AUTHORIZATION :"etl_role";
ALTER SCHEMA flowretail OWNER TO :"etl_role";
ALTER SCHEMA analytics OWNER TO :"etl_role";

-- A warehouse built before as another role: its tables and views move to the ETL role
-- (migrate alters them, and the models replace them).
SELECT format('ALTER %s %I.%I OWNER TO %I',
              CASE c.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW' ELSE 'TABLE' END,
              n.nspname, c.relname, :'etl_role')
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname IN ('flowretail', 'analytics') AND c.relkind IN ('r', 'p', 'v', 'm')
  AND c.relowner <> (SELECT oid FROM pg_roles WHERE rolname = :'etl_role') \gexec
