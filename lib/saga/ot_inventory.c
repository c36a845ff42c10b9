/* ot_inventory: stock and all-or-nothing reservations, each decision an outbox event. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ot_err.h"
#include "ot_inventory.h"
#include "ot_log.h"
#include "ot_metrics.h"
#include "ot_order.h"
#include "ot_outbox.h"
#include "ot_pg.h"
#include "ot_run.h"
#include "ot_trace.h"

int
ot_inventory_stock(PGconn *db, json_t *line, char *errstr, size_t errsz)
{
	json_t *sku = json_object_get(line, "sku"), *qty = json_object_get(line, "qty");
	json_t *price = json_object_get(line, "price");
	char q[24], pr[24];
	const char *p[3];

	if (!json_is_object(line))
		return ot_err(OT_EINPUT, errstr, errsz, "a stock line must be a JSON object");
	if (!json_is_string(sku) || !json_string_length(sku) || json_string_length(sku) > 64)
		return ot_err(OT_EINPUT, errstr, errsz, "field \"sku\" must be a string of 1 to 64 bytes");
	if (!json_is_integer(qty) || json_integer_value(qty) < 0 || json_integer_value(qty) > 1000000000)
		return ot_err(OT_EINPUT, errstr, errsz, "field \"qty\" must be an integer from 0 to 1000000000");
	if (price && (!json_is_integer(price) || json_integer_value(price) < 0 ||
	              json_integer_value(price) > OT_PRICE_MAX))
		return ot_err(OT_EINPUT, errstr, errsz, "field \"price\" must be an integer from 0 to %lld (minor units, "
		              "cents)", (long long)OT_PRICE_MAX);
	snprintf(q, sizeof q, "%lld", (long long)json_integer_value(qty));
	snprintf(pr, sizeof pr, "%lld", (long long)json_integer_value(price));
	p[0] = json_string_value(sku);
	p[1] = q;
	p[2] = price ? pr : NULL;
	/* A line without a price keeps the SKU's. */
	return ot_pg_exec(db, "INSERT INTO stock (sku, available, price) VALUES ($1, $2, coalesce($3::bigint, 0)) "
	                  "ON CONFLICT (sku) DO UPDATE SET available = EXCLUDED.available, "
	                  "price = coalesce($3::bigint, stock.price), updated_at = now()",
	                  3, p, errstr, errsz);
}

/* Validates data.items of ORDER_CREATED; returns them as a JSON string (caller frees). */
static char *
items_of(const struct ot_event *ev, char *errstr, size_t errsz)
{
	json_t *items = json_object_get(ev->data, "items"), *it;
	size_t i;

	if (!json_is_array(items) || json_array_size(items) == 0) {
		ot_err(OT_EINPUT, errstr, errsz, "field \"data.items\" must be a non-empty array");
		return NULL;
	}
	json_array_foreach(items, i, it) {
		json_t *sku = json_object_get(it, "sku"), *qty = json_object_get(it, "qty");
		if (!json_is_string(sku) || !json_string_length(sku) || !json_is_integer(qty) ||
		    json_integer_value(qty) <= 0 || json_integer_value(qty) > 1000000) {
			ot_err(OT_EINPUT, errstr, errsz, "field \"data.items[%zu]\" needs a sku and a qty > 0", i);
			return NULL;
		}
	}
	return json_dumps(items, JSON_COMPACT);
}

/* Releases the order's open reservations, in SKU order, and announces INVENTORY_RELEASED.
 * Nothing reserved (rejected, or released already) means nothing to announce. */
