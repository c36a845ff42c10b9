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
#include "ot_signal.h"

#define STATUS_INTERVAL_MS 2000
#define MAX_COLS 32

/* The outbox's columns we need, by position in the relation pgoutput described. */
enum { C_ID, C_TOPIC, C_KEY, C_EVENT_ID, C_TYPE, C_TRACEPARENT, C_PAYLOAD, C_COUNT };
static const char *const col_names[C_COUNT] = {
	"id", "topic", "key", "event_id", "type", "traceparent", "payload"
};

struct cdc {
	PGconn *repl, *db;
	struct ot_out *out;
	uint32_t relid;
	int pos[C_COUNT];          /* column index of each, -1 if absent */
	int in_txn;
	uint64_t confirmed;        /* flushed to Kafka, confirmed to the server */
	uint64_t server_end;       /* the server's WAL end, from keepalives */
	long long last_status_ms;
	char *ids;                 /* outbox ids of the open transaction: "{1,2,3" */
	size_t ids_len, ids_cap;
	long pending, total;
};

static uint64_t
get64(const unsigned char *p)
{
	uint64_t v = 0;
	int i;

	for (i = 0; i < 8; i++)
		v = v << 8 | p[i];
	return v;
}

static uint32_t
get32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void
put64(unsigned char *p, uint64_t v)
{
	int i;

	for (i = 7; i >= 0; i--, v >>= 8)
		p[i] = (unsigned char)(v & 0xff);
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

/* A NUL-terminated string in a pgoutput message; advances *p. NULL if it runs off the end. */
static const char *
get_str(const unsigned char **p, const unsigned char *end)
{
	const unsigned char *s = *p;

	while (*p < end && **p)
		(*p)++;
	if (*p >= end)
		return NULL;
	(*p)++;
	return (const char *)s;
}

static int
on_relation(struct cdc *c, const unsigned char *p, const unsigned char *end)
{
	const char *ns, *name, *col;
	int i, j, n;
	uint32_t relid;

	if (end - p < 4)
		return -1;
	relid = get32(p);
	p += 4;
	if (!(ns = get_str(&p, end)) || !(name = get_str(&p, end)) || end - p < 3)
		return -1;
	if (strcmp(name, "outbox"))
		return 0;
	p += 1; /* replica identity */
	n = p[0] << 8 | p[1];
	p += 2;
	c->relid = relid;
	for (j = 0; j < C_COUNT; j++)
		c->pos[j] = -1;
	for (i = 0; i < n && i < MAX_COLS; i++) {
		p += 1; /* flags */
		if (!(col = get_str(&p, end)) || end - p < 8)
			return -1;
		p += 8; /* type oid, typmod */
		for (j = 0; j < C_COUNT; j++)
			if (!strcmp(col, col_names[j]))
				c->pos[j] = i;
	}
	(void)ns;
	return 0;
}

static int
on_insert(struct cdc *c, const unsigned char *p, const unsigned char *end, char *errstr, size_t errsz)
{
	char *val[MAX_COLS] = {0};
	struct ot_header h[3];
	int i, n, rc = 0;
	uint32_t len;

	if (end - p < 7 || get32(p) != c->relid || p[4] != 'N')
		return 0; /* another table, or not a new tuple */
	p += 5;
	n = p[0] << 8 | p[1];
	p += 2;
	for (i = 0; i < n && i < MAX_COLS; i++) {
		if (p >= end)
			return ot_err(OT_EINTERNAL, errstr, errsz, "pgoutput: short insert message");
		if (*p == 't') {
			if (end - p < 5 || (len = get32(p + 1)) > (size_t)(end - p - 5))
				return ot_err(OT_EINTERNAL, errstr, errsz, "pgoutput: bad column length");
			val[i] = strndup((const char *)p + 5, len);
			p += 5 + len;
		} else {
			p++; /* 'n' null or 'u' unchanged toast */
		}
	}
	for (i = 0; i < C_COUNT; i++)
		if (i != C_TRACEPARENT && (c->pos[i] < 0 || !val[c->pos[i]])) {
			rc = ot_err(OT_EINTERNAL, errstr, errsz, "pgoutput: outbox row without %s", col_names[i]);
			goto out;
		}
	h[0] = (struct ot_header){"ot-id", val[c->pos[C_EVENT_ID]]};
	h[1] = (struct ot_header){"ot-type", val[c->pos[C_TYPE]]};
	h[2] = (struct ot_header){"traceparent", c->pos[C_TRACEPARENT] >= 0 ? val[c->pos[C_TRACEPARENT]] : NULL};
	rc = ot_out_send(c->out, val[c->pos[C_TOPIC]], val[c->pos[C_KEY]], val[c->pos[C_PAYLOAD]],
	                 strlen(val[c->pos[C_PAYLOAD]]), h, 3, errstr, errsz);
	if (!rc) {
		const char *id = val[c->pos[C_ID]];
		size_t l = strlen(id);
		if (c->ids_len + l + 3 > c->ids_cap) {
			char *nb = realloc(c->ids, c->ids_cap = (c->ids_cap + l + 3) * 2);
			if (!nb) {
				rc = ot_err(OT_EINTERNAL, errstr, errsz, "out of memory");
				goto out;
			}
			c->ids = nb;
		}
		c->ids_len += (size_t)sprintf(c->ids + c->ids_len, "%s%s", c->ids_len ? "," : "{", id);
		c->pending++;
	}
out:
	for (i = 0; i < MAX_COLS; i++)
		free(val[i]);
	return rc;
}

/* The transaction's records are all sent: once Kafka has them, confirm its end LSN. */
static int
on_commit(struct cdc *c, uint64_t end_lsn, char *errstr, size_t errsz)
{
	const char *p[1];
	char err[512];
	int rc;

	c->in_txn = 0;
	if (c->pending) {
		if ((rc = ot_out_flush(c->out, 30000, errstr, errsz)))
			return rc;
		strcpy(c->ids + c->ids_len, "}");
		p[0] = c->ids;
		/* The rows only kept the events until Kafka had them. Failing to delete them is not
		 * fatal: publication is insert-only, a poll relay must not run beside CDC anyway. */
		if (ot_pg_ensure(c->db, err, sizeof err) ||
		    ot_pg_exec(c->db, "DELETE FROM outbox WHERE id = ANY($1::bigint[])", 1, p, err, sizeof err))
			OT_WARN(NULL, "cdc: could not delete relayed outbox rows: %s", err);
		c->total += c->pending;
		OT_DEBUG(NULL, "cdc: relayed %ld events up to %X/%X", c->pending,
		         (unsigned)(end_lsn >> 32), (unsigned)end_lsn);
	}
	c->pending = 0;
	c->ids_len = 0;
	c->confirmed = end_lsn;
	return send_status(c, errstr, errsz);
}

static int
on_xlogdata(struct cdc *c, const unsigned char *m, size_t len, char *errstr, size_t errsz)
{
	const unsigned char *p = m + 25, *end = m + len;

	if (len < 26)
		return 0;
	switch (*p++) {
	case 'B':
		c->in_txn = 1;
		return 0;
	case 'R':
		return on_relation(c, p, end) ? ot_err(OT_EINTERNAL, errstr, errsz, "pgoutput: bad relation message") : 0;
	case 'I':
		return on_insert(c, p, end, errstr, errsz);
	case 'C':
		if (end - p < 25)
			return ot_err(OT_EINTERNAL, errstr, errsz, "pgoutput: short commit message");
		return on_commit(c, get64(p + 9), errstr, errsz);
	default:
		return 0; /* origin, type, truncate, update, delete: not ours */
	}
}

static int
setup(PGconn *db, const char *slot, char *errstr, size_t errsz)
{
	const char *p[1] = {slot};
	PGresult *res;
	int rc, n;

	res = ot_pg_query(db, "SELECT 1 FROM pg_publication WHERE pubname = 'ot_outbox'", 0, NULL, &rc, errstr, errsz);
	if (!res)
		return rc;
	n = PQntuples(res);
	PQclear(res);
	if (!n && (rc = ot_pg_exec(db, "CREATE PUBLICATION ot_outbox FOR TABLE outbox WITH (publish = 'insert')",
	                           0, NULL, errstr, errsz)))
		return rc;
	res = ot_pg_query(db, "SELECT 1 FROM pg_replication_slots WHERE slot_name = $1", 1, p, &rc, errstr, errsz);
	if (!res)
		return rc;
	n = PQntuples(res);
	PQclear(res);
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
	for (i = 0; i < C_COUNT; i++)
		c.pos[i] = -1;
	for (i = 0; slot[i]; i++)
		if (!strchr("abcdefghijklmnopqrstuvwxyz0123456789_", slot[i]))
			return ot_err(OT_ECONFIG, errstr, errsz, "slot \"%s\": lower-case letters, digits and _ only", slot);
	if (!(c.db = ot_pg_open(conninfo, dbname, &rc, errstr, errsz)))
		return rc;
	if ((rc = setup(c.db, slot, errstr, errsz)))
		goto out;
	/* Rows from before the slot existed, or relayed before a crash but not yet deleted, are
	 * not in the stream from the slot's position: sweep them first (at least once). */
	while ((n = (int)ot_outbox_relay(c.db, out, 500, errstr, errsz)) > 0)
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
				if (!c.in_txn && !c.pending && c.server_end > c.confirmed)
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
	free(c.ids);
	if (c.repl)
		PQfinish(c.repl);
	PQfinish(c.db);
	return rc;
}
