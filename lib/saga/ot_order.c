/* ot_order: placing orders and moving them through guarded, versioned transitions. */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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

/* Events skipped because the order was cancelled meanwhile, since the process started. */
static atomic_long late_count;

long
ot_order_late(void)
{
	return atomic_load(&late_count);
}

/* The status in STATUS_COLS starting at column col of row. */
static void
status_from_cols(struct ot_status *st, const char *order_id, PGresult *res, int row, int col)
{
	char id[sizeof st->order_id];

	/* order_id may be st->order_id itself (ot_order_load(db, st->order_id, st, ...)). */
	snprintf(id, sizeof id, "%s", order_id);
	memset(st, 0, sizeof *st);
	memcpy(st->order_id, id, sizeof id);
	snprintf(st->status, sizeof st->status, "%s", PQgetvalue(res, row, col));
	st->version = strtoll(PQgetvalue(res, row, col + 1), NULL, 10);
	if (*PQgetvalue(res, row, col + 2) && *PQgetvalue(res, row, col + 3)) {
		st->has_pos = 1;
		st->lat = strtod(PQgetvalue(res, row, col + 2), NULL);
		st->lon = strtod(PQgetvalue(res, row, col + 3), NULL);
	}
	snprintf(st->eta, sizeof st->eta, "%s", PQgetvalue(res, row, col + 4));
	snprintf(st->updated_at, sizeof st->updated_at, "%s", PQgetvalue(res, row, col + 5));
}

