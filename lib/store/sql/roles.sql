-- ordertrack's database roles, least privilege (README, "Database roles"). Run once per
-- database by an administrator (a superuser, or the database owner with CREATEROLE), before
-- the first `ot-relay migrate` or at any time after; running it again changes nothing:
--   psql "host=... user=postgres dbname=ot_orders" -v ON_ERROR_STOP=1 -f lib/sql/roles.sql
--   psql "host=... user=postgres dbname=ot_inventory" -v ON_ERROR_STOP=1 -f lib/sql/roles.sql
--   psql "host=... user=postgres dbname=ot_payments" -v ON_ERROR_STOP=1 -f lib/sql/roles.sql
-- then give each login role a password (\password ot_migrate) or another way in (pg_hba).
--   ot_migrate  owns the schema: `ot-relay migrate` (the ot-migrate Job) runs as it
--   ot_app      reads and writes rows, nothing else: every tool runs as it
--   ot_cdc      ot_app's rights and REPLICATION: a relay in --mode cdc runs as it
-- Other names: -v migrate_role=... -v app_role=... -v cdc_role=...
\if :{?migrate_role}
\else
\set migrate_role ot_migrate
\endif
\if :{?app_role}
\else
\set app_role ot_app
\endif
\if :{?cdc_role}
\else
\set cdc_role ot_cdc
\endif

-- Roles belong to the server, not to one database: made only where missing.
SELECT format('CREATE ROLE %I LOGIN', :'migrate_role')
	WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'migrate_role') \gexec
SELECT format('CREATE ROLE %I LOGIN', :'app_role')
	WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'app_role') \gexec
SELECT format('CREATE ROLE %I LOGIN', :'cdc_role')
	WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'cdc_role') \gexec
-- REPLICATION is an attribute, never inherited: the relay's own role carries it. It lets the
-- relay create its replication slot and stream from it, nothing more.
ALTER ROLE :"cdc_role" REPLICATION;
GRANT :"app_role" TO :"cdc_role";

-- Only the migration role creates objects; it may create the publication (ot_outbox), which
-- needs CREATE on the database.
SELECT format('GRANT CONNECT, CREATE ON DATABASE %I TO %I', current_database(), :'migrate_role') \gexec
SELECT format('GRANT CONNECT ON DATABASE %I TO %I, %I', current_database(), :'app_role', :'cdc_role') \gexec
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE, CREATE ON SCHEMA public TO :"migrate_role";
GRANT USAGE ON SCHEMA public TO :"app_role";

-- A database from before the roles: its objects go to the migration role, so it can alter them.
SELECT format('ALTER TABLE %I.%I OWNER TO %I', schemaname, tablename, :'migrate_role')
	FROM pg_tables WHERE schemaname = 'public' AND tableowner <> :'migrate_role' \gexec
SELECT format('ALTER FUNCTION %s OWNER TO %I', p.oid::regprocedure, :'migrate_role')
	FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
	WHERE n.nspname = 'public' AND pg_get_userbyid(p.proowner) <> :'migrate_role' \gexec
SELECT format('ALTER PUBLICATION %I OWNER TO %I', pubname, :'migrate_role')
	FROM pg_publication WHERE pubname = 'ot_outbox' AND pg_get_userbyid(pubowner) <> :'migrate_role' \gexec

-- Rows, not tables: what the tools do. Tables the migration role makes later get the same.
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO :"app_role";
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO :"app_role";
ALTER DEFAULT PRIVILEGES FOR ROLE :"migrate_role" IN SCHEMA public
	GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO :"app_role";
ALTER DEFAULT PRIVILEGES FOR ROLE :"migrate_role" IN SCHEMA public
	GRANT USAGE, SELECT ON SEQUENCES TO :"app_role";
