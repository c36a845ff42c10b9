/* ot_api: ot-serve's one route table — the page, the probes and the order API with its
 * /orders/{id}/… family — and what every order API request goes through: its key, the rate
 * limiter, its span. */
#include <microhttpd.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "ot_http.h"
#include "ot_http_int.h"
#include "ot_id.h"
#include "ot_limit.h"
#include "ot_live.h"
#include "ot_text.h"
#include "ot_trace.h"

/* The page may run its own inline script and style, and talk to this server only. */
#define PAGE_CSP "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; " \
                 "connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'"

static enum MHD_Result
page_route(void *app, struct ot_httpd_req *rq)
{
	static const char *const page_hdr[] = {"Content-Security-Policy", PAGE_CSP, NULL};

	(void)app;
	return ot_httpd_reply(rq, 200, "text/html; charset=utf-8", ot_page_html, strlen(ot_page_html),
	                      MHD_RESPMEM_PERSISTENT, page_hdr);
}

static enum MHD_Result
place_route(struct call *x, const char *id)
{
	(void)id;
	return ot_call_offload(x, ot_write_place); /* writes wait on the database: off the event loop */
}

static enum MHD_Result
cancel_route(struct call *x, const char *id)
{
	(void)id;
	return ot_call_offload(x, ot_write_cancel);
}

static enum MHD_Result
events_route(struct call *x, const char *id)
{
	return ot_watch_start(x, id, 0);
}

static enum MHD_Result
ws_route(struct call *x, const char *id)
{
	return ot_watch_start(x, id, 1);
}

/* Every route ot-serve answers. Those outside the order API go to ot_httpd's table (exact
 * paths, judged by method alone); the order API's are ot_httpd's fallback: authenticated,
 * rate-limited and traced before their method is judged, their {id} one path segment. */
static const struct api_route {
	const char *method;  /* "GET" (HEAD too) or "POST" */
	const char *path;    /* exact, or with one {id} segment */
	const char *name;    /* the route label in the metrics */
	enum ot_order_res res; /* OT_RES_NONE: not the order API */
	ot_httpd_fn plain;   /* a route outside the order API */
	enum MHD_Result (*api)(struct call *x, const char *id); /* an order API route */
} routes[] = {
	{"GET", "/", "page", OT_RES_NONE, page_route, NULL},
	{"GET", "/index.html", "page", OT_RES_NONE, page_route, NULL},
	{"GET", "/healthz", "healthz", OT_RES_NONE, ot_http_healthz, NULL},
	{"GET", "/readyz", "readyz", OT_RES_NONE, ot_http_readyz, NULL},
	{"GET", "/metrics", "metrics", OT_RES_NONE, ot_httpd_metrics, NULL},
	{"POST", "/orders", "order_post", OT_RES_ORDERS, NULL, place_route},
	{"GET", "/orders/{id}", "order_get", OT_RES_ORDER, NULL, ot_read_get},
	{"POST", "/orders/{id}/cancel", "order_cancel", OT_RES_CANCEL, NULL, cancel_route},
	{"GET", "/orders/{id}/events", "order_events", OT_RES_EVENTS, NULL, events_route},
	{"GET", "/orders/{id}/ws", "order_ws", OT_RES_WS, NULL, ws_route},
};

static const char *const allow_get[] = {"Allow", "GET, HEAD", NULL};
static const char *const allow_post[] = {"Allow", "POST", NULL};

void
ot_api_plain_routes(struct ot_httpd_route *r)
{
	size_t n = 0;

	for (size_t i = 0; i < sizeof routes / sizeof routes[0] && n < API_ROUTES_MAX; i++)
		if (routes[i].plain)
			r[n++] = (struct ot_httpd_route){routes[i].path, routes[i].name, routes[i].method, routes[i].plain};
	r[n] = (struct ot_httpd_route){NULL, NULL, NULL, NULL};
}

/* 1 when path is pattern, its {id} segment (not empty, no '/') copied into id (at most
 * idsz - 1 bytes). */
