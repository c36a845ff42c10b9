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
	char q[24];
	const char *p[2];

	if (!json_is_object(line))
		return ot_err(OT_EINPUT, errstr, errsz, "a stock line must be a JSON object");
	if (!json_is_string(sku) || !json_string_length(sku) || json_string_length(sku) > 64)
		return ot_err(OT_EINPUT, errstr, errsz, "field \"sku\" must be a string of 1 to 64 bytes");
	if (!json_is_integer(qty) || json_integer_value(qty) < 0 || json_integer_value(qty) > 1000000000)
		return ot_err(OT_EINPUT, errstr, errsz, "field \"qty\" must be an integer from 0 to 1000000000");
	snprintf(q, sizeof q, "%lld", (long long)json_integer_value(qty));
	p[0] = json_string_value(sku);
	p[1] = q;
	return ot_pg_exec(db, "INSERT INTO stock (sku, available) VALUES ($1, $2) ON CONFLICT (sku) "
	                  "DO UPDATE SET available = EXCLUDED.available, updated_at = now()",
	                  2, p, errstr, errsz);
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

#define WANT "WITH want AS (SELECT x->>'sku' AS sku, sum((x->>'qty')::int) AS qty " \
             "FROM jsonb_array_elements($1::jsonb) x GROUP BY 1) "

static int
reserve(PGconn *db, const struct ot_event *ev, const char *items, char *errstr, size_t errsz)
{
	const char *p[2] = {items, ev->order_id};
	struct ot_event out;
	PGresult *res;
	json_t *shortl, *data;
	int i, rc;

	res = ot_pg_query(db, "SELECT 1 FROM reservations WHERE order_id = $1 LIMIT 1", 1, p + 1, &rc,
	                  errstr, errsz);
	if (!res)
		return rc;
	i = PQntuples(res);
	PQclear(res);
	if (i)
		return OT_SKIP; /* this order's stock was decided by an earlier event */
	/* Lock the rows in SKU order so concurrent reservations cannot deadlock. */
	res = ot_pg_query(db, "SELECT sku FROM stock WHERE sku IN (SELECT x->>'sku' FROM "
	                  "jsonb_array_elements($1::jsonb) x) ORDER BY sku FOR UPDATE", 1, p, &rc, errstr, errsz);
	if (!res)
		return rc;
	PQclear(res);
	res = ot_pg_query(db, WANT "SELECT w.sku FROM want w LEFT JOIN stock s USING (sku) "
	                  "WHERE s.sku IS NULL OR s.available < w.qty ORDER BY w.sku", 1, p, &rc, errstr, errsz);
	if (!res)
		return rc;
	shortl = json_array();
	for (i = 0; i < PQntuples(res); i++)
		json_array_append_new(shortl, json_string(PQgetvalue(res, i, 0)));
	PQclear(res);
	if (json_array_size(shortl) == 0) {
		json_decref(shortl);
		if ((rc = ot_pg_exec(db, WANT "UPDATE stock s SET available = s.available - w.qty, "
		                     "reserved = s.reserved + w.qty, updated_at = now() FROM want w "
		                     "WHERE s.sku = w.sku", 1, p, errstr, errsz)) ||
		    (rc = ot_pg_exec(db, WANT "INSERT INTO reservations (order_id, sku, qty) "
		                     "SELECT $2, sku, qty FROM want", 2, p, errstr, errsz)))
			return rc;
		data = json_pack("{s:o}", "items", json_loads(items, 0, NULL));
		ot_event_init(&out, "INVENTORY_RESERVED", ev->order_id, ev->version, "ot-reserve", data,
		              ev->traceparent);
		OT_INFO(ev->order_id, "reserved stock");
	} else {
		data = json_pack("{s:o, s:s}", "short_skus", shortl, "reason", "insufficient stock");
		ot_event_init(&out, "INVENTORY_RESERVATION_FAILED", ev->order_id, ev->version, "ot-reserve",
		              data, ev->traceparent);
		OT_INFO(ev->order_id, "reservation failed: short of %zu SKUs",
		        json_array_size(json_object_get(data, "short_skus")));
	}
	rc = ot_outbox_add(db, OT_TOPIC_INVENTORY, &out, errstr, errsz);
	ot_event_clear(&out);
	return rc;
}

/* Releases the order's open reservations, in SKU order, and announces INVENTORY_RELEASED.
 * Nothing reserved (rejected, or released already) means nothing to announce. */
