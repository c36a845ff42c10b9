/* ot_cdc: logical replication of the outbox with pgoutput, over libpq's COPY BOTH protocol. */
#include <libpq-fe.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <time.h>

#include "ot_event.h"
#include "ot_cdc.h"
#include "ot_err.h"
#include "ot_io.h"
#include "ot_log.h"
#include "ot_outbox.h"
#include "ot_pg.h"
#include "ot_pgoutput.h"
#include "ot_run.h"
#include "ot_signal.h"

#define STATUS_INTERVAL_MS 2000
#define VISIBLE_WAIT_MS 30000
#define CDC_PART_ROWS 500 /* rows of one transaction relayed together, as a poll batch */

/* The outbox's columns we need, by position in the relation pgoutput described. */
enum { C_ID, C_TOPIC, C_KEY, C_EVENT_ID, C_TYPE, C_TRACEPARENT, C_PAYLOAD, C_COUNT };
static const char *const col_names[C_COUNT] = {
	"id", "topic", "key", "event_id", "type", "traceparent", "payload"
};

/* One outbox row of the open transaction; every field owned (traceparent may be NULL). */
struct row {
	char *f[C_COUNT];
	size_t payload_len;
	double created_s;          /* its created_at, seconds since the epoch, once still_there read it */
};

struct cdc {
	PGconn *repl, *db;
	struct ot_out *out;
	const char *dbname;        /* orders, inventory or payments, for the metrics */
	uint32_t relid;
	int pos[C_COUNT];          /* column index of each, -1 if absent */
	int in_txn;
	uint32_t xid;              /* of the open transaction */
	uint64_t confirmed;        /* flushed to Kafka, confirmed to the server */
	uint64_t server_end;       /* the server's WAL end, from keepalives */
	long long last_status_ms;
	struct row *rows;          /* the open transaction's outbox rows */
	size_t nrows, cap;
	long total, replayed;
};

static void
put64(unsigned char *p, uint64_t v)
{
	int i;

	for (i = 7; i >= 0; i--, v >>= 8)
		p[i] = (unsigned char)(v & 0xff);
}

static uint64_t
get64(const unsigned char *p)
{
	uint64_t v = 0;
	int i;

	for (i = 0; i < 8; i++)
		v = v << 8 | p[i];
	return v;
}

/* Standby status update: written = flushed = applied = what Kafka has. */
static int
send_status(struct cdc *c, char *errstr, size_t errsz)
{
	unsigned char buf[34];
	struct timespec ts;
	int64_t us;

	clock_gettime(CLOCK_REALTIME, &ts);
	/* microseconds since 2000-01-01, PostgreSQL's epoch */
	us = ((int64_t)ts.tv_sec - 946684800LL) * 1000000LL + ts.tv_nsec / 1000;
	buf[0] = 'r';
	put64(buf + 1, c->confirmed);
	put64(buf + 9, c->confirmed);
	put64(buf + 17, c->confirmed);
	put64(buf + 25, (uint64_t)us);
	buf[33] = 0;
	if (PQputCopyData(c->repl, (const char *)buf, sizeof buf) <= 0 || PQflush(c->repl))
		return ot_err(OT_ESERVICE, errstr, errsz, "replication status update: %s", PQerrorMessage(c->repl));
	c->last_status_ms = ot_now_ms();
	return 0;
}

static void
clear_rows(struct cdc *c)
{
	size_t i;
	int j;

	for (i = 0; i < c->nrows; i++)
		for (j = 0; j < C_COUNT; j++)
			free(c->rows[i].f[j]);
	c->nrows = 0;
}

static void
on_relation(struct cdc *c, const struct ot_pgo_msg *m)
{
	int i, j;

	if (m->relname.len != 6 || memcmp(m->relname.p, "outbox", 6))
		return;
	c->relid = m->relid;
	for (j = 0; j < C_COUNT; j++)
		c->pos[j] = -1;
	for (i = 0; i < m->ncols; i++)
		for (j = 0; j < C_COUNT; j++)
			if (strlen(col_names[j]) == m->cols[i].len && !memcmp(col_names[j], m->cols[i].p, m->cols[i].len))
				c->pos[j] = i;
}

static int relay_rows(struct cdc *c, char *errstr, size_t errsz);

/* Keeps the row until its transaction commits, or until CDC_PART_ROWS are kept: whether to
 * send it is decided then. */
