/* ot_read: ot-serve's reads of an order's status, in one read order for the pipelined
 * GET /orders/{id} and the live streams' blocking first read alike — the in-process cache,
 * Redis, then the database refilling Redis — and GET /orders/{id}?full=1. */
#include <jansson.h>
#include <microhttpd.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ot_breaker.h"
#include "ot_cache.h"
#include "ot_err.h"
#include "ot_http_int.h"
#include "ot_id.h"
#include "ot_lcache.h"
#include "ot_log.h"
#include "ot_metrics.h"
#include "ot_order.h"
#include "ot_redis.h"
#include "ot_rlink.h"

/* Where an order read was served from. */
enum ot_cache_result { OT_C_HIT, OT_C_MISS, OT_C_BYPASS, OT_C_LOCAL, OT_C_COUNT };
static const char *const cache_label[OT_C_COUNT] = {"hit", "miss", "bypass", "local"};
static struct ot_metric *m_reads;

/* Where the in-process cache may leave the status as one JSON line, when it has one ready. */
struct body {
	char buf[512];
	size_t len;          /* 0: none */
};

/* Where a read goes first. */
enum read_from { FROM_DB, FROM_LOCAL, FROM_REDIS };

/* GET /orders/{id}?full=1: the whole order, always from the database; the caller checked the key. */
static enum MHD_Result
get_full(struct call *x, const char *id)
{
	static const char *const bypass[] = {"X-Cache", "BYPASS", NULL};
	PGconn *db;
	json_t *o;
	char err[512];
	int rc;

	if (!(db = ot_call_db(x)))
		return ot_reply_unavailable(x);
	o = ot_order_get_full(db, id, &rc, err, sizeof err);
	if (!o && ot_call_db_retry(x, rc, &db))
		o = ot_order_get_full(db, id, &rc, err, sizeof err);
	ot_call_db_done(x, o ? 0 : rc);
	if (!o && rc)
		return ot_reply_failed(x, rc, err);
	if (!o)
		return ot_reply_not_found(x, id);
	return reply_json(x, 200, o, bypass);
}

/* The database half of a status read: after Redis answered a miss (via_redis: refill it under
 * the single-flight lock), or without Redis (down, its circuit open, or the order dirty).
 * What a refill answered goes into the in-process cache unless Redis invalidated the order
 * since mark. Returns as ot_read_status. */
static int
lookup_db(struct call *x, const char *id, int via_redis, uint64_t mark, struct ot_status *st,
          enum ot_cache_result *how, char *err, size_t errsz)
{
	PGconn *db;
	int hit = -1, rc;

	*how = OT_C_BYPASS;
	if (!(db = ot_call_db(x)))
		return ot_err(OT_ESERVICE, err, errsz, "the orders database is unavailable");
	rc = via_redis ? ot_cache_refill(x->h->cache, db, id, st, &hit, err, errsz) : ot_order_load(db, id, st, err, errsz);
	if (ot_call_db_retry(x, rc, &db))
		rc = via_redis ? ot_cache_refill(x->h->cache, db, id, st, &hit, err, errsz)
		               : ot_order_load(db, id, st, err, errsz);
	ot_call_db_done(x, rc);
	*how = hit == 1 ? OT_C_HIT : hit == 0 ? OT_C_MISS : OT_C_BYPASS;
	if (rc == 1 && *how != OT_C_BYPASS && x->h->lc)
		ot_lcache_put(x->h->lc, st, mark);
	return rc;
}

/* A background read of an order the in-process cache holds, to renew it before its age runs out. */
struct refresh {
	struct ot_rpipe_job rj; /* first: the pipe hands this back */
	struct ot_http *h;
	uint64_t mark;
	char oid[64];
};

static void
refreshed(struct ot_rpipe_job *j, redisReply *rep)
{
	struct refresh *f = (struct refresh *)(void *)j;
	struct ot_status st;
	int rc = ot_redis_status_of(rep, f->oid, &st);

	ot_breaker_done(&f->h->redis_cb, rc >= 0);
	if (rc == 1)
		ot_lcache_put(f->h->lc, &st, f->mark);
	free(f);
}

/* Reads id from Redis through the pipe into the in-process cache; no request waits for it. */
static void
refresh_ahead(struct ot_http *h, const char *id, uint64_t mark)
{
	struct refresh *f;

	if (!ot_breaker_allow(&h->redis_cb))
		return;
	if (!(f = calloc(1, sizeof *f)) || (f->rj.len = ot_redis_status_cmd(&f->rj.cmd, id)) < 0) {
		free(f);
		ot_breaker_done(&h->redis_cb, 1);
		return;
	}
	f->rj.done = refreshed;
	f->rj.slot = (int)ot_rlink_order_slot(id);
	f->h = h;
	f->mark = mark;
	snprintf(f->oid, sizeof f->oid, "%s", id);
	ot_rpipe_send(h->pipe, &f->rj);
}