static int
release(PGconn *db, const char *order_id, const char *reason, long long version,
        const char *traceparent, char *errstr, size_t errsz)
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
		return OT_SKIP;
	}
	items = json_array();
	for (i = 0; i < PQntuples(res); i++)
		json_array_append_new(items, json_pack("{s:s, s:i}", "sku", PQgetvalue(res, i, 0),
		                                       "qty", atoi(PQgetvalue(res, i, 1))));
	PQclear(res);
	ot_event_init(&out, "INVENTORY_RELEASED", order_id, version, "ot-reserve",
	              json_pack("{s:o, s:s}", "items", items, "reason", reason), traceparent);
	rc = ot_outbox_add(db, OT_TOPIC_INVENTORY, &out, errstr, errsz);
	ot_event_clear(&out);
	if (!rc) {
		OT_INFO(order_id, "released stock (%s)", reason);
		if (!m)
			m = ot_metric_new(OT_COUNTER, "ot_saga_compensations_total", "Reservations released to undo an "
			                  "order: released (cancelled), expired (never confirmed).", "kind", NULL, 0);
		ot_metric_add(m, 1, strcmp(reason, "expired") ? "released" : "expired");
	}
	return rc;
}

/* Whether ORDER_STATUS_UPDATED ev moves the order to CONFIRMED. */
static int
confirms(const struct ot_event *ev)
{
	json_t *st = json_object_get(ev->data, "status");

	return json_is_string(st) && !strcmp(json_string_value(st), "CONFIRMED");
}

/* The order's decision, for what this event asks of the inventory. */
static int
decide(PGconn *db, const struct ot_event *ev, const char *items, char *errstr, size_t errsz)
{
	const char *p[1] = {ev->order_id};

	if (!strcmp(ev->type, "ORDER_CREATED"))
		return reserve(db, ev, items, errstr, errsz);
	if (!strcmp(ev->type, "ORDER_CANCELLED"))
		return release(db, ev->order_id, "cancelled", ev->version, ev->traceparent, errstr, errsz);
	/* ORDER_STATUS_UPDATED to CONFIRMED: the reservation is no longer at risk of expiring. */
	if (confirms(ev))
		return ot_pg_exec(db, "UPDATE reservations SET confirmed = true WHERE order_id = $1",
		                  1, p, errstr, errsz);
	return OT_SKIP;
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
		rc = open ? release(db, order_id, "expired", 0, NULL, errstr, errsz) : OT_SKIP;
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
 * ORDER_CREATED, the lines as JSON; caller frees), OT_SKIP with *as for what commits nothing,
 * OT_EINPUT for a malformed one. */
static int
screen(const struct ot_event *ev, char **items, const char **as, char *errstr, size_t errsz)
{
	*items = NULL;
	*as = "ignored";
	/* A status the inventory does not act on commits nothing, not even processed_events:
	 * redelivered, it is skipped again just the same. */
	if (strcmp(ev->type, "ORDER_CREATED") && strcmp(ev->type, "ORDER_CANCELLED") &&
	    (strcmp(ev->type, "ORDER_STATUS_UPDATED") || !confirms(ev)))
		return OT_SKIP;
	if (!ot_uuid_valid(ev->order_id))
		return ot_err(OT_EINPUT, errstr, errsz, "field \"order_id\" is not a UUID");
	if (!strcmp(ev->type, "ORDER_CREATED") && !(*items = items_of(ev, errstr, errsz)))
		return OT_EINPUT;
	*as = "duplicate";
	return OT_OK;
}

/* Inside the open transaction: ev recorded as processed, then decided. OT_SKIP for a duplicate. */
static int
handle_tx(PGconn *db, const struct ot_event *ev, const char *items, const char *consumer, char *errstr,
          size_t errsz)
{
	const char *p[2] = {consumer, ev->id};
	PGresult *res;
	int rc;

	res = ot_pg_query(db, "INSERT INTO processed_events (consumer, event_id) VALUES ($1, $2) "
	                  "ON CONFLICT DO NOTHING", 2, p, &rc, errstr, errsz);
	if (!res)
		return rc;
	rc = atoi(PQcmdTuples(res)) == 0 ? OT_SKIP : OT_OK;
	PQclear(res);
	return rc ? rc : decide(db, ev, items, errstr, errsz);
}

