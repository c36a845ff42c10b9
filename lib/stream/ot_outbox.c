/* ot_outbox: rows written with the state change, relayed after it, deleted only once acknowledged. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <time.h>

#include "ot_err.h"
#include "ot_io.h"
#include "ot_log.h"
#include "ot_metrics.h"
#include "ot_outbox.h"
#include "ot_pg.h"
#include "ot_run.h"
#include "ot_signal.h"
#include "ot_trace.h"

/* The outbox row of ev: its span (a child of ev's traceparent, a parent of its consumers'
 * through the relay) begun in sp, the row's traceparent in tp, the payload returned (caller
 * frees; NULL out of memory). */
static char *
outbox_row(const char *topic, const struct ot_event *ev, struct ot_span *sp, char tp[56])
{
	struct ot_event e = *ev; /* shares data: only the traceparent differs */
	char name[96];

	snprintf(name, sizeof name, "outbox %s", ev->type);
	ot_span_begin_detached(sp, name, OT_SPAN_PRODUCER, ev->traceparent);
	ot_span_traceparent(sp, e.traceparent);
	if (sp->exported) {
		ot_span_tag(sp, "order_id", ev->order_id);
		ot_span_tag(sp, "event.id", ev->id);
		ot_span_tag(sp, "messaging.destination", topic);
	}
	snprintf(tp, 56, "%s", e.traceparent);
	return ot_event_dump(&e);
}

int
ot_outbox_add(PGconn *db, const char *topic, const struct ot_event *ev, char *errstr, size_t errsz)
{
	return ot_outbox_add_many(db, topic, ev, 1, errstr, errsz);
}

int
ot_outbox_add_many(PGconn *db, const char *topic, const struct ot_event *evs, size_t n, char *errstr,
                   size_t errsz)
{
	struct ot_span *sp;
	json_t *rows = json_array();
	char tp[56], *payload, *doc = NULL;
	const char *p[2];
	size_t i, begun = 0;
	int rc = OT_OK;

	if (!n)
		goto out;
	if (!(sp = calloc(n, sizeof *sp))) {
		rc = ot_err(OT_EINTERNAL, errstr, errsz, "out of memory");
		goto out;
	}
	for (i = 0; i < n && !rc; i++, begun++) {
		if (!(payload = outbox_row(topic, &evs[i], &sp[i], tp))) {
			rc = ot_err(OT_EINTERNAL, errstr, errsz, "out of memory");
			begun++;
			break;
		}
		json_array_append_new(rows, json_pack("[s, s, s, s, s]", evs[i].order_id, evs[i].id, evs[i].type, tp,
		                                      payload));
		free(payload);
	}
	if (!rc && !(doc = json_dumps(rows, JSON_COMPACT)))
		rc = ot_err(OT_EINTERNAL, errstr, errsz, "out of memory");
	if (!rc) {
		/* One statement for the lot, in their order: the relay sends by id. */
		p[0] = topic;
		p[1] = doc;
		rc = ot_pg_exec(db, "INSERT INTO outbox (topic, key, event_id, type, traceparent, payload) "
		                "SELECT $1, x->>0, (x->>1)::uuid, x->>2, NULLIF(x->>3, ''), x->>4 "
		                "FROM jsonb_array_elements($2::jsonb) WITH ORDINALITY AS t(x, n) ORDER BY n",
		                2, p, errstr, errsz);
	}
	for (i = 0; i < begun; i++) {
		if (rc)
			ot_span_error(&sp[i], errstr);
		ot_span_end(&sp[i]);
	}
	free(sp);
out:
	free(doc);
	json_decref(rows);
	return rc;
}

#define WATCH_MS 5000 /* how often the gauges that need a query are refreshed */

static const double ack_bounds[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300};
static char relay_db[16] = "orders";

void
ot_outbox_metrics_db(const char *db)
{
	snprintf(relay_db, sizeof relay_db, "%s", db);
}

