/* ot_order: placing orders, and reading them back (applying events: ot_order_apply.c). */
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
#include "ot_order_int.h"
#include "ot_outbox.h"
#include "ot_pg.h"
#include "ot_run.h"
#include "ot_state.h"
#include "ot_text.h"
#include "ot_trace.h"

#define MAX_ITEMS 100

/* The status in STATUS_COLS starting at column col of row. */
void
order_status_from_cols(struct ot_status *st, const char *order_id, PGresult *res, int row, int col)
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
	if (*PQgetvalue(res, row, col + 6)) {
		json_t *pay = json_loads(PQgetvalue(res, row, col + 6), 0, NULL);
		ot_payment_from_json(pay, &st->pay);
		json_decref(pay);
	}
}

static void
status_from_row(struct ot_status *st, const char *order_id, PGresult *res, int row)
{
	order_status_from_cols(st, order_id, res, row, 0);
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
	json_object_set_new(o, "customer_id", json_string(PQgetvalue(res, 0, STATUS_NCOLS)));
	json_object_set_new(o, "address", json_string(PQgetvalue(res, 0, STATUS_NCOLS + 1)));
	json_object_set_new(o, "created_at", json_string(PQgetvalue(res, 0, STATUS_NCOLS + 2)));
	items = json_loads(PQgetvalue(res, 0, STATUS_NCOLS + 3), 0, NULL);
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

/* Counts a committed transition to status to, made by tool. The family is looked up each time
 * (ot_metric_new finds it): ot-serve's threads call this, and a transition is no hot path. */
void
order_count_transition(const char *tool, const char *to)
{
	ot_metric_add(ot_metric_new(OT_COUNTER, "ot_order_transitions_total", "Order status changes committed, "
	                            "by the tool that made them and the new status.", "tool,to", NULL, 0), 1, tool, to);
}

/* One order request on its way: what it asked for, checked, and where it ended. */
struct placing {
	const char *customer, *address, *request_id;
	json_t *items;
	json_t *payment;          /* {"source": token}, or NULL: paid another way */
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
	json_decref(pl->payment);
	free(pl->items_s);
	pl->items = NULL;
	pl->payment = NULL;
	pl->items_s = NULL;
}

/* The request's payment, normalised to {"source": token}: NULL with *rc OT_OK when it has
 * none (the order is paid another way, and confirmed once its stock is reserved), or NULL
 * with *rc OT_EINPUT naming the field. A source is a processor's token (tok_visa): letters,
 * digits and underscores, never a card number. */
static json_t *
check_payment(json_t *req, int *rc, char *errstr, size_t errsz)
{
	json_t *pay = json_object_get(req, "payment");
	const char *src;

	*rc = OT_OK;
	if (!pay || json_is_null(pay))
		return NULL;
	*rc = OT_EINPUT;
	if (!json_is_object(pay)) {
		ot_err(OT_EINPUT, errstr, errsz, "field \"payment\" must be an object {\"source\": TOKEN}");
		return NULL;
	}
	src = json_string_value(json_object_get(pay, "source"));
	if (!src || !*src || strlen(src) > 128) {
		ot_err(OT_EINPUT, errstr, errsz, "field \"payment.source\" must be a string of 1 to 128 bytes");
		return NULL;
	}
	for (const char *c = src; *c; c++)
		if (!(*c >= 'a' && *c <= 'z') && !(*c >= 'A' && *c <= 'Z') && !(*c >= '0' && *c <= '9') && *c != '_') {
			ot_err(OT_EINPUT, errstr, errsz, "field \"payment.source\" must be a processor's token "
			       "(letters, digits and _, such as tok_visa)");
			return NULL;
		}
	if (src[strspn(src, "0123456789")] == '\0') {
		ot_err(OT_EINPUT, errstr, errsz, "field \"payment.source\" must be a processor's token, never a card number");
		return NULL;
	}
	*rc = OT_OK;
	return json_pack("{s:s}", "source", src);
}

/* Checks req before any transaction. Returns OT_OK, OT_EINPUT naming the field, OT_EINTERNAL. */
static int
place_check(json_t *req, struct placing *pl, char *errstr, size_t errsz)
{
	json_t *rid;
	int rc;

	memset(pl, 0, sizeof *pl);
	if (!json_is_object(req))
		return ot_err(OT_EINPUT, errstr, errsz, "an order request must be a JSON object");
	if (!(pl->customer = str_field(req, "customer_id", 128, errstr, errsz)) ||
	    !(pl->address = str_field(req, "address", 512, errstr, errsz)) ||
	    !(pl->items = check_items(req, errstr, errsz)))
		return OT_EINPUT;
	if (!(pl->payment = check_payment(req, &rc, errstr, errsz)) && rc)
		return rc;
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
		if (pl[i].payment)
			json_object_set(evs[nev].data, "payment", pl[i].payment);
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
		order_count_transition(source, "PENDING");
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
		status_from_row(&st, PQgetvalue(res, i, STATUS_NCOLS), res, i);
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
