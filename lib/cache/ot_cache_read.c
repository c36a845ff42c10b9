/* ot_cache_read: the read order of an order's status, in one place, for a server that keeps
 * an in-process cache and pipelines its Redis reads (ot_cache_front). An order this process
 * committed while Redis did not take it goes to the database (the cache may be behind); a
 * fresh in-process entry answers it (renewed from Redis in the background past half its
 * age); else Redis, through the pipe or blocking; after a miss the database, refilling Redis
 * under the single-flight lock, after a failure the database alone. */
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ot_breaker.h"
#include "ot_cache.h"
#include "ot_cache_int.h"
#include "ot_lcache.h"
#include "ot_log.h"
#include "ot_order.h"
#include "ot_redis.h"
#include "ot_rlink.h"

void
ot_cache_front(struct ot_cache *c, struct ot_lcache *lc, struct ot_rpipe *pipe)
{
	c->lc = lc;
	c->pipe = pipe;
}

void
ot_cache_forget(struct ot_cache *c, const char *order_id)
{
	ot_lcache_forget(c->lc, order_id);
}

static int
allow(struct ot_cache *c)
{
	return !c->cb || ot_breaker_allow(c->cb);
}

static void
held(struct ot_cache *c, int ok)
{
	if (c->cb)
		ot_breaker_done(c->cb, ok);
}

/* A background read of an order the in-process cache holds, to renew it before its age runs out. */
struct refresh {
	struct ot_rpipe_job rj; /* first: the pipe hands this back */
	struct ot_cache *c;
	uint64_t mark;
	char oid[64];
};

static void
refreshed(struct ot_rpipe_job *j, redisReply *rep)
{
	struct refresh *f = (struct refresh *)(void *)j;
	struct ot_status st;
	int rc = ot_redis_status_of(rep, f->oid, &st);

	held(f->c, rc >= 0);
	if (rc == 1)
		ot_lcache_put(f->c->lc, &st, f->mark);
	free(f);
}

/* Reads id from Redis through the pipe into the in-process cache; no request waits for it. */
static void
refresh_ahead(struct ot_cache *c, const char *id, uint64_t mark)
{
	struct refresh *f;

	if (!c->pipe || !allow(c))
		return;
	if (!(f = calloc(1, sizeof *f)) || (f->rj.len = ot_redis_status_cmd(&f->rj.cmd, id)) < 0) {
		free(f);
		held(c, 1);
		return;
	}
	f->rj.done = refreshed;
	f->rj.slot = (int)ot_rlink_order_slot(id);
	f->c = c;
	f->mark = mark;
	snprintf(f->oid, sizeof f->oid, "%s", id);
	ot_rpipe_send(c->pipe, &f->rj);
}

/* The first step: 1 with st (and body) from the in-process cache (with ahead, renewed in the
 * background past half its age); 0 when the database comes next; 2 when Redis does, rd->mark
 * taken first for the in-process cache. */
static int
read_first(struct ot_cache *c, const char *id, struct ot_cache_rd *rd, struct ot_status *st, char *body,
           size_t bodysz, size_t *blen, int ahead)
{
	int refresh = 0;

	rd->c = c;
	rd->from = OT_FROM_BYPASS;
	rd->mark = 0;
	rd->via_redis = 0;
	snprintf(rd->oid, sizeof rd->oid, "%s", id);
	if (blen)
		*blen = 0;
	if (ot_cache_dirty(c, id))
		return 0;
	if (c->lc && ot_lcache_get_refresh(c->lc, id, st, body, bodysz, blen, ahead ? &refresh : NULL, &rd->mark)) {
		if (refresh)
			refresh_ahead(c, id, rd->mark);
		ot_cache_count(c, 1);
		rd->from = OT_FROM_LOCAL;
		return 1;
	}
	if (c->lc)
		rd->mark = ot_lcache_mark(c->lc, id);
	return 2;
}

/* What Redis answered (rc as ot_cache_read, err its error): a hit goes into the in-process
 * cache unless Redis invalidated the order since rd->mark, and returns 1; else the database
 * comes next, refilling Redis after a miss but not after a failure. */
static int
redis_done(struct ot_cache_rd *rd, int rc, const struct ot_status *st, const char *err)
{
	if (rc == 1) {
		if (rd->c->lc)
			ot_lcache_put(rd->c->lc, st, rd->mark);
		rd->from = OT_FROM_HIT;
		return 1;
	}
	if (rc < 0 && err[0])
		OT_WARN(rd->oid, "cache read failed, reading the database: %s", err);
	rd->via_redis = rc == 0;
	return 0;
}

static void
got_status(struct ot_rpipe_job *j, redisReply *rep)
{
	struct ot_cache_rd *rd = (struct ot_cache_rd *)(void *)j;
	struct ot_status st;
	int rc = ot_redis_status_of(rep, rd->oid, &st);
	char err[512] = "";

	held(rd->c, rc >= 0);
	if (rc >= 0)
		ot_cache_count(rd->c, rc == 1);
	else
		snprintf(err, sizeof err, "Redis HGETALL: %s", rep && rep->str ? rep->str : "no reply");
	rd->done(rd, redis_done(rd, rc, &st, err), &st);
}

int
ot_cache_read_start(struct ot_cache *c, const char *id, struct ot_cache_rd *rd, struct ot_status *st, char *body,
                    size_t bodysz, size_t *blen)
{
	return read_first(c, id, rd, st, body, bodysz, blen, 1);
}

int
ot_cache_read_send(struct ot_cache *c, struct ot_cache_rd *rd,
                   void (*done)(struct ot_cache_rd *rd, int found, const struct ot_status *st))
{
	if (!c->pipe || !allow(c))
		return 0;
	if ((rd->rj.len = ot_redis_status_cmd(&rd->rj.cmd, rd->oid)) < 0) {
		held(c, 1);
		return 0;
	}
	rd->rj.done = got_status;
	rd->rj.slot = (int)ot_rlink_order_slot(rd->oid);
	rd->done = done;
	ot_rpipe_send(c->pipe, &rd->rj);
	return 1;
}

int
ot_cache_read_near(struct ot_cache *c, const char *id, struct ot_cache_rd *rd, struct ot_status *st)
{
	char err[512];
	int rc = read_first(c, id, rd, st, NULL, 0, NULL, 0);

	if (rc != 2)
		return rc;
	rc = ot_cache_read(c, id, st, err, sizeof err);
	return redis_done(rd, rc, st, err);
}

int
ot_cache_read_db(struct ot_cache *c, PGconn *db, struct ot_cache_rd *rd, struct ot_status *st, char *errstr,
                 size_t errsz)
{
	int hit = -1, rc;

	rc = rd->via_redis ? ot_cache_refill(c, db, rd->oid, st, &hit, errstr, errsz)
	                   : ot_order_load(db, rd->oid, st, errstr, errsz);
	rd->from = hit == 1 ? OT_FROM_HIT : hit == 0 ? OT_FROM_MISS : OT_FROM_BYPASS;
	if (rc == 1 && rd->from != OT_FROM_BYPASS && c->lc)
		ot_lcache_put(c->lc, st, rd->mark);
	return rc;
}
