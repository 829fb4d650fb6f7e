-- A read-only role for analysts: SELECT on every table and view of flowretail and analytics,
-- those there now and those the ETL role creates later (models are rebuilt as new tables).
-- A DBA runs it after etl_role.sql, e.g.
--   psql -d warehouse -v etl_role=flowretail_etl -v analyst_role=flowretail_analyst -f deploy/grants/analyst_role.sql
-- and then gives it to people: GRANT flowretail_analyst TO alice;
\set ON_ERROR_STOP on

SELECT format('CREATE ROLE %I NOLOGIN', :'analyst_role')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'analyst_role') \gexec

SELECT format('GRANT CONNECT ON DATABASE %I TO %I', current_database(), :'analyst_role') \gexec

GRANT USAGE ON SCHEMA flowretail, analytics TO :"analyst_role";
GRANT SELECT ON ALL TABLES IN SCHEMA flowretail, analytics TO :"analyst_role";
ALTER DEFAULT PRIVILEGES FOR ROLE :"etl_role" IN SCHEMA flowretail, analytics
    GRANT SELECT ON TABLES TO :"analyst_role";