static int
release(PGconn *db, const char *order_id, const char *reason, long long version,
        const char *traceparent, json_t **released, char *errstr, size_t errsz)
{
	static struct ot_metric *m;
	const char *p[2] = {order_id, reason};
	struct ot_event out;
	PGresult *res;
	json_t *items;
	int i, rc;

	res = ot_pg_query(db, "WITH r AS (UPDATE reservations SET status = 'RELEASED', released_at = now(), "
	                  "release_reason = $2 WHERE order_id = $1 AND status = 'RESERVED' RETURNING sku, qty), "
	                  "s AS (UPDATE stock SET available = stock.available + r.qty, "
	                  "reserved = stock.reserved - r.qty, updated_at = now() FROM r WHERE stock.sku = r.sku) "
	                  "SELECT sku, qty FROM r ORDER BY sku", 2, p, &rc, errstr, errsz);
	if (!res)
		return rc;
	if (PQntuples(res) == 0) {
		PQclear(res);
		return OT_NOTHING_TO_RELEASE;
	}
	items = json_array();
	for (i = 0; i < PQntuples(res); i++)
		json_array_append_new(items, json_pack("{s:s, s:i}", "sku", PQgetvalue(res, i, 0),
		                                       "qty", atoi(PQgetvalue(res, i, 1))));
	PQclear(res);
	if (released)
		*released = json_incref(items);
	ot_event_init(&out, OT_EV_INVENTORY_RELEASED, order_id, version, "ot-reserve",
	              json_pack("{s:o, s:s}", "items", items, "reason", reason), traceparent);
	rc = ot_outbox_add(db, OT_TOPIC_INVENTORY, &out, errstr, errsz);
	ot_event_clear(&out);
	if (!rc) {
		OT_INFO(order_id, "released stock (%s)", reason);
		if (!m)
			m = ot_metric_new(OT_COUNTER, "ot_saga_compensations_total", "Reservations released to undo an "
			                  "order: released (cancelled), expired (never confirmed), rejected (its payment "
			                  "declined).", "kind", NULL, 0);
		ot_metric_add(m, 1, !strcmp(reason, "cancelled") ? "released" : reason);
	}
	return rc;
}

/* Whether ORDER_STATUS_UPDATED ev moves the order to status. */
static int
moves_to(const struct ot_event *ev, const char *status)
{
	json_t *st = json_object_get(ev->data, "status");

	return ev->kind == OT_EV_ORDER_STATUS_UPDATED && json_is_string(st) && !strcmp(json_string_value(st), status);
}

/* Whether ev gives the order's stock back: a cancel, or a rejection after the stock was
 * reserved (the payment was declined). */
static int
releases(const struct ot_event *ev)
{
	return ev->kind == OT_EV_ORDER_CANCELLED || moves_to(ev, "REJECTED");
}

/* Releases one order's reservation if it is still open and unconfirmed, re-checked under the
 * row locks so that a confirmation that arrived meanwhile wins. */
static int
expire_one(PGconn *db, const char *order_id, char *errstr, size_t errsz)
{
	const char *p[1] = {order_id};
	struct ot_span sp;
	PGresult *res;
	int rc, open;

	if ((rc = ot_pg_exec(db, "BEGIN", 0, NULL, errstr, errsz)))
		return rc;
	res = ot_pg_query(db, "SELECT 1 FROM reservations WHERE order_id = $1 AND status = 'RESERVED' "
	                  "AND NOT confirmed FOR UPDATE", 1, p, &rc, errstr, errsz);
	open = res && PQntuples(res) > 0;
	PQclear(res);
	if (res) {
		/* A trace of its own: nothing the order did caused it. */
		ot_span_begin(&sp, "expire reservation", OT_SPAN_INTERNAL, NULL);
		ot_span_tag(&sp, "order_id", order_id);
		rc = open ? release(db, order_id, "expired", 0, NULL, NULL, errstr, errsz) : OT_NOTHING_TO_RELEASE;
		ot_span_end(&sp);
	}
	if (rc >= 0) {
		int c = ot_pg_exec(db, "COMMIT", 0, NULL, errstr, errsz);
		if (c)
			rc = c;
	}
	ot_pg_rollback(db);
	return rc;
}

long
ot_inventory_expire(PGconn *db, long older_than_s, char *errstr, size_t errsz)
{
	char secs[24];
	const char *p[1] = {secs};
	PGresult *res;
	long n = 0;
	int i, rc = OT_OK;

	snprintf(secs, sizeof secs, "%ld", older_than_s);
	res = ot_pg_query(db, "SELECT DISTINCT order_id FROM reservations WHERE status = 'RESERVED' "
	                  "AND NOT confirmed AND created_at < now() - make_interval(secs => $1::float8)",
	                  1, p, &rc, errstr, errsz);
	if (!res)
		return rc;
	for (i = 0; i < PQntuples(res) && rc >= 0; i++)
		if ((rc = expire_one(db, PQgetvalue(res, i, 0), errstr, errsz)) == OT_OK)
			n++;
	PQclear(res);
	return rc < 0 ? rc : n;
}

