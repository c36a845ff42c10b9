/* ot_cache: the order status cache — writes, reads and refills — over a small pool of Redis
 * connections shared by the process's threads (its upkeep: ot_cache_maint.c). */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ot_breaker.h"
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
#include "ot_rlink.h"
#include "ot_run.h"
#include "ot_trace.h"

#define REFILL_WAIT_STEPS 25 /* x 20 ms: how long a reader waits for another's refill */

/* The families are looked up by name each time: cache writes come from ot-serve's threads too. */
static void
count_write(const char *result)
{
	ot_metric_add(ot_metric_new(OT_COUNTER, "ot_cache_writes_total", "Order statuses written to Redis: applied, "
	                            "cas_rejected (a newer version was there), failed.", "tool,result", NULL, 0),
	              1, ot_metrics_tool(), result);
}

static void
count_fill(void)
{
	ot_metric_add(ot_metric_new(OT_COUNTER, "ot_cache_fills_total", "Entries refilled from the database after "
	                            "a miss.", "tool", NULL, 0), 1, ot_metrics_tool());
}

static void
count_none(void)
{
	ot_metric_add(ot_metric_new(OT_COUNTER, "ot_cache_none_hits_total", "Reads of an order the database does "
	                            "not have, answered by a negative entry without asking it.", "tool", NULL, 0),
	              1, ot_metrics_tool());
}

/* So a rate over them has a series before the first write, fill or repair. */
static void
metrics_zero(void)
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
	ot_metric_add(ot_metric_new(OT_COUNTER, "ot_cache_none_hits_total", "Reads of an order the database does "
	                            "not have, answered by a negative entry without asking it.", "tool", NULL, 0),
	              0, ot_metrics_tool());
}

struct ot_cache *
ot_cache_new(const char *url)
{
	struct ot_cache *c = calloc(1, sizeof *c);

	if (!c || !(c->url = strdup(url ? url : "")) || !(c->dirty = calloc(DIRTY_MAX, sizeof *c->dirty))) {
		ot_cache_free(c);
		return NULL;
	}
	pthread_mutex_init(&c->mu, NULL);
	pthread_mutex_init(&c->dirty_mu, NULL);
	metrics_zero();
	return c;
}

void
ot_cache_free(struct ot_cache *c)
{
	struct link *l;

	if (!c)
		return;
	if (c->dirty) { /* initialised */
		while ((l = c->idle)) {
			c->idle = l->next;
			ot_rlink_close(&l->k);
			free(l);
		}
		pthread_mutex_destroy(&c->mu);
		pthread_mutex_destroy(&c->dirty_mu);
	}
	free(c->dirty);
	free(c->url);
	free(c);
}

/* A pooled connection for one call, idle or new (connected on first use), having asked the
 * breaker; give it back with cache_give. NULL when out of memory. */
struct link *
cache_take(struct ot_cache *c)
{
	struct link *l;

	pthread_mutex_lock(&c->mu);
	if ((l = c->idle))
		c->idle = l->next;
	pthread_mutex_unlock(&c->mu);
	if (!l && !(l = calloc(1, sizeof *l)))
		return NULL;
	l->broke = 0;
	l->allowed = c->cb ? ot_breaker_allow(c->cb) : 0;
	l->refused = c->cb && !l->allowed;
	return l;
}

/* Gives l back, reporting to the breaker whether Redis held for this call. */
void
cache_give(struct ot_cache *c, struct link *l)
{
	if (!l)
		return;
	if (l->allowed)
		ot_breaker_done(c->cb, !l->broke);
	pthread_mutex_lock(&c->mu);
	l->next = c->idle;
	c->idle = l;
	pthread_mutex_unlock(&c->mu);
}

/* The connection for a key (the one server, or the master of the key's slot; key NULL: any),
 * as ot_rlink_conn; NULL too when the breaker refused the call. An order's keys share the
 * slot of its id (their hash tag), so the id itself names the slot of all of them. */
redisContext *
cache_conn(struct ot_cache *c, struct link *l, const char *key)
{
	redisContext *r;

	if (!l || l->refused)
		return NULL;
	if (!(r = ot_rlink_conn(&l->k, c->url, key)))
		l->broke = 1;
	return r;
}

