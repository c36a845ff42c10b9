/* ot_cache_maint: the cache's upkeep — repair of failed writes, warm-up, statistics and
 * drift against the database (verify) — over the pool ot_cache.c keeps. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ot_cache.h"
#include "ot_cache_int.h"
#include "ot_err.h"
#include "ot_event.h"
#include "ot_log.h"
#include "ot_metrics.h"
#include "ot_order.h"
#include "ot_pg.h"
#include "ot_rcluster.h"
#include "ot_redis.h"
#include "ot_trace.h"

static void
count_repair(void)
{
	ot_metric_add(ot_metric_new(OT_COUNTER, "ot_cache_repairs_total", "Entries put back after a write Redis "
	                            "did not take.", "tool", NULL, 0), 1, ot_metrics_tool());
}

/* Each order is its own call (and its own answer to the breaker): on a Redis Cluster with one
 * master down, its orders fail and the others' are repaired, whatever their order. One that
 * failed goes to the back of the list, so the breaker's next probe is another order: a dead
 * master's first order cannot hold the repair of every other master's back. */
long
ot_cache_repair(struct ot_cache *c, PGconn *db, char *errstr, size_t errsz)
{
	char ids[64][64], failed[64][64];
	struct ot_status st;
	struct link *l;
	long fixed = 0;
	int n, nf, i, j, rc = 0, refused = 0;

	if (!atomic_load(&c->ndirty))
		return 0;
	do {
		pthread_mutex_lock(&c->dirty_mu);
		n = atomic_load(&c->ndirty);
		n = n < 64 ? n : 64;
		atomic_fetch_sub(&c->ndirty, n);
		memcpy(ids, c->dirty[atomic_load(&c->ndirty)], (size_t)n * sizeof ids[0]);
		if (c->dirty_lost) {
			OT_WARN(NULL, "%d cache repairs did not fit in memory: ot-cache verify --repair finds them",
			        c->dirty_lost);
			c->dirty_lost = 0;
		}
		pthread_mutex_unlock(&c->dirty_mu);
		for (i = nf = 0; i < n && !refused && rc != OT_EINTERNAL; i++) {
			if ((rc = ot_order_load(db, ids[i], &st, errstr, errsz)) < 0)
				break; /* the database: nothing more this time */
			if (rc == 1) {
				if (!(l = cache_take(c))) {
					rc = ot_err(OT_EINTERNAL, errstr, errsz, "out of memory");
					break;
				}
				rc = cache_put_one(c, l, &st, 0, errstr, errsz);
				refused = l->refused;
				cache_give(c, l);
				if (rc < 0) {
					if (!refused)
						memcpy(failed[nf++], ids[i], sizeof ids[i]);
					continue;
				}
				OT_INFO(ids[i], "cache repaired to version %lld", st.version);
				count_repair();
				fixed++;
			}
			rc = 0;
		}
		/* Not this time: the untried first, then those that failed. */
		for (j = refused ? i - 1 : i; j < n; j++)
			cache_mark_dirty(c, ids[j]);
		for (j = 0; j < nf; j++)
			cache_mark_dirty(c, failed[j]);
	} while (n == 64 && !refused && rc >= 0 && !nf);
	return rc < 0 ? rc : nf || refused ? ot_err(OT_ESERVICE, errstr, errsz, "Redis: %d orders not repaired yet",
	                                            (int)atomic_load(&c->ndirty)) : fixed;
}

struct warm {
	struct ot_cache *c;
	struct link *l;
	char *errstr;
	size_t errsz;
};

static int
warm_one(void *arg, const struct ot_status *st)
{
	struct warm *w = arg;
	int rc = cache_put_one(w->c, w->l, st, 0, w->errstr, w->errsz);

	return rc < 0 ? rc : 0;
}

long
ot_cache_finish(struct ot_cache *c, PGconn *db)
{
	char err[512];
	long left;
	int i;

	if (!c || !atomic_load(&c->ndirty))
		return 0;
	if (db && ot_cache_repair(c, db, err, sizeof err) < 0)
		OT_WARN(NULL, "cache repair at exit: %s", err);
	pthread_mutex_lock(&c->dirty_mu);
	left = atomic_load(&c->ndirty);
	for (i = 0; i < left; i++)
		OT_WARN(c->dirty[i], "cache entry not repaired before exit: Redis may serve an older status "
		        "until ot-cache verify --repair --since mends it");
	if (c->dirty_lost)
		OT_WARN(NULL, "%d more cache entries were never recorded for repair", c->dirty_lost);
	pthread_mutex_unlock(&c->dirty_mu);
	return left + c->dirty_lost;
}

