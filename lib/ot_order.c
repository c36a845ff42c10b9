/* ot_order: placing orders and moving them through guarded, versioned transitions. */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ot_cache.h"
#include "ot_err.h"
#include "ot_log.h"
#include "ot_metrics.h"
#include "ot_order.h"
#include "ot_outbox.h"
#include "ot_pg.h"
#include "ot_run.h"
#include "ot_state.h"
#include "ot_text.h"
#include "ot_trace.h"

#define TS_SQL(col) "to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"
#define STATUS_COLS "status, version, coalesce(lat::text, ''), coalesce(lon::text, ''), " \
                    "coalesce(eta, ''), " TS_SQL("updated_at")
#define MAX_ITEMS 100

/* Cache reads since the last ot_cache_stats_flush, from every thread. */
static atomic_long stat_hits, stat_misses, stat_fills;
/* Events skipped because the order was cancelled meanwhile, since the process started. */
static atomic_long late_count;

long
ot_order_late(void)
{
	return atomic_load(&late_count);
}

static void
status_from_row(struct ot_status *st, const char *order_id, PGresult *res, int row)
{
	memset(st, 0, sizeof *st);
	snprintf(st->order_id, sizeof st->order_id, "%s", order_id);
	snprintf(st->status, sizeof st->status, "%s", PQgetvalue(res, row, 0));
	st->version = strtoll(PQgetvalue(res, row, 1), NULL, 10);
	if (*PQgetvalue(res, row, 2) && *PQgetvalue(res, row, 3)) {
		st->has_pos = 1;
		st->lat = strtod(PQgetvalue(res, row, 2), NULL);
		st->lon = strtod(PQgetvalue(res, row, 3), NULL);
	}
	snprintf(st->eta, sizeof st->eta, "%s", PQgetvalue(res, row, 4));
	snprintf(st->updated_at, sizeof st->updated_at, "%s", PQgetvalue(res, row, 5));
}

/* The cache is a copy: a failed write is logged, the next write or a miss repairs it. */
/* Orders whose cache write failed after their commit: Redis may still hold their previous
 * status, so ot_cache_repair rewrites them from the database once Redis answers. */
#define DIRTY_MAX 8192
static pthread_mutex_t dirty_mu = PTHREAD_MUTEX_INITIALIZER;
static char dirty[DIRTY_MAX][64];
static atomic_int ndirty; /* read without the lock by ot_cache_dirty's fast path */
static int dirty_lost;

static void
mark_dirty(const char *order_id)
{
	int i;

	pthread_mutex_lock(&dirty_mu);
	for (i = 0; i < ndirty && strcmp(dirty[i], order_id); i++)
		;
	if (i == ndirty) {
		if (ndirty < DIRTY_MAX)
			snprintf(dirty[ndirty++], sizeof dirty[0], "%s", order_id);
		else
			dirty_lost++; /* left to the TTL, ot-cache sync and ot-cache verify --repair */
	}
	pthread_mutex_unlock(&dirty_mu);
}

int
ot_cache_dirty(const char *order_id)
{
	int i, found = 0;

	if (!atomic_load(&ndirty)) /* nearly always: every read asks */
		return 0;
	pthread_mutex_lock(&dirty_mu);
	for (i = 0; i < ndirty && !found; i++)
		found = !strcmp(dirty[i], order_id);
	pthread_mutex_unlock(&dirty_mu);
	return found;
}

static void
cache_put(redisContext *r, const struct ot_status *st)
{
	struct ot_span sp;
	char err[256], v[24];
	int rc;

	ot_span_begin(&sp, "cache write", OT_SPAN_CLIENT, NULL);
	if (sp.exported) {
		snprintf(v, sizeof v, "%lld", st->version);
		ot_span_tag(&sp, "db.system", "redis");
		ot_span_tag(&sp, "order_id", st->order_id);
		ot_span_tag(&sp, "order.status", st->status);
		ot_span_tag(&sp, "order.version", v);
	}
	rc = r ? ot_redis_put_status(r, st, err, sizeof err) : OT_ESERVICE;
	if (rc < 0) {
		OT_WARN(st->order_id, "cache write failed, the database stays authoritative; repaired "
		        "once Redis answers%s%s", r ? ": " : "", r ? err : "");
		ot_span_error(&sp, r ? err : "Redis unavailable");
		mark_dirty(st->order_id);
	}
	ot_cache_count_write(rc < 0 ? "failed" : rc ? "applied" : "cas_rejected");
	ot_span_end(&sp);
}