static int
on_insert(struct cdc *c, const struct ot_pgo_msg *m, char *errstr, size_t errsz)
{
	struct row *r;
	int j, k;

	if (m->relid != c->relid)
		return 0;
	for (j = 0; j < C_COUNT; j++) {
		k = c->pos[j];
		if (j != C_TRACEPARENT && (k < 0 || k >= m->ncols || m->isnull[k]))
			return ot_err(OT_EINTERNAL, errstr, errsz, "pgoutput: outbox row without %s", col_names[j]);
	}
	if (c->nrows == c->cap) {
		size_t cap = c->cap ? c->cap * 2 : 16;
		struct row *nr = realloc(c->rows, cap * sizeof *nr);
		if (!nr)
			return ot_err(OT_EINTERNAL, errstr, errsz, "out of memory");
		c->rows = nr;
		c->cap = cap;
	}
	r = &c->rows[c->nrows];
	memset(r, 0, sizeof *r);
	for (j = 0; j < C_COUNT; j++) {
		k = c->pos[j];
		if (k < 0 || k >= m->ncols || m->isnull[k])
			continue;
		if (!(r->f[j] = strndup(m->cols[k].p, m->cols[k].len))) {
			while (j-- > 0)
				free(r->f[j]);
			return ot_err(OT_EINTERNAL, errstr, errsz, "out of memory");
		}
	}
	r->payload_len = m->cols[c->pos[C_PAYLOAD]].len;
	/* Memory stays flat whatever the transaction's size: a large one goes in parts. */
	if (++c->nrows >= CDC_PART_ROWS)
		return relay_rows(c, errstr, errsz);
	return 0;
}

/* Appends "{id,id}" of the rows (all, or those marked in keep) to buf. */
static char *
id_array(const struct cdc *c, const unsigned char *keep)
{
	size_t i, len = 2, n = 0;
	char *s;

	for (i = 0; i < c->nrows; i++)
		len += strlen(c->rows[i].f[C_ID]) + 1;
	if (!(s = malloc(len + 1)))
		return NULL;
	s[n++] = '{';
	for (i = 0; i < c->nrows; i++)
		if (!keep || keep[i])
			n += (size_t)sprintf(s + n, "%s%s", n > 1 ? "," : "", c->rows[i].f[C_ID]);
	strcpy(s + n, "}");
	return s;
}

/* Which of the transaction's rows are still in the table, once the transaction is visible to
 * us. A row that is gone was relayed already (by the sweep, or before the slot was rewound by
 * a server restart) and must not be sent again. Returns 0 with keep[] filled, or an ot_rc. */
static int
still_there(struct cdc *c, unsigned char *keep, char *errstr, size_t errsz)
{
	const char *p[1];
	PGresult *res = NULL;
	char *ids;
	long long t0 = ot_now_ms();
	int rc = 0, vis, sleep_ms = 1, i;
	size_t r;

	if (!(ids = id_array(c, NULL)))
		return ot_err(OT_EINTERNAL, errstr, errsz, "out of memory");
	p[0] = ids;
	for (;;) {
		if ((rc = ot_pg_ensure(c->db, errstr, errsz)))
			goto out;
		/* One statement, one snapshot: the rows we see are those of the snapshot we test. */
		res = ot_pg_query(c->db, "SELECT txid_current_snapshot()::text, id::text, created::text FROM "
		                  "(SELECT NULL::bigint AS id, NULL::float8 AS created UNION ALL "
		                  "SELECT id, extract(epoch FROM created_at) FROM outbox "
		                  "WHERE id = ANY($1::bigint[])) s", 1, p, &rc, errstr, errsz);
		if (!res)
			goto out;
		vis = ot_pgo_xid_visible(c->xid, PQgetvalue(res, 0, 0));
		if (vis < 0) {
			rc = ot_err(OT_EINTERNAL, errstr, errsz, "cannot parse snapshot %s", PQgetvalue(res, 0, 0));
			goto out;
		}
		if (vis)
			break;
		PQclear(res);
		res = NULL;
		if (ot_now_ms() - t0 > VISIBLE_WAIT_MS) {
			rc = ot_err(OT_ESERVICE, errstr, errsz, "transaction %u committed but not visible after %d ms",
			            c->xid, VISIBLE_WAIT_MS);
			goto out;
		}
		nanosleep(&(struct timespec){0, sleep_ms * 1000000L}, NULL);
		if (sleep_ms < 64)
			sleep_ms *= 2;
	}
	memset(keep, 0, c->nrows);
	for (i = 0; i < PQntuples(res); i++) {
		if (PQgetisnull(res, i, 1))
			continue;
		for (r = 0; r < c->nrows; r++)
			if (!strcmp(c->rows[r].f[C_ID], PQgetvalue(res, i, 1))) {
				keep[r] = 1;
				c->rows[r].created_s = strtod(PQgetvalue(res, i, 2), NULL);
			}
	}
out:
	PQclear(res);
	free(ids);
	return rc;
}