long
ot_cache_warm(struct ot_cache *c, PGconn *db, char *errstr, size_t errsz)
{
	struct warm w = {c, cache_take(c), errstr, errsz};
	long n = ot_order_active(db, warm_one, &w, errstr, errsz);

	cache_give(c, w.l);
	return n;
}

int
ot_cache_stats_flush(struct ot_cache *c, char *errstr, size_t errsz)
{
	long h = atomic_exchange(&c->hits, 0), m = atomic_exchange(&c->misses, 0);
	long f = atomic_exchange(&c->fills, 0);
	redisReply *rep = NULL;
	struct link *l;
	redisContext *r;

	if (!h && !m && !f)
		return 0;
	l = cache_take(c);
	if ((r = cache_conn(c, l, "ot:stats")))
		rep = redisCommand(r, "EVAL %s 1 ot:stats %ld %ld %ld",
		                   "redis.call('HINCRBY', KEYS[1], 'hits', ARGV[1]) "
		                   "redis.call('HINCRBY', KEYS[1], 'misses', ARGV[2]) "
		                   "redis.call('HINCRBY', KEYS[1], 'fills', ARGV[3]) return 1", h, m, f);
	cache_give(c, l);
	if (!rep || rep->type == REDIS_REPLY_ERROR) {
		/* Keep them for the next flush. */
		atomic_fetch_add(&c->hits, h);
		atomic_fetch_add(&c->misses, m);
		atomic_fetch_add(&c->fills, f);
		freeReplyObject(rep);
		return ot_err(OT_ESERVICE, errstr, errsz, "Redis: cache statistics not written");
	}
	freeReplyObject(rep);
	return 0;
}

/* Calls fn for every key under order: on r, with the order's id, or NULL when the key is not of
 * the form order:{ID} (a stray key no reader asks for); returns 0, fn's ot_rc, or OT_ESERVICE. */
static int
scan_node(redisContext *r, int (*fn)(void *, const char *, const char *), void *arg, char *errstr, size_t errsz)
{
	char cursor[32] = "0", id[64];
	redisReply *rep, *k;
	size_t i;
	int rc = 0;

	do {
		rep = redisCommand(r, "SCAN %s MATCH order:* COUNT 1000", cursor);
		if (!rep || rep->type != REDIS_REPLY_ARRAY || rep->elements != 2) {
			freeReplyObject(rep);
			return ot_err(OT_ESERVICE, errstr, errsz, "Redis SCAN: %s", r->err ? r->errstr : "bad reply");
		}
		snprintf(cursor, sizeof cursor, "%s", rep->element[0]->str);
		for (i = 0; i < rep->element[1]->elements && !rc; i++) {
			k = rep->element[1]->element[i];
			rc = fn(arg, k->str, ot_redis_order_of(k->str, id) ? id : NULL);
		}
		freeReplyObject(rep);
	} while (!rc && strcmp(cursor, "0"));
	return rc;
}

/* scan_node over the one server, or every master of a cluster. */
static int
scan_orders(struct ot_cache *c, struct link *l, int (*fn)(void *, const char *, const char *), void *arg,
            char *errstr, size_t errsz)
{
	redisContext *r = cache_conn(c, l, NULL);
	size_t i;
	int rc = 0;

	if (!r)
		return ot_err(OT_ESERVICE, errstr, errsz, "Redis unavailable%s%s", l && l->k.err[0] ? ": " : "",
		              l ? l->k.err : "");
	if (!l->k.cl)
		return scan_node(r, fn, arg, errstr, errsz);
	for (i = 0; i < ot_rcluster_masters(l->k.cl) && !rc; i++)
		if (!(r = ot_rcluster_master(l->k.cl, i)))
			rc = ot_err(OT_ESERVICE, errstr, errsz, "Redis Cluster master %s does not answer",
			            ot_rcluster_master_addr(l->k.cl, i));
		else
			rc = scan_node(r, fn, arg, errstr, errsz);
	return rc;
}

struct stats_scan {
	struct ot_cache *c;
	struct link *l;
	json_t *per_state;
	long keys;
};

static int
count_state(void *arg, const char *key, const char *id)
{
	struct stats_scan *s = arg;
	redisContext *r = id ? cache_conn(s->c, s->l, id) : NULL;
	redisReply *rep = r ? redisCommand(r, "HGET " OT_REDIS_KEY_FMT " status", id) : NULL;
	const char *st = rep && rep->type == REDIS_REPLY_STRING ? rep->str : "none";
	json_t *n = json_object_get(s->per_state, st);

	(void)key;
	if (!id) /* not an order's entry: ot-cache verify reports it */
		return 0;
	if (!rep) /* the scan stops: its connection may be the one that broke */
		return OT_ESERVICE;
	json_object_set_new(s->per_state, st, json_integer((n ? json_integer_value(n) : 0) + 1));
	s->keys++;
	freeReplyObject(rep);
	return 0;
}

