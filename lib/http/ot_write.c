/* ot_write: the order API's writes — POST /orders with its Idempotency-Key, and
 * POST /orders/{id}/cancel — each committed in the database, then handed to the cache. */
#include <jansson.h>
#include <microhttpd.h>
#include <stdio.h>
#include <string.h>

#include "ot_cache.h"
#include "ot_err.h"
#include "ot_event.h"
#include "ot_http_int.h"
#include "ot_id.h"
#include "ot_order.h"

/* Joins the request's Idempotency-Key (key; NULL or "": none) to its body req, as its
 * request_id: a body without one takes the key, one with another is refused. Returns NULL, or
 * why the request is a bad one. */
static const char *
idempotency(json_t *req, const char *key)
{
	json_t *rid;

	if (!key || !*key)
		return NULL;
	rid = json_object_get(req, "request_id");
	if (!rid || json_is_null(rid))
		return json_object_set_new(req, "request_id", json_string(key)) ? "Idempotency-Key must be UTF-8" : NULL;
	if (!json_is_string(rid) || strcmp(json_string_value(rid), key))
		return "Idempotency-Key and request_id differ";
	return NULL;
}

/* POST /orders: the same placement as ot-place. */
enum MHD_Result
ot_write_place(struct call *x)
{
	const char *ctype = MHD_lookup_connection_value(x->con, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
	const char *key = MHD_lookup_connection_value(x->con, MHD_HEADER_KIND, "Idempotency-Key");
	const char *hdr[] = {"Location", NULL, NULL}, *msg;
	json_t *req, *rid, *order = NULL;
	json_error_t jerr;
	char err[512], loc[128];
	struct ot_status st;
	int created = 0, rc;
	PGconn *db;

	if (!authorized(x))
		return ot_reply_unauthorized(x);
	if (!ot_reply_is_json(ctype))
		return reply_error(x, 415, "Content-Type must be application/json", NULL);
	if (x->rq->seen > MAX_BODY)
		return reply_error(x, 413, "request body larger than 64 KiB", NULL);
	if (!(req = json_loadb(x->rq->body ? x->rq->body : "", x->rq->len, JSON_REJECT_DUPLICATES, &jerr))) {
		snprintf(err, sizeof err, "body is not JSON: %s at line %d, column %d", jerr.text, jerr.line,
		         jerr.column);
		return reply_error(x, 400, err, NULL);
	}
	msg = !json_is_object(req) ? "body must be a JSON object" : idempotency(req, key);
	if (msg) {
		json_decref(req);
		return reply_error(x, 400, msg, NULL);
	}
	if (!(db = ot_call_db(x))) {
		json_decref(req);
		return ot_reply_unavailable(x);
	}
	/* An Idempotency-Key is the caller's own: another key's holder never gets this order back. */
	rc = ot_order_place_as(db, req, "ot-serve", x->sr->key_id, &order, &created, &st, err, sizeof err);
	/* Only a request_id makes a second try safe: a lost connection may hide a commit. */
	rid = json_object_get(req, "request_id");
	if (rid && !json_is_null(rid) && ot_call_db_retry(x, rc, &db))
		rc = ot_order_place_as(db, req, "ot-serve", x->sr->key_id, &order, &created, &st, err, sizeof err);
	ot_call_db_done(x, rc);
	if (!rc && st.version)
		ot_cache_put(x->h->cache, &st);
	json_decref(req);
	if (rc == OT_EINPUT)
		return reply_error(x, 400, err, NULL);
	if (rc == OT_ECONFLICT)
		return reply_error(x, 422, key && *key ? "Idempotency-Key already used with a different request body"
		                                       : err, NULL);
	if (rc)
		return ot_reply_failed(x, rc, err);
	snprintf(x->rq->order_id, sizeof x->rq->order_id, "%s",
	         json_string_value(json_object_get(order, "order_id")));
	ot_cache_forget(x->h->cache, x->rq->order_id);
	snprintf(loc, sizeof loc, "/orders/%s", x->rq->order_id);
	hdr[1] = loc;
	return reply_json(x, created ? 201 : 200, order, hdr);
}

/* POST /orders/{id}/cancel: the customer's cancel, as an ORDER_CANCELLED through the same
 * guarded transition as every other change. */
static enum MHD_Result
cancel_order(struct call *x, const char *id)
{
	struct ot_event ev;
	struct ot_status st;
	json_t *req = NULL, *reason;
	PGconn *db;
	char err[512];
	int rc;

	if (!authorized(x))
		return ot_reply_unauthorized(x);
	if (!ot_uuid_valid(id))
		return reply_error(x, 400, "order id must be a UUID", NULL);
	snprintf(x->rq->order_id, sizeof x->rq->order_id, "%s", id);
	if (x->rq->seen > MAX_BODY)
		return reply_error(x, 413, "request body larger than 64 KiB", NULL);
	if (x->rq->len && !(req = json_loadb(x->rq->body, x->rq->len, 0, NULL)))
		return reply_error(x, 400, "body is not JSON", NULL);
	if (!(db = ot_call_db(x))) {
		json_decref(req);
		return ot_reply_unavailable(x);
	}
	reason = json_object_get(req, "reason");
	ot_event_init(&ev, OT_EV_ORDER_CANCELLED, id, 0, "ot-serve",
	              json_pack("{s:s}", "reason", json_is_string(reason) ? json_string_value(reason)
	                                                               : "cancelled by the customer"), NULL);
	json_decref(req);
	/* A repeated cancel is a stale transition, so a second try is safe. */
	rc = ot_order_apply(db, &ev, "ot-serve", &st, err, sizeof err);
	if (ot_call_db_retry(x, rc, &db))
		rc = ot_order_apply(db, &ev, "ot-serve", &st, err, sizeof err);
	ot_call_db_done(x, rc);
	if (rc >= 0 && st.version)
		ot_cache_put(x->h->cache, &st);
	ot_event_clear(&ev);
	/* What this server wrote: no read after the answer may show the status from before. */
	ot_cache_forget(x->h->cache, id);
	if (rc == OT_ENOTFOUND)
		return ot_reply_not_found(x, id);
	if (rc == OT_EINPUT)
		return reply_error(x, 409, err, NULL);
	if (rc < 0)
		return ot_reply_failed(x, rc, err);
	/* Applied, or already cancelled: either way the answer is the order as it now is. */
	if ((rc = ot_order_load(db, id, &st, err, sizeof err)) != 1)
		return ot_reply_failed(x, rc ? rc : OT_EINTERNAL, rc ? err : "the order vanished");
	if (strcmp(st.status, "CANCELLED"))
		return reply_error(x, 409, "the order can no longer be cancelled", NULL);
	return reply_json(x, 200, ot_status_to_json(&st), NULL);
}

enum MHD_Result
ot_write_cancel(struct call *x)
{
	return cancel_order(x, x->sr->oid);
}