void
ot_outbox_count_published(const char *db, const char *topic, double created_s)
{
	struct timespec now;

	ot_metric_add(ot_metric_new(OT_COUNTER, "ot_relay_published_total", "Outbox events Kafka acknowledged, "
	                            "by database and topic.", "db,topic", NULL, 0), 1, db, topic);
	if (created_s <= 0)
		return;
	clock_gettime(CLOCK_REALTIME, &now);
	ot_metric_observe(ot_metric_new(OT_HISTOGRAM, "ot_relay_ack_seconds", "Time from an outbox row's commit "
	                                "to Kafka's acknowledgement of its event.", "db", ack_bounds,
	                                sizeof ack_bounds / sizeof ack_bounds[0]),
	                  (double)now.tv_sec + (double)now.tv_nsec / 1e9 - created_s, db);
}

long
ot_outbox_relay(PGconn *db, struct ot_out *out, int batch, int *more, char *errstr, size_t errsz)
{
	char lim[16], *ids = NULL, tp[OT_TRACEPARENT_LEN];
	const char *p[1];
	PGresult *res = NULL;
	struct ot_span *spans = NULL;
	size_t idlen = 0, cap = 0;
	long n = 0;
	int i, rc, nspans = 0;

	if (more)
		*more = 1; /* unless this batch shows otherwise */
	snprintf(lim, sizeof lim, "%d", batch > 0 ? batch : 500);
	p[0] = lim;
	if ((rc = ot_pg_exec(db, "BEGIN", 0, NULL, errstr, errsz)))
		return rc;
	/* Oldest first, and only the oldest row of each order: a relay beside this one skips the
	 * rows we lock, and cannot take an order's next row while its previous one is still
	 * here, so several relays keep each order's events in order. */
	res = ot_pg_query(db, "SELECT id, topic, key, event_id, type, coalesce(traceparent, ''), payload, "
	                  "extract(epoch FROM created_at) "
	                  "FROM outbox o WHERE NOT EXISTS (SELECT 1 FROM outbox p WHERE p.key = o.key "
	                  "AND p.id < o.id) ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
	                  1, p, &rc, errstr, errsz);
	if (!res)
		goto out;
	if (PQntuples(res) && !(spans = calloc((size_t)PQntuples(res), sizeof *spans))) {
		rc = ot_err(OT_EINTERNAL, errstr, errsz, "out of memory");
		goto out;
	}
	for (i = 0; i < PQntuples(res); i++) {
		struct ot_header h[3] = {
			{"ot-id", PQgetvalue(res, i, 3)},
			{"ot-type", PQgetvalue(res, i, 4)},
			{"traceparent", tp},
		};
		const char *id = PQgetvalue(res, i, 0);
		size_t l = strlen(id);

		ot_relay_span(&spans[nspans++], PQgetvalue(res, i, 1), PQgetvalue(res, i, 2), PQgetvalue(res, i, 3),
		              PQgetvalue(res, i, 5), tp);
		rc = ot_out_send(out, PQgetvalue(res, i, 1), PQgetvalue(res, i, 2), PQgetvalue(res, i, 6),
		                 (size_t)PQgetlength(res, i, 6), h, 3, errstr, errsz);
		if (rc)
			goto out;
		if (idlen + l + 3 > cap) {
			char *nids = realloc(ids, cap = (cap + l + 3) * 2);
			if (!nids) {
				rc = ot_err(OT_EINTERNAL, errstr, errsz, "out of memory");
				goto out;
			}
			ids = nids;
		}
		idlen += (size_t)sprintf(ids + idlen, "%s%s", idlen ? "," : "{", id);
	}
	n = PQntuples(res);
	if (n == 0) {
		if (more)
			*more = 0;
		rc = ot_pg_exec(db, "COMMIT", 0, NULL, errstr, errsz);
		goto out;
	}
	strcpy(ids + idlen, "}");
	/* At-least-once: rows go only after the broker (or stdout) has taken every record. */
	if ((rc = ot_out_flush(out, 30000, errstr, errsz)))
		goto out;
	p[0] = ids;
	if ((rc = ot_pg_exec(db, "DELETE FROM outbox WHERE id = ANY($1::bigint[])", 1, p, errstr, errsz)))
		goto out;
	if (more) {
		/* Anything left: the rest of a full batch, an order's next row, rows another relay
		 * holds. Rows committed after this statement announce themselves with a NOTIFY. */
		PGresult *left = ot_pg_query(db, "SELECT 1 FROM outbox ORDER BY id LIMIT 1", 0, NULL, &rc, errstr, errsz);
		if (!left)
			goto out;
		*more = PQntuples(left) > 0;
		PQclear(left);
	}
	if (!(rc = ot_pg_exec(db, "COMMIT", 0, NULL, errstr, errsz)))
		for (i = 0; i < n; i++)
			ot_outbox_count_published(relay_db, PQgetvalue(res, i, 1), strtod(PQgetvalue(res, i, 7), NULL));
out:
	if (rc)
		ot_pg_rollback(db);
	for (i = 0; i < nspans; i++) {
		if (rc)
			ot_span_error(&spans[i], errstr);
		ot_span_end(&spans[i]);
	}
	free(spans);
	PQclear(res);
	free(ids);
	return rc ? rc : n;
}