long
ot_cache_repair(PGconn *db, redisContext *r, char *errstr, size_t errsz)
{
	char ids[64][64];
	struct ot_status st;
	long fixed = 0;
	int n, i, rc = 0;

	for (;;) {
		pthread_mutex_lock(&dirty_mu);
		n = ndirty < 64 ? ndirty : 64;
		ndirty -= n;
		memcpy(ids, dirty[ndirty], (size_t)n * sizeof ids[0]);
		if (dirty_lost) {
			OT_WARN(NULL, "%d cache repairs did not fit in memory: ot-cache verify --repair finds them",
			        dirty_lost);
			dirty_lost = 0;
		}
		pthread_mutex_unlock(&dirty_mu);
		if (!n)
			return fixed;
		for (i = 0; i < n; i++) {
			if (!r || r->err || (rc = ot_order_load(db, ids[i], &st, errstr, errsz)) < 0 ||
			    (rc == 1 && (rc = ot_redis_put_status(r, &st, errstr, errsz)) < 0))
				break;
			OT_INFO(ids[i], "cache repaired to version %lld", rc >= 0 ? st.version : 0);
			ot_cache_count_repair();
			fixed++;
		}
		for (; i < n; i++) /* not this time: keep them for the next call */
			mark_dirty(ids[i]);
		if (rc < 0 || !r || r->err)
			return rc < 0 ? rc : ot_err(OT_ESERVICE, errstr, errsz, "Redis unavailable");
	}
}

static const char *
str_field(json_t *obj, const char *name, size_t max, char *errstr, size_t errsz)
{
	json_t *v = json_object_get(obj, name);

	if (!json_is_string(v) || json_string_length(v) == 0) {
		ot_err(OT_EINPUT, errstr, errsz, "field \"%s\" is %s", name,
		       !v ? "missing" : json_is_string(v) ? "empty" : "not a string");
		return NULL;
	}
	if (json_string_length(v) > max) {
		ot_err(OT_EINPUT, errstr, errsz, "field \"%s\" is longer than %zu bytes", name, max);
		return NULL;
	}
	return json_string_value(v);
}

/* Returns the items normalised to [{sku,qty}], or NULL with errstr naming the bad one. */
static json_t *
check_items(json_t *req, char *errstr, size_t errsz)
{
	json_t *items = json_object_get(req, "items"), *it, *out;
	size_t i;

	if (!json_is_array(items) || json_array_size(items) == 0) {
		ot_err(OT_EINPUT, errstr, errsz, "field \"items\" must be a non-empty array");
		return NULL;
	}
	if (json_array_size(items) > MAX_ITEMS) {
		ot_err(OT_EINPUT, errstr, errsz, "field \"items\" has more than %d lines", MAX_ITEMS);
		return NULL;
	}
	out = json_array();
	json_array_foreach(items, i, it) {
		json_t *sku = json_object_get(it, "sku"), *qty = json_object_get(it, "qty");
		if (!json_is_string(sku) || json_string_length(sku) == 0 || json_string_length(sku) > 64) {
			ot_err(OT_EINPUT, errstr, errsz, "field \"items[%zu].sku\" must be a string of 1 to 64 bytes", i);
			goto bad;
		}
		if (!json_is_integer(qty) || json_integer_value(qty) <= 0 || json_integer_value(qty) > 10000) {
			ot_err(OT_EINPUT, errstr, errsz, "field \"items[%zu].qty\" must be an integer from 1 to 10000", i);
			goto bad;
		}
		json_array_append_new(out, json_pack("{s:O, s:O}", "sku", sku, "qty", qty));
	}
	return out;
bad:
	json_decref(out);
	return NULL;
}

json_t *
ot_order_get_full(PGconn *db, const char *order_id, int *rc, char *errstr, size_t errsz)
{
	const char *p[1] = {order_id};
	PGresult *res;
	json_t *o, *items;
	struct ot_status st;

	*rc = OT_OK;
	if (!ot_uuid_valid(order_id))
		return NULL;
	res = ot_pg_query(db, "SELECT " STATUS_COLS ", customer_id, address, " TS_SQL("created_at") ", "
	                  "(SELECT json_agg(json_build_object('sku', sku, 'qty', qty) ORDER BY line) "
	                  "FROM order_items WHERE order_id = o.id) FROM orders o WHERE id = $1",
	                  1, p, rc, errstr, errsz);
	if (!res || PQntuples(res) == 0) {
		PQclear(res);
		return NULL;
	}
	status_from_row(&st, order_id, res, 0);
	o = ot_status_to_json(&st);
	json_object_set_new(o, "customer_id", json_string(PQgetvalue(res, 0, 6)));
	json_object_set_new(o, "address", json_string(PQgetvalue(res, 0, 7)));
	json_object_set_new(o, "created_at", json_string(PQgetvalue(res, 0, 8)));
	items = json_loads(PQgetvalue(res, 0, 9), 0, NULL);
	json_object_set_new(o, "items", items ? items : json_array());
	PQclear(res);
	return o;
}

