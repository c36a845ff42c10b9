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

/* The newest migration of db this binary carries, or NULL. */
static const struct ot_migration *
newest_known(const char *db)
{
	const struct ot_migration *m, *last = NULL;

	for (m = ot_migrations; m->db; m++)
		if (!strcmp(m->db, db) && (!last || m->version > last->version))
			last = m;
	return last;
}

static int
applied_in(const PGresult *res, int version)
{
	int i;

	for (i = 0; i < PQntuples(res); i++)
		if (atoi(PQgetvalue(res, i, 0)) == version)
			return 1;
	return 0;
}

int
ot_pg_schema(PGconn *c, const char *db, struct ot_pg_schema *s, char *errstr, size_t errsz)
{
	const struct ot_migration *m, *known = newest_known(db);
	PGresult *res;
	int rc, n;

	memset(s, 0, sizeof *s);
	if (known) {
		s->known = known->version;
		snprintf(s->known_name, sizeof s->known_name, "%s", known->name);
	}
	if (!(res = ot_pg_query(c, "SELECT to_regclass('schema_migrations') IS NOT NULL", 0, NULL, &rc,
	                        errstr, errsz)))
		return rc;
	n = !strcmp(PQgetvalue(res, 0, 0), "t");
	PQclear(res);
	res = NULL;
	if (n && !(res = ot_pg_query(c, "SELECT version, name FROM schema_migrations ORDER BY version DESC",
	                             0, NULL, &rc, errstr, errsz)))
		return rc;
	if (res && PQntuples(res)) {
		s->version = atoi(PQgetvalue(res, 0, 0));
		snprintf(s->name, sizeof s->name, "%s", PQgetvalue(res, 0, 1));
	}
	for (m = ot_migrations; m->db; m++)
		if (!strcmp(m->db, db) && !(res && applied_in(res, m->version)))
			s->pending++;
	PQclear(res);
	if (s->version > s->known)
		return ot_err(OT_ECONFIG, errstr, errsz,
		              "the %s schema is at version %d (%s), newer than this binary knows: its newest "
		              "is %d (%s); a later release migrated it, so run that release, not this one",
		              db, s->version, s->name, s->known, s->known_name);
	return OT_OK;
}

/* One statement of a migration, as part of `what`. A lock not granted within lock_timeout
 * (lt, as set), or a privilege the role lacks, is said in words that tell the operator what to
 * do. */
static int
step(PGconn *c, const char *sql, const char *param, const char *what, const char *lt, char *errstr,
     size_t errsz)
{
	const char *p[1] = {param};
	PGresult *res = param ? PQexecParams(c, sql, 1, NULL, p, NULL, NULL, 0) : PQexec(c, sql);
	ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
	const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
	const char *msg = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
	int rc = OT_OK;

	if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
		PQclear(res);
		return OT_OK;
	}
	if (state && !strcmp(state, "55P03")) {
		rc = ot_err(OT_ESERVICE, errstr, errsz, "%s: a lock was not granted within lock_timeout (%s ms): "
		            "another session holds it; nothing of it was applied, try again", what, lt);
	} else if (state && !strcmp(state, "42501")) {
		rc = ot_err(OT_ECONFIG, errstr, errsz, "%s: %s: this role may not change the schema; run "
		            "ot-relay migrate with the migration role's connection string first", what,
		            msg ? msg : "permission denied");
	} else {
		rc = ot_err(classify(c, res), errstr, errsz, "%s: PostgreSQL: %s", what, PQerrorMessage(c));
		if (errstr)
			trim(errstr);
	}
	PQclear(res);
	return rc;
}