void
ot_relay_span(struct ot_span *s, const char *topic, const char *key, const char *event_id,
              const char *parent, char tp[OT_TRACEPARENT_LEN])
{
	char name[160];

	snprintf(name, sizeof name, "publish%s%s", topic ? " " : "", topic ? topic : "");
	ot_span_begin_detached(s, name, OT_SPAN_PRODUCER, parent);
	ot_span_traceparent(s, tp);
	if (s->exported) {
		ot_span_tag(s, "messaging.system", "kafka");
		if (topic)
			ot_span_tag(s, "messaging.destination", topic);
		if (key)
			ot_span_tag(s, "order_id", key);
		if (event_id)
			ot_span_tag(s, "event.id", event_id);
	}
}

int
ot_outbox_listen(PGconn *db, char *errstr, size_t errsz)
{
	return ot_pg_exec(db, "LISTEN ot_outbox", 0, NULL, errstr, errsz);
}

int
ot_outbox_wait(PGconn *db, int timeout_ms)
{
	struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
	PGnotify *nt;
	fd_set fds;
	int sock = PQsocket(db), got = 0;

	if (sock < 0)
		return -1;
	/* A NOTIFY that came in during the last query already sits in libpq's queue. */
	if (!PQconsumeInput(db))
		return -1;
	while ((nt = PQnotifies(db))) {
		got = 1;
		PQfreemem(nt);
	}
	if (got)
		return 1;
	FD_ZERO(&fds);
	FD_SET(sock, &fds);
	if (select(sock + 1, &fds, NULL, NULL, &tv) < 0)
		return 0; /* a signal: the caller checks ot_stop */
	if (!PQconsumeInput(db))
		return -1;
	while ((nt = PQnotifies(db))) {
		got = 1;
		PQfreemem(nt);
	}
	return got;
}

/* Event ids read back from a topic, as a PostgreSQL uuid[] literal. */
struct seen {
	char *buf;
	size_t len, cap;
	int oom;
};

static void
add_seen(const char *id, size_t len, void *arg)
{
	struct seen *s = arg;
	size_t i;

	if (len != 36 || s->oom)
		return; /* not an event id of ours */
	for (i = 0; i < len; i++)
		if (!strchr("0123456789abcdefABCDEF-", id[i]))
			return;
	if (s->len + len + 3 > s->cap) {
		char *nb = realloc(s->buf, s->cap = (s->cap + len + 3) * 2);
		if (!nb) {
			s->oom = 1;
			return;
		}
		s->buf = nb;
	}
	s->buf[s->len] = s->len ? ',' : '{';
	s->len++;
	memcpy(s->buf + s->len, id, len);
	s->len += len;
}

