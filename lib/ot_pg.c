/* ot_pg: PostgreSQL connections, queries and migrations under an advisory lock. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ot_err.h"
#include "ot_log.h"
#include "ot_pg.h"
#include "ot_text.h"

static void
notice(void *arg, const char *msg)
{
	size_t n = strlen(msg);

	(void)arg;
	OT_DEBUG(NULL, "postgresql: %.*s", (int)(n && msg[n - 1] == '\n' ? n - 1 : n), msg);
}

static void
trim(char *s)
{
	size_t n = strlen(s);

	while (n && (s[n - 1] == '\n' || s[n - 1] == ' '))
		s[--n] = '\0';
}

PGconn *
ot_pg_connect(const char *conninfo, char *errstr, size_t errsz)
{
	const char *keys[] = {"dbname", "connect_timeout", "application_name", NULL};
	const char *vals[] = {conninfo, "5", "ordertrack", NULL};
	PGconn *c;

	c = PQconnectdbParams(keys, vals, 1);
	if (!c) {
		ot_err(OT_EINTERNAL, errstr, errsz, "out of memory");
		return NULL;
	}
	if (PQstatus(c) != CONNECTION_OK) {
		/* Connection strings carry passwords; libpq's message may quote one it cannot parse. */
		char safe[512], msg[1024];
		ot_err(OT_ESERVICE, errstr, errsz, "cannot connect to PostgreSQL (%s): %s",
		       ot_redact(conninfo, safe, sizeof safe),
		       ot_redact_msg(PQerrorMessage(c), conninfo, msg, sizeof msg));
		if (errstr)
			trim(errstr);
		PQfinish(c);
		return NULL;
	}
	PQsetNoticeProcessor(c, notice, NULL);
	return c;
}

static int
classify(PGconn *c, const PGresult *res)
{
	const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;

	if (PQstatus(c) != CONNECTION_OK || !state)
		return OT_ESERVICE;
	if (!strncmp(state, "08", 2) || !strcmp(state, "40001") || !strcmp(state, "40P01") ||
	    !strncmp(state, "57P", 3) || !strncmp(state, "53", 2) || !strcmp(state, "55P03"))
		return OT_ESERVICE;
	if (!strncmp(state, "22", 2) || !strncmp(state, "23", 2))
		return OT_EINPUT;
	return OT_EINTERNAL;
}

PGresult *
ot_pg_query(PGconn *c, const char *sql, int nparams, const char *const *params, int *rc,
            char *errstr, size_t errsz)
{
	PGresult *res;
	ExecStatusType st;
	int r;

	res = nparams ? PQexecParams(c, sql, nparams, NULL, params, NULL, NULL, 0) : PQexec(c, sql);
	st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
	if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
		if (rc)
			*rc = OT_OK;
		return res;
	}
	r = classify(c, res);
	if (r == OT_EINPUT) {
		/* Refused data: the caller may show errstr to a client, so the database's own words
		 * (which can quote the data and name tables) go only to the log. */
		char msg[1024];
		snprintf(msg, sizeof msg, "%s", PQerrorMessage(c));
		trim(msg);
		OT_WARN(NULL, "PostgreSQL refused the data: %s", msg);
		ot_err(r, errstr, errsz, "the database refused the data (SQLSTATE %s)",
		       PQresultErrorField(res, PG_DIAG_SQLSTATE));
	} else {
		ot_err(r, errstr, errsz, "PostgreSQL: %s", PQerrorMessage(c));
		if (errstr)
			trim(errstr);
	}
	if (rc)
		*rc = r;
	PQclear(res);
	return NULL;
}

int
ot_pg_exec(PGconn *c, const char *sql, int nparams, const char *const *params,
           char *errstr, size_t errsz)
{
	int rc;
	PGresult *res = ot_pg_query(c, sql, nparams, params, &rc, errstr, errsz);

	PQclear(res);
	return rc;
}

void
ot_pg_rollback(PGconn *c)
{
	if (PQtransactionStatus(c) != PQTRANS_IDLE && PQstatus(c) == CONNECTION_OK)
		PQclear(PQexec(c, "ROLLBACK"));
}