/* Sends the transaction's rows buffered so far that are still in the outbox, waits for Kafka
 * and deletes them; the transaction committed (pgoutput sends only committed ones), so its
 * rows can go in parts. A restart replays the whole transaction from the slot, and a row
 * already deleted is not sent again. */
static int
relay_rows(struct cdc *c, char *errstr, size_t errsz)
{
	const char *p[1];
	unsigned char *keep = NULL;
	char *ids = NULL, tp[OT_TRACEPARENT_LEN];
	struct ot_span *spans = NULL;
	size_t i, nspans = 0;
	long sent = 0;
	int rc = 0;

	if (c->nrows) {
		if (!(keep = malloc(c->nrows)) || !(spans = calloc(c->nrows, sizeof *spans))) {
			rc = ot_err(OT_EINTERNAL, errstr, errsz, "out of memory");
			goto out;
		}
		if ((rc = still_there(c, keep, errstr, errsz)))
			goto out;
		for (i = 0; i < c->nrows; i++) {
			struct row *r = &c->rows[i];
			struct ot_header h[3] = {
				{"ot-id", r->f[C_EVENT_ID]}, {"ot-type", r->f[C_TYPE]},
				{"traceparent", tp},
			};
			if (!keep[i]) {
				c->replayed++;
				OT_DEBUG(NULL, "cdc: event %s was relayed already", r->f[C_EVENT_ID]);
				continue;
			}
			ot_relay_span(&spans[nspans++], r->f[C_TOPIC], r->f[C_KEY], r->f[C_EVENT_ID],
			              r->f[C_TRACEPARENT], tp);
			if ((rc = ot_out_send(c->out, r->f[C_TOPIC], r->f[C_KEY], r->f[C_PAYLOAD], r->payload_len,
			                      h, 3, errstr, errsz)))
				goto out;
			sent++;
		}
		if (sent) {
			if ((rc = ot_out_flush(c->out, 30000, errstr, errsz)))
				goto out;
			if (!(ids = id_array(c, keep))) {
				rc = ot_err(OT_EINTERNAL, errstr, errsz, "out of memory");
				goto out;
			}
			p[0] = ids;
			/* Before the LSN is confirmed: a row that outlived its confirmation would be sent
			 * again by the next start's sweep. */
			if ((rc = ot_pg_exec(c->db, "DELETE FROM outbox WHERE id = ANY($1::bigint[])", 1, p,
			                     errstr, errsz)))
				goto out;
			c->total += sent;
			for (i = 0; i < c->nrows; i++)
				if (keep[i])
					ot_outbox_count_published(c->dbname, c->rows[i].f[C_TOPIC], c->rows[i].created_s);
		}
		OT_DEBUG(NULL, "cdc: relayed %ld of %zu events of transaction %u", sent, c->nrows, c->xid);
	}
out:
	for (i = 0; i < nspans; i++) {
		if (rc)
			ot_span_error(&spans[i], errstr);
		ot_span_end(&spans[i]);
	}
	free(spans);
	clear_rows(c);
	free(keep);
	free(ids);
	return rc;
}

/* The transaction committed: relay what is left of it, and only then confirm its end LSN, so
 * a restart at any point sends nothing twice but what Kafka acknowledged in the instant
 * before the DELETE. */
static int
on_commit(struct cdc *c, uint64_t end_lsn, char *errstr, size_t errsz)
{
	int rc;

	c->in_txn = 0;
	if ((rc = relay_rows(c, errstr, errsz)))
		return rc;
	c->confirmed = end_lsn;
	return send_status(c, errstr, errsz);
}

static int
on_xlogdata(struct cdc *c, const unsigned char *m, size_t len, char *errstr, size_t errsz)
{
	struct ot_pgo_msg msg;

	if (len < 26)
		return 0;
	if (ot_pgo_decode(m + 25, len - 25, &msg))
		return ot_err(OT_EINTERNAL, errstr, errsz, "pgoutput: malformed message of type %c", m[25]);
	switch (msg.type) {
	case 'B':
		clear_rows(c);
		c->in_txn = 1;
		c->xid = msg.xid;
		return 0;
	case 'R':
		on_relation(c, &msg);
		return 0;
	case 'I':
		return on_insert(c, &msg, errstr, errsz);
	case 'C':
		return on_commit(c, msg.lsn, errstr, errsz);
	default:
		return 0;
	}
}

