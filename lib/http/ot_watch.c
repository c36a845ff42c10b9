/* ot_watch: a live stream's start — GET /orders/{id}/events (SSE) and its WebSocket upgrade:
 * the checks, the history and current status, then the stream handed to ot_live. */
#include <jansson.h>
#include <microhttpd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "ot_cache.h"
#include "ot_http_int.h"
#include "ot_id.h"
#include "ot_live.h"
#include "ot_log.h"
#include "ot_redis.h"

#define STREAMS_RETRY_S "5"       /* Retry-After of a stream refused for want of a slot */

/* True when a WebSocket upgrade may come from the request's Origin: any without an allow-list;
 * with one, a listed Origin (case aside) or none at all, since browsers always send it and
 * other clients are not the cross-site pages the list keeps out. */
static int
origin_allowed(struct call *x)
{
	const char *origin = MHD_lookup_connection_value(x->con, MHD_HEADER_KIND, "Origin");
	const char *o, *end;
	size_t ol;

	if (!x->h->ws_origins || !origin)
		return 1;
	ol = strlen(origin);
	for (o = x->h->ws_origins; *o; o = *end ? end + 1 : end) {
		size_t n = strcspn(o, ",");
		end = o + n;
		if (n == ol && !strncasecmp(o, origin, n))
			return 1;
	}
	return 0;
}

/* GET /orders/{id}/events (SSE; or WebSocket when the request asks to upgrade): the changes
 * after Last-Event-ID from orderlog:{id}, the current status if newer, then live changes. */
enum MHD_Result
ot_watch_start(struct call *x, const char *id, int ws_only)
{
	const char *leid = MHD_lookup_connection_value(x->con, MHD_HEADER_KIND, "Last-Event-ID");
	const char *q = MHD_lookup_connection_value(x->con, MHD_GET_ARGUMENT_KIND, "last_event_id");
	const char *up = MHD_lookup_connection_value(x->con, MHD_HEADER_KIND, MHD_HTTP_HEADER_UPGRADE);
	const char *key = MHD_lookup_connection_value(x->con, MHD_HEADER_KIND, "Sec-WebSocket-Key");
	int ws = up && !strcasecmp(up, "websocket");
	struct ot_live_event ev[OT_REDIS_LOG_MAX + 1];
	struct ot_status st;
	redisReply *hist = NULL;
	long long last = 0, top = 0;
	char err[512], *cur = NULL;
	size_t n = 0, i;
	int rc, full = 0;
	enum MHD_Result ret;
	static const char *const retry_streams[] = {"Retry-After", STREAMS_RETRY_S, NULL};

	if (!ot_uuid_valid(id))
		return reply_error(x, 400, "order id must be a UUID", NULL);
	snprintf(x->rq->order_id, sizeof x->rq->order_id, "%s", id);
	x->rq->route = ws || ws_only ? "order_ws" : "order_events";
	if (ws_only && !ws)
		return reply_error(x, 400, "this endpoint speaks WebSocket only: send Upgrade: websocket", NULL);
	if (ws && (!key || strlen(key) != 24))
		return reply_error(x, 400, "a WebSocket upgrade needs a Sec-WebSocket-Key", NULL);
	if (ws && strcmp(x->rq->method, MHD_HTTP_METHOD_GET))
		return reply_error(x, 400, "a WebSocket upgrade must be a GET", NULL);
	if (ws && !origin_allowed(x))
		return reply_error(x, 403, "WebSockets from this Origin are not allowed", NULL);
	if (!x->h->live)
		return reply_error(x, 503, "live streams are not running", NULL);
	if (leid || q)
		last = strtoll(leid ? leid : q, NULL, 10);
	if (last < 0)
		last = 0;
	if ((rc = ot_read_status(x, id, &st, err, sizeof err)) < 0)
		return ot_reply_failed(x, rc, err);
	if (rc == 0)
		return ot_reply_not_found(x, id);
	if (!(hist = ot_cache_history(x->h->cache, id, last, err, sizeof err)) && err[0])
		OT_WARN(id, "stream history unavailable: %s", err);
	for (i = 0; hist && i + 1 < hist->elements && n < OT_REDIS_LOG_MAX; i += 2) {
		ev[n].json = hist->element[i]->str;
		ev[n].version = strtoll(hist->element[i + 1]->str ? hist->element[i + 1]->str : "0", NULL, 10);
		if (ev[n].json && ev[n].version > top)
			top = ev[n++].version;
	}
	/* The log may lag the status (Redis restarted, or the entry just refilled): the status
	 * itself is the newest change. */
	if (st.version > last && st.version > top) {
		json_t *o = ot_status_to_json(&st);
		cur = o ? json_dumps(o, OT_JSON_FLAGS) : NULL;
		json_decref(o);
		if (cur) {
			ev[n].json = cur;
			ev[n++].version = st.version;
		}
	}
	ret = ws ? ot_live_ws(x->h->live, x->con, key, id, last, ev, n, &full, &x->sr->ws)
	         : ot_live_sse(x->h->live, x->con, id, last, ev, n, &full);
	freeReplyObject(hist);
	free(cur);
	if (full)
		return reply_error(x, 503, "too many live streams open: try again later", retry_streams);
	if (ret == MHD_YES)
		x->rq->status = ws ? 101 : 200;
	return ret;
}