static void
status_from_row(struct ot_status *st, const char *order_id, PGresult *res, int row)
{
	status_from_cols(st, order_id, res, row, 0);
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

int
ot_order_place(PGconn *db, json_t *req, const char *source, json_t **order, int *created,
               struct ot_status *st, char *errstr, size_t errsz)
{
	return ot_order_place_as(db, req, source, "", order, created, st, errstr, errsz);
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

/* One order request on its way: what it asked for, checked, and where it ended. */
struct placing {
	const char *customer, *address, *request_id;
	json_t *items;
	char *items_s;
	char fp[65];
	char id[OT_UUID_LEN];
	char ts[OT_TS_LEN];       /* created: its creation time, the ORDER_CREATED event's */
	int created;
};

static void
placing_free(struct placing *pl)
{
	json_decref(pl->items);
	free(pl->items_s);
	pl->items = NULL;
	pl->items_s = NULL;
}

/* Checks req before any transaction. Returns OT_OK, OT_EINPUT naming the field, OT_EINTERNAL. */
static int
place_check(json_t *req, struct placing *pl, char *errstr, size_t errsz)
{
	json_t *rid;

	memset(pl, 0, sizeof *pl);
	if (!json_is_object(req))
		return ot_err(OT_EINPUT, errstr, errsz, "an order request must be a JSON object");
	if (!(pl->customer = str_field(req, "customer_id", 128, errstr, errsz)) ||
	    !(pl->address = str_field(req, "address", 512, errstr, errsz)) ||
	    !(pl->items = check_items(req, errstr, errsz)))
		return OT_EINPUT;
	rid = json_object_get(req, "request_id");
	if (rid && !json_is_null(rid) && !(pl->request_id = str_field(req, "request_id", 200, errstr, errsz)))
		return OT_EINPUT;
	if (!(pl->items_s = json_dumps(pl->items, JSON_COMPACT)) || (pl->request_id && ot_order_fingerprint(req, pl->fp)))
		return ot_err(OT_EINTERNAL, errstr, errsz, "out of memory");
	return OT_OK;
}

/* The request_ids of the batch already placed, in one query: each gets its order (created 0),
 * or OT_ECONFLICT in res for one first used with another request. A request_id repeated within
 * the batch refers to its first use the same way. */
static int
resolve_request_ids(PGconn *db, const char *scope, struct placing *pl, struct ot_batch_res *res, size_t n,
                    char *errstr, size_t errsz)
{
	json_t *a = json_array();
	const char *p[2];
	PGresult *q;
	char *doc;
	size_t i, j;
	int k, rc;

	for (i = 0; i < n; i++)
		if (res[i].rc == OT_OK && pl[i].request_id)
			json_array_append_new(a, json_string(pl[i].request_id));
	if (!json_array_size(a)) {
		json_decref(a);
		return OT_OK;
	}
	doc = json_dumps(a, JSON_COMPACT);
	json_decref(a);
	if (!doc)
		return ot_err(OT_EINTERNAL, errstr, errsz, "out of memory");
	p[0] = scope;
	p[1] = doc;
	q = ot_pg_query(db, "SELECT request_id, order_id::text, coalesce(fingerprint, '') FROM idempotency_keys "
	                "WHERE scope = $1 AND request_id IN (SELECT jsonb_array_elements_text($2::jsonb))",
	                2, p, &rc, errstr, errsz);
	free(doc);
	if (!q)
		return rc;
	for (i = 0; i < n; i++) {
		if (res[i].rc != OT_OK || !pl[i].request_id)
			continue;
		const char *id = NULL, *fp = NULL;
		for (k = 0; k < PQntuples(q) && !id; k++)
			if (!strcmp(PQgetvalue(q, k, 0), pl[i].request_id)) {
				id = PQgetvalue(q, k, 1);
				fp = PQgetvalue(q, k, 2);
			}
		for (j = 0; j < i && !id; j++)
			if (res[j].rc == OT_OK && pl[j].request_id && pl[j].created &&
			    !strcmp(pl[j].request_id, pl[i].request_id)) {
				id = pl[j].id;
				fp = pl[j].fp;
			}
		if (!id)
			continue;
		if (*fp && strcmp(fp, pl[i].fp)) {
			res[i].rc = ot_err(OT_ECONFLICT, res[i].err, sizeof res[i].err, "request_id \"%s\" was already "
			                   "used with a different request", pl[i].request_id);
		} else {
			snprintf(pl[i].id, sizeof pl[i].id, "%s", id);
			pl[i].created = 0;
		}
	}
	PQclear(q);
	return OT_OK;
}

/* Inside the open transaction: the new orders, their items, their request_ids and their
 * ORDER_CREATED events, one statement each. Returns OT_OK, or an ot_rc after which the
 * transaction is rolled back (OT_ESERVICE when another transaction placed one of the
 * request_ids meanwhile: one at a time, a second look settles it). */
static int
insert_orders(PGconn *db, const char *source, const char *scope, struct placing *pl, const struct ot_batch_res *res,
              struct ot_span *sp, size_t n, char *errstr, size_t errsz)
{
	json_t *orders = json_array(), *keys = json_array();
	struct ot_event *evs = calloc(n, sizeof *evs);
	const char *p[2];
	char *od = NULL, *kd = NULL;
	size_t i, nev = 0, nkeys;
	PGresult *q;
	int rc = OT_OK;

	if (!evs) {
		rc = ot_err(OT_EINTERNAL, errstr, errsz, "out of memory");
		goto out;
	}
	for (i = 0; i < n; i++) {
		if (res[i].rc != OT_OK || !pl[i].created)
			continue;
		/* The event's time is the order's: a cache rebuilt from events matches the database. */
		ot_span_enter(&sp[i]);
		ot_event_init(&evs[nev], OT_EV_ORDER_CREATED, pl[i].id, 1, source,
		              json_pack("{s:s, s:s, s:O, s:s}", "customer_id", pl[i].customer, "address", pl[i].address,
		                        "items", pl[i].items, "status", "PENDING"), NULL);
		ot_span_leave(&sp[i]);
		snprintf(pl[i].ts, sizeof pl[i].ts, "%s", evs[nev].ts);
		json_array_append_new(orders, json_pack("[s, s, s, s, O]", pl[i].id, pl[i].customer, pl[i].address,
		                                        pl[i].ts, pl[i].items));
		if (pl[i].request_id)
			json_array_append_new(keys, json_pack("[s, s, s]", pl[i].request_id, pl[i].id, pl[i].fp));
		nev++;
	}
	if (!nev)
		goto out;
	if (!(od = json_dumps(orders, JSON_COMPACT)) || !(kd = json_dumps(keys, JSON_COMPACT))) {
		rc = ot_err(OT_EINTERNAL, errstr, errsz, "out of memory");
		goto out;
	}
	p[0] = od;
	if ((rc = ot_pg_exec(db, "INSERT INTO orders (id, customer_id, address, created_at, updated_at) "
	                     "SELECT (x->>0)::uuid, x->>1, x->>2, (x->>3)::timestamptz, (x->>3)::timestamptz "
	                     "FROM jsonb_array_elements($1::jsonb) x", 1, p, errstr, errsz)) ||
	    (rc = ot_pg_exec(db, "INSERT INTO order_items (order_id, line, sku, qty) "
	                     "SELECT (x->>0)::uuid, t.n, t.i->>'sku', (t.i->>'qty')::int "
	                     "FROM jsonb_array_elements($1::jsonb) x, jsonb_array_elements(x->4) WITH ORDINALITY AS t(i, n)",
	                     1, p, errstr, errsz)))
		goto out;
	if ((nkeys = json_array_size(keys))) {
		p[0] = scope;
		p[1] = kd;
		q = ot_pg_query(db, "INSERT INTO idempotency_keys (scope, request_id, order_id, fingerprint) "
		                "SELECT $1, x->>0, (x->>1)::uuid, x->>2 FROM jsonb_array_elements($2::jsonb) x "
		                "ON CONFLICT DO NOTHING RETURNING order_id", 2, p, &rc, errstr, errsz);
		if (!q)
			goto out;
		if ((size_t)PQntuples(q) != nkeys) /* lost a race with the same request_id: theirs stands */
			rc = ot_err(OT_ERACE, errstr, errsz, "a request_id was placed meanwhile by another request: retry");
		PQclear(q);
		if (rc)
			goto out;
	}
	rc = ot_outbox_add_many(db, OT_TOPIC_ORDERS, evs, nev, errstr, errsz);
out:
	for (i = 0; evs && i < nev; i++)
		ot_event_clear(&evs[i]);
	free(evs);
	free(od);
	free(kd);
	json_decref(orders);
	json_decref(keys);
	return rc;
}

/* After the commit: the log line, the counter, the whole order for the caller, and in *pst
 * the PENDING status for the cache. */
static int
place_done(PGconn *db, const char *source, struct placing *pl, json_t **order,
           struct ot_status *pst, char *errstr, size_t errsz)
{
	struct ot_status st;
	int rc;

	if (pl->created) {
		OT_INFO(pl->id, "order placed");
		count_transition(source, "PENDING");
	} else {
		OT_INFO(pl->id, "request_id %s already placed this order", pl->request_id);
	}
	memset(&st, 0, sizeof st);
	snprintf(st.order_id, sizeof st.order_id, "%s", pl->id);
	snprintf(st.status, sizeof st.status, "PENDING");
	st.version = 1;
	snprintf(st.updated_at, sizeof st.updated_at, "%s", pl->ts);
	if (pl->created) {
		/* Just written: the order is what was asked, as the database now holds it. */
		*order = ot_status_to_json(&st);
		json_object_set_new(*order, "customer_id", json_string(pl->customer));
		json_object_set_new(*order, "address", json_string(pl->address));
		json_object_set_new(*order, "created_at", json_string(pl->ts));
		json_object_set(*order, "items", pl->items);
	} else if (!(*order = ot_order_get_full(db, pl->id, &rc, errstr, errsz))) {
		return rc ? rc : ot_err(OT_EINTERNAL, errstr, errsz, "order %s vanished after commit", pl->id);
	}
	if (pl->request_id)
		json_object_set_new(*order, "request_id", json_string(pl->request_id));
	*pst = st;
	return OT_OK;
}

int
ot_order_place_as(PGconn *db, json_t *req, const char *source, const char *scope, json_t **order,
                  int *created, struct ot_status *st, char *errstr, size_t errsz)
{
	struct ot_batch_res res;
	int rc, tries;

	*order = NULL;
	*created = 0;
	if (st)
		memset(st, 0, sizeof *st);
	/* A request_id race is settled by a second look: theirs stands. */
	for (tries = 0; tries < 2; tries++) {
		memset(&res, 0, sizeof res);
		res.rc = OT_OK;
		rc = ot_order_place_batch_as(db, &req, 1, source, scope, order, &res, errstr, errsz);
		if (rc != OT_ERACE)
			break;
	}
	if (rc)
		return rc;
	if (res.rc < 0)
		return ot_err(res.rc, errstr, errsz, "%s", res.err);
	*created = res.rc == OT_OK;
	if (st)
		*st = res.st;
	return OT_OK;
}

int
ot_order_place_batch(PGconn *db, json_t *const *reqs, size_t n, const char *source, json_t **orders,
                     struct ot_batch_res *res, char *errstr, size_t errsz)
{
	return ot_order_place_batch_as(db, reqs, n, source, "", orders, res, errstr, errsz);
}

int
ot_order_place_batch_as(PGconn *db, json_t *const *reqs, size_t n, const char *source, const char *scope,
                        json_t **orders, struct ot_batch_res *res, char *errstr, size_t errsz)
{
	struct placing *pl = calloc(n, sizeof *pl);
	struct ot_span *sp = calloc(n, sizeof *sp);
	size_t i, todo = 0;
	int rc = OT_OK, own = !ot_span_current();

	if (!pl || !sp) {
		rc = ot_err(OT_EINTERNAL, errstr, errsz, "out of memory");
		goto out;
	}
	for (i = 0; i < n; i++) {
		orders[i] = NULL;
		res[i].st.version = 0;
		res[i].tp[0] = '\0';
		if (res[i].rc == OT_OK)
			res[i].rc = place_check(reqs[i], &pl[i], res[i].err, sizeof res[i].err);
		if (res[i].rc == OT_OK) {
			ot_uuid(pl[i].id);
			pl[i].created = 1;
			todo++;
		}
	}
	if (!todo)
		goto out;
	/* Each order's life starts a trace here, as at ot-serve's POST /orders: its span is
	 * current while its ORDER_CREATED is made. A caller inside a span of its own (a request,
	 * one record) has begun it already. */
	if ((rc = ot_pg_exec(db, "BEGIN", 0, NULL, errstr, errsz)) ||
	    (rc = resolve_request_ids(db, scope, pl, res, n, errstr, errsz)))
		goto out;
	for (i = 0; i < n && own; i++)
		if (res[i].rc == OT_OK && pl[i].created) {
			ot_span_begin(&sp[i], "place order", OT_SPAN_INTERNAL, NULL);
			ot_span_tag(&sp[i], "order_id", pl[i].id);
			ot_span_leave(&sp[i]);
		}
	if ((rc = insert_orders(db, source, scope, pl, res, sp, n, errstr, errsz)) ||
	    (rc = ot_pg_exec(db, "COMMIT", 0, NULL, errstr, errsz)))
		goto out;
	for (i = 0; i < n; i++) {
		if (res[i].rc != OT_OK)
			continue;
		if (place_done(db, source, &pl[i], &orders[i], &res[i].st, res[i].err, sizeof res[i].err)) {
			/* Committed, so not to be placed again, but not read back: said, not printed. */
			OT_ERROR(pl[i].id, "order placed, but not read back: %s", res[i].err);
			res[i].rc = OT_UNREAD;
			res[i].st.version = 0;
			continue;
		}
		if (!pl[i].created) {
			res[i].rc = OT_PLACED_BEFORE;
			res[i].st.version = 0; /* cached when it was placed */
		} else if (own && sp[i].exported) {
			ot_span_traceparent(&sp[i], res[i].tp);
		}
	}
out:
	if (rc)
		ot_pg_rollback(db);
	for (i = 0; i < n; i++) {
		if (sp) {
			if (rc)
				ot_span_error(&sp[i], errstr);
			ot_span_end(&sp[i]);
		}
		if (pl)
			placing_free(&pl[i]);
	}
	free(sp);
	free(pl);
	return rc;
}

/* The status an event asks for; OT_IGNORED for events that move no order. */
static int
target_of(const struct ot_event *ev, int *to, char *errstr, size_t errsz)
{
	json_t *s;

	switch (ev->kind) {
	case OT_EV_INVENTORY_RESERVED: *to = OT_ST_CONFIRMED; return OT_OK;
	case OT_EV_INVENTORY_RESERVATION_FAILED: *to = OT_ST_REJECTED; return OT_OK;
	case OT_EV_ORDER_CANCELLED: *to = OT_ST_CANCELLED; return OT_OK;
	case OT_EV_INVENTORY_RELEASED:
		/* Stock released because its reservation expired: the order cannot go on. A
		 * release that answers a cancel changes nothing here. */
		s = json_object_get(ev->data, "reason");
		if (!json_is_string(s) || strcmp(json_string_value(s), "expired"))
			return OT_IGNORED;
		*to = OT_ST_CANCELLED;
		return OT_OK;
	case OT_EV_ORDER_CREATED:
	case OT_EV_ORDER_STATUS_UPDATED:
		return OT_IGNORED;
	case OT_EV_DELIVERY_UPDATED:
		s = json_object_get(ev->data, "status");
		*to = json_is_string(s) ? ot_state_parse(json_string_value(s)) : -1;
		if (*to != OT_ST_PREPARING && *to != OT_ST_IN_TRANSIT && *to != OT_ST_DELIVERED)
			return ot_err(OT_EINPUT, errstr, errsz, "field \"data.status\" of DELIVERY_UPDATED must be "
			              "PREPARING, IN_TRANSIT or DELIVERED");
		return OT_OK;
	default:
		return ot_err(OT_EINPUT, errstr, errsz, "unknown event type \"%s\"", ev->type);
	}
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
 * release what it reserved (the saga's compensation). Fills out (for the outbox). */
static int
cancel_event(PGconn *db, const struct ot_event *cause, long long version, const char *reason,
             struct ot_event *out, char *errstr, size_t errsz)
{
	const char *p[1] = {cause->order_id};
	PGresult *res;
	json_t *items;
	int rc;

	res = ot_pg_query(db, "SELECT coalesce(json_agg(json_build_object('sku', sku, 'qty', qty) "
	                  "ORDER BY line), '[]') FROM order_items WHERE order_id = $1", 1, p, &rc, errstr, errsz);
	if (!res)
		return rc;
	items = json_loads(PQgetvalue(res, 0, 0), 0, NULL);
	PQclear(res);
	ot_event_init(out, OT_EV_ORDER_CANCELLED, cause->order_id, version, "ot-consume",
	              json_pack("{s:s, s:o}", "reason", reason, "items", items ? items : json_array()),
	              cause->traceparent);
	return OT_OK;
}

/* One event of a batch on its way through ot_order_apply_batch. */
struct step {
	int to;                   /* the status it asks for */
	char lat[32], lon[32], eta[40], reason[256];
	int fresh;                /* first seen now: not in processed_events before */
	int kind;                 /* what came of it: NOTHING, APPLIED, REFRESH (the cache may be behind) */
	int from;
	struct ot_status st;      /* APPLIED: the new status */
};
enum { NOTHING, APPLIED, REFRESH };

/* An order a batch touches, as locked at its start and as the batch leaves it. */
struct row {
	char id[OT_UUID_LEN];
	int status;               /* st.status, parsed */
	char lat[32], lon[32], eta[40], reason[256]; /* the last of each the batch set; "" none */
	int changed;
	double age_s;             /* created_at to now, for the delivery histogram */
	struct ot_status st;      /* the current status, for the events' payloads */
};

/* Checks ev before any transaction: OT_OK with s filled, OT_IGNORED (a type that moves no
 * order), or OT_EINPUT. */
static int
step_check(const struct ot_event *ev, struct step *s, char *errstr, size_t errsz)
{
	json_t *sk;
	int rc;

	memset(s, 0, sizeof *s);
	s->to = -1;
	if ((rc = target_of(ev, &s->to, errstr, errsz)))
		return rc;
	if (!ot_uuid_valid(ev->order_id))
		return ot_err(OT_EINPUT, errstr, errsz, "field \"order_id\" is not a UUID");
	if ((rc = position_of(ev, s->lat, s->lon, s->eta, errstr, errsz)))
		return rc;
	if (s->to == OT_ST_REJECTED && (sk = json_object_get(ev->data, "short_skus")) && json_is_array(sk)) {
		char *d = json_dumps(sk, JSON_COMPACT);
		snprintf(s->reason, sizeof s->reason, "insufficient stock: %s", d ? d : "");
		s->reason[ot_utf8_cut(s->reason, sizeof s->reason)] = '\0'; /* whole characters only */
		free(d);
	}
	if (s->to == OT_ST_CANCELLED) {
		sk = json_object_get(ev->data, "reason");
		ot_utf8_copy(s->reason, sizeof s->reason, ev->kind == OT_EV_INVENTORY_RELEASED ?
		             "reservation expired" : json_is_string(sk) ? json_string_value(sk) : "cancelled");
	}
	return OT_OK;
}

static struct row *
row_of(struct row *rows, size_t nrows, const char *id)
{
	for (size_t i = 0; i < nrows; i++)
		if (!strcmp(rows[i].id, id))
			return &rows[i];
	return NULL;
}

/* The order ids of the fresh events as a JSON array, one statement parameter (caller frees;
 * NULL out of memory). */
static char *
ids_json(const struct ot_event *evs, const struct ot_batch_res *res, const struct step *steps, size_t n)
{
	json_t *a = json_array();
	char *s;

	for (size_t i = 0; i < n; i++)
		if (res[i].rc == OT_OK && steps[i].fresh)
			json_array_append_new(a, json_string(evs[i].order_id));
	s = json_dumps(a, JSON_COMPACT);
	json_decref(a);
	return s;
}

/* Marks which events are new to consumer (inserting them into processed_events). */
static int
mark_fresh(PGconn *db, const char *consumer, const struct ot_event *evs, const struct ot_batch_res *res,
           struct step *steps, size_t n, char *errstr, size_t errsz)
{
	const char **ids = calloc(n, sizeof *ids);
	int *fresh = calloc(n, sizeof *fresh), rc;
	size_t i;

	if (!ids || !fresh) {
		free(ids);
		free(fresh);
		return ot_err(OT_EINTERNAL, errstr, errsz, "out of memory");
	}
	for (i = 0; i < n; i++)
		ids[i] = res[i].rc == OT_OK ? evs[i].id : NULL;
	if (!(rc = ot_pg_mark_processed(db, consumer, ids, n, fresh, errstr, errsz)))
		for (i = 0; i < n; i++)
			steps[i].fresh = fresh[i];
	free(ids);
	free(fresh);
	return rc;
}

/* Locks the orders of the fresh events, in id order (so two consumers' batches cannot
 * deadlock), and reads them into rows. */
static int
lock_orders(PGconn *db, const struct ot_event *evs, const struct ot_batch_res *res, const struct step *steps,
            size_t n, struct row *rows, size_t *nrows, char *errstr, size_t errsz)
{
	const char *p[1];
	PGresult *q;
	char *ids;
	int k, rc;

	*nrows = 0;
	if (!(ids = ids_json(evs, res, steps, n)))
		return ot_err(OT_EINTERNAL, errstr, errsz, "out of memory");
	p[0] = ids;
	q = ot_pg_query(db, "SELECT id::text, " STATUS_COLS ", coalesce(reason, ''), "
	                "extract(epoch FROM clock_timestamp() - created_at), " TS_SQL("now()") " FROM orders "
	                "WHERE id IN (SELECT e::uuid FROM jsonb_array_elements_text($1::jsonb) e) ORDER BY id FOR UPDATE",
	                1, p, &rc, errstr, errsz);
	free(ids);
	if (!q)
		return rc;
	for (k = 0; k < PQntuples(q) && (size_t)k < n; k++) {
		struct row *w = &rows[(*nrows)++];
		memset(w, 0, sizeof *w);
		snprintf(w->id, sizeof w->id, "%s", PQgetvalue(q, k, 0));
		status_from_cols(&w->st, w->id, q, k, 1);
		w->status = ot_state_parse(w->st.status);
		w->age_s = strtod(PQgetvalue(q, k, 8), NULL);
		/* A change made now is stamped with the transaction's time, as updated_at = now(). */
		snprintf(w->st.updated_at, sizeof w->st.updated_at, "%s", PQgetvalue(q, k, 9));
	}
	PQclear(q);
	return OT_OK;
}

/* Decides each fresh event against its order as the batch has left it so far: applied
 * (the next version, the outbox event), skipped, or refused (rc OT_EINPUT, its
 * processed_events row to be taken back, into refused). */
static int
decide_all(PGconn *db, const struct ot_event *evs, struct ot_batch_res *res, struct step *steps, size_t n,
           struct row *rows, size_t nrows, struct ot_span *sp, struct ot_event *outs, size_t *nouts,
           json_t *refused, char *errstr, size_t errsz)
{
	struct row *w;
	struct step *s;
	json_t *data;
	size_t i;
	int rc;

	*nouts = 0;
	for (i = 0; i < n; i++) {
		s = &steps[i];
		if (res[i].rc != OT_OK)
			continue;
		if (!s->fresh) {
			/* Redelivered: the process that applied it may have died between its commit and
			 * its cache write (its offset was never stored). The cache gets the database's. */
			s->kind = REFRESH;
			res[i].rc = ot_err(OT_DUPLICATE, res[i].err, sizeof res[i].err, "event %s was already applied",
			                   evs[i].id);
			continue;
		}
		if (!(w = row_of(rows, nrows, evs[i].order_id))) {
			res[i].rc = ot_err(OT_ENOTFOUND, res[i].err, sizeof res[i].err, "%s for unknown order %s",
			                   evs[i].type, evs[i].order_id);
			json_array_append_new(refused, json_string(evs[i].id));
			continue;
		}
		s->from = w->status;
		switch (ot_state_check(w->status, s->to)) {
		case OT_TR_LATE:
			/* The processed_events row stays: a third copy is then refused at once. */
			s->kind = REFRESH;
			res[i].rc = ot_err(OT_LATE, res[i].err, sizeof res[i].err,
			                   "late %s: the order was cancelled meanwhile", evs[i].type);
			continue;
		case OT_TR_STALE:
			s->kind = REFRESH;
			res[i].rc = ot_err(OT_STALE, res[i].err, sizeof res[i].err, "stale %s: order is already %s",
			                   ot_state_name(s->to), ot_state_name(w->status));
			continue;
		case OT_TR_IMPOSSIBLE:
			res[i].rc = ot_err(OT_EINPUT, res[i].err, sizeof res[i].err,
			                   "impossible transition %s -> %s refused", ot_state_name(w->status),
			                   ot_state_name(s->to));
			json_array_append_new(refused, json_string(evs[i].id));
			continue;
		case OT_TR_APPLY:
			break;
		}
		/* Applied: what the UPDATE at the end of the batch will leave, step by step. */
		w->status = s->to;
		w->st.version++;
		w->changed = 1;
		snprintf(w->st.status, sizeof w->st.status, "%s", ot_state_name(s->to));
		if (s->lat[0]) {
			snprintf(w->lat, sizeof w->lat, "%s", s->lat);
			snprintf(w->lon, sizeof w->lon, "%s", s->lon);
			w->st.has_pos = 1;
			w->st.lat = strtod(s->lat, NULL);
			w->st.lon = strtod(s->lon, NULL);
		}
		if (s->eta[0]) {
			snprintf(w->eta, sizeof w->eta, "%s", s->eta);
			snprintf(w->st.eta, sizeof w->st.eta, "%s", s->eta);
		}
		if (s->reason[0])
			snprintf(w->reason, sizeof w->reason, "%s", s->reason);
		s->st = w->st;
		s->kind = APPLIED;
		data = ot_status_to_json(&s->st);
		json_object_del(data, "order_id");
		json_object_del(data, "version");
		if (s->reason[0])
			json_object_set_new(data, "reason", json_string(s->reason));
		/* The events it causes are children of its handling. */
		ot_span_enter(sp ? &sp[i] : NULL);
		ot_event_init(&outs[(*nouts)++], OT_EV_ORDER_STATUS_UPDATED, evs[i].order_id, s->st.version, "ot-consume",
		              data, evs[i].traceparent);
		rc = s->to == OT_ST_CANCELLED ? cancel_event(db, &evs[i], s->st.version, s->reason, &outs[*nouts],
		                                             errstr, errsz) : OT_OK;
		ot_span_leave(sp ? &sp[i] : NULL);
		if (rc)
			return rc;
		if (s->to == OT_ST_CANCELLED)
			(*nouts)++;
	}
	return OT_OK;
}

/* The batch's writes: refused events taken back out of processed_events, every changed order
 * updated to where the batch left it (a field the batch did not set keeps its value), and the
 * outbox rows in order. */
static int
write_all(PGconn *db, const char *consumer, struct row *rows, size_t nrows, const struct ot_event *outs,
          size_t nouts, json_t *refused, char *errstr, size_t errsz)
{
	json_t *upd = json_array();
	const char *p[2];
	char *doc = NULL, *ids = NULL;
	size_t i;
	int rc = OT_OK;

#define OPT(s) ((s)[0] ? json_string(s) : json_null())
	for (i = 0; i < nrows; i++)
		if (rows[i].changed)
			json_array_append_new(upd, json_pack("[s, s, I, o, o, o, o]", rows[i].id, ot_state_name(rows[i].status),
			                                     (json_int_t)rows[i].st.version, OPT(rows[i].lat), OPT(rows[i].lon),
			                                     OPT(rows[i].eta), OPT(rows[i].reason)));
#undef OPT
	if (json_array_size(refused)) {
		if (!(ids = json_dumps(refused, JSON_COMPACT))) {
			rc = ot_err(OT_EINTERNAL, errstr, errsz, "out of memory");
			goto out;
		}
		p[0] = consumer;
		p[1] = ids;
		/* Refused, so not processed: a later copy is judged again (and dead-lettered again). */
		if ((rc = ot_pg_exec(db, "DELETE FROM processed_events WHERE consumer = $1 AND event_id IN "
		                     "(SELECT e::uuid FROM jsonb_array_elements_text($2::jsonb) e)", 2, p, errstr, errsz)))
			goto out;
	}
	if (json_array_size(upd)) {
		if (!(doc = json_dumps(upd, JSON_COMPACT))) {
			rc = ot_err(OT_EINTERNAL, errstr, errsz, "out of memory");
			goto out;
		}
		p[0] = doc;
		if ((rc = ot_pg_exec(db, "UPDATE orders o SET status = x->>1, version = (x->>2)::bigint, "
		                     "lat = coalesce((x->>3)::float8, o.lat), lon = coalesce((x->>4)::float8, o.lon), "
		                     "eta = coalesce(x->>5, o.eta), reason = coalesce(x->>6, o.reason), updated_at = now() "
		                     "FROM jsonb_array_elements($1::jsonb) x WHERE o.id = (x->>0)::uuid",
		                     1, p, errstr, errsz)))
			goto out;
	}
	rc = ot_outbox_add_many(db, OT_TOPIC_ORDERS, outs, nouts, errstr, errsz);
out:
	free(doc);
	free(ids);
	json_decref(upd);
	return rc;
}

/* After the commit: the log lines, the counters, and in res[i].st the status to cache: the
 * new one, or the current one when the cache may be behind (REFRESH). */
static void
after_commit(PGconn *db, const char *consumer, const struct ot_event *evs, struct ot_batch_res *res,
             struct step *steps, size_t n, struct row *rows, size_t nrows, struct ot_span *sp)
{
	struct row *w;
	size_t i;

	for (i = 0; i < n; i++) {
		if (res[i].rc == OT_LATE)
			atomic_fetch_add(&late_count, 1);
		ot_span_enter(sp ? &sp[i] : NULL);
		if (steps[i].kind == APPLIED) {
			OT_INFO(evs[i].order_id, "%s -> %s (version %lld)", ot_state_name(steps[i].from), steps[i].st.status,
			        steps[i].st.version);
			count_transition(consumer, steps[i].st.status);
			if (steps[i].to == OT_ST_DELIVERED && (w = row_of(rows, nrows, evs[i].order_id)))
				count_delivery(w->age_s);
			res[i].st = steps[i].st;
		} else if (steps[i].kind == REFRESH && ot_order_load(db, evs[i].order_id, &res[i].st, NULL, 0) != 1) {
			res[i].st.version = 0;
		}
		if (sp && res[i].st.version && sp[i].exported)
			ot_span_traceparent(&sp[i], res[i].tp);
		ot_span_leave(sp ? &sp[i] : NULL);
	}
}

int
ot_order_apply_batch(PGconn *db, const struct ot_msg *ms, const struct ot_event *evs, size_t n,
                     const char *consumer, struct ot_batch_res *res, char *errstr, size_t errsz)
{
	struct step *steps = calloc(n, sizeof *steps);
	struct row *rows = calloc(n, sizeof *rows);
	struct ot_event *outs = calloc(2 * n, sizeof *outs);
	json_t *refused = json_array();
	struct ot_span *sp = calloc(n, sizeof *sp);
	size_t i, nrows = 0, nouts = 0, todo = 0;
	int rc = OT_OK;

	if (!steps || !rows || !outs || !sp) {
		rc = ot_err(OT_EINTERNAL, errstr, errsz, "out of memory");
		goto done;
	}
	for (i = 0; i < n; i++) {
		res[i].st.version = 0;
		res[i].tp[0] = '\0';
		if (res[i].rc != OT_OK)
			continue; /* refused before: left to the per-record path */
		res[i].rc = step_check(&evs[i], &steps[i], res[i].err, sizeof res[i].err);
		todo += res[i].rc == OT_OK;
	}
	if (!todo)
		goto done; /* nothing to commit: no transaction */
	/* Each record's span (ms NULL: the caller's span is current already), entered while its
	 * outbox events are made and its cache written, so those are its children. */
	if (ms)
		for (i = 0; i < n; i++)
			if (res[i].rc == OT_OK) {
				ot_run_span(&sp[i], &ms[i], &evs[i]);
				ot_span_leave(&sp[i]);
			}
	if ((rc = ot_pg_exec(db, "BEGIN", 0, NULL, errstr, errsz)) ||
	    (rc = mark_fresh(db, consumer, evs, res, steps, n, errstr, errsz)) ||
	    (rc = lock_orders(db, evs, res, steps, n, rows, &nrows, errstr, errsz)) ||
	    (rc = decide_all(db, evs, res, steps, n, rows, nrows, ms ? sp : NULL, outs, &nouts, refused,
	                     errstr, errsz)) ||
	    (rc = write_all(db, consumer, rows, nrows, outs, nouts, refused, errstr, errsz)) ||
	    (rc = ot_pg_exec(db, "COMMIT", 0, NULL, errstr, errsz)))
		goto done;
	after_commit(db, consumer, evs, res, steps, n, rows, nrows, ms ? sp : NULL);
done:
	if (rc)
		ot_pg_rollback(db);
	for (i = 0; sp && i < n; i++) {
		if (rc || (res[i].rc < 0 && res[i].rc != OT_EINPUT))
			ot_span_error(&sp[i], rc ? errstr : res[i].err);
		ot_span_end(&sp[i]);
	}
	for (i = 0; i < nouts; i++)
		ot_event_clear(&outs[i]);
	json_decref(refused);
	free(sp);
	free(outs);
	free(rows);
	free(steps);
	return rc;
}

int
ot_order_apply(PGconn *db, const struct ot_event *ev, const char *consumer, struct ot_status *st,
               char *errstr, size_t errsz)
{
	struct ot_batch_res res = {.rc = OT_OK};
	int rc;

	if (st)
		memset(st, 0, sizeof *st);
	rc = ot_order_apply_batch(db, NULL, ev, 1, consumer, &res, errstr, errsz);
	if (rc)
		return rc;
	if (st)
		*st = res.st;
	snprintf(errstr, errsz, "%s", res.err);
	return res.rc;
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

/* fn for each row of query (STATUS_COLS, then id); returns the count or fn's ot_rc. */
static long
each_status(PGconn *db, const char *query, int nparams, const char *const *params,
            int (*fn)(void *arg, const struct ot_status *st), void *arg, char *errstr, size_t errsz)
{
	struct ot_status st;
	PGresult *res;
	long n = 0;
	int i, rc = 0;

	if (!(res = ot_pg_query(db, query, nparams, params, &rc, errstr, errsz)))
		return rc;
	for (i = 0; i < PQntuples(res) && !rc; i++, n++) {
		status_from_row(&st, PQgetvalue(res, i, 6), res, i);
		rc = fn(arg, &st);
	}
	PQclear(res);
	return rc ? rc : n;
}

long
ot_order_active(PGconn *db, int (*fn)(void *arg, const struct ot_status *st), void *arg, char *errstr,
                size_t errsz)
{
	return each_status(db, "SELECT " STATUS_COLS ", id FROM orders "
	                   "WHERE status NOT IN ('DELIVERED', 'REJECTED', 'CANCELLED')", 0, NULL, fn, arg,
	                   errstr, errsz);
}

long
ot_order_changed(PGconn *db, double seconds, int (*fn)(void *arg, const struct ot_status *st), void *arg,
                 char *errstr, size_t errsz)
{
	char secs[32];
	const char *p[1] = {secs};

	snprintf(secs, sizeof secs, "%.3f", seconds);
	return each_status(db, "SELECT " STATUS_COLS ", id FROM orders "
	                   "WHERE updated_at >= now() - make_interval(secs => $1::float8)", 1, p, fn, arg,
	                   errstr, errsz);
}