/* The read order, in one place: a status this server committed while Redis did not take it
 * sends the read to the database (the cache may be behind); a fresh entry of the in-process
 * cache answers it into st and body (counted as a hit; with ahead, renewed from Redis in the
 * background past half its age); else Redis, *mark taken first for the in-process cache, and
 * after Redis (read_redis_done) the database. */
static enum read_from
read_first(struct ot_http *h, const char *id, struct ot_status *st, struct body *body, int ahead, uint64_t *mark)
{
	int refresh = 0;

	*mark = 0;
	if (ot_cache_dirty(h->cache, id))
		return FROM_DB;
	if (h->lc && ot_lcache_get_refresh(h->lc, id, st, body ? body->buf : NULL, body ? sizeof body->buf : 0,
	                                   body ? &body->len : NULL, ahead ? &refresh : NULL, mark)) {
		if (refresh)
			refresh_ahead(h, id, *mark);
		ot_cache_count(h->cache, 1);
		return FROM_LOCAL;
	}
	if (h->lc)
		*mark = ot_lcache_mark(h->lc, id);
	return FROM_REDIS;
}

/* What Redis answered a read of id (rc as ot_cache_read, err its error): a hit goes into the
 * in-process cache unless Redis invalidated the order since mark, and returns 1; else the
 * database comes next, refilling Redis (*via_redis) after a miss but not after a failure. */
static int
read_redis_done(struct ot_http *h, const char *id, int rc, const struct ot_status *st, uint64_t mark,
                const char *err, int *via_redis)
{
	*via_redis = 0;
	if (rc == 1) {
		if (h->lc)
			ot_lcache_put(h->lc, st, mark);
		return 1;
	}
	if (rc < 0 && err[0])
		OT_WARN(id, "cache read failed, reading the database: %s", err);
	*via_redis = rc == 0;
	return 0;
}

/* The status of one order, blocking: the read order above, with Redis read through the cache
 * object. Returns 1 found (*how says where from), 0 unknown, or an ot_rc with err. */
static int
lookup(struct call *x, const char *id, struct ot_status *st, enum ot_cache_result *how, char *err, size_t errsz)
{
	uint64_t mark;
	int rc, via_redis;

	*how = OT_C_BYPASS;
	switch (read_first(x->h, id, st, NULL, 0, &mark)) {
	case FROM_LOCAL:
		*how = OT_C_LOCAL;
		return 1;
	case FROM_DB:
		return lookup_db(x, id, 0, 0, st, how, err, errsz);
	case FROM_REDIS:
		break;
	}
	rc = ot_cache_read(x->h->cache, id, st, err, errsz);
	if (read_redis_done(x->h, id, rc, st, mark, err, &via_redis)) {
		*how = OT_C_HIT;
		return 1;
	}
	return lookup_db(x, id, via_redis, mark, st, how, err, errsz);
}

int
ot_read_status(struct call *x, const char *id, struct ot_status *st, char *err, size_t errsz)
{
	enum ot_cache_result how;

	return lookup(x, id, st, &how, err, errsz);
}

/* The answer to a status read that returned rc (as ot_read_status) with st from how; body, when not
 * NULL and set, is st as one JSON line. An ETag of its version; If-None-Match gets 304. */
static enum MHD_Result
answer_status(struct call *x, int rc, const struct ot_status *st, enum ot_cache_result how,
              const struct body *body, const char *err)
{
	static const char *const how_name[OT_C_COUNT] = {"HIT", "MISS", "BYPASS", "HIT"};
	const char *inm = x->sr->inm;
	const char *hdr[] = {"X-Cache", NULL, "ETag", NULL, NULL};
	char etag[40];

	if (rc < 0)
		return ot_reply_failed(x, rc, err);
	if (rc == 0)
		return ot_reply_not_found(x, st->order_id[0] ? st->order_id : x->sr->oid);
	ot_metric_add(m_reads, 1, cache_label[how]);
	snprintf(etag, sizeof etag, "\"v%lld\"", st->version);
	hdr[1] = how_name[how];
	hdr[3] = etag;
	if (inm && (strstr(inm, etag) || !strcmp(inm, "*")))
		return reply(x, 304, "application/json", "", 0, MHD_RESPMEM_PERSISTENT, hdr);
	if (body && body->len)
		return reply(x, 200, "application/json", body->buf, body->len, MHD_RESPMEM_MUST_COPY, hdr);
	return reply_json(x, 200, ot_status_to_json(st), hdr);
}
/* The database half of GET /orders/{id}, on the pool. */
static enum MHD_Result
get_db(struct call *x)
{
	struct serve_req *sr = x->sr;
	enum ot_cache_result how;
	struct ot_status st;
	char err[512];
	int rc;

	memset(&st, 0, sizeof st);
	rc = lookup_db(x, sr->oid, sr->via_redis, sr->mark, &st, &how, err, sizeof err);
	return answer_status(x, rc, &st, how, NULL, err);
}
static enum MHD_Result
get_full_db(struct call *x)
{
	return get_full(x, x->sr->oid);
}