/* After a command on r failed with rc (r NULL: no connection was had): whether to send it again
 * (ot_rlink_retry: in a cluster, after the map was read again); a broken connection is
 * noted for the breaker. Never when the breaker refused the call. */
static int
again(struct link *l, redisContext *r, int rc, int *tries)
{
	if (!l || l->refused)
		return 0;
	if (rc < 0 && r && r->err)
		l->broke = 1;
	return ot_rlink_retry(&l->k, r, rc, tries);
}

void
ot_cache_set_breaker(struct ot_cache *c, struct ot_breaker *cb)
{
	c->cb = cb;
}

int
ot_cache_ping(struct ot_cache *c, char *errstr, size_t errsz)
{
	struct link *l = cache_take(c);
	redisContext *r;
	size_t i;
	int rc = 0;

	if (!l)
		return ot_err(OT_EINTERNAL, errstr, errsz, "out of memory");
	if (!(r = cache_conn(c, l, NULL))) {
		rc = ot_err(OT_ESERVICE, errstr, errsz, "%s", l->refused ? "Redis: circuit open"
		            : l->k.err[0] ? l->k.err : "Redis: unreachable a moment ago, not tried again yet");
	} else if (l->k.cl) { /* every master */
		for (i = 0; i < ot_rcluster_masters(l->k.cl) && !rc; i++)
			if (!(r = ot_rcluster_master(l->k.cl, i)) || ot_redis_ping(r, errstr, errsz))
				rc = ot_err(OT_ESERVICE, errstr, errsz, "Redis Cluster master %s does not answer",
				            ot_rcluster_master_addr(l->k.cl, i));
	} else {
		rc = ot_redis_ping(r, errstr, errsz);
	}
	if (rc)
		l->broke = 1;
	cache_give(c, l);
	return rc;
}

void
cache_mark_dirty(struct ot_cache *c, const char *order_id)
{
	int i, n;

	pthread_mutex_lock(&c->dirty_mu);
	n = atomic_load(&c->ndirty);
	for (i = 0; i < n && strcmp(c->dirty[i], order_id); i++)
		;
	if (i == n) {
		if (n < DIRTY_MAX) {
			snprintf(c->dirty[n], sizeof c->dirty[0], "%s", order_id);
			atomic_store(&c->ndirty, n + 1);
		} else {
			c->dirty_lost++;
		}
	}
	pthread_mutex_unlock(&c->dirty_mu);
}

int
ot_cache_dirty(struct ot_cache *c, const char *order_id)
{
	int i, n, found = 0;

	if (!atomic_load(&c->ndirty)) /* nearly always: every read asks */
		return 0;
	pthread_mutex_lock(&c->dirty_mu);
	n = atomic_load(&c->ndirty);
	for (i = 0; i < n && !found; i++)
		found = !strcmp(c->dirty[i], order_id);
	pthread_mutex_unlock(&c->dirty_mu);
	return found;
}

/* Writes st at the master of its slot, once more after a moved slot: ot_redis_put_known when
 * known_only, else ot_redis_put_status. Returns as they do; OT_ESERVICE (errstr) when Redis is
 * out of reach. */
int
cache_put_one(struct ot_cache *c, struct link *l, const struct ot_status *st, int known_only, char *errstr,
        size_t errsz)
{
	redisContext *r;
	int rc = OT_ESERVICE, tries = 0;

	do
		r = cache_conn(c, l, st->order_id);
	while ((!r || (rc = known_only ? ot_redis_put_known(r, st, errstr, errsz)
	                               : ot_redis_put_status(r, st, errstr, errsz)) < 0) &&
	       again(l, r, r ? rc : OT_ESERVICE, &tries));
	if (!r)
		rc = ot_err(OT_ESERVICE, errstr, errsz, "Redis unavailable");
	return rc;
}

/* Writes sts[0..n) in one round trip per connection they need, in order: results[i] 1 written,
 * 0 stale, or -1 failed (err says why). */