/* What ev asks of the inventory before any transaction: OT_OK to act on it (*items, for
 * ORDER_CREATED, its lines; caller frees), OT_IGNORED for what commits nothing, OT_EINPUT for
 * a malformed one. */
static int
screen(const struct ot_event *ev, char **items, char *errstr, size_t errsz)
{
	*items = NULL;
	/* A status the inventory does not act on commits nothing, not even processed_events:
	 * redelivered, it is skipped again just the same. */
	if (ev->kind != OT_EV_ORDER_CREATED && !releases(ev) && !moves_to(ev, "CONFIRMED"))
		return OT_IGNORED;
	if (!ot_uuid_valid(ev->order_id))
		return ot_err(OT_EINPUT, errstr, errsz, "field \"order_id\" is not a UUID");
	if (ev->kind == OT_EV_ORDER_CREATED && !(*items = items_of(ev, errstr, errsz)))
		return OT_EINPUT;
	return OT_OK;
}

/* Stock as a batch finds it (locked) and leaves it, SKU by SKU. */
struct sku {
	char name[72];
	long long available;
	long long taken;          /* reserved by the batch, not written yet */
	long long price;          /* of one, in minor units */
};

/* What a batch has decided and not written yet. */
struct pending {
	json_t *rows;             /* reservations: [order_id, sku, qty] */
	struct ot_event *outs;    /* outbox events, in order */
	size_t nouts;
};

static struct sku *
sku_of(struct sku *skus, size_t nskus, const char *name)
{
	for (size_t i = 0; i < nskus; i++)
		if (!strcmp(skus[i].name, name))
			return &skus[i];
	return NULL;
}

/* Locks, in SKU order, every stock row the batch's reservations and releases may change, so
 * that two consumers' batches cannot deadlock on them, and reads what is available. */
static int
lock_stock(PGconn *db, const struct ot_event *evs, char **items, const struct ot_batch_res *res, size_t n,
           struct sku **skus, size_t *nskus, char *errstr, size_t errsz)
{
	json_t *names = json_array(), *orders = json_array(), *it;
	const char *p[2];
	char *ps = NULL, *po = NULL;
	PGresult *q = NULL;
	size_t i, j;
	int rc = OT_OK, k;

	*skus = NULL;
	*nskus = 0;
	for (i = 0; i < n; i++) {
		if (res[i].rc != OT_OK)
			continue;
		if (items[i])
			json_array_foreach(json_object_get(evs[i].data, "items"), j, it)
				json_array_append(names, json_object_get(it, "sku"));
		else if (releases(&evs[i]))
			json_array_append_new(orders, json_string(evs[i].order_id));
	}
	if (!json_array_size(names) && !json_array_size(orders))
		goto out;
	if (!(ps = json_dumps(names, JSON_COMPACT)) || !(po = json_dumps(orders, JSON_COMPACT))) {
		rc = ot_err(OT_EINTERNAL, errstr, errsz, "out of memory");
		goto out;
	}
	p[0] = ps;
	p[1] = po;
	if (!(q = ot_pg_query(db, "SELECT sku, available, price FROM stock WHERE sku IN "
	                      "(SELECT jsonb_array_elements_text($1::jsonb)) OR sku IN (SELECT sku FROM reservations "
	                      "WHERE order_id IN (SELECT jsonb_array_elements_text($2::jsonb)::uuid)) "
	                      "ORDER BY sku FOR UPDATE", 2, p, &rc, errstr, errsz)))
		goto out;
	if (PQntuples(q) && !(*skus = calloc((size_t)PQntuples(q), sizeof **skus))) {
		rc = ot_err(OT_EINTERNAL, errstr, errsz, "out of memory");
		goto out;
	}
	for (k = 0; k < PQntuples(q); k++) {
		snprintf((*skus)[k].name, sizeof (*skus)[k].name, "%s", PQgetvalue(q, k, 0));
		(*skus)[k].available = strtoll(PQgetvalue(q, k, 1), NULL, 10);
		(*skus)[k].price = strtoll(PQgetvalue(q, k, 2), NULL, 10);
	}
	*nskus = (size_t)PQntuples(q);
out:
	PQclear(q);
	free(ps);
	free(po);
	json_decref(names);
	json_decref(orders);
	return rc;
}

/* The orders among the batch's ORDER_CREATED that already have a reservation: decided by an
 * earlier event. decided[i] set for each. */