int
ot_inventory_handle(PGconn *db, const struct ot_event *ev, const char *consumer, char *errstr, size_t errsz)
{
	const char *as;
	char *items;
	int rc;

	if ((rc = screen(ev, &items, &as, errstr, errsz))) {
		if (rc == OT_SKIP)
			ot_run_skipped_as(as);
		return rc;
	}
	if (!(rc = ot_pg_exec(db, "BEGIN", 0, NULL, errstr, errsz)))
		rc = handle_tx(db, ev, items, consumer, errstr, errsz);
	if (rc == OT_OK || rc == OT_SKIP) {
		int c = ot_pg_exec(db, "COMMIT", 0, NULL, errstr, errsz);
		if (c)
			rc = c;
	}
	ot_pg_rollback(db);
	free(items);
	return rc;
}

/* Locks, in SKU order, every stock row the batch's reservations and releases will change, so
 * that two consumers' batches cannot deadlock on them. */
static int
lock_batch(PGconn *db, const struct ot_event *evs, char **items, const struct ot_batch_res *res, size_t n,
           char *errstr, size_t errsz)
{
	json_t *skus = json_array(), *orders = json_array(), *it;
	const char *p[2];
	char *ps = NULL, *po = NULL;
	size_t i, j;
	int rc = OT_OK;

	for (i = 0; i < n; i++) {
		if (res[i].rc != OT_OK)
			continue;
		if (items[i])
			json_array_foreach(json_object_get(evs[i].data, "items"), j, it)
				json_array_append(skus, json_object_get(it, "sku"));
		else if (!strcmp(evs[i].type, "ORDER_CANCELLED"))
			json_array_append_new(orders, json_string(evs[i].order_id));
	}
	if (json_array_size(skus) || json_array_size(orders)) {
		if (!(ps = json_dumps(skus, JSON_COMPACT)) || !(po = json_dumps(orders, JSON_COMPACT))) {
			rc = ot_err(OT_EINTERNAL, errstr, errsz, "out of memory");
		} else {
			p[0] = ps;
			p[1] = po;
			rc = ot_pg_exec(db, "SELECT sku FROM stock WHERE sku IN (SELECT jsonb_array_elements_text($1::jsonb)) "
			                "OR sku IN (SELECT sku FROM reservations WHERE order_id IN "
			                "(SELECT jsonb_array_elements_text($2::jsonb)::uuid)) ORDER BY sku FOR UPDATE",
			                2, p, errstr, errsz);
		}
	}
	free(ps);
	free(po);
	json_decref(skus);
	json_decref(orders);
	return rc;
}

int
ot_inventory_handle_batch(PGconn *db, const struct ot_msg *ms, const struct ot_event *evs, size_t n,
                          const char *consumer, struct ot_batch_res *res, char *errstr, size_t errsz)
{
	struct ot_span sp;
	char **items;
	size_t i, todo = 0;
	int rc = OT_OK;

	if (!(items = calloc(n, sizeof *items)))
		return ot_err(OT_EINTERNAL, errstr, errsz, "out of memory");
	for (i = 0; i < n; i++)
		if (res[i].rc == OT_OK && (res[i].rc = screen(&evs[i], &items[i], &res[i].as, NULL, 0)) == OT_OK)
			todo++;
	if (!todo)
		goto out; /* nothing to commit: no transaction */
	if ((rc = ot_pg_exec(db, "BEGIN", 0, NULL, errstr, errsz)) ||
	    (rc = lock_batch(db, evs, items, res, n, errstr, errsz)))
		goto out;
	for (i = 0; i < n; i++) {
		if (res[i].rc != OT_OK)
			continue;
		ot_run_span(&sp, &ms[i], &evs[i]);
		rc = handle_tx(db, &evs[i], items[i], consumer, res[i].err, sizeof res[i].err);
		if (rc < 0)
			ot_span_error(&sp, res[i].err);
		ot_span_end(&sp);
		if (rc < 0) {
			snprintf(errstr, errsz, "%s", res[i].err);
			goto out;
		}
		res[i].rc = rc;
		res[i].err[0] = '\0';
	}
	rc = ot_pg_exec(db, "COMMIT", 0, NULL, errstr, errsz);
out:
	ot_pg_rollback(db);
	for (i = 0; i < n; i++)
		free(items[i]);
	free(items);
	return rc;
}
