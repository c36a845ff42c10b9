/* ot_cache: statistics and drift of the order status cache. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ot_cache.h"
#include "ot_err.h"
#include "ot_event.h"
#include "ot_metrics.h"
#include "ot_order.h"
#include "ot_pg.h"
#include "ot_redis.h"

/* The families are looked up by name each time: cache writes come from ot-serve's threads too. */
void
ot_cache_count_write(const char *result)
{
	ot_metric_add(ot_metric_new(OT_COUNTER, "ot_cache_writes_total", "Order statuses written to Redis: applied, "
	                            "cas_rejected (a newer version was there), failed.", "tool,result", NULL, 0),
	              1, ot_metrics_tool(), result);
}

void
ot_cache_count_fill(void)
{
	ot_metric_add(ot_metric_new(OT_COUNTER, "ot_cache_fills_total", "Entries refilled from the database after "
	                            "a miss.", "tool", NULL, 0), 1, ot_metrics_tool());
}

void
ot_cache_count_repair(void)
{
	ot_metric_add(ot_metric_new(OT_COUNTER, "ot_cache_repairs_total", "Entries put back after a write Redis "
	                            "did not take.", "tool", NULL, 0), 1, ot_metrics_tool());
}

void
ot_cache_metrics_zero(void)
{
	static const char *const results[] = {"applied", "cas_rejected", "failed"};
	size_t i;

	for (i = 0; i < sizeof results / sizeof *results; i++)
		ot_metric_add(ot_metric_new(OT_COUNTER, "ot_cache_writes_total", "Order statuses written to Redis: "
		                            "applied, cas_rejected (a newer version was there), failed.", "tool,result",
		                            NULL, 0), 0, ot_metrics_tool(), results[i]);
	ot_metric_add(ot_metric_new(OT_COUNTER, "ot_cache_fills_total", "Entries refilled from the database after "
	                            "a miss.", "tool", NULL, 0), 0, ot_metrics_tool());
	ot_metric_add(ot_metric_new(OT_COUNTER, "ot_cache_repairs_total", "Entries put back after a write Redis "
	                            "did not take.", "tool", NULL, 0), 0, ot_metrics_tool());
}

/* Calls fn for every order:{id} key; returns 0 or OT_ESERVICE. */
static int
scan_orders(redisContext *r, int (*fn)(void *, const char *), void *arg, char *errstr, size_t errsz)
{
	char cursor[32] = "0";
	redisReply *rep;
	size_t i;
	int rc = 0;

	do {
		rep = redisCommand(r, "SCAN %s MATCH order:* COUNT 1000", cursor);
		if (!rep || rep->type != REDIS_REPLY_ARRAY || rep->elements != 2) {
			freeReplyObject(rep);
			return ot_err(OT_ESERVICE, errstr, errsz, "Redis SCAN: %s", r->err ? r->errstr : "bad reply");
		}
		snprintf(cursor, sizeof cursor, "%s", rep->element[0]->str);
		for (i = 0; i < rep->element[1]->elements && !rc; i++)
			rc = fn(arg, rep->element[1]->element[i]->str + 6);
		freeReplyObject(rep);
	} while (!rc && strcmp(cursor, "0"));
	return rc;
}

struct stats_scan {
	redisContext *r;
	json_t *per_state;
	long keys;
};

static int
count_state(void *arg, const char *id)
{
	struct stats_scan *s = arg;
	redisReply *rep = redisCommand(s->r, "HGET order:%s status", id);
	const char *st = rep && rep->type == REDIS_REPLY_STRING ? rep->str : "none";
	json_t *n = json_object_get(s->per_state, st);

	json_object_set_new(s->per_state, st, json_integer((n ? json_integer_value(n) : 0) + 1));
	s->keys++;
	freeReplyObject(rep);
	return 0;
}

json_t *
ot_cache_stats(redisContext *r, char *errstr, size_t errsz)
{
	struct stats_scan s = {r, json_object(), 0};
	long long v[3] = {0, 0, 0};
	redisReply *rep;
	json_t *o;
	size_t i;

	rep = redisCommand(r, "HMGET ot:stats hits misses fills");
	if (!rep || rep->type != REDIS_REPLY_ARRAY) {
		ot_err(OT_ESERVICE, errstr, errsz, "Redis: %s", r->err ? r->errstr : "bad reply");
		freeReplyObject(rep);
		json_decref(s.per_state);
		return NULL;
	}
	for (i = 0; i < 3 && i < rep->elements; i++)
		v[i] = rep->element[i]->str ? atoll(rep->element[i]->str) : 0;
	freeReplyObject(rep);
	if (scan_orders(r, count_state, &s, errstr, errsz)) {
		json_decref(s.per_state);
		return NULL;
	}
	o = json_pack("{s:I, s:I, s:I}", "hits", (json_int_t)v[0], "misses", (json_int_t)v[1],
	              "fills", (json_int_t)v[2]);
	json_object_set_new(o, "hit_ratio", v[0] + v[1] ? json_real((double)v[0] / (double)(v[0] + v[1]))
	                                                : json_null());
	json_object_set_new(o, "keys", json_integer(s.keys));
	json_object_set_new(o, "keys_per_state", s.per_state);
	return o;
}