static int
decided_before(PGconn *db, const struct ot_event *evs, char **items, const struct ot_batch_res *res,
               const int *fresh, size_t n, int *decided, char *errstr, size_t errsz)
{
	json_t *ids = json_array();
	const char *p[1];
	PGresult *q;
	char *doc;
	size_t i;
	int k, rc;

	for (i = 0; i < n; i++)
		if (res[i].rc == OT_OK && fresh[i] && items[i])
			json_array_append_new(ids, json_string(evs[i].order_id));
	if (!json_array_size(ids)) {
		json_decref(ids);
		return OT_OK;
	}
	doc = json_dumps(ids, JSON_COMPACT);
	json_decref(ids);
	if (!(p[0] = doc))
		return ot_err(OT_EINTERNAL, errstr, errsz, "out of memory");
	q = ot_pg_query(db, "SELECT DISTINCT order_id::text FROM reservations WHERE order_id IN "
	                "(SELECT jsonb_array_elements_text($1::jsonb)::uuid)", 1, p, &rc, errstr, errsz);
	free(doc);
	if (!q)
		return rc;
	for (k = 0; k < PQntuples(q); k++)
		for (i = 0; i < n; i++)
			if (items[i] && !strcmp(evs[i].order_id, PQgetvalue(q, k, 0)))
				decided[i] = 1;
	PQclear(q);
	return OT_OK;
}

/* Writes what the batch decided so far: the stock taken, the reservations, the outbox events
 * in order. */
static int
flush(PGconn *db, struct pending *pd, struct sku *skus, size_t nskus, char *errstr, size_t errsz)
{
	json_t *taken = json_array();
	const char *p[1];
	char *doc = NULL;
	size_t i;
	int rc = OT_OK;

	for (i = 0; i < nskus; i++)
		if (skus[i].taken) {
			json_array_append_new(taken, json_pack("[s, I]", skus[i].name, (json_int_t)skus[i].taken));
			skus[i].taken = 0;
		}
	if (json_array_size(taken)) {
		if (!(doc = json_dumps(taken, JSON_COMPACT))) {
			rc = ot_err(OT_EINTERNAL, errstr, errsz, "out of memory");
			goto out;
		}
		p[0] = doc;
		if ((rc = ot_pg_exec(db, "UPDATE stock s SET available = s.available - (x->>1)::int, "
		                     "reserved = s.reserved + (x->>1)::int, updated_at = now() "
		                     "FROM jsonb_array_elements($1::jsonb) x WHERE s.sku = x->>0", 1, p, errstr, errsz)))
			goto out;
		free(doc);
		if (!(doc = json_dumps(pd->rows, JSON_COMPACT))) {
			rc = ot_err(OT_EINTERNAL, errstr, errsz, "out of memory");
			goto out;
		}
		p[0] = doc;
		if ((rc = ot_pg_exec(db, "INSERT INTO reservations (order_id, sku, qty) "
		                     "SELECT (x->>0)::uuid, x->>1, (x->>2)::int FROM jsonb_array_elements($1::jsonb) x",
		                     1, p, errstr, errsz)))
			goto out;
	}
	json_array_clear(pd->rows);
	rc = ot_outbox_add_many(db, OT_TOPIC_INVENTORY, pd->outs, pd->nouts, errstr, errsz);
	for (i = 0; i < pd->nouts; i++)
		ot_event_clear(&pd->outs[i]);
	pd->nouts = 0;
out:
	free(doc);
	json_decref(taken);
	return rc;
}