static int
setup(PGconn *db, const char *slot, char *errstr, size_t errsz)
{
	const char *p[1] = {slot};
	PGresult *res;
	int rc, n, lost;

	/* Said plainly, before PostgreSQL refuses the slot in its own words. */
	res = ot_pg_query(db, "SELECT rolreplication OR rolsuper, current_user FROM pg_roles "
	                  "WHERE rolname = current_user", 0, NULL, &rc, errstr, errsz);
	if (!res)
		return rc;
	if (PQntuples(res) && strcmp(PQgetvalue(res, 0, 0), "t")) {
		rc = ot_err(OT_ECONFIG, errstr, errsz, "role %s lacks REPLICATION: a relay in --mode cdc "
		            "needs a role that has it (the replication role of lib/sql/roles.sql)",
		            PQgetvalue(res, 0, 1));
		PQclear(res);
		return rc;
	}
	PQclear(res);
	/* The publication is the schema's (a migration makes it): the relay never needs DDL. */
	res = ot_pg_query(db, "SELECT 1 FROM pg_publication WHERE pubname = 'ot_outbox'", 0, NULL, &rc, errstr, errsz);
	if (!res)
		return rc;
	n = PQntuples(res);
	PQclear(res);
	if (!n)
		return ot_err(OT_ECONFIG, errstr, errsz, "the publication ot_outbox is missing: run ot-relay "
		              "migrate (a migration creates it)");
	res = ot_pg_query(db, "SELECT coalesce(wal_status, '') FROM pg_replication_slots WHERE slot_name = $1",
	                  1, p, &rc, errstr, errsz);
	if (!res)
		return rc;
	n = PQntuples(res);
	lost = n && !strcmp(PQgetvalue(res, 0, 0), "lost");
	PQclear(res);
	/* Past max_slot_wal_keep_size the server gave up the slot's WAL. Nothing is lost with it:
	 * every row not yet relayed is still in the table, and the sweep sends it. */
	if (lost) {
		OT_WARN(NULL, "cdc: slot %s lost its WAL (max_slot_wal_keep_size); recreating it", slot);
		if ((rc = ot_pg_exec(db, "SELECT pg_drop_replication_slot($1)", 1, p, errstr, errsz)))
			return rc;
		n = 0;
	}
	if (!n) {
		if ((rc = ot_pg_exec(db, "SELECT pg_create_logical_replication_slot($1, 'pgoutput')", 1, p,
		                     errstr, errsz)))
			return rc;
		OT_INFO(NULL, "cdc: created replication slot %s", slot);
	}
	return 0;
}

