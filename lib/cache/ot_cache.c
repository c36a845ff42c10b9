/* ot_cache: the order status cache — writes, reads and refills, repair, warm-up, statistics
 * and drift — over a small pool of Redis connections shared by the process's threads. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ot_breaker.h"
#include "ot_cache.h"
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

/* Orders whose write failed after their commit, at most this many (the rest are left to the
 * TTL, ot-cache sync and ot-cache verify --repair). */
#define DIRTY_MAX 8192
#define REFILL_WAIT_STEPS 25 /* x 20 ms: how long a reader waits for another's refill */

/* One pooled connection (to the one server, or to every master of a cluster): taken by a
 * call, given back after. */
struct link {
	struct ot_rlink k;
	int allowed;            /* this call holds an allowance of the breaker: report it */
	int refused;            /* the breaker refused this call: Redis is not tried */
	int broke;              /* this call found Redis unreachable or a connection broken */
	struct link *next;
};

struct ot_cache {
	char *url;
	struct ot_breaker *cb;  /* NULL: none */
	pthread_mutex_t mu;     /* guards idle */
	struct link *idle;
	pthread_mutex_t dirty_mu; /* guards dirty, dirty_lost; ndirty is written under it */
	char (*dirty)[64];
	atomic_int ndirty;      /* read without the lock by ot_cache_dirty's fast path */
	int dirty_lost;
	atomic_long hits, misses, fills; /* since the last ot_cache_stats_flush */
};

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
count_repair(void)
{
	ot_metric_add(ot_metric_new(OT_COUNTER, "ot_cache_repairs_total", "Entries put back after a write Redis "
	                            "did not take.", "tool", NULL, 0), 1, ot_metrics_tool());
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
 * breaker; give it back with give. NULL when out of memory. */
static struct link *
take(struct ot_cache *c)
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
static void
give(struct ot_cache *c, struct link *l)
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
static redisContext *
conn(struct ot_cache *c, struct link *l, const char *key)
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
	struct link *l = take(c);
	redisContext *r;
	size_t i;
	int rc = 0;

	if (!l)
		return ot_err(OT_EINTERNAL, errstr, errsz, "out of memory");
	if (!(r = conn(c, l, NULL))) {
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
	give(c, l);
	return rc;
}

static void
mark_dirty(struct ot_cache *c, const char *order_id)
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
static int
put_one(struct ot_cache *c, struct link *l, const struct ot_status *st, int known_only, char *errstr,
        size_t errsz)
{
	redisContext *r;
	int rc = OT_ESERVICE, tries = 0;

	do
		r = conn(c, l, st->order_id);
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
		node[i] = conn(c, l, sts[i].order_id);
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
		if (res[i] && (rc = put_one(c, l, &sts[i], 0, err, errsz)) >= 0)
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
	if ((results = calloc(n, sizeof *results)) && (sp = calloc(n, sizeof *sp)) && (l = take(c))) {
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
		give(c, l);
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
			mark_dirty(c, sts[i].order_id);
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
	struct link *l = take(c);
	int rc = put_one(c, l, st, 1, errstr, errsz);

	give(c, l);
	if (rc != 2)
		count_write(rc < 0 ? "failed" : rc ? "applied" : "cas_rejected");
	return rc;
}

int
ot_cache_fill(struct ot_cache *c, const struct ot_status *st, char *errstr, size_t errsz)
{
	struct link *l = take(c);
	int rc = put_one(c, l, st, 0, errstr, errsz);

	give(c, l);
	count_write(rc < 0 ? "failed" : rc ? "applied" : "cas_rejected");
	if (rc >= 0) {
		atomic_fetch_add(&c->fills, 1);
		count_fill();
	}
	return rc;
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
				if (!(l = take(c))) {
					rc = ot_err(OT_EINTERNAL, errstr, errsz, "out of memory");
					break;
				}
				rc = put_one(c, l, &st, 0, errstr, errsz);
				refused = l->refused;
				give(c, l);
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
			mark_dirty(c, ids[j]);
		for (j = 0; j < nf; j++)
			mark_dirty(c, failed[j]);
	} while (n == 64 && !refused && rc >= 0 && !nf);
	return rc < 0 ? rc : nf || refused ? ot_err(OT_ESERVICE, errstr, errsz, "Redis: %d orders not repaired yet",
	                                            (int)atomic_load(&c->ndirty)) : fixed;
}

int
ot_cache_read(struct ot_cache *c, const char *order_id, struct ot_status *st, char *errstr, size_t errsz)
{
	struct link *l = take(c);
	redisContext *r;
	int rc = OT_ESERVICE, tries = 0;

	if (errsz)
		errstr[0] = '\0'; /* not tried */
	do
		r = conn(c, l, order_id);
	while ((!r || (rc = ot_redis_get_status(r, order_id, st, errstr, errsz)) < 0) &&
	       again(l, r, r ? rc : OT_ESERVICE, &tries));
	give(c, l);
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
	struct link *l = take(c);
	redisContext *r;
	char err[256];
	int rc = -1, got = 0, tries = 0;

	/* Single flight: one reader refills a missing entry; the others wait for it, a bounded
	 * time, then read the database without filling. A crowd on one cold order costs the
	 * database one query more than nothing, not one per reader. An error (a slot that moved)
	 * is tried once more, after the cluster's map was read again. */
	do
		r = conn(c, l, order_id);
	while ((!r || (rc = refill_wait(r, order_id, st, &got)) < 0) && again(l, r, OT_ESERVICE, &tries));
	/* served by another's refill, or known not to exist: counted as the miss it was */
	*hit = !r || rc < 0 ? -1 : rc == 2 ? 1 : rc;
	if (r && r->err)
		l->broke = 1;
	give(c, l);
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
		l = take(c);
		if ((r = conn(c, l, order_id))) {
			if (rc == 0)
				refill_none(r, order_id);
			else
				refill_lock(r, order_id, 0);
		}
		give(c, l);
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
	struct link *l = take(c);
	redisContext *r;
	redisReply *rep = NULL;
	int tries = 0;

	if (errsz)
		errstr[0] = '\0'; /* not tried */
	do
		r = conn(c, l, order_id);
	while ((!r || !(rep = ot_redis_history(r, order_id, after, errstr, errsz))) && again(l, r, OT_ESERVICE, &tries));
	give(c, l);
	return rep;
}

int
ot_cache_invalidate(struct ot_cache *c, const char *order_id, char *errstr, size_t errsz)
{
	struct link *l = take(c);
	redisContext *r;
	int rc = ot_err(OT_ESERVICE, errstr, errsz, "Redis unavailable"), tries = 0;

	do
		r = conn(c, l, order_id);
	while ((!r || (rc = ot_redis_del_status(r, order_id, errstr, errsz)) < 0) &&
	       again(l, r, r ? rc : OT_ESERVICE, &tries));
	give(c, l);
	return rc;
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
	int rc = put_one(w->c, w->l, st, 0, w->errstr, w->errsz);

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
	struct warm w = {c, take(c), errstr, errsz};
	long n = ot_order_active(db, warm_one, &w, errstr, errsz);

	give(c, w.l);
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
	l = take(c);
	if ((r = conn(c, l, "ot:stats")))
		rep = redisCommand(r, "EVAL %s 1 ot:stats %ld %ld %ld",
		                   "redis.call('HINCRBY', KEYS[1], 'hits', ARGV[1]) "
		                   "redis.call('HINCRBY', KEYS[1], 'misses', ARGV[2]) "
		                   "redis.call('HINCRBY', KEYS[1], 'fills', ARGV[3]) return 1", h, m, f);
	give(c, l);
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
	redisContext *r = conn(c, l, NULL);
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
	redisContext *r = id ? conn(s->c, s->l, id) : NULL;
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
	struct link *l = take(c);
	redisContext *r = conn(c, l, "ot:stats");
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
	give(c, l);
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
		if (!(r = conn(v->c, v->l, k[i])))
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
	else if (strcmp(c->status, d->status) || c->has_pos != d->has_pos ||
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
	if (!(r = conn(v->c, v->l, id)))
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

	if (!(r = conn(v->c, v->l, d->order_id)))
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
	struct link *l = take(c);
	struct verify v = {db, c, l, repair, out, d, errstr, errsz};
	long n;

	memset(d, 0, sizeof *d);
	n = l ? ot_order_changed(db, seconds, check_changed, &v, errstr, errsz)
	      : ot_err(OT_EINTERNAL, errstr, errsz, "out of memory");
	give(c, l);
	return n;
}

int
ot_cache_verify(struct ot_cache *c, PGconn *db, int repair, FILE *out, struct ot_drift *d, char *errstr,
                size_t errsz)
{
	struct link *l = take(c);
	struct verify v = {db, c, l, repair, out, d, errstr, errsz};
	struct ot_status st;
	redisContext *r;
	PGresult *res;
	int i, rc;

	memset(d, 0, sizeof *d);
	if ((rc = scan_orders(c, l, check_one, &v, errstr, errsz))) {
		give(c, l);
		return rc;
	}
	/* Active orders not cached are fine for cache-aside; count them, they show coverage. */
	res = ot_pg_query(db, "SELECT id FROM orders WHERE status NOT IN ('DELIVERED','REJECTED','CANCELLED')",
	                  0, NULL, &rc, errstr, errsz);
	for (i = 0; res && i < PQntuples(res); i++) {
		if (!(r = conn(c, l, PQgetvalue(res, i, 0)))) {
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
	give(c, l);
	return rc;
}