static int
by_str(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The strings of a in byte order, as a new array (a is released). */
static json_t *
sorted(json_t *a)
{
	size_t i, n = json_array_size(a);
	const char **v = calloc(n ? n : 1, sizeof *v);
	json_t *out = json_array();

	for (i = 0; v && i < n; i++)
		v[i] = json_string_value(json_array_get(a, i));
	if (v)
		qsort(v, n, sizeof *v, by_str);
	for (i = 0; v && i < n; i++)
		json_array_append_new(out, json_string(v[i]));
	free(v);
	json_decref(a);
	return out;
}

/* An order's stock, all or nothing, from what the batch has left: INVENTORY_RESERVED with
 * the lines, or INVENTORY_RESERVATION_FAILED with the SKUs short (in SKU order). */
static int
reserve(const struct ot_event *ev, struct sku *skus, size_t nskus, struct pending *pd)
{
	json_t *items = json_object_get(ev->data, "items"), *want = json_object(), *shortl = json_array();
	json_t *it, *v, *data;
	const char *name;
	struct sku *k;
	size_t i;
	void *tmp;

	/* The quantity per SKU, lines of one SKU added up. */
	json_array_foreach(items, i, it) {
		name = json_string_value(json_object_get(it, "sku"));
		v = json_object_get(want, name);
		json_object_set_new(want, name, json_integer((v ? json_integer_value(v) : 0) +
		                                             json_integer_value(json_object_get(it, "qty"))));
	}
	json_object_foreach_safe(want, tmp, name, v)
		if (!(k = sku_of(skus, nskus, name)) || k->available < json_integer_value(v))
			json_array_append_new(shortl, json_string(name));
	if (json_array_size(shortl) == 0) {
		long long amount = 0;
		json_object_foreach_safe(want, tmp, name, v) {
			k = sku_of(skus, nskus, name);
			k->available -= json_integer_value(v);
			k->taken += json_integer_value(v);
			amount += k->price * json_integer_value(v);
			json_array_append_new(pd->rows, json_pack("[s, s, I]", ev->order_id, name, json_integer_value(v)));
		}
		/* The amount to pay, and how, for the Payment Service: an order placed with a payment
		 * waits for it before it is confirmed. */
		data = json_pack("{s:O, s:I}", "items", items, "amount", (json_int_t)amount);
		if (json_object_get(ev->data, "payment"))
			json_object_set(data, "payment", json_object_get(ev->data, "payment"));
		ot_event_init(&pd->outs[pd->nouts++], OT_EV_INVENTORY_RESERVED, ev->order_id, ev->version, "ot-reserve", data,
		              ev->traceparent);
		OT_INFO(ev->order_id, "reserved stock");
	} else {
		shortl = sorted(shortl);
		OT_INFO(ev->order_id, "reservation failed: short of %zu SKUs", json_array_size(shortl));
		data = json_pack("{s:o, s:s}", "short_skus", shortl, "reason", "insufficient stock");
		shortl = NULL;
		ot_event_init(&pd->outs[pd->nouts++], OT_EV_INVENTORY_RESERVATION_FAILED, ev->order_id, ev->version,
		              "ot-reserve", data, ev->traceparent);
	}
	json_decref(shortl);
	json_decref(want);
	return OT_OK;
}

/* Each fresh event in order, against the stock as the batch leaves it. */
static int
decide_all(PGconn *db, const struct ot_event *evs, struct ot_batch_res *res, const int *fresh, const int *decided,
           struct ot_span *sp, size_t n, struct sku *skus, size_t nskus, struct pending *pd, json_t *confirmed,
           char *errstr, size_t errsz)
{
	json_t *released, *it;
	struct sku *k;
	size_t i, j;
	int rc = OT_OK, reserved_now;

	for (i = 0; i < n && !rc; i++) {
		if (res[i].rc != OT_OK)
			continue;
		if (!fresh[i]) {
			res[i].rc = OT_DUPLICATE;
			continue;
		}
		ot_span_enter(sp ? &sp[i] : NULL);
		if (evs[i].kind == OT_EV_ORDER_CREATED) {
			for (j = 0, reserved_now = 0; j < i && !reserved_now; j++)
				reserved_now = res[j].rc == OT_OK && fresh[j] && evs[j].kind == OT_EV_ORDER_CREATED &&
				               !strcmp(evs[j].order_id, evs[i].order_id);
			if (decided[i] || reserved_now)
				res[i].rc = OT_DUPLICATE; /* this order's stock was decided by an earlier event */
			else
				rc = reserve(&evs[i], skus, nskus, pd);
		} else if (releases(&evs[i])) {
			/* What the batch reserved is written first: the release reads it. */
			released = NULL;
			if (!(rc = flush(db, pd, skus, nskus, errstr, errsz)))
				rc = release(db, evs[i].order_id, evs[i].kind == OT_EV_ORDER_CANCELLED ? "cancelled" : "rejected",
				             evs[i].version, evs[i].traceparent, &released, errstr, errsz);
			json_array_foreach(released, j, it)
				if ((k = sku_of(skus, nskus, json_string_value(json_object_get(it, "sku")))))
					k->available += json_integer_value(json_object_get(it, "qty"));
			json_decref(released);
			if (rc == OT_NOTHING_TO_RELEASE) {
				res[i].rc = rc; /* nothing reserved: nothing to release */
				rc = OT_OK;
			}
		} else {
			/* ORDER_STATUS_UPDATED to CONFIRMED: the reservation can no longer expire. */
			json_array_append_new(confirmed, json_string(evs[i].order_id));
		}
		ot_span_leave(sp ? &sp[i] : NULL);
	}
	return rc;
}

int
ot_inventory_handle_batch(PGconn *db, const struct ot_msg *ms, const struct ot_event *evs, size_t n,
                          const char *consumer, struct ot_batch_res *res, char *errstr, size_t errsz)
{
	struct pending pd = {json_array(), calloc(n, sizeof *pd.outs), 0};
	json_t *confirmed = json_array();
	struct ot_span *sp = calloc(n, sizeof *sp);
	char **items = calloc(n, sizeof *items);
	const char **ids = calloc(n, sizeof *ids), *p[1];
	int *fresh = calloc(n, sizeof *fresh), *decided = calloc(n, sizeof *decided);
	struct sku *skus = NULL;
	size_t i, nskus = 0, todo = 0;
	char *doc;
	int rc = OT_OK;

	if (!pd.outs || !sp || !items || !ids || !fresh || !decided) {
		rc = ot_err(OT_EINTERNAL, errstr, errsz, "out of memory");
		goto out;
	}
	for (i = 0; i < n; i++)
		if (res[i].rc == OT_OK &&
		    (res[i].rc = screen(&evs[i], &items[i], res[i].err, sizeof res[i].err)) == OT_OK) {
			ids[i] = evs[i].id;
			todo++;
		}
	if (!todo)
		goto out; /* nothing to commit: no transaction */
	if (ms)
		for (i = 0; i < n; i++)
			if (res[i].rc == OT_OK) {
				ot_run_span(&sp[i], &ms[i], &evs[i]);
				ot_span_leave(&sp[i]);
			}
	if ((rc = ot_pg_exec(db, "BEGIN", 0, NULL, errstr, errsz)) ||
	    (rc = ot_pg_mark_processed(db, consumer, ids, n, fresh, errstr, errsz)) ||
	    (rc = lock_stock(db, evs, items, res, n, &skus, &nskus, errstr, errsz)) ||
	    (rc = decided_before(db, evs, items, res, fresh, n, decided, errstr, errsz)) ||
	    (rc = decide_all(db, evs, res, fresh, decided, ms ? sp : NULL, n, skus, nskus, &pd, confirmed,
	                     errstr, errsz)) ||
	    (rc = flush(db, &pd, skus, nskus, errstr, errsz)))
		goto out;
	if (json_array_size(confirmed)) {
		if (!(doc = json_dumps(confirmed, JSON_COMPACT))) {
			rc = ot_err(OT_EINTERNAL, errstr, errsz, "out of memory");
			goto out;
		}
		p[0] = doc;
		rc = ot_pg_exec(db, "UPDATE reservations SET confirmed = true WHERE order_id IN "
		                "(SELECT jsonb_array_elements_text($1::jsonb)::uuid)", 1, p, errstr, errsz);
		free(doc);
		if (rc)
			goto out;
	}
	rc = ot_pg_exec(db, "COMMIT", 0, NULL, errstr, errsz);
out:
	if (rc)
		ot_pg_rollback(db);
	for (i = 0; i < n; i++) {
		if (sp) {
			if (rc)
				ot_span_error(&sp[i], errstr);
			ot_span_end(&sp[i]);
		}
		if (items)
			free(items[i]);
	}
	for (i = 0; i < pd.nouts; i++)
		ot_event_clear(&pd.outs[i]);
	json_decref(pd.rows);
	json_decref(confirmed);
	free(pd.outs);
	free(skus);
	free(sp);
	free(items);
	free(ids);
	free(fresh);
	free(decided);
	return rc;
}

int
ot_inventory_handle(PGconn *db, const struct ot_event *ev, const char *consumer, char *errstr, size_t errsz)
{
	struct ot_batch_res res = {.rc = OT_OK};
	int rc;

	if ((rc = ot_inventory_handle_batch(db, NULL, ev, 1, consumer, &res, errstr, errsz)))
		return rc;
	snprintf(errstr, errsz, "%s", res.err);
	return res.rc;
}
