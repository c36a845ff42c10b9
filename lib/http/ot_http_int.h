/* ot_http_int: what the files behind ot_http share — the server, a request's state, and what
 * each file offers the others. Private to lib/http/: ot-serve sees ot_http.h only. */
#ifndef OT_HTTP_INT_H
#define OT_HTTP_INT_H

#include <jansson.h>
#include <libpq-fe.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "ot_breaker.h"
#include "ot_cache.h"
#include "ot_httpd.h"
#include "ot_limit.h"
#include "ot_pool.h"
#include "ot_rlink.h"
#include "ot_rpipe.h"
#include "ot_status.h"
#include "ot_trace.h"

#define MAX_BODY OT_HTTPD_MAX_BODY /* a larger request body is answered 413 */
#define REDIS_TIMEOUT_MS 1000     /* as ot_rlink_conn connects */
#define API_ROUTES_MAX 8          /* routes outside the order API, for ot_httpd's table */

/* One worker thread's connections, on the list ot_http_stop frees. */
struct conns {
	PGconn *db;
	int db_pid;          /* the backend STATEMENT_TIMEOUT was set on: PQreset forgets it */
	struct ot_rlink redis; /* the rate limiter's and readiness check's */
	struct conns *next;
};

struct ot_http {
	struct ot_httpd *srv;
	char *orders_db, *redis_url;
	char *api_keys;      /* comma-separated; NULL: writes are refused */
	char *ws_origins;    /* comma-separated Origins a WebSocket may come from; NULL: any */
	struct ot_breaker redis_cb, pg_cb;
	struct ot_limit *limit; /* the rate limiter; NULL until started */
	struct ot_live *live;
	struct ot_cache *cache; /* the order status cache (the caller's) */
	struct ot_lcache *lc; /* hot statuses in process; NULL when off */
	struct ot_rpipe *pipe; /* the event loops' reads of Redis, pipelined */
	struct ot_pool *slow; /* database calls and waits, off the event loops */
	int breakers;        /* initialised: destroy them */
	pthread_mutex_t mu;  /* guards conns */
	struct conns *conns;
	pthread_mutex_t ready_mu; /* one readiness check at a time; guards the three below */
	long long ready_at;  /* ms, monotonic, of the last check; 0: none yet */
	int ready_db, ready_redis; /* what it found: 1 answered */
	struct ot_httpd_route routes[API_ROUTES_MAX + 1]; /* ot_httpd's table, from ot_api's */
};

struct call;

/* What ot-serve keeps per request beside ot_httpd's. */
struct serve_req {
	void *ws;            /* a WebSocket stream its upgrade has not taken (yet) */
	int auth;            /* 1 a valid API key, -1 a key that is not one, 0 none */
	char key_id[65];     /* a valid key's name for the rate limiter and idempotency keys: its
	                      * SHA-256, never the key */
	struct ot_span span; /* an /orders request's, from its route to its completion */
	struct ot_limit_req lim; /* the rate limiter's check, while it waits on Redis */
	/* While the request is off its event loop (ot_httpd_suspend): */
	struct ot_http *h;
	struct ot_httpd_req *rq;
	struct ot_cache_rd rd; /* its status read, between its steps */
	struct ot_pool_job pj; /* its database call */
	enum MHD_Result (*fn)(struct call *x); /* what the pool runs for it */
	char oid[64];        /* the order it reads */
	const char *inm;     /* its If-None-Match, in MHD's memory for the request */
};

/* What a route works with. */
struct call {
	struct ot_http *h;
	struct conns *c;
	struct MHD_Connection *con;
	struct ot_httpd_req *rq;
	struct serve_req *sr;
};

/* Queues the response; the body is copied, freed or persistent as mode says. */
static inline enum MHD_Result
reply(struct call *x, unsigned status, const char *type, const char *body, size_t len,
      enum MHD_ResponseMemoryMode mode, const char *const *headers)
{
	return ot_httpd_reply(x->rq, status, type, body, len, mode, headers);
}

/* Sends o (stolen) as one line of JSON; a NULL o (json_pack failed) becomes a 500. */
static inline enum MHD_Result
reply_json(struct call *x, unsigned status, json_t *o, const char *const *headers)
{
	return ot_httpd_reply_json(x->rq, status, o, headers);
}

static inline enum MHD_Result
reply_error(struct call *x, unsigned status, const char *msg, const char *const *headers)
{
	return ot_httpd_reply_error(x->rq, status, msg, headers);
}

/* Writes and ?full=1 need a key from OT_API_KEY: 1 when ot_api found a valid one. */
static inline int
authorized(const struct call *x)
{
	return x->sr->auth == 1;
}