long
ot_outbox_reconcile(PGconn *db, struct ot_out *out, long last, char *errstr, size_t errsz)
{
	PGresult *topics;
	const char *p[2];
	struct seen s = {0};
	long done = 0;
	int i, rc = 0;

	if (!ot_out_is_kafka(out))
		return 0;
	if (!(topics = ot_pg_query(db, "SELECT DISTINCT topic FROM outbox", 0, NULL, &rc, errstr, errsz)))
		return rc;
	for (i = 0; i < PQntuples(topics); i++) {
		PGresult *res;

		s.len = 0;
		if ((rc = ot_out_recent_ids(out, PQgetvalue(topics, i, 0), last, add_seen, &s, errstr, errsz)))
			goto out;
		if (s.oom) {
			rc = ot_err(OT_EINTERNAL, errstr, errsz, "out of memory");
			goto out;
		}
		if (!s.len)
			continue;
		strcpy(s.buf + s.len, "}");
		p[0] = PQgetvalue(topics, i, 0);
		p[1] = s.buf;
		res = ot_pg_query(db, "WITH d AS (DELETE FROM outbox WHERE topic = $1 AND event_id = ANY($2::uuid[]) "
		                  "RETURNING 1) SELECT count(*) FROM d", 2, p, &rc, errstr, errsz);
		if (!res)
			goto out;
		done += atol(PQgetvalue(res, 0, 0));
		PQclear(res);
	}
	if (done)
		OT_INFO(NULL, "relay: %ld outbox rows were on Kafka already (published before a crash); "
		        "deleted, not sent again", done);
out:
	PQclear(topics);
	free(s.buf);
	return rc ? rc : done;
}

struct ot_outbox_watch {
	char *conninfo, db[16], *slot;
	pthread_t thread;
	atomic_int stop;
	struct ot_metric *pending, *oldest, *retained, *lag;
};

static void
watch_once(struct ot_outbox_watch *w, PGconn *db)
{
	const char *p[1] = {w->slot};
	char err[512];
	PGresult *res;
	int rc;

	res = ot_pg_query(db, "SELECT count(*), coalesce(extract(epoch FROM now() - min(created_at)), 0) FROM outbox",
	                  0, NULL, &rc, err, sizeof err);
	if (res && PQntuples(res) == 1) {
		ot_metric_set(w->pending, strtod(PQgetvalue(res, 0, 0), NULL), w->db);
		ot_metric_set(w->oldest, strtod(PQgetvalue(res, 0, 1), NULL), w->db);
	} else {
		OT_DEBUG(NULL, "outbox gauges: %s", err);
	}
	PQclear(res);
	if (!w->slot)
		return;
	res = ot_pg_query(db, "SELECT coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn), 0), "
	                  "coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn), 0) "
	                  "FROM pg_replication_slots WHERE slot_name = $1", 1, p, &rc, err, sizeof err);
	if (res && PQntuples(res) == 1) {
		ot_metric_set(w->retained, strtod(PQgetvalue(res, 0, 0), NULL), w->db, w->slot);
		ot_metric_set(w->lag, strtod(PQgetvalue(res, 0, 1), NULL), w->db, w->slot);
	}
	PQclear(res);
}

static void *
watch(void *arg)
{
	struct ot_outbox_watch *w = arg;
	struct timespec tick = {0, 100 * 1000000L};
	PGconn *db = NULL;
	char err[512];
	int ms;

	while (!atomic_load(&w->stop)) {
		if ((db || (db = ot_pg_connect(w->conninfo, err, sizeof err))) && !ot_pg_ensure(db, NULL, 0))
			watch_once(w, db);
		for (ms = 0; ms < WATCH_MS && !atomic_load(&w->stop); ms += 100)
			nanosleep(&tick, NULL);
	}
	PQfinish(db);
	return NULL;
}