int
ot_pg_migrate(PGconn *c, const char *db, int lock_timeout_ms, struct ot_pg_schema *sp, int *applied,
              char *errstr, size_t errsz)
{
	const struct ot_migration *m;
	struct ot_pg_schema s;
	char what[128], lockkey[64], ms[32];
	const char *p[2];
	PGresult *res = NULL;
	int rc, locked = 0, n = 0;

	if (applied)
		*applied = 0;
	snprintf(lockkey, sizeof lockkey, "ordertrack.migrate.%s", db);
	snprintf(ms, sizeof ms, "%d", lock_timeout_ms > 0 ? lock_timeout_ms : 0);
	snprintf(what, sizeof what, "migrating %s: waiting for any other migration of it", db);
	if ((rc = step(c, "SELECT set_config('lock_timeout', $1, false)", ms, what, ms, errstr, errsz)))
		goto out;
	/* Several tools start together; the lock lets exactly one apply each migration. */
	if ((rc = step(c, "SELECT pg_advisory_lock(hashtext($1))", lockkey, what, ms, errstr, errsz)))
		goto out;
	locked = 1;
	/* Under the lock: what another session applied while this one waited is not pending. */
	if ((rc = ot_pg_schema(c, db, &s, errstr, errsz)))
		goto out;
	if (sp)
		*sp = s;
	if (!s.pending)
		goto out;
	snprintf(what, sizeof what, "migrating %s to version %d (%d migration%s pending)", db, s.known,
	         s.pending, s.pending == 1 ? "" : "s");
	if ((rc = step(c, "CREATE TABLE IF NOT EXISTS schema_migrations (version int PRIMARY KEY, "
	               "name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())", NULL, what, ms,
	               errstr, errsz)))
		goto out;
	if (!(res = ot_pg_query(c, "SELECT version FROM schema_migrations", 0, NULL, &rc, errstr, errsz)))
		goto out;
	for (m = ot_migrations; m->db; m++) {
		char ver[16];

		if (strcmp(m->db, db) || applied_in(res, m->version))
			continue;
		snprintf(ver, sizeof ver, "%d", m->version);
		snprintf(what, sizeof what, "migrating %s to version %d: %s", db, s.known, m->name);
		p[0] = ver;
		p[1] = m->name;
		if ((rc = step(c, "BEGIN", NULL, what, ms, errstr, errsz)) ||
		    (rc = step(c, m->sql, NULL, what, ms, errstr, errsz)) ||
		    (rc = ot_pg_exec(c, "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", 2, p,
		                     errstr, errsz)) ||
		    (rc = step(c, "COMMIT", NULL, what, ms, errstr, errsz))) {
			ot_pg_rollback(c);
			goto out;
		}
		n++;
		OT_INFO(NULL, "applied migration %s/%s", db, m->name);
	}
out:
	PQclear(res);
	if (applied)
		*applied = n;
	if (locked) {
		p[0] = lockkey;
		PQclear(PQexecParams(c, "SELECT pg_advisory_unlock(hashtext($1))", 1, NULL, p, NULL, NULL, 0));
	}
	/* The connection goes on to the tool's own work, which waits as long as it must. */
	PQclear(PQexec(c, "RESET lock_timeout"));
	return rc;
}

PGconn *
ot_pg_open(const char *conninfo, const char *db, int *rc, char *errstr, size_t errsz)
{
	struct ot_pg_schema s;
	PGconn *c = ot_pg_connect(conninfo, errstr, errsz);
	int r = c ? ot_pg_schema(c, db, &s, errstr, errsz) : OT_ESERVICE;

	if (!r && s.pending)
		r = ot_pg_migrate(c, db, OT_PG_LOCK_TIMEOUT_MS, NULL, NULL, errstr, errsz);
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

int
ot_pg_migrate_report(const char *conninfo, const char *db, long lock_ms, FILE *f, char *err, size_t errsz)
{
	struct ot_pg_schema s;
	PGconn *c;
	int rc, applied = 0;

	if (!(c = ot_pg_connect(conninfo, err, errsz)))
		return OT_ESERVICE;
	rc = ot_pg_migrate(c, db, (int)lock_ms, &s, &applied, err, errsz);
	PQfinish(c);
	if (rc)
		return rc;
	fprintf(f, "{\"db\":\"%s\",\"from\":%d,\"to\":%d,\"applied\":%d}\n", db, s.version,
	        applied ? s.known : s.version, applied);
	OT_INFO(NULL, "migrate: %s at version %d%s", db, applied ? s.known : s.version,
	        applied ? "" : ", as it was");
	if (fflush(f) || ferror(f))
		return ot_err(OT_EOUTPUT, err, errsz, "writing output failed");
	return OT_OK;
}