static void
put_all(struct ot_cache *c, struct link *l, const struct ot_status *sts, size_t n, int *results, char *err,
        size_t errsz)
{
	redisContext **node = calloc(n, sizeof *node), *r;
	struct ot_status *part = NULL;
	int *res = NULL, rc;
	size_t i, j, k;

	for (i = 0; i < n; i++)
		results[i] = -1;
	if (!node || !(part = calloc(n, sizeof *part)) || !(res = calloc(n, sizeof *res))) {
		snprintf(err, errsz, "out of memory");
		goto out;
	}
	snprintf(err, errsz, "Redis unavailable");
	/* An order's statuses go to one connection, in the order given. */
	for (i = 0; i < n; i++)
		node[i] = cache_conn(c, l, sts[i].order_id);
	for (i = 0; i < n; i++) {
		if (!(r = node[i]) || results[i] != -1)
			continue;
		for (j = i, k = 0; j < n; j++)
			if (node[j] == r && results[j] == -1)
				part[k++] = sts[j];
		rc = ot_redis_put_many(r, part, k, res, err, errsz);
		if (rc < 0 && r->err)
			l->broke = 1;
		for (j = i, k = 0; j < n; j++)
			if (node[j] == r && results[j] == -1)
				results[j] = rc < 0 ? -2 : res[k++];
	}
	/* In a cluster, a slot that moved: the map again, and what failed once more, one by one.
	 * Which those are is settled first: a connection looked up below may replace a broken
	 * one that node[] still names. */
	for (i = 0; i < n; i++)
		res[i] = results[i] == -2 && l->k.cl && !node[i]->err;
	for (i = 0; i < n; i++) {
		if (results[i] == -2)
			results[i] = -1;
		if (res[i] && (rc = cache_put_one(c, l, &sts[i], 0, err, errsz)) >= 0)
			results[i] = rc;
	}
out:
	free(res);
	free(part);
	free(node);
}

void
ot_cache_put_many(struct ot_cache *c, const struct ot_status *sts, const char *const *tps, size_t n)
{
	struct ot_span *sp = NULL;
	struct link *l = NULL;
	char err[256] = "out of memory", v[24];
	int *results = NULL;
	size_t i, failed = 0;

	if (!n)
		return;
	if ((results = calloc(n, sizeof *results)) && (sp = calloc(n, sizeof *sp)) && (l = cache_take(c))) {
		for (i = 0; i < n; i++) {
			ot_span_begin_detached(&sp[i], "cache write", OT_SPAN_CLIENT, tps ? tps[i] : NULL);
			if (sp[i].exported) {
				snprintf(v, sizeof v, "%lld", sts[i].version);
				ot_span_tag(&sp[i], "db.system", "redis");
				ot_span_tag(&sp[i], "order_id", sts[i].order_id);
				ot_span_tag(&sp[i], "order.status", sts[i].status);
				ot_span_tag(&sp[i], "order.version", v);
			}
		}
		put_all(c, l, sts, n, results, err, sizeof err);
		cache_give(c, l);
	} else if (results) {
		for (i = 0; i < n; i++)
			results[i] = -1;
	}
	for (i = 0; i < n; i++)
		failed += !results || results[i] < 0;
	if (failed)
		OT_WARN(n == 1 ? sts[0].order_id : NULL, "cache write of %zu status%s failed, the database stays "
		        "authoritative; repaired once Redis answers: %s", failed, failed == 1 ? "" : "es", err);
	for (i = 0; i < n; i++) {
		int rc = results ? results[i] : -1;
		if (rc < 0)
			cache_mark_dirty(c, sts[i].order_id);
		count_write(rc < 0 ? "failed" : rc ? "applied" : "cas_rejected");
		if (sp) {
			if (rc < 0)
				ot_span_error(&sp[i], err);
			ot_span_end(&sp[i]);
		}
	}
	free(sp);
	free(results);
}

void
ot_cache_put(struct ot_cache *c, const struct ot_status *st)
{
	ot_cache_put_many(c, st, NULL, 1);
}