struct ot_outbox_watch *
ot_outbox_watch_start(const char *conninfo, const char *db, const char *slot, char *errstr, size_t errsz)
{
	struct ot_outbox_watch *w = calloc(1, sizeof *w);

	if (!w || !(w->conninfo = strdup(conninfo)) || (slot && !(w->slot = strdup(slot))))
		goto oom;
	snprintf(w->db, sizeof w->db, "%s", db);
	w->pending = ot_metric_new(OT_GAUGE, "ot_outbox_pending_rows", "Outbox rows not yet relayed.", "db", NULL, 0);
	w->oldest = ot_metric_new(OT_GAUGE, "ot_outbox_oldest_age_seconds", "Age of the oldest outbox row not yet "
	                          "relayed; 0 when none.", "db", NULL, 0);
	if (slot) {
		w->retained = ot_metric_new(OT_GAUGE, "ot_cdc_slot_retained_wal_bytes", "WAL the replication slot "
		                            "keeps on the server: current LSN minus its restart LSN.", "db,slot", NULL, 0);
		w->lag = ot_metric_new(OT_GAUGE, "ot_cdc_confirmed_lag_bytes", "WAL not yet confirmed relayed: current "
		                       "LSN minus the slot's confirmed flush LSN.", "db,slot", NULL, 0);
	}
	if (pthread_create(&w->thread, NULL, watch, w)) {
		ot_err(OT_EINTERNAL, errstr, errsz, "cannot start a thread");
		goto fail;
	}
	return w;
oom:
	ot_err(OT_EINTERNAL, errstr, errsz, "out of memory");
fail:
	if (w) {
		free(w->conninfo);
		free(w->slot);
		free(w);
	}
	return NULL;
}

void
ot_outbox_watch_stop(struct ot_outbox_watch *w)
{
	if (!w)
		return;
	atomic_store(&w->stop, 1);
	pthread_join(w->thread, NULL);
	free(w->conninfo);
	free(w->slot);
	free(w);
}

int
ot_outbox_drain(PGconn *db, struct ot_out *out, int batch, int once, int max, long *total)
{
	char err[1024];
	long n;
	int attempt = 0, listening = 0, reconciled = 0, more = 1;

	while (!ot_stop) {
		if (!listening && !once && !ot_pg_ensure(db, NULL, 0))
			listening = ot_outbox_listen(db, err, sizeof err) == 0;
		/* At start and after every failure: rows Kafka took but the DELETE never removed. */
		n = reconciled ? 0 : ot_outbox_reconcile(db, out, batch > 1000 ? batch : 1000, err, sizeof err);
		if (n >= 0) {
			reconciled = 1;
			/* The NOTIFYs queued so far are for rows this poll sees: one poll for them all. */
			if (listening && ot_outbox_wait(db, 0) < 0)
				listening = 0;
			n = ot_outbox_relay(db, out, batch, &more, err, sizeof err);
		}
		if (n < 0) {
			if (n != OT_ESERVICE || ++attempt >= max) {
				OT_ERROR(NULL, "relay: %s", err);
				return (int)n;
			}
			OT_WARN(NULL, "relay: attempt %d of %d failed, retrying: %s", attempt, max, err);
			listening = 0;
			reconciled = 0;
			ot_backoff(attempt);
			ot_pg_ensure(db, NULL, 0);
			continue;
		}
		attempt = 0;
		*total += n;
		if (n > 0)
			OT_DEBUG(NULL, "relayed %ld events", n);
		/* Rows left (a full batch, an order's next row): at once. The table seen empty: no
		 * poll that would find nothing, only a NOTIFY (or the timeout) brings the next. */
		if (n > 0 && more)
			continue;
		if (once)
			break;
		/* Idle: wait for a NOTIFY, or poll once a second in case one was missed. */
		if (ot_outbox_wait(db, 1000) < 0)
			listening = 0;
	}
	return OT_OK;
}