json_t *
ot_cache_stats(struct ot_cache *c, char *errstr, size_t errsz)
{
	struct link *l = cache_take(c);
	redisContext *r = cache_conn(c, l, "ot:stats");
	struct stats_scan s = {c, l, json_object(), 0};
	long long v[3] = {0, 0, 0};
	redisReply *rep = NULL;
	json_t *o = NULL;
	size_t i;

	if (!r) {
		ot_err(OT_ESERVICE, errstr, errsz, "Redis unavailable%s%s", l && l->k.err[0] ? ": " : "", l ? l->k.err : "");
		goto out;
	}
	rep = redisCommand(r, "HMGET ot:stats hits misses fills");
	if (!rep || rep->type != REDIS_REPLY_ARRAY) {
		ot_err(OT_ESERVICE, errstr, errsz, "Redis: %s", r->err ? r->errstr : "bad reply");
		goto out;
	}
	for (i = 0; i < 3 && i < rep->elements; i++)
		v[i] = rep->element[i]->str ? atoll(rep->element[i]->str) : 0;
	if (errsz)
		errstr[0] = '\0';
	if (scan_orders(c, l, count_state, &s, errstr, errsz)) {
		if (errsz && !errstr[0])
			ot_err(OT_ESERVICE, errstr, errsz, "Redis: the connection broke during the scan");
		goto out;
	}
	o = json_pack("{s:I, s:I, s:I}", "hits", (json_int_t)v[0], "misses", (json_int_t)v[1],
	              "fills", (json_int_t)v[2]);
	json_object_set_new(o, "hit_ratio", v[0] + v[1] ? json_real((double)v[0] / (double)(v[0] + v[1]))
	                                                : json_null());
	json_object_set_new(o, "keys", json_integer(s.keys));
	json_object_set_new(o, "keys_per_state", s.per_state);
	s.per_state = NULL;
out:
	freeReplyObject(rep);
	json_decref(s.per_state);
	cache_give(c, l);
	return o;
}

struct verify {
	PGconn *db;
	struct ot_cache *c;
	struct link *l;
	int repair;
	FILE *out;
	struct ot_drift *d;
	char *errstr;
	size_t errsz;
};