void
ot_cache_put_results(struct ot_cache *c, const struct ot_batch_res *res, size_t n)
{
	struct ot_status *sts = calloc(n ? n : 1, sizeof *sts);
	const char **tps = calloc(n ? n : 1, sizeof *tps);
	size_t i, k = 0;

	if (!sts || !tps) { /* one at a time, then */
		for (i = 0; i < n; i++)
			if (res[i].st.version)
				ot_cache_put_many(c, &res[i].st, (const char *const[]){res[i].tp}, 1);
	} else {
		for (i = 0; i < n; i++)
			if (res[i].st.version) {
				tps[k] = res[i].tp;
				sts[k++] = res[i].st;
			}
		ot_cache_put_many(c, sts, tps, k);
	}
	free(tps);
	free(sts);
}

int
ot_cache_put_known(struct ot_cache *c, const struct ot_status *st, char *errstr, size_t errsz)
{
	struct link *l = cache_take(c);
	int rc = cache_put_one(c, l, st, 1, errstr, errsz);

	cache_give(c, l);
	if (rc != 2)
		count_write(rc < 0 ? "failed" : rc ? "applied" : "cas_rejected");
	return rc;
}

int
ot_cache_fill(struct ot_cache *c, const struct ot_status *st, char *errstr, size_t errsz)
{
	struct link *l = cache_take(c);
	int rc = cache_put_one(c, l, st, 0, errstr, errsz);

	cache_give(c, l);
	count_write(rc < 0 ? "failed" : rc ? "applied" : "cas_rejected");
	if (rc >= 0) {
		atomic_fetch_add(&c->fills, 1);
		count_fill();
	}
	return rc;
}

int
ot_cache_read(struct ot_cache *c, const char *order_id, struct ot_status *st, char *errstr, size_t errsz)
{
	struct link *l = cache_take(c);
	redisContext *r;
	int rc = OT_ESERVICE, tries = 0;

	if (errsz)
		errstr[0] = '\0'; /* not tried */
	do
		r = cache_conn(c, l, order_id);
	while ((!r || (rc = ot_redis_get_status(r, order_id, st, errstr, errsz)) < 0) &&
	       again(l, r, r ? rc : OT_ESERVICE, &tries));
	cache_give(c, l);
	if (rc >= 0)
		ot_cache_count(c, rc == 1);
	return rc;
}

/* Takes (take_it) or drops the refill lock of one order: a key with a 2 s expiry, so a reader
 * that died holding it does not block the others for long. The same key, set to "none" for
 * OT_CACHE_NONE_MS, says the database has no such order (a negative entry): SET NX GET tells
 * the three apart in one round trip (Redis 7.0 or later), and the CAS script deletes it when
 * the order is written. Returns 1 when taken, 0 when another holds it, 2 when the order is
 * known not to exist, -1 when Redis did not answer or answered an error (MOVED, say). */
static int
refill_lock(redisContext *r, const char *order_id, int take_it)
{
	redisReply *rep = take_it ? redisCommand(r, "SET " OT_REDIS_LOCK_FMT " 1 NX PX 2000 GET", order_id)
	                          : redisCommand(r, "DEL " OT_REDIS_LOCK_FMT, order_id);
	int got;

	if (!rep || rep->type == REDIS_REPLY_ERROR)
		got = -1;
	else if (!take_it)
		got = 0;
	else if (rep->type == REDIS_REPLY_NIL)
		got = 1;
	else
		got = rep->type == REDIS_REPLY_STRING && !strcmp(rep->str, "none") ? 2 : 0;
	freeReplyObject(rep);
	return got;
}

/* In place of the lock just held: the database has no such order, for OT_CACHE_NONE_MS. */
static void
refill_none(redisContext *r, const char *order_id)
{
	freeReplyObject(redisCommand(r, "SET " OT_REDIS_LOCK_FMT " none PX %d", order_id, OT_CACHE_NONE_MS));
}

/* The single-flight wait on r: 1 with st when Redis came to hold the order (another's refill,
 * or one that landed meanwhile), 2 when Redis says the order does not exist, 0 with the lock
 * taken (*got) or after waiting for another's refill in vain, -1 when Redis failed or answered
 * an error. */
