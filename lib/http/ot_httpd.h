/* ot_httpd: the small HTTP server every long-running tool shares — threads, limits, slow-client
 * deadlines, a table of routes, and /healthz, /readyz and /metrics. */
#ifndef OT_HTTPD_H
#define OT_HTTPD_H

#include <stddef.h>

#include <jansson.h>
#include <microhttpd.h>

#include "ot_proxy.h"

struct ot_httpd;

/* One request as a route sees it, from its headers to its completion. */
struct ot_span;

struct ot_httpd_req {
	char method[16], path[128]; /* path with control and non-ASCII bytes as '?', for logs */
	const char *url;     /* the decoded path itself, while the route runs */
	char order_id[64];   /* the order it concerns, for its log lines; "" if none */
	char client[OT_ADDR_MAX]; /* who sent it: the peer's address, or behind a trusted proxy the
	                       * client its forwarding headers name (ot_proxy_client) */
	char *body;          /* the first OT_HTTPD_MAX_BODY bytes of the body, NUL-terminated */
	size_t len, seen;    /* bytes kept, bytes received: seen > OT_HTTPD_MAX_BODY means too big */
	unsigned status;     /* 0 until a response is queued */
	const char *route;   /* its name in ot_http_requests_total: the table's, "other" until then */
	long long t0;        /* us, monotonic, when its head arrived */
	struct MHD_Connection *con;
	void *ext;           /* the app's req_size zeroed bytes, freed with the request */
	struct ot_span *span; /* the app's span of the request, if it began one: current while the
	                       * request's last log line is written, before the app's done ends it */
	int parked;          /* 1 from ot_httpd_suspend to ot_httpd_resume, 2 after it */
	struct ot_httpd *srv;
	struct MHD_Response *pending; /* the answer given while parked, queued once resumed */
	unsigned pending_status;
};

#define OT_HTTPD_MAX_BODY (64 * 1024)

typedef enum MHD_Result (*ot_httpd_fn)(void *app, struct ot_httpd_req *rq);

/* A path the server answers. */
struct ot_httpd_route {
	const char *path;    /* exact */
	const char *name;    /* the route label in the metrics */
	const char *methods; /* "GET" (HEAD too) or "POST"; another method gets 405 with Allow */
	ot_httpd_fn fn;
};

struct ot_httpd_opts {
	const char *addr;    /* "[host:]port", "*:port", "[v6]:port" */
	int threads;         /* worker threads; < 1 means 1 */
	int max_per_client;  /* connections at once from one address; from a trusted proxy, requests
	                      * at once (live streams included) from one client, past which 429;
	                      * 0: no limit */
	const struct ot_httpd_route *routes; /* ends with a NULL path; may be NULL. A path here
	                                      * replaces the built-in /healthz, /readyz or /metrics */
	ot_httpd_fn fallback; /* any other path; NULL: 404 */
	/* Runs for a fallback request that announces a body, once its head is in and before any of
	 * the body is read: it answers (ot_httpd_reply*) a request that would be refused whatever
	 * the body holds (401, 404, 405, 415, 429), so no one holds a connection by sending a
	 * doomed body slowly; else it returns MHD_YES without an answer and the body is read. A
	 * route in the table is judged by its method alone. NULL: every body is read. */
	ot_httpd_fn head;
	const struct ot_proxies *trusted; /* peers whose forwarding headers name the client; NULL:
	                                   * none. Must outlive the server */
	int request_ms;      /* each request's head and body must arrive within this of the
	                      * connection's start or its previous answer; < 1 means 10 s */
	size_t req_size;     /* bytes of ext per request */
	/* The check behind the built-in /readyz: 0 when the tool can do its job now, else -1 with
	 * why. It runs at most once a second, one at a time, and should take under a second.
	 * NULL: /readyz answers as /healthz does. */
	int (*ready)(void *app, char *why, size_t whysz);
	void (*done)(void *app, struct ot_httpd_req *rq); /* each request's end; may be NULL */
	void (*quiesce)(void *app); /* at stop, once no new connection comes: end long answers */
	void *app;
	int max_connections; /* connections open at once, live streams included; < 1 means 1024.
	                      * Past it a new connection waits in the listen queue */
};

/* Binds o->addr and serves on o->threads threads, with per-client caps, one deadline
 * (o->request_ms) for each request's head and body together, a body that must also keep up 1 KiB
 * a second after its first second, 7 KiB per connection for a request head and its answer's
 * headers (431 past it), and 413 for bodies over 64 KiB (at once when Content-Length says so).
 * A GET or HEAD that announces a body is 400, and a method a route does not take 405, before
 * the body is read. Counts every request in ot_http_requests_total{route,code} and
 * ot_http_request_duration_seconds, connections cut for slowness in ot_http_slow_heads_total
 * and ot_http_slow_bodies_total, and those refused past the per-client cap in
 * ot_http_client_refused_total.
 * Returns NULL with *rc and errstr: OT_ESERVICE when the address is in use, OT_ECONFIG when it
 * is not one to listen on, OT_EINTERNAL otherwise. Free with ot_httpd_stop. */
struct ot_httpd *ot_httpd_start(const struct ot_httpd_opts *o, int *rc, char *errstr, size_t errsz);
/* Stops accepting, runs quiesce, lets requests in flight finish (up to 5 s), then stops and
 * frees. Accepts NULL. */
void ot_httpd_stop(struct ot_httpd *s);

/* Answers rq; the body is copied, freed or persistent as mode says (freed on failure too when
 * MHD_RESPMEM_MUST_FREE). headers: name, value pairs ending with NULL, or NULL. */
enum MHD_Result ot_httpd_reply(struct ot_httpd_req *rq, unsigned status, const char *type, const char *body,
                               size_t len, enum MHD_ResponseMemoryMode mode, const char *const *headers);
/* Answers o (stolen) as one line of JSON; a NULL o (json_pack failed) becomes a 500. */
enum MHD_Result ot_httpd_reply_json(struct ot_httpd_req *rq, unsigned status, json_t *o,
                                    const char *const *headers);
/* Answers {"error": msg}. */
enum MHD_Result ot_httpd_reply_error(struct ot_httpd_req *rq, unsigned status, const char *msg,
                                     const char *const *headers);
/* Takes rq off its event-loop thread, so the slow part of its answer runs elsewhere: called
 * by a route, which then returns MHD_YES. MHD leaves the connection alone until
 * ot_httpd_resume; meanwhile another thread answers it with ot_httpd_reply* (the answer is
 * kept and queued on resume) and reads rq, whose headers stay in place. A request resumed
 * without an answer is dispatched again: its route runs once more and must know from its own
 * state (rq->ext) where it left off. */
void ot_httpd_suspend(struct ot_httpd_req *rq);
/* Gives rq back to its event loop, from any thread; the caller must not touch rq after this. */
void ot_httpd_resume(struct ot_httpd_req *rq);
/* The built-in GET /metrics, for an app route that wraps it. */
enum MHD_Result ot_httpd_metrics(void *app, struct ot_httpd_req *rq);

#endif