int
ot_cdc_run(const char *conninfo, const char *dbname, const char *slot, struct ot_out *out, int once,
           long *total, char *errstr, size_t errsz)
{
	const char *keys[] = {"dbname", "replication", "connect_timeout", "application_name", NULL};
	const char *vals[] = {conninfo, "database", "5", "ot-relay-cdc", NULL};
	struct cdc c;
	PGresult *res;
	char cmd[256], *buf = NULL;
	long long idle_since = ot_now_ms();
	int rc = OT_OK, n, i;

	memset(&c, 0, sizeof c);
	c.out = out;
	c.dbname = dbname;
	for (i = 0; i < C_COUNT; i++)
		c.pos[i] = -1;
	for (i = 0; slot[i]; i++)
		if (!strchr("abcdefghijklmnopqrstuvwxyz0123456789_", slot[i]))
			return ot_err(OT_ECONFIG, errstr, errsz, "slot \"%s\": lower-case letters, digits and _ only", slot);
	if (!(c.db = ot_pg_open(conninfo, dbname, &rc, errstr, errsz)))
		return rc;
	if ((rc = setup(c.db, slot, errstr, errsz)))
		goto out;
	/* Rows that Kafka took just before the last run died, before their DELETE: not again. */
	if ((n = (int)ot_outbox_reconcile(c.db, out, 1000, errstr, errsz)) < 0) {
		rc = n;
		goto out;
	}
	/* Rows from before the slot existed are not in the stream from the slot's position, and
	 * rows the slot will replay are skipped once swept: sweep them first (at least once). */
	while ((n = (int)ot_outbox_relay(c.db, out, 500, NULL, errstr, errsz)) > 0)
		c.total += n;
	if (n < 0) {
		rc = n;
		goto out;
	}
	c.repl = PQconnectdbParams(keys, vals, 1);
	if (PQstatus(c.repl) != CONNECTION_OK) {
		rc = ot_err(OT_ESERVICE, errstr, errsz, "replication connection: %s", PQerrorMessage(c.repl));
		goto out;
	}
	snprintf(cmd, sizeof cmd, "START_REPLICATION SLOT %s LOGICAL 0/0 (proto_version '1', "
	         "publication_names 'ot_outbox')", slot);
	res = PQexec(c.repl, cmd);
	if (PQresultStatus(res) != PGRES_COPY_BOTH) {
		rc = ot_err(OT_ESERVICE, errstr, errsz, "START_REPLICATION: %s", PQerrorMessage(c.repl));
		PQclear(res);
		goto out;
	}
	PQclear(res);
	OT_INFO(NULL, "cdc: streaming the %s outbox from slot %s", dbname, slot);
	while (!ot_stop) {
		n = PQgetCopyData(c.repl, &buf, 1);
		if (n > 0) {
			const unsigned char *m = (const unsigned char *)buf;
			if (m[0] == 'w') {
				rc = on_xlogdata(&c, m, (size_t)n, errstr, errsz);
				idle_since = ot_now_ms();
			} else if (m[0] == 'k' && n >= 18) {
				c.server_end = get64(m + 1);
				/* Nothing of ours in flight: the server's position is safe to confirm. */
				if (!c.in_txn && c.server_end > c.confirmed)
					c.confirmed = c.server_end;
				if (m[17])
					rc = send_status(&c, errstr, errsz);
			}
			PQfreemem(buf);
			buf = NULL;
			if (rc)
				break;
			continue;
		}
		if (n == -2 || n == -1) {
			rc = ot_err(OT_ESERVICE, errstr, errsz, "replication stream ended: %s", PQerrorMessage(c.repl));
			break;
		}
		if (once && !c.in_txn && ot_now_ms() - idle_since > 1000)
			break;
		if (ot_now_ms() - c.last_status_ms >= STATUS_INTERVAL_MS && (rc = send_status(&c, errstr, errsz)))
			break;
		{
			fd_set fds;
			struct timeval tv = {0, 200000};
			int sock = PQsocket(c.repl);

			FD_ZERO(&fds);
			FD_SET(sock, &fds);
			select(sock + 1, &fds, NULL, NULL, &tv);
			if (!PQconsumeInput(c.repl)) {
				rc = ot_err(OT_ESERVICE, errstr, errsz, "replication: %s", PQerrorMessage(c.repl));
				break;
			}
		}
	}
	if (!rc && c.repl)
		send_status(&c, errstr, errsz);
out:
	if (total)
		*total = c.total;
	if (c.replayed)
		OT_INFO(NULL, "cdc: %ld replayed events were relayed already and not sent again", c.replayed);
	clear_rows(&c);
	free(c.rows);
	if (c.repl)
		PQfinish(c.repl);
	PQfinish(c.db);
	return rc;
}

int
ot_cdc_drop(const char *conninfo, const char *slot, char *errstr, size_t errsz)
{
	const char *p[1] = {slot};
	PGresult *res;
	PGconn *db;
	int rc;

	if (!(db = ot_pg_connect(conninfo, errstr, errsz)))
		return OT_ESERVICE;
	res = ot_pg_query(db, "SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1", 1, p, &rc,
	                  errstr, errsz);
	if (!res)
		goto out;
	if (!PQntuples(res)) {
		rc = 0;
	} else if (!PQgetisnull(res, 0, 0)) {
		rc = ot_err(OT_ESERVICE, errstr, errsz, "slot %s is in use by server process %s: stop its relay first",
		            slot, PQgetvalue(res, 0, 0));
	} else if (!(rc = ot_pg_exec(db, "SELECT pg_drop_replication_slot($1)", 1, p, errstr, errsz))) {
		rc = 1;
	}
	PQclear(res);
out:
	PQfinish(db);
	return rc;
}

int
ot_cdc_relay(const char *conninfo, const char *db, const char *slot, struct ot_out *out, int once, int attempts,
             long *total, char *errstr, size_t errsz)
{
	long n;
	int rc, attempt = 0;

	for (;;) {
		n = 0;
		rc = ot_cdc_run(conninfo, db, slot, out, once, &n, errstr, errsz);
		*total += n;
		if (n > 0)
			attempt = 0;
		if (rc != OT_ESERVICE || once || ot_stop || ++attempt >= attempts)
			return rc;
		OT_WARN(NULL, "cdc: attempt %d of %d failed, resuming: %s", attempt, attempts, errstr);
		ot_backoff(attempt);
	}
}