int
ot_pg_ensure(PGconn *c, char *errstr, size_t errsz)
{
	if (PQstatus(c) == CONNECTION_OK)
		return 0;
	PQreset(c);
	if (PQstatus(c) != CONNECTION_OK)
		return ot_err(OT_ESERVICE, errstr, errsz, "PostgreSQL: %s", PQerrorMessage(c));
	OT_INFO(NULL, "reconnected to PostgreSQL");
	return 0;
}

int
ot_pg_migrate(PGconn *c, const char *db, char *errstr, size_t errsz)
{
	const struct ot_migration *m;
	char ver[16], lockkey[64];
	const char *p[2];
	PGresult *res;
	int rc = OT_OK;

	snprintf(lockkey, sizeof lockkey, "ordertrack.migrate.%s", db);
	p[0] = lockkey;
	/* Several tools start together; the lock lets exactly one apply each migration. */
	if ((rc = ot_pg_exec(c, "SELECT pg_advisory_lock(hashtext($1))", 1, p, errstr, errsz)))
		return rc;
	rc = ot_pg_exec(c, "CREATE TABLE IF NOT EXISTS schema_migrations (version int PRIMARY KEY, "
	                "name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())",
	                0, NULL, errstr, errsz);
	for (m = ot_migrations; rc == OT_OK && m->db; m++) {
		if (strcmp(m->db, db))
			continue;
		snprintf(ver, sizeof ver, "%d", m->version);
		p[0] = ver;
		p[1] = m->name;
		res = ot_pg_query(c, "SELECT 1 FROM schema_migrations WHERE version = $1", 1, p, &rc,
		                  errstr, errsz);
		if (!res)
			break;
		if (PQntuples(res) == 0) {
			if (!(rc = ot_pg_exec(c, "BEGIN", 0, NULL, errstr, errsz)) &&
			    !(rc = ot_pg_exec(c, m->sql, 0, NULL, errstr, errsz)) &&
			    !(rc = ot_pg_exec(c, "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
			                      2, p, errstr, errsz)) &&
			    !(rc = ot_pg_exec(c, "COMMIT", 0, NULL, errstr, errsz)))
				OT_INFO(NULL, "applied migration %s/%s", db, m->name);
			else
				ot_pg_rollback(c);
		}
		PQclear(res);
	}
	p[0] = lockkey;
	PQclear(PQexecParams(c, "SELECT pg_advisory_unlock(hashtext($1))", 1, NULL, p, NULL, NULL, 0));
	return rc;
}

PGconn *
ot_pg_open(const char *conninfo, const char *db, int *rc, char *errstr, size_t errsz)
{
	PGconn *c = ot_pg_connect(conninfo, errstr, errsz);
	int r = c ? ot_pg_migrate(c, db, errstr, errsz) : OT_ESERVICE;

	if (r && c) {
		PQfinish(c);
		c = NULL;
	}
	if (rc)
		*rc = r;
	return c;
}

int
ot_pg_mark_processed(PGconn *c, const char *consumer, const char *const *ids, size_t n, int *fresh,
                     char *errstr, size_t errsz)
{
	json_t *a = json_array();
	const char *p[2] = {consumer, NULL};
	PGresult *q;
	char *doc;
	size_t i, j;
	int k, rc;

	for (i = 0; i < n; i++) {
		fresh[i] = 0;
		if (ids[i])
			json_array_append_new(a, json_string(ids[i]));
	}
	doc = json_dumps(a, JSON_COMPACT);
	json_decref(a);
	if (!doc)
		return ot_err(OT_EINTERNAL, errstr, errsz, "out of memory");
	p[1] = doc;
	q = ot_pg_query(c, "INSERT INTO processed_events (consumer, event_id) "
	                "SELECT $1, e::uuid FROM jsonb_array_elements_text($2::jsonb) e "
	                "ON CONFLICT DO NOTHING RETURNING event_id::text", 2, p, &rc, errstr, errsz);
	free(doc);
	if (!q)
		return rc;
	for (k = 0; k < PQntuples(q); k++)
		for (i = 0; i < n; i++)
			if (ids[i] && !strcmp(ids[i], PQgetvalue(q, k, 0))) {
				for (j = 0; j < i && (!ids[j] || strcmp(ids[j], ids[i])); j++)
					;
				fresh[i] = j == i; /* the first of its copies */
				break;
			}
	PQclear(q);
	return OT_OK;
}
