/* ot_read: ot-serve's reads of an order's status, through the cache object's one read order
 * (ot_cache_read_*) for the pipelined GET /orders/{id} and the live streams' blocking first
 * read alike, and GET /orders/{id}?full=1 from the database. */
#include <jansson.h>
#include <microhttpd.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "ot_cache.h"
#include "ot_err.h"
#include "ot_http_int.h"
#include "ot_id.h"
#include "ot_metrics.h"
#include "ot_order.h"

static const char *const cache_label[OT_FROM_COUNT] = {"local", "hit", "miss", "bypass"};
static struct ot_metric *m_reads;

/* Where the in-process cache may leave the status as one JSON line, when it has one ready. */
struct body {
	char buf[512];
	size_t len;          /* 0: none */
};

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

/* The database step of a status read (rd as ot_cache_read_start or ot_cache_read_near left
 * it), once more on a fresh connection when the first broke. Returns as ot_cache_read_db. */
static int
read_db(struct call *x, struct ot_cache_rd *rd, struct ot_status *st, char *err, size_t errsz)
{
	PGconn *db;
	int rc;

	rd->from = OT_FROM_BYPASS;
	if (!(db = ot_call_db(x)))
		return ot_err(OT_ESERVICE, err, errsz, "the orders database is unavailable");
	rc = ot_cache_read_db(x->h->cache, db, rd, st, err, errsz);
	if (ot_call_db_retry(x, rc, &db))
		rc = ot_cache_read_db(x->h->cache, db, rd, st, err, errsz);
	ot_call_db_done(x, rc);
	return rc;
}

int
ot_read_status(struct call *x, const char *id, struct ot_status *st, char *err, size_t errsz)
{
	struct ot_cache_rd rd;

	if (ot_cache_read_near(x->h->cache, id, &rd, st))
		return 1;
	return read_db(x, &rd, st, err, errsz);
}

/* The answer to a status read that returned rc (as ot_read_status) with st from how; body, when not
 * NULL and set, is st as one JSON line. An ETag of its version; If-None-Match gets 304. */
static enum MHD_Result
answer_status(struct call *x, int rc, const struct ot_status *st, enum ot_cache_from how,
              const struct body *body, const char *err)
{
	static const char *const how_name[OT_FROM_COUNT] = {"HIT", "HIT", "MISS", "BYPASS"};
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
/* The database step of GET /orders/{id}, on the pool. */
static enum MHD_Result
get_db(struct call *x)
{
	struct ot_status st;
	char err[512];
	int rc;

	memset(&st, 0, sizeof st);
	rc = read_db(x, &x->sr->rd, &st, err, sizeof err);
	return answer_status(x, rc, &st, x->sr->rd.from, NULL, err);
}
static enum MHD_Result
get_full_db(struct call *x)
{
	return get_full(x, x->sr->oid);
}

/* Redis answered GET /orders/{id}'s read (on the pipe's thread): a hit answers it; else the
 * database is next, on the pool. */
static void
got_status(struct ot_cache_rd *rd, int found, const struct ot_status *st)
{
	struct serve_req *sr = (struct serve_req *)(void *)((char *)rd - offsetof(struct serve_req, rd));
	struct call x = {sr->h, NULL, sr->rq->con, sr->rq, sr};

	if (!found) {
		ot_call_offload_suspended(sr, get_db);
		return;
	}
	answer_status(&x, 1, st, OT_FROM_HIT, NULL, "");
	if (!sr->rq->pending)
		ot_httpd_reply_error(sr->rq, 500, "internal error", NULL);
	ot_httpd_resume(sr->rq);
}

enum MHD_Result
ot_read_get(struct call *x, const char *id)
{
	const char *full = MHD_lookup_connection_value(x->con, MHD_GET_ARGUMENT_KIND, "full");
	struct serve_req *sr = x->sr;
	struct ot_status st;
	struct body body;

	if (!ot_uuid_valid(id))
		return reply_error(x, 400, "order id must be a UUID", NULL);
	snprintf(x->rq->order_id, sizeof x->rq->order_id, "%s", id);
	snprintf(sr->oid, sizeof sr->oid, "%s", id);
	/* The whole order names a customer and an address: only a key holder may read it. */
	if (full && (!strcmp(full, "1") || !strcmp(full, "true")))
		return authorized(x) ? ot_call_offload(x, get_full_db) : ot_reply_unauthorized(x);
	sr->inm = MHD_lookup_connection_value(x->con, MHD_HEADER_KIND, MHD_HTTP_HEADER_IF_NONE_MATCH);
	switch (ot_cache_read_start(x->h->cache, id, &sr->rd, &st, body.buf, sizeof body.buf, &body.len)) {
	case 1:
		return answer_status(x, 1, &st, OT_FROM_LOCAL, &body, "");
	case 0:
		return ot_call_offload(x, get_db);
	}
	ot_httpd_suspend(x->rq);
	if (!ot_cache_read_send(x->h->cache, &sr->rd, got_status))
		ot_call_offload_suspended(sr, get_db);
	return MHD_YES;
}

void
ot_read_metrics(void)
{
	m_reads = ot_metric_new(OT_COUNTER, "ot_cache_reads_total", "Order reads by where they were served from: "
	                        "local (in-process cache), hit (Redis), miss (database, refilled), bypass (database, "
	                        "Redis skipped).",
	                        "result", NULL, 0);
	for (int c = 0; c < OT_FROM_COUNT; c++)
		ot_metric_add(m_reads, 0, cache_label[c]);
}