/* ot_call.c: a route's call, the worker threads' database connections, the pool. */

/* Fills the call a route works with; -1 when out of memory. */
int ot_call_of(void *app, struct ot_httpd_req *rq, struct call *x);
/* Answers x's request with fn, run on the pool: what may wait on the database never holds an
 * event loop. */
enum MHD_Result ot_call_offload(struct call *x, enum MHD_Result (*fn)(struct call *x));
/* ot_call_offload for a request suspended already (its Redis read missed): fn answers it on
 * the pool, then it resumes. */
void ot_call_offload_suspended(struct serve_req *sr, enum MHD_Result (*fn)(struct call *x));
/* The thread's database connection, reset if it broke; NULL while PostgreSQL is unreachable. */
PGconn *ot_call_db_connect(struct call *x);
/* The thread's database connection, or NULL at once while the PostgreSQL circuit is open. The
 * caller reports how the call went with ot_call_db_done. */
PGconn *ot_call_db(struct call *x);
void ot_call_db_done(struct call *x, int rc);
/* True when a call that failed with rc may run once more: the connection broke under it (a
 * server restart) and a fresh one is at hand in *db. */
int ot_call_db_retry(struct call *x, int rc, PGconn **db);
/* SELECT 1 within timeout_ms on the thread's connection, which is dropped when it does not
 * answer in time. Returns 0 or OT_ESERVICE. */
int ot_call_db_ping(struct conns *c, int timeout_ms);
/* Frees every worker thread's connections: once no thread uses them. */
void ot_call_conns_free(struct ot_http *h);

/* ot_reply.c: the answers several routes share. */

enum MHD_Result ot_reply_not_allowed(struct call *x, const char *const *allow);
/* 503 with Retry-After: the orders database is unavailable. */
enum MHD_Result ot_reply_unavailable(struct call *x);
/* The answer to a failed library call: 503 while a service is down, else 500. */
enum MHD_Result ot_reply_failed(struct call *x, int rc, const char *err);
enum MHD_Result ot_reply_not_found(struct call *x, const char *id);
/* 401, saying how to authenticate, or that writes are off without OT_API_KEY. */
enum MHD_Result ot_reply_unauthorized(struct call *x);
/* 1 when ctype is application/json (with parameters or not). */
int ot_reply_is_json(const char *ctype);

/* ot_read.c: order status reads, in the one read order. */

/* Registers ot_cache_reads_total. */
void ot_read_metrics(void);
/* GET /orders/{id}: from the in-process cache at once; else Redis through the pipe, then the
 * database on the pool, the request suspended meanwhile. ?full=1 (with a key): the whole order
 * from the database. */
enum MHD_Result ot_read_get(struct call *x, const char *id);
/* The status of one order, blocking (the live streams' first read), in the same read order.
 * Returns 1 found, 0 unknown, or an ot_rc with err. */
int ot_read_status(struct call *x, const char *id, struct ot_status *st, char *err, size_t errsz);

/* ot_write.c: the order API's writes. */

/* POST /orders: the same placement as ot-place, on the pool. */
enum MHD_Result ot_write_place(struct call *x);
/* POST /orders/{id}/cancel (id in x->sr->oid), on the pool. */
enum MHD_Result ot_write_cancel(struct call *x);

/* ot_watch.c: live streams. */

/* GET /orders/{id}/events (SSE; or WebSocket when the request asks to upgrade; ws_only: the
 * /ws path, which speaks WebSocket only). */
enum MHD_Result ot_watch_start(struct call *x, const char *id, int ws_only);

/* ot_api.c: the route table and what every order API request goes through. */

/* Fills r (API_ROUTES_MAX + 1 entries) with the table's routes outside the order API, for
 * ot_httpd, ending with a NULL path. */
void ot_api_plain_routes(struct ot_httpd_route *r);
/* ot_httpd's fallback: the order API, authenticated, rate-limited and traced. */
enum MHD_Result ot_api_dispatch(void *app, struct ot_httpd_req *rq);
/* ot_httpd's head hook: what the order API refuses before the body is read. */
enum MHD_Result ot_api_head(void *app, struct ot_httpd_req *rq);
/* ot_httpd's done hook: a request's end. */
void ot_api_done(void *app, struct ot_httpd_req *rq);

/* ot_http.c: health. */

/* GET /healthz and GET /readyz, as routes of the table. */
enum MHD_Result ot_http_healthz(void *app, struct ot_httpd_req *rq);
enum MHD_Result ot_http_readyz(void *app, struct ot_httpd_req *rq);

#endif