int
ot_order_fingerprint(const json_t *req, char out[65])
{
	json_t *c = json_deep_copy(req);
	char *s = NULL;

	if (c && json_is_object(c))
		json_object_del(c, "request_id");
	if (c)
		s = json_dumps(c, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
	json_decref(c);
	if (!s)
		return -1;
	ot_sha256_hex(s, strlen(s), out);
	free(s);
	return 0;
}

/* The order request_id already placed in scope. Returns 1 with id filled, 0 when it placed none,
 * OT_ECONFLICT when it came with another request (fingerprint fp), or an ot_rc. */
static int
placed_before(PGconn *db, const char *scope, const char *request_id, const char *fp, char *id, size_t idsz,
              char *errstr, size_t errsz)
{
	const char *p[2] = {scope, request_id};
	PGresult *res;
	int rc;

	if (!(res = ot_pg_query(db, "SELECT order_id, fingerprint FROM idempotency_keys "
	                        "WHERE scope = $1 AND request_id = $2", 2, p, &rc, errstr, errsz)))
		return rc;
	if (PQntuples(res) == 0) {
		rc = 0;
	} else if (!PQgetisnull(res, 0, 1) && strcmp(PQgetvalue(res, 0, 1), fp)) {
		rc = ot_err(OT_ECONFLICT, errstr, errsz, "request_id \"%s\" was already used with a different "
		            "request", request_id);
	} else {
		snprintf(id, idsz, "%s", PQgetvalue(res, 0, 0));
		rc = 1;
	}
	PQclear(res);
	return rc;
}

int
ot_order_place(PGconn *db, redisContext *r, json_t *req, const char *source, json_t **order,
               int *created, char *errstr, size_t errsz)
{
	return ot_order_place_as(db, r, req, source, "", order, created, errstr, errsz);
}

static const double delivery_bounds[] = {300, 600, 900, 1200, 1800, 2700, 3600, 5400, 7200, 14400, 28800, 86400};

/* Counts a committed transition to status to, made by tool. The family is looked up each time
 * (ot_metric_new finds it): ot-serve's threads call this, and a transition is no hot path. */
static void
count_transition(const char *tool, const char *to)
{
	ot_metric_add(ot_metric_new(OT_COUNTER, "ot_order_transitions_total", "Order status changes committed, "
	                            "by the tool that made them and the new status.", "tool,to", NULL, 0), 1, tool, to);
}

static void
count_delivery(double seconds)
{
	ot_metric_observe(ot_metric_new(OT_HISTOGRAM, "ot_order_delivery_seconds", "Time from an order's creation "
	                                "to its delivery.", NULL, delivery_bounds,
	                                sizeof delivery_bounds / sizeof delivery_bounds[0]), seconds);
}

int
ot_order_place_as(PGconn *db, redisContext *r, json_t *req, const char *source, const char *scope,
                  json_t **order, int *created, char *errstr, size_t errsz)
{
	const char *customer, *address, *request_id = NULL;
	char id[OT_UUID_LEN], *items_s = NULL, fp[65];
	const char *p[4];
	struct ot_event ev = {0};
	struct ot_status st;
	json_t *items = NULL, *rid;
	PGresult *res = NULL;
	int rc;

	*order = NULL;
	*created = 0;
	if (!json_is_object(req))
		return ot_err(OT_EINPUT, errstr, errsz, "an order request must be a JSON object");
	if (!(customer = str_field(req, "customer_id", 128, errstr, errsz)) ||
	    !(address = str_field(req, "address", 512, errstr, errsz)) ||
	    !(items = check_items(req, errstr, errsz)))
		return OT_EINPUT;
	rid = json_object_get(req, "request_id");
	if (rid && !json_is_null(rid) && !(request_id = str_field(req, "request_id", 200, errstr, errsz))) {
		json_decref(items);
		return OT_EINPUT;
	}
	if (!(items_s = json_dumps(items, JSON_COMPACT)) || (request_id && ot_order_fingerprint(req, fp))) {
		rc = ot_err(OT_EINTERNAL, errstr, errsz, "out of memory");
		goto out;
	}
	if ((rc = ot_pg_exec(db, "BEGIN", 0, NULL, errstr, errsz)))
		goto out;
	ot_uuid(id);
	if (request_id && (rc = placed_before(db, scope, request_id, fp, id, sizeof id, errstr, errsz))) {
		if (rc == 1)
			goto existing;
		goto out;
	}
	/* The event's time is the order's: a cache rebuilt from events matches the database. */
	ot_event_init(&ev, "ORDER_CREATED", id, 1, source,
	              json_pack("{s:s, s:s, s:O, s:s}", "customer_id", customer, "address", address,
	                        "items", items, "status", "PENDING"), NULL);
	p[0] = id;
	p[1] = customer;
	p[2] = address;
	p[3] = ev.ts;
	if ((rc = ot_pg_exec(db, "INSERT INTO orders (id, customer_id, address, created_at, updated_at) "
	                     "VALUES ($1, $2, $3, $4, $4)", 4, p, errstr, errsz)))
		goto out;
	p[1] = items_s;
	if ((rc = ot_pg_exec(db, "INSERT INTO order_items (order_id, line, sku, qty) "
	                     "SELECT $1, t.n, t.x->>'sku', (t.x->>'qty')::int "
	                     "FROM jsonb_array_elements($2::jsonb) WITH ORDINALITY AS t(x, n)",
	                     2, p, errstr, errsz)))
		goto out;
	if (request_id) {
		p[0] = scope;
		p[1] = request_id;
		p[2] = id;
		p[3] = fp;
		res = ot_pg_query(db, "INSERT INTO idempotency_keys (scope, request_id, order_id, fingerprint) "
		                  "VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING RETURNING order_id", 4, p, &rc,
		                  errstr, errsz);
		if (!res)
			goto out;
		if (PQntuples(res) == 0) { /* lost a race with the same request_id: theirs stands */
			PQclear(res);
			res = NULL;
			ot_pg_rollback(db);
			if ((rc = ot_pg_exec(db, "BEGIN", 0, NULL, errstr, errsz)))
				goto out;
			if ((rc = placed_before(db, scope, request_id, fp, id, sizeof id, errstr, errsz)) == 1)
				goto existing;
			if (rc == 0)
				rc = ot_err(OT_ESERVICE, errstr, errsz, "request_id race: retry");
			goto out;
		}
		PQclear(res);
		res = NULL;
	}
	rc = ot_outbox_add(db, OT_TOPIC_ORDERS, &ev, errstr, errsz);
	if (rc || (rc = ot_pg_exec(db, "COMMIT", 0, NULL, errstr, errsz)))
		goto out;
	*created = 1;
	OT_INFO(id, "order placed");
	count_transition(source, "PENDING");
	goto fetch;
existing:
	PQclear(res);
	res = NULL;
	if ((rc = ot_pg_exec(db, "COMMIT", 0, NULL, errstr, errsz)))
		goto out;
	OT_INFO(id, "request_id %s already placed this order", request_id);
fetch:
	*order = ot_order_get_full(db, id, &rc, errstr, errsz);
	if (!*order) {
		rc = rc ? rc : ot_err(OT_EINTERNAL, errstr, errsz, "order %s vanished after commit", id);
		goto out;
	}
	if (request_id)
		json_object_set_new(*order, "request_id", json_string(request_id));
	if (*created) {
		memset(&st, 0, sizeof st);
		snprintf(st.order_id, sizeof st.order_id, "%s", id);
		snprintf(st.status, sizeof st.status, "PENDING");
		st.version = 1;
		snprintf(st.updated_at, sizeof st.updated_at, "%s",
		         json_string_value(json_object_get(*order, "updated_at")));
		cache_put(r, &st);
	}
out:
	if (rc)
		ot_pg_rollback(db);
	PQclear(res);
	ot_event_clear(&ev);
	json_decref(items);
	free(items_s);
	return rc;
}

/* The status an event asks for; OT_SKIP for events that move no order. */
static int
target_of(const struct ot_event *ev, int *to, char *errstr, size_t errsz)
{
	json_t *s;

	if (!strcmp(ev->type, "INVENTORY_RESERVED"))
		*to = OT_ST_CONFIRMED;
	else if (!strcmp(ev->type, "INVENTORY_RESERVATION_FAILED"))
		*to = OT_ST_REJECTED;
	else if (!strcmp(ev->type, "ORDER_CANCELLED"))
		*to = OT_ST_CANCELLED;
	else if (!strcmp(ev->type, "INVENTORY_RELEASED")) {
		/* Stock released because its reservation expired: the order cannot go on. A
		 * release that answers a cancel changes nothing here. */
		s = json_object_get(ev->data, "reason");
		if (!json_is_string(s) || strcmp(json_string_value(s), "expired"))
			return OT_SKIP;
		*to = OT_ST_CANCELLED;
	} else if (!strcmp(ev->type, "ORDER_CREATED") || !strcmp(ev->type, "ORDER_STATUS_UPDATED"))
		return OT_SKIP;
	else if (!strcmp(ev->type, "DELIVERY_UPDATED")) {
		s = json_object_get(ev->data, "status");
		*to = json_is_string(s) ? ot_state_parse(json_string_value(s)) : -1;
		if (*to != OT_ST_PREPARING && *to != OT_ST_IN_TRANSIT && *to != OT_ST_DELIVERED)
			return ot_err(OT_EINPUT, errstr, errsz, "field \"data.status\" of DELIVERY_UPDATED must be "
			              "PREPARING, IN_TRANSIT or DELIVERED");
	} else
		return ot_err(OT_EINPUT, errstr, errsz, "unknown event type \"%s\"", ev->type);
	return OT_OK;
}

/* Optional position: both lat and lon, in range, or neither. */
static int
position_of(const struct ot_event *ev, char lat[32], char lon[32], char eta[40], char *errstr, size_t errsz)
{
	json_t *la = json_object_get(ev->data, "lat"), *lo = json_object_get(ev->data, "lon");
	json_t *e = json_object_get(ev->data, "eta");

	lat[0] = lon[0] = eta[0] = '\0';
	if (la || lo) {
		if (!json_is_number(la) || !json_is_number(lo) || fabs(json_number_value(la)) > 90 ||
		    fabs(json_number_value(lo)) > 180)
			return ot_err(OT_EINPUT, errstr, errsz, "fields \"data.lat\" and \"data.lon\" must both "
			              "be numbers within [-90, 90] and [-180, 180]");
		snprintf(lat, 32, "%.7f", json_number_value(la));
		snprintf(lon, 32, "%.7f", json_number_value(lo));
	}
	if (e && !json_is_null(e)) {
		if (!json_is_string(e) || json_string_length(e) >= 40)
			return ot_err(OT_EINPUT, errstr, errsz, "field \"data.eta\" must be a timestamp string");
		snprintf(eta, 40, "%s", json_string_value(e));
	}
	return OT_OK;
}

/* ORDER_CANCELLED on orders.events, with the order's lines, tells the Inventory Service to
 * release what it reserved (the saga's compensation). */
static int
announce_cancel(PGconn *db, const struct ot_event *cause, long long version, const char *reason,
                char *errstr, size_t errsz)
{
	const char *p[1] = {cause->order_id};
	struct ot_event out;
	PGresult *res;
	json_t *items;
	int rc;

	res = ot_pg_query(db, "SELECT coalesce(json_agg(json_build_object('sku', sku, 'qty', qty) "
	                  "ORDER BY line), '[]') FROM order_items WHERE order_id = $1", 1, p, &rc, errstr, errsz);
	if (!res)
		return rc;
	items = json_loads(PQgetvalue(res, 0, 0), 0, NULL);
	PQclear(res);
	ot_event_init(&out, "ORDER_CANCELLED", cause->order_id, version, "ot-consume",
	              json_pack("{s:s, s:o}", "reason", reason, "items", items ? items : json_array()),
	              cause->traceparent);
	rc = ot_outbox_add(db, OT_TOPIC_ORDERS, &out, errstr, errsz);
	ot_event_clear(&out);
	return rc;
}

/* What a transition inside a transaction did, for the work after its commit. */
struct applied {
	int kind;                 /* APPLIED, REFRESH (the cache may be behind), or NOTHING */
	int from;
	double age_s;             /* created_at to now, for the delivery histogram */
	struct ot_status st;      /* APPLIED: the new status */
};
enum { NOTHING, APPLIED, REFRESH };

/* Applies ev inside the open transaction. Returns OT_OK (a->st the new status), OT_SKIP with
 * *as (duplicate, stale, late or ignored), OT_EINPUT having left nothing in the transaction
 * (in_batch: its processed_events row is taken back, for the transaction goes on), or an
 * error after which the transaction is to be rolled back. */
static int
apply_tx(PGconn *db, const struct ot_event *ev, const char *consumer, int in_batch, struct applied *a,
         const char **as, char *errstr, size_t errsz)
{
	char lat[32], lon[32], eta[40], reason[256] = "";
	const char *p[8];
	struct ot_event out;
	PGresult *res = NULL;
	json_t *data, *sk;
	int rc, to = -1, fresh;
	enum ot_transition tr;

	a->kind = NOTHING;
	*as = "duplicate";
	if ((rc = target_of(ev, &to, errstr, errsz))) {
		if (rc == OT_SKIP)
			*as = "ignored";
		return rc;
	}
	if (!ot_uuid_valid(ev->order_id))
		return ot_err(OT_EINPUT, errstr, errsz, "field \"order_id\" is not a UUID");
	if ((rc = position_of(ev, lat, lon, eta, errstr, errsz)))
		return rc;
	if (to == OT_ST_REJECTED && (sk = json_object_get(ev->data, "short_skus")) && json_is_array(sk)) {
		char *s = json_dumps(sk, JSON_COMPACT);
		snprintf(reason, sizeof reason, "insufficient stock: %s", s ? s : "");
		reason[ot_utf8_cut(reason, sizeof reason)] = '\0'; /* whole characters only */
		free(s);
	}
	if (to == OT_ST_CANCELLED) {
		sk = json_object_get(ev->data, "reason");
		ot_utf8_copy(reason, sizeof reason, !strcmp(ev->type, "INVENTORY_RELEASED") ?
		             "reservation expired" : json_is_string(sk) ? json_string_value(sk) : "cancelled");
	}
	/* One round trip: the event recorded as processed (or found to be a duplicate) and the
	 * order locked with its current status. */
	p[0] = consumer;
	p[1] = ev->id;
	p[2] = ev->order_id;
	res = ot_pg_query(db, "WITH pe AS (INSERT INTO processed_events (consumer, event_id) VALUES ($1, $2) "
	                  "ON CONFLICT DO NOTHING RETURNING 1) "
	                  "SELECT (SELECT count(*) FROM pe), (SELECT status FROM orders WHERE id = $3 FOR UPDATE)",
	                  3, p, &rc, errstr, errsz);
	if (!res)
		return rc;
	fresh = atoi(PQgetvalue(res, 0, 0)) > 0;
	a->from = PQgetisnull(res, 0, 1) ? -1 : ot_state_parse(PQgetvalue(res, 0, 1));
	PQclear(res);
	res = NULL;
	if (!fresh) {
		/* Redelivered: the process that applied it may have died between its commit and its
		 * cache write (its offset was never stored). The cache gets the database's status. */
		a->kind = REFRESH;
		return ot_err(OT_SKIP, errstr, errsz, "event %s was already applied", ev->id);
	}
	if (a->from < 0) {
		rc = ot_err(OT_EINPUT, errstr, errsz, "%s for unknown order %s", ev->type, ev->order_id);
		goto refuse;
	}
	switch ((tr = ot_state_check(a->from, to))) {
	case OT_TR_STALE:
	case OT_TR_LATE:
		/* The processed_events row stays: a third copy is then refused at once. */
		a->kind = REFRESH; /* as for a duplicate: the cache may be behind */
		if (tr == OT_TR_LATE) {
			*as = "late";
			return ot_err(OT_SKIP, errstr, errsz, "late %s: the order was cancelled meanwhile", ev->type);
		}
		*as = "stale";
		return ot_err(OT_SKIP, errstr, errsz, "stale %s: order is already %s", ot_state_name(to),
		              ot_state_name(a->from));
	case OT_TR_IMPOSSIBLE:
		rc = ot_err(OT_EINPUT, errstr, errsz, "impossible transition %s -> %s refused",
		            ot_state_name(a->from), ot_state_name(to));
		goto refuse;
	case OT_TR_APPLY:
		break;
	}
	p[1] = ot_state_name(to);
	p[2] = lat[0] ? lat : NULL;
	p[3] = lon[0] ? lon : NULL;
	p[4] = eta[0] ? eta : NULL;
	p[5] = reason[0] ? reason : NULL;
	p[6] = ot_state_name(a->from);
	p[0] = ev->order_id;
	res = ot_pg_query(db, "UPDATE orders SET status = $2, version = version + 1, "
	                  "lat = coalesce($3::float8, lat), lon = coalesce($4::float8, lon), "
	                  "eta = coalesce($5, eta), reason = coalesce($6, reason), updated_at = now() "
	                  "WHERE id = $1 AND status = $7 RETURNING " STATUS_COLS ", "
	                  "extract(epoch FROM clock_timestamp() - created_at)", 7, p, &rc, errstr, errsz);
	if (!res)
		return rc;
	if (PQntuples(res) != 1) {
		PQclear(res);
		return ot_err(OT_ESERVICE, errstr, errsz, "order %s changed underneath: retry", ev->order_id);
	}
	status_from_row(&a->st, ev->order_id, res, 0);
	a->age_s = strtod(PQgetvalue(res, 0, PQnfields(res) - 1), NULL);
	PQclear(res);
	data = ot_status_to_json(&a->st);
	json_object_del(data, "order_id");
	json_object_del(data, "version");
	if (reason[0])
		json_object_set_new(data, "reason", json_string(reason));
	ot_event_init(&out, "ORDER_STATUS_UPDATED", ev->order_id, a->st.version, "ot-consume", data,
	              ev->traceparent);
	rc = ot_outbox_add(db, OT_TOPIC_ORDERS, &out, errstr, errsz);
	ot_event_clear(&out);
	if (!rc && to == OT_ST_CANCELLED)
		rc = announce_cancel(db, ev, a->st.version, reason, errstr, errsz);
	if (!rc)
		a->kind = APPLIED;
	return rc;
refuse:
	/* Refused, so not processed: a later copy is judged again (and dead-lettered again). */
	if (in_batch) {
		int r2;
		p[0] = consumer;
		p[1] = ev->id;
		if ((r2 = ot_pg_exec(db, "DELETE FROM processed_events WHERE consumer = $1 AND event_id = $2",
		                     2, p, NULL, 0)))
			return r2;
	}
	return rc;
}

/* After the commit: the log line, the counters, the cache. */
static void
after_commit(PGconn *db, redisContext *r, const char *consumer, struct applied *a, const char *order_id)
{
	struct ot_status st;

	if (a->kind == APPLIED) {
		OT_INFO(order_id, "%s -> %s (version %lld)", ot_state_name(a->from), a->st.status, a->st.version);
		count_transition(consumer, a->st.status);
		if (!strcmp(a->st.status, "DELIVERED"))
			count_delivery(a->age_s);
		cache_put(r, &a->st);
	} else if (a->kind == REFRESH && r && ot_order_load(db, order_id, &st, NULL, 0) == 1) {
		cache_put(r, &st);
	}
}

int
ot_order_apply(PGconn *db, redisContext *r, const struct ot_event *ev, const char *consumer,
               char *errstr, size_t errsz)
{
	struct applied a = {0};
	const char *as;
	int rc;

	if ((rc = ot_pg_exec(db, "BEGIN", 0, NULL, errstr, errsz)))
		return rc;
	rc = apply_tx(db, ev, consumer, 0, &a, &as, errstr, errsz);
	if (rc == OT_OK || rc == OT_SKIP) {
		int c = ot_pg_exec(db, "COMMIT", 0, NULL, errstr, errsz);
		if (c) {
			rc = c;
			a.kind = NOTHING;
		}
	} else {
		a.kind = NOTHING;
	}
	ot_pg_rollback(db);
	if (rc == OT_SKIP) {
		ot_run_skipped_as(as);
		if (!strcmp(as, "late"))
			atomic_fetch_add(&late_count, 1);
	}
	after_commit(db, r, consumer, &a, ev->order_id);
	return rc;
}

int
ot_order_apply_batch(PGconn *db, redisContext *r, const struct ot_msg *ms, const struct ot_event *evs, size_t n,
                     const char *consumer, struct ot_batch_res *res, char *errstr, size_t errsz)
{
	struct ot_span sp;
	struct applied *a;
	size_t i;
	int rc;

	if (!(a = calloc(n, sizeof *a)))
		return ot_err(OT_EINTERNAL, errstr, errsz, "out of memory");
	if ((rc = ot_pg_exec(db, "BEGIN", 0, NULL, errstr, errsz)))
		goto out;
	for (i = 0; i < n; i++) {
		if (res[i].rc != OT_OK)
			continue; /* refused before: left to the per-record path */
		ot_run_span(&sp, &ms[i], &evs[i]);
		res[i].rc = apply_tx(db, &evs[i], consumer, 1, &a[i], &res[i].as, res[i].err, sizeof res[i].err);
		if (res[i].rc < 0)
			ot_span_error(&sp, res[i].err);
		ot_span_end(&sp);
		if (res[i].rc < 0 && res[i].rc != OT_EINPUT) {
			/* The transaction is lost; the caller takes each record alone. */
			rc = res[i].rc;
			snprintf(errstr, errsz, "%s", res[i].err);
			goto out;
		}
		if (res[i].rc != OT_SKIP)
			res[i].err[0] = '\0';
	}
	if ((rc = ot_pg_exec(db, "COMMIT", 0, NULL, errstr, errsz)))
		goto out;
	for (i = 0; i < n; i++) {
		if (res[i].rc == OT_SKIP && !strcmp(res[i].as, "late"))
			atomic_fetch_add(&late_count, 1);
		after_commit(db, r, consumer, &a[i], evs[i].order_id);
	}
out:
	if (rc)
		ot_pg_rollback(db);
	free(a);
	return rc;
}

int
ot_order_load(PGconn *db, const char *order_id, struct ot_status *st, char *errstr, size_t errsz)
{
	const char *p[1] = {order_id};
	PGresult *res;
	int rc, found;

	if (!ot_uuid_valid(order_id))
		return 0;
	res = ot_pg_query(db, "SELECT " STATUS_COLS " FROM orders WHERE id = $1", 1, p, &rc, errstr, errsz);
	if (!res)
		return rc;
	found = PQntuples(res) > 0;
	if (found)
		status_from_row(st, order_id, res, 0);
	PQclear(res);
	return found;
}

#define REFILL_WAIT_STEPS 25 /* x 20 ms: how long a reader waits for another's refill */

/* Takes (take) or drops the refill lock of one order: a key with a 2 s expiry, so a reader
 * that died holding it does not block the others for long. Returns 1 when taken. */
static int
refill_lock(redisContext *r, const char *order_id, int take)
{
	redisReply *rep = take ? redisCommand(r, "SET lock:order:%s 1 NX PX 2000", order_id)
	                       : redisCommand(r, "DEL lock:order:%s", order_id);
	int got = take && rep && rep->type == REDIS_REPLY_STATUS;

	freeReplyObject(rep);
	return got;
}

int
ot_order_get(PGconn *db, redisContext *r, const char *order_id, struct ot_status *st, int *hit,
             char *errstr, size_t errsz)
{
	char err[256];
	int rc;

	*hit = 0;
	if (r) {
		rc = ot_redis_get_status(r, order_id, st, err, sizeof err);
		if (rc == 1) {
			*hit = 1;
			ot_cache_count(1);
			return 1;
		}
		if (rc < 0)
			OT_WARN(order_id, "cache read failed, reading the database: %s", err);
		else
			ot_cache_count(0);
	}
	return ot_order_refill(db, r, order_id, st, hit, errstr, errsz);
}

int
ot_order_refill(PGconn *db, redisContext *r, const char *order_id, struct ot_status *st, int *hit,
                char *errstr, size_t errsz)
{
	char err[256];
	int rc;

	*hit = 0;
	/* Single flight: one reader refills a missing entry; the others wait for it, a bounded
	 * time, then read the database without filling. A crowd on one cold order costs the
	 * database one query more than nothing, not one per reader. */
	if (r && !r->err) {
		int got = 0;
		for (int i = 0; i <= REFILL_WAIT_STEPS && !got; i++) {
			if (i) {
				struct timespec ts = {0, 20 * 1000000L};
				nanosleep(&ts, NULL);
				if (ot_redis_get_status(r, order_id, st, err, sizeof err) == 1) {
					*hit = 1; /* served by another's refill: counted as the miss it was */
					return 1;
				}
			}
			/* Taken: another's refill may have landed since this reader missed. */
			if ((got = refill_lock(r, order_id, 1)) &&
			    ot_redis_get_status(r, order_id, st, err, sizeof err) == 1) {
				refill_lock(r, order_id, 0);
				*hit = 1;
				return 1;
			}
		}
		rc = ot_order_load(db, order_id, st, errstr, errsz);
		if (got) {
			if (rc == 1) {
				cache_put(r, st);
				atomic_fetch_add(&stat_fills, 1);
				ot_cache_count_fill();
			}
			refill_lock(r, order_id, 0);
		}
		return rc;
	}
	return ot_order_load(db, order_id, st, errstr, errsz);
}

void
ot_cache_count(int hit)
{
	atomic_fetch_add(hit ? &stat_hits : &stat_misses, 1);
}

int
ot_cache_stats_flush(redisContext *r, char *errstr, size_t errsz)
{
	long h = atomic_exchange(&stat_hits, 0), m = atomic_exchange(&stat_misses, 0);
	long f = atomic_exchange(&stat_fills, 0);
	redisReply *rep;

	if (!h && !m && !f)
		return 0;
	rep = r && !r->err ? redisCommand(r, "EVAL %s 1 ot:stats %ld %ld %ld",
	                                  "redis.call('HINCRBY', KEYS[1], 'hits', ARGV[1]) "
	                                  "redis.call('HINCRBY', KEYS[1], 'misses', ARGV[2]) "
	                                  "redis.call('HINCRBY', KEYS[1], 'fills', ARGV[3]) return 1",
	                                  h, m, f) : NULL;
	if (!rep || rep->type == REDIS_REPLY_ERROR) {
		/* Keep them for the next flush. */
		atomic_fetch_add(&stat_hits, h);
		atomic_fetch_add(&stat_misses, m);
		atomic_fetch_add(&stat_fills, f);
		freeReplyObject(rep);
		return ot_err(OT_ESERVICE, errstr, errsz, "Redis: cache statistics not written");
	}
	freeReplyObject(rep);
	return 0;
}

int
ot_status_from_event(const struct ot_event *ev, struct ot_status *st, char *errstr, size_t errsz)
{
	json_t *d = ev->data, *v;

	memset(st, 0, sizeof *st);
	if (strcmp(ev->type, "ORDER_CREATED") && strcmp(ev->type, "ORDER_STATUS_UPDATED"))
		return 0;
	snprintf(st->order_id, sizeof st->order_id, "%s", ev->order_id);
	st->version = ev->version;
	v = json_object_get(d, "status");
	if (!json_is_string(v) || ot_state_parse(json_string_value(v)) < 0 || ev->version < 1)
		return ot_err(OT_EINPUT, errstr, errsz, "%s without a valid data.status and version", ev->type);
	snprintf(st->status, sizeof st->status, "%s", json_string_value(v));
	v = json_object_get(d, "updated_at");
	snprintf(st->updated_at, sizeof st->updated_at, "%s", json_is_string(v) ? json_string_value(v) : ev->ts);
	if (json_is_number(json_object_get(d, "lat")) && json_is_number(json_object_get(d, "lon"))) {
		st->has_pos = 1;
		st->lat = json_number_value(json_object_get(d, "lat"));
		st->lon = json_number_value(json_object_get(d, "lon"));
	}
	v = json_object_get(d, "eta");
	if (json_is_string(v))
		snprintf(st->eta, sizeof st->eta, "%s", json_string_value(v));
	return 1;
}

long
ot_order_warm(PGconn *db, redisContext *r, char *errstr, size_t errsz)
{
	struct ot_status st;
	PGresult *res;
	long n = 0;
	int i, rc;

	res = ot_pg_query(db, "SELECT " STATUS_COLS ", id FROM orders "
	                  "WHERE status NOT IN ('DELIVERED', 'REJECTED', 'CANCELLED')", 0, NULL, &rc,
	                  errstr, errsz);
	if (!res)
		return rc;
	for (i = 0; i < PQntuples(res); i++) {
		status_from_row(&st, PQgetvalue(res, i, 6), res, i);
		if ((rc = ot_redis_put_status(r, &st, errstr, errsz)) < 0) {
			PQclear(res);
			return rc;
		}
		n++;
	}
	PQclear(res);
	return n;
}