static int
path_match(const char *pattern, const char *path, char *id, size_t idsz)
{
	const char *hole = strstr(pattern, "{id}");
	size_t pre, idlen;

	if (!hole)
		return !strcmp(pattern, path);
	pre = (size_t)(hole - pattern);
	if (strncmp(pattern, path, pre))
		return 0;
	idlen = strcspn(path + pre, "/");
	if (!idlen || strcmp(path + pre + idlen, hole + 4))
		return 0;
	if (idsz)
		snprintf(id, idsz, "%.*s", (int)(idlen < idsz ? idlen : idsz - 1), path + pre);
	return 1;
}

/* The order API's route of path, with its id (as ot_http_order_path); NULL: none. */
static const struct api_route *
api_find(const char *path, char *id, size_t idsz)
{
	if (idsz)
		id[0] = '\0';
	for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++)
		if (routes[i].api && path_match(routes[i].path, path, id, idsz))
			return &routes[i];
	return NULL;
}

enum ot_order_res
ot_http_order_path(const char *path, char *id, size_t idsz)
{
	const struct api_route *r = api_find(path, id, idsz);

	return r ? r->res : OT_RES_NONE;
}

/* 1 when r takes method: a GET route takes HEAD too. */
static int
method_ok(const struct api_route *r, const char *method)
{
	if (!strcmp(r->method, MHD_HTTP_METHOD_GET))
		return !strcmp(method, MHD_HTTP_METHOD_GET) || !strcmp(method, MHD_HTTP_METHOD_HEAD);
	return !strcmp(method, r->method);
}

static enum MHD_Result
not_allowed(struct call *x, const struct api_route *r)
{
	return ot_reply_not_allowed(x, strcmp(r->method, MHD_HTTP_METHOD_POST) ? allow_get : allow_post);
}