static int
refill_wait(redisContext *r, const char *order_id, struct ot_status *st, int *got)
{
	char err[256];
	int i, rc;

	*got = 0;
	for (i = 0; i <= REFILL_WAIT_STEPS; i++) {
		if (i) {
			struct timespec ts = {0, 20 * 1000000L};
			nanosleep(&ts, NULL);
			if ((rc = ot_redis_get_status(r, order_id, st, err, sizeof err)) != 0)
				return rc < 0 ? -1 : 1;
		}
		if ((*got = refill_lock(r, order_id, 1)) < 0 || *got == 2) {
			rc = *got;
			*got = 0;
			return rc;
		}
		if (*got) {
			/* Taken: another's refill may have landed since this reader missed. */
			if ((rc = ot_redis_get_status(r, order_id, st, err, sizeof err)) == 0)
				return 0;
			refill_lock(r, order_id, 0);
			*got = 0;
			return rc < 0 ? -1 : 1;
		}
	}
	return 0;
}

int
ot_cache_refill(struct ot_cache *c, PGconn *db, const char *order_id, struct ot_status *st, int *hit,
                char *errstr, size_t errsz)
{
	struct link *l = cache_take(c);
	redisContext *r;
	char err[256];
	int rc = -1, got = 0, tries = 0;

	/* Single flight: one reader refills a missing entry; the others wait for it, a bounded
	 * time, then read the database without filling. A crowd on one cold order costs the
	 * database one query more than nothing, not one per reader. An error (a slot that moved)
	 * is tried once more, after the cluster's map was read again. */
	do
		r = cache_conn(c, l, order_id);
	while ((!r || (rc = refill_wait(r, order_id, st, &got)) < 0) && again(l, r, OT_ESERVICE, &tries));
	/* served by another's refill, or known not to exist: counted as the miss it was */
	*hit = !r || rc < 0 ? -1 : rc == 2 ? 1 : rc;
	if (r && r->err)
		l->broke = 1;
	cache_give(c, l);
	if (rc == 2) {
		count_none();
		return 0;
	}
	if (*hit == 1)
		return 1;
	rc = ot_order_load(db, order_id, st, errstr, errsz);
	if (got) {
		if (rc == 1 && ot_cache_fill(c, st, err, sizeof err) < 0)
			OT_WARN(order_id, "cache refill failed: %s", err);
		l = cache_take(c);
		if ((r = cache_conn(c, l, order_id))) {
			if (rc == 0)
				refill_none(r, order_id);
			else
				refill_lock(r, order_id, 0);
		}
		cache_give(c, l);
	}
	return rc;
}

int
ot_cache_get(struct ot_cache *c, PGconn *db, const char *order_id, struct ot_status *st, int *hit,
             char *errstr, size_t errsz)
{
	char err[256];
	int rc = ot_cache_read(c, order_id, st, err, sizeof err);

	*hit = rc == 1;
	if (rc == 1)
		return 1;
	if (rc < 0 && err[0])
		OT_WARN(order_id, "cache read failed, reading the database: %s", err);
	rc = ot_cache_refill(c, db, order_id, st, hit, errstr, errsz);
	*hit = *hit == 1;
	return rc;
}

void
ot_cache_count(struct ot_cache *c, int hit)
{
	atomic_fetch_add(hit ? &c->hits : &c->misses, 1);
}

redisReply *
ot_cache_history(struct ot_cache *c, const char *order_id, long long after, char *errstr, size_t errsz)
{
	struct link *l = cache_take(c);
	redisContext *r;
	redisReply *rep = NULL;
	int tries = 0;

	if (errsz)
		errstr[0] = '\0'; /* not tried */
	do
		r = cache_conn(c, l, order_id);
	while ((!r || !(rep = ot_redis_history(r, order_id, after, errstr, errsz))) && again(l, r, OT_ESERVICE, &tries));
	cache_give(c, l);
	return rep;
}

int
ot_cache_invalidate(struct ot_cache *c, const char *order_id, char *errstr, size_t errsz)
{
	struct link *l = cache_take(c);
	redisContext *r;
	int rc = ot_err(OT_ESERVICE, errstr, errsz, "Redis unavailable"), tries = 0;

	do
		r = cache_conn(c, l, order_id);
	while ((!r || (rc = ot_redis_del_status(r, order_id, errstr, errsz)) < 0) &&
	       again(l, r, r ? rc : OT_ESERVICE, &tries));
	cache_give(c, l);
	return rc;
}