struct verify {
	PGconn *db;
	redisContext *r;
	int repair;
	FILE *out;
	struct ot_drift *d;
	char *errstr;
	size_t errsz;
};

static void
say(struct verify *v, const char *kind, const char *id, const struct ot_status *c, const struct ot_status *d)
{
	json_t *o = json_pack("{s:s, s:s}", "drift", kind, "order_id", id);
	char *s;

	if (c)
		json_object_set_new(o, "cached", json_pack("{s:s, s:I}", "status", c->status, "version", (json_int_t)c->version));
	if (d)
		json_object_set_new(o, "database", json_pack("{s:s, s:I}", "status", d->status, "version", (json_int_t)d->version));
	if ((s = json_dumps(o, OT_JSON_FLAGS))) {
		fprintf(v->out, "%s\n", s);
		free(s);
	}
	json_decref(o);
}

/* One cached entry against the database. */
static int
check_one(void *arg, const char *id)
{
	struct verify *v = arg;
	struct ot_status c, d;
	const char *kind = NULL;
	char canon[64];
	int rc;

	v->d->checked++;
	if ((rc = ot_redis_get_status(v->r, id, &c, v->errstr, v->errsz)) < 0)
		return rc;
	if (rc == 0)
		return 0; /* expired since the scan */
	snprintf(canon, sizeof canon, "%s", id);
	if (ot_id_canon(canon) || strcmp(canon, id))
		rc = 0; /* not an order id in its one form (order:{UPPER}, say): no reader asks for it */
	else if ((rc = ot_order_load(v->db, id, &d, v->errstr, v->errsz)) < 0)
		return rc;
	if (rc == 0)
		kind = "orphan";
	else if (c.version < d.version)
		kind = "stale";
	else if (c.version > d.version)
		kind = "ahead";
	else if (strcmp(c.status, d.status) || c.has_pos != d.has_pos ||
	         (d.has_pos && (c.lat - d.lat > 1e-6 || d.lat - c.lat > 1e-6)))
		kind = "mismatch";
	if (!kind)
		return 0;
	say(v, kind, id, &c, rc ? &d : NULL);
	if (!strcmp(kind, "orphan")) v->d->orphan++;
	else if (!strcmp(kind, "stale")) v->d->stale++;
	else if (!strcmp(kind, "ahead")) v->d->ahead++;
	else v->d->mismatch++;
	if (v->repair) {
		/* The versioned CAS keeps a newer entry: replace it outright with the truth. */
		if (ot_redis_del_status(v->r, id, v->errstr, v->errsz) < 0)
			return OT_ESERVICE;
		if (rc && ot_redis_put_status(v->r, &d, v->errstr, v->errsz) < 0)
			return OT_ESERVICE;
		v->d->repaired++;
	}
	return 0;
}

int
ot_cache_verify(PGconn *db, redisContext *r, int repair, FILE *out, struct ot_drift *d,
                char *errstr, size_t errsz)
{
	struct verify v = {db, r, repair, out, d, errstr, errsz};
	struct ot_status c;
	PGresult *res;
	int i, rc;

	memset(d, 0, sizeof *d);
	if ((rc = scan_orders(r, check_one, &v, errstr, errsz)))
		return rc;
	/* Active orders not cached are fine for cache-aside; count them, they show coverage. */
	res = ot_pg_query(db, "SELECT id FROM orders WHERE status NOT IN ('DELIVERED','REJECTED','CANCELLED')",
	                  0, NULL, &rc, errstr, errsz);
	if (!res)
		return rc;
	for (i = 0; i < PQntuples(res); i++) {
		rc = ot_redis_get_status(r, PQgetvalue(res, i, 0), &c, errstr, errsz);
		if (rc < 0)
			break;
		if (rc == 0)
			d->missing++;
		rc = 0;
	}
	PQclear(res);
	return rc;
}