/* Redis answered GET /orders/{id}'s read (on the pipe's thread): a hit answers it; a miss or
 * no answer goes on to the database, on the pool. */
static void
got_status(struct ot_rpipe_job *j, redisReply *rep)
{
	struct serve_req *sr = (struct serve_req *)(void *)((char *)j - offsetof(struct serve_req, rj));
	struct ot_http *h = sr->h;
	struct ot_status st;
	struct call x = {h, NULL, sr->rq->con, sr->rq, sr};
	int rc = ot_redis_status_of(rep, sr->oid, &st);
	char err[512] = "";

	ot_breaker_done(&h->redis_cb, rc >= 0);
	if (rc >= 0)
		ot_cache_count(h->cache, rc == 1);
	else
		snprintf(err, sizeof err, "Redis HGETALL: %s", rep && rep->str ? rep->str : "no reply");
	if (read_redis_done(h, sr->oid, rc, &st, sr->mark, err, &sr->via_redis)) {
		answer_status(&x, 1, &st, OT_C_HIT, NULL, "");
		if (!sr->rq->pending)
			ot_httpd_reply_error(sr->rq, 500, "internal error", NULL);
		ot_httpd_resume(sr->rq);
		return;
	}
	ot_call_offload_suspended(sr, get_db);
}

enum MHD_Result
ot_read_get(struct call *x, const char *id)
{
	const char *full = MHD_lookup_connection_value(x->con, MHD_GET_ARGUMENT_KIND, "full");
	struct serve_req *sr = x->sr;
	struct ot_status st;
	struct body body;
	uint64_t mark;
	int len;

	if (!ot_uuid_valid(id))
		return reply_error(x, 400, "order id must be a UUID", NULL);
	snprintf(x->rq->order_id, sizeof x->rq->order_id, "%s", id);
	snprintf(sr->oid, sizeof sr->oid, "%s", id);
	/* The whole order names a customer and an address: only a key holder may read it. */
	if (full && (!strcmp(full, "1") || !strcmp(full, "true")))
		return authorized(x) ? ot_call_offload(x, get_full_db) : ot_reply_unauthorized(x);
	sr->inm = MHD_lookup_connection_value(x->con, MHD_HEADER_KIND, MHD_HTTP_HEADER_IF_NONE_MATCH);
	sr->via_redis = 0;
	switch (read_first(x->h, id, &st, &body, 1, &mark)) {
	case FROM_LOCAL:
		return answer_status(x, 1, &st, OT_C_LOCAL, &body, "");
	case FROM_DB:
		return ot_call_offload(x, get_db);
	case FROM_REDIS:
		break;
	}
	if (!ot_breaker_allow(&x->h->redis_cb))
		return ot_call_offload(x, get_db);
	if ((len = ot_redis_status_cmd(&sr->rj.cmd, id)) < 0) {
		ot_breaker_done(&x->h->redis_cb, 1);
		return reply_error(x, 500, "out of memory", NULL);
	}
	sr->rj.len = len;
	sr->rj.done = got_status;
	sr->rj.slot = (int)ot_rlink_order_slot(id);
	sr->mark = mark;
	ot_httpd_suspend(x->rq);
	ot_rpipe_send(x->h->pipe, &sr->rj);
	return MHD_YES;
}

void
ot_read_metrics(void)
{
	m_reads = ot_metric_new(OT_COUNTER, "ot_cache_reads_total", "Order reads by where they were served from: "
	                        "local (in-process cache), hit (Redis), miss (database, refilled), bypass (database, "
	                        "Redis skipped).",
	                        "result", NULL, 0);
	for (int c = 0; c < OT_C_COUNT; c++)
		ot_metric_add(m_reads, 0, cache_label[c]);
}