/* The API key a request carries, as "Authorization: Bearer KEY" or "X-API-Key: KEY"; NULL if none. */
static const char *
key_of(struct call *x)
{
	const char *auth = MHD_lookup_connection_value(x->con, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
	const char *key = MHD_lookup_connection_value(x->con, MHD_HEADER_KIND, "X-API-Key");

	if (!key && auth && !strncasecmp(auth, "Bearer ", 7))
		key = auth + 7;
	return key && *key ? key : NULL;
}

/* Checks the request's key once, into sr->auth and sr->key_id. */
static void
authenticate(struct call *x)
{
	const char *key = key_of(x);

	x->sr->auth = !key ? 0 : x->h->api_keys && ot_key_listed(x->h->api_keys, key) ? 1 : -1;
	if (x->sr->auth != 1)
		return;
	ot_sha256_hex(key, strlen(key), x->sr->key_id);
}

/* The rate limiter's verdict on x's request (ot_limit_check). */
static enum ot_limit_verdict
limit(struct call *x, long *wait_ms)
{
	return ot_limit_check(x->h->limit, &x->sr->lim, x->rq, &x->c->redis, x->sr->auth, x->sr->key_id, wait_ms);
}

/* Before the body of a request to the order API is read (ot_httpd_opts.head): what would be
 * refused whatever the body holds is refused now, so sending a body slowly buys nothing: 404,
 * 405, a write without a valid key 401 (a wrong key past its address's limit on failed
 * authentications 429, as ot_limit_check counts it), a placement not in JSON 415. */
enum MHD_Result
ot_api_head(void *app, struct ot_httpd_req *rq)
{
	const char *ctype = MHD_lookup_connection_value(rq->con, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
	const struct api_route *r;
	enum ot_limit_verdict v;
	char oid[64];
	long wait_ms;
	struct call x;

	if (ot_call_of(app, rq, &x))
		return ot_httpd_reply_error(rq, 500, "out of memory", NULL);
	if (!(r = api_find(rq->url, oid, sizeof oid)))
		return reply_error(&x, 404, "no such resource", NULL);
	rq->route = r->name;
	if (!method_ok(r, rq->method))
		return not_allowed(&x, r);
	authenticate(&x);
	/* A wrong key's check is the event thread's: ot_limit_check does not suspend it. */
	if (x.sr->auth < 0 && (v = limit(&x, &wait_ms)) != OT_LIMIT_GO)
		return ot_limit_refuse(rq, v, wait_ms);
	if (x.sr->auth < 1)
		return ot_reply_unauthorized(&x);
	if (r->res == OT_RES_ORDERS && !ot_reply_is_json(ctype))
		return reply_error(&x, 415, "Content-Type must be application/json", NULL);
	return MHD_YES;
}

/* The order API's routes: authenticated and rate-limited, then judged by method; any other
 * path is 404. */
static enum MHD_Result
api_route(void *app, struct ot_httpd_req *rq)
{
	const struct api_route *r;
	enum ot_limit_verdict v;
	char oid[64];
	long wait_ms;
	struct call x;

	if (ot_call_of(app, rq, &x))
		return ot_httpd_reply_error(rq, 500, "out of memory", NULL);
	if (!(r = api_find(rq->url, oid, sizeof oid)))
		return reply_error(&x, 404, "no such resource", NULL);
	rq->route = r->name;
	authenticate(&x);
	if ((v = limit(&x, &wait_ms)) == OT_LIMIT_WAIT)
		return MHD_YES; /* suspended: this runs again once Redis answered */
	if (v != OT_LIMIT_GO)
		return ot_limit_refuse(rq, v, wait_ms);
	if (!method_ok(r, rq->method))
		return not_allowed(&x, r);
	if (oid[0]) {
		ot_id_canon(oid); /* one cache entry per order, whatever the letter case asked */
		snprintf(x.sr->oid, sizeof x.sr->oid, "%s", oid);
	}
	return r->api(&x, oid);
}

/* Begins the request's span, a child of its traceparent header if it has a valid one. */
static void
request_span(struct ot_httpd_req *rq, struct serve_req *sr)
{
	int orders = !strncmp(rq->url, "/orders", 7); /* else a 404 is coming: no route to name */
	const char *rest = orders ? rq->url + 7 : "", *slash;
	char name[64];

	slash = *rest == '/' ? strchr(rest + 1, '/') : NULL;
	if (!orders)
		snprintf(name, sizeof name, "%s (no route)", rq->method);
	else
		snprintf(name, sizeof name, "%s /orders%s%s", rq->method, *rest ? "/{id}" : "", slash ? slash : "");
	ot_span_begin_detached(&sr->span, name, OT_SPAN_SERVER,
	                       MHD_lookup_connection_value(rq->con, MHD_HEADER_KIND, "traceparent"));
	if (sr->span.exported) {
		ot_span_tag(&sr->span, "http.method", rq->method);
		ot_span_tag(&sr->span, "http.path", rq->path);
	}
}

/* A write to the order API continues the caller's trace or starts one; a read only joins a
 * trace it brings, so a tracking page's polls do not each start one. Probes and the page are
 * not traced. The span is current only while this thread works for the request. */
enum MHD_Result
ot_api_dispatch(void *app, struct ot_httpd_req *rq)
{
	struct serve_req *sr = rq->ext;
	enum MHD_Result r;

	if (!sr->span.trace_id[0] && (!strcmp(rq->method, MHD_HTTP_METHOD_POST) ||
	                              MHD_lookup_connection_value(rq->con, MHD_HEADER_KIND, "traceparent")))
		request_span(rq, sr);
	if (sr->span.trace_id[0])
		rq->span = &sr->span;
	ot_span_enter(&sr->span);
	r = api_route(app, rq);
	ot_span_leave(&sr->span);
	return r;
}

/* The client went before its 101 was written: the stream it was to get goes too. The
 * request's span ends with the request. */
void
ot_api_done(void *app, struct ot_httpd_req *rq)
{
	struct serve_req *sr = rq->ext;

	(void)app;
	ot_live_ws_abandon(sr->ws);
	if (sr->span.exported) {
		char code[16];
		snprintf(code, sizeof code, "%u", rq->status);
		ot_span_tag(&sr->span, "http.status_code", code);
		if (rq->order_id[0])
			ot_span_tag(&sr->span, "order_id", rq->order_id);
		if (rq->status >= 500)
			ot_span_error(&sr->span, "server error");
	}
	ot_span_end(&sr->span);
}