/* One drift as a JSON line: the order's id, or for a key not of the form order:{ID}, the key. */
static void
say(struct verify *v, const char *kind, const char *key, const char *id, const struct ot_status *c,
    const struct ot_status *d)
{
	json_t *o = json_pack("{s:s}", "drift", kind);
	char *s;

	json_object_set_new(o, id ? "order_id" : "key", json_string(id ? id : key));
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

/* Deletes key (order:...) and its log (orderlog:...), each at its own slot's master. */
static int
drop_keys(struct verify *v, const char *key)
{
	char log[256];
	const char *k[2] = {key, log};
	redisContext *r;
	redisReply *rep;
	int i;

	snprintf(log, sizeof log, "orderlog:%s", key + strlen("order:"));
	for (i = 0; i < 2; i++) {
		if (!(r = cache_conn(v->c, v->l, k[i])))
			return ot_err(OT_ESERVICE, v->errstr, v->errsz, "Redis unavailable");
		rep = redisCommand(r, "DEL %s", k[i]);
		if (!rep || rep->type != REDIS_REPLY_INTEGER) {
			freeReplyObject(rep);
			return ot_err(OT_ESERVICE, v->errstr, v->errsz, "Redis DEL %s: %s", k[i], r->err ? r->errstr : "bad reply");
		}
		freeReplyObject(rep);
	}
	return 0;
}

/* An order's cached entry c against the database's d (found 0: the database has none): prints
 * and counts a drift, and with repair puts the truth back on r. Returns 0 or an ot_rc. */
static int
compare(struct verify *v, redisContext *r, const char *key, const char *id, const struct ot_status *c,
        const struct ot_status *d, int found)
{
	const char *kind = NULL;

	if (!found)
		kind = "orphan";
	else if (c->version < d->version)
		kind = "stale";
	else if (c->version > d->version)
		kind = "ahead";
	else if (strcmp(c->status, d->status) || strcmp(c->pay.status, d->pay.status) || c->has_pos != d->has_pos ||
	         (d->has_pos && (c->lat - d->lat > 1e-6 || d->lat - c->lat > 1e-6)))
		kind = "mismatch";
	if (!kind)
		return 0;
	say(v, kind, key, id, c, found ? d : NULL);
	if (!found) v->d->orphan++;
	else if (c->version < d->version) v->d->stale++;
	else if (c->version > d->version) v->d->ahead++;
	else v->d->mismatch++;
	if (!v->repair)
		return 0;
	if (!found) {
		if (drop_keys(v, key))
			return OT_ESERVICE;
	} else {
		/* The versioned CAS keeps a newer entry: replace it outright with the truth. */
		if (ot_redis_del_status(r, id, v->errstr, v->errsz) < 0 || ot_redis_put_status(r, d, v->errstr, v->errsz) < 0)
			return OT_ESERVICE;
	}
	v->d->repaired++;
	return 0;
}

/* One key under order: against the database. A key that is not an order's entry in its one
 * form (order:{}, order:{UPPER}, order:ID of an old release), or an order the database does not
 * have, is an orphan: no reader asks for it. */
static int
check_one(void *arg, const char *key, const char *id)
{
	struct verify *v = arg;
	struct ot_status c, d;
	char canon[64];
	redisContext *r;
	int rc;

	v->d->checked++;
	if (id)
		snprintf(canon, sizeof canon, "%s", id);
	if (!id || ot_id_canon(canon) || strcmp(canon, id)) {
		v->d->orphan++;
		say(v, "orphan", key, id, NULL, NULL);
		if (!v->repair)
			return 0;
		if ((rc = drop_keys(v, key)))
			return rc;
		v->d->repaired++;
		return 0;
	}
	if (!(r = cache_conn(v->c, v->l, id)))
		return ot_err(OT_ESERVICE, v->errstr, v->errsz, "Redis unavailable");
	if ((rc = ot_redis_get_status(r, id, &c, v->errstr, v->errsz)) < 0)
		return rc;
	if (rc == 0)
		return 0; /* expired since the scan */
	if ((rc = ot_order_load(v->db, id, &d, v->errstr, v->errsz)) < 0)
		return rc;
	return compare(v, r, key, id, &c, &d, rc);
}

/* One order the database changed lately against its cached entry, if any. */
static int
check_changed(void *arg, const struct ot_status *d)
{
	struct verify *v = arg;
	struct ot_status c;
	char key[128];
	redisContext *r;
	int rc;

	if (!(r = cache_conn(v->c, v->l, d->order_id)))
		return ot_err(OT_ESERVICE, v->errstr, v->errsz, "Redis unavailable");
	if ((rc = ot_redis_get_status(r, d->order_id, &c, v->errstr, v->errsz)) < 0)
		return rc;
	if (rc == 0) {
		v->d->missing++; /* not cached: a reader fills it from the database */
		return 0;
	}
	v->d->checked++;
	snprintf(key, sizeof key, OT_REDIS_KEY_FMT, d->order_id);
	return compare(v, r, key, d->order_id, &c, d, 1);
}

long
ot_cache_verify_since(struct ot_cache *c, PGconn *db, double seconds, int repair, FILE *out, struct ot_drift *d,
                      char *errstr, size_t errsz)
{
	struct link *l = cache_take(c);
	struct verify v = {db, c, l, repair, out, d, errstr, errsz};
	long n;

	memset(d, 0, sizeof *d);
	n = l ? ot_order_changed(db, seconds, check_changed, &v, errstr, errsz)
	      : ot_err(OT_EINTERNAL, errstr, errsz, "out of memory");
	cache_give(c, l);
	return n;
}

int
ot_cache_verify(struct ot_cache *c, PGconn *db, int repair, FILE *out, struct ot_drift *d, char *errstr,
                size_t errsz)
{
	struct link *l = cache_take(c);
	struct verify v = {db, c, l, repair, out, d, errstr, errsz};
	struct ot_status st;
	redisContext *r;
	PGresult *res;
	int i, rc;

	memset(d, 0, sizeof *d);
	if ((rc = scan_orders(c, l, check_one, &v, errstr, errsz))) {
		cache_give(c, l);
		return rc;
	}
	/* Active orders not cached are fine for cache-aside; count them, they show coverage. */
	res = ot_pg_query(db, "SELECT id FROM orders WHERE status NOT IN ('DELIVERED','REJECTED','CANCELLED')",
	                  0, NULL, &rc, errstr, errsz);
	for (i = 0; res && i < PQntuples(res); i++) {
		if (!(r = cache_conn(c, l, PQgetvalue(res, i, 0)))) {
			rc = ot_err(OT_ESERVICE, errstr, errsz, "Redis unavailable");
			break;
		}
		rc = ot_redis_get_status(r, PQgetvalue(res, i, 0), &st, errstr, errsz);
		if (rc < 0)
			break;
		if (rc == 0)
			d->missing++;
		rc = 0;
	}
	PQclear(res);
	cache_give(c, l);
	return rc;
}
