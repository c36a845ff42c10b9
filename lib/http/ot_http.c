/* ot_http: ot-serve's routes, JSON errors, and per-thread database and cache connections,
 * served by ot_httpd. */
#include <jansson.h>
#include <microhttpd.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "ot_breaker.h"
#include "ot_cache.h"
#include "ot_config.h"
#include "ot_err.h"
#include "ot_event.h"
#include "ot_http.h"
#include "ot_httpd.h"
#include "ot_lcache.h"
#include "ot_live.h"
#include "ot_log.h"
#include "ot_metrics.h"
#include "ot_order.h"
#include "ot_pg.h"
#include "ot_pool.h"
#include "ot_rcluster.h"
#include "ot_redis.h"
#include "ot_rlink.h"
#include "ot_rpipe.h"
#include "ot_text.h"
#include "ot_trace.h"

#define THREADS 4
#define API_CONNECTIONS 1024      /* connections beside the live streams */
#define STREAMS_RETRY_S "5"       /* Retry-After of a stream refused for want of a slot */
#define SLOW_THREADS 4            /* threads with a database connection each, for the slow part */
#define MAX_BODY OT_HTTPD_MAX_BODY /* a larger request body is answered 413 */
#define REDIS_TIMEOUT_MS 1000     /* as ot_rlink_conn connects */
#define READY_TIMEOUT_MS 500      /* per check, so /readyz answers well within a probe's timeout */
#define READY_MAX_AGE_MS 1000     /* /readyz answers from a check at most this old */
#define READY_FRESH_MS 10000      /* /healthz trusts the last readiness check this long */
#define BREAKER_FAILURES 5        /* failures in a row that open a circuit */
#define BREAKER_OPEN_MS 2000      /* how long it stays open before one probe */
#define AUTH_FAIL_RATE (1.0 / 6)  /* failed authentications a second per address, after ... */
#define AUTH_FAIL_BURST 10        /* ... this many at once */
#define LEASES 256                /* clients holding leased requests at once (by hash: a clash drops one) */
#define LEASE_MS 100              /* a lease is at most this long of a client's rate ... */
#define LEASE_MAX 64              /* ... at most this many requests, and a quarter of its burst */
/* A stuck statement must not hold one of the few worker threads for long. */
#define STATEMENT_TIMEOUT "SET statement_timeout = '5s'"

/* The page may run its own inline script and style, and talk to this server only. */
#define PAGE_CSP "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; " \
                 "connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'"

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
	double rate;         /* requests a second per client; 0: no limit */
	int burst;
	struct ot_breaker redis_cb, pg_cb;
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
	int lease_n;         /* requests the limiter takes from Redis at once; 1: no leases */
	pthread_mutex_t lease_mu; /* guards lease */
	struct lease {       /* requests a client was granted in Redis and has not made yet */
		char client[96];
		int left;
		long long until; /* ms, monotonic: unused, they lapse */
	} lease[LEASES];
};

struct call;

/* What ot-serve keeps per request beside ot_httpd's. */
struct serve_req {
	void *ws;            /* a WebSocket stream its upgrade has not taken (yet) */
	int auth;            /* 1 a valid API key, -1 a key that is not one, 0 none */
	char key_id[65];     /* a valid key's name for the rate limiter and idempotency keys: its
	                      * SHA-256, never the key */
	struct ot_span span; /* an /orders request's, from its route to its completion */
	/* While the request is off its event loop (ot_httpd_suspend): */
	struct ot_http *h;
	struct ot_httpd_req *rq;
	struct ot_rpipe_job rj; /* its Redis read */
	struct ot_pool_job pj; /* its database call */
	enum MHD_Result (*fn)(struct call *x); /* what the pool runs for it */
	char oid[64];        /* the order it reads */
	const char *inm;     /* its If-None-Match, in MHD's memory for the request */
	uint64_t mark;       /* ot_lcache_mark before Redis was read */
	int via_redis;       /* the database read may refill Redis: it answered a miss */
	/* The rate limiter's check, when it waited on Redis: */
	int limit;           /* 0 not decided, 1 go on, 2 refused for wait_ms */
	long wait_ms;
	char client[96];
	int take;            /* requests asked for: a lease, or 1 */
	int source;          /* the script's source was sent (Redis had lost it) */
};

/* What a route works with. */
struct call {
	struct ot_http *h;
	struct conns *c;
	struct MHD_Connection *con;
	struct ot_httpd_req *rq;
	struct serve_req *sr;
};

/* Where an order read was served from. */
enum ot_cache_result { OT_C_HIT, OT_C_MISS, OT_C_BYPASS, OT_C_LOCAL, OT_C_COUNT };
static const char *const cache_label[OT_C_COUNT] = {"hit", "miss", "bypass", "local"};
static struct ot_metric *m_reads, *m_limited, *m_circuit, *m_opens, *m_rejected, *m_degraded, *m_streams,
	*m_subscribed, *m_messages, *m_sent, *m_lentries, *m_lflushes, *m_db_down;

static _Thread_local struct conns *tconns;


/* The calling worker thread's connections, created on its first request; NULL when out of memory. */
static struct conns *
thread_conns(struct ot_http *h)
{
	if (tconns || !(tconns = calloc(1, sizeof *tconns)))
		return tconns;
	pthread_mutex_lock(&h->mu);
	tconns->next = h->conns;
	h->conns = tconns;
	pthread_mutex_unlock(&h->mu);
	return tconns;
}

/* The thread's database connection, reset if it broke; NULL while PostgreSQL is unreachable. */
static PGconn *
db_connect(struct call *x)
{
	struct conns *c = x->c;
	struct pollfd p = {c->db ? PQsocket(c->db) : -1, POLLIN, 0};
	char err[512];
	int i;

	/* An idle connection has nothing to read unless the server closed it (a restart: its last
	 * words, then EOF). Reading them marks it bad, so ot_pg_ensure reconnects before a request
	 * fails on it: a POST without request_id may not be retried. */
	for (i = 0; i < 4 && c->db && PQstatus(c->db) == CONNECTION_OK && poll(&p, 1, 0) > 0; i++)
		if (!PQconsumeInput(c->db))
			break;
	if (c->db && ot_pg_ensure(c->db, err, sizeof err)) {
		err[strcspn(err, "\n")] = '\0';
		OT_WARN(x->rq->order_id, "PostgreSQL unreachable: %s", err);
		return NULL;
	}
	if (!c->db && !(c->db = ot_pg_connect(x->h->orders_db, err, sizeof err))) {
		OT_WARN(x->rq->order_id, "%s", err);
		return NULL;
	}
	if (PQbackendPID(c->db) != c->db_pid) {
		if (ot_pg_exec(c->db, STATEMENT_TIMEOUT, 0, NULL, err, sizeof err))
			OT_WARN(NULL, "%s", err);
		else
			c->db_pid = PQbackendPID(c->db);
	}
	return c->db;
}

/* The thread's database connection, or NULL at once while the PostgreSQL circuit is open. The
 * caller reports how the call went with db_done. */
static PGconn *
db_of(struct call *x)
{
	PGconn *db;

	if (!ot_breaker_allow(&x->h->pg_cb))
		return NULL;
	if (!(db = db_connect(x)))
		ot_breaker_done(&x->h->pg_cb, 0);
	return db;
}

static void
db_done(struct call *x, int rc)
{
	ot_breaker_done(&x->h->pg_cb, rc != OT_ESERVICE);
}

/* True when a call that failed with rc may run once more: the connection broke under it (a
 * server restart) and a fresh one is at hand in *db. */
static int
db_retry(struct call *x, int rc, PGconn **db)
{
	if (rc != OT_ESERVICE || PQstatus(*db) != CONNECTION_BAD)
		return 0;
	OT_INFO(x->rq->order_id, "PostgreSQL connection lost, trying once more");
	return (*db = db_connect(x)) != NULL;
}

/* SELECT 1 within timeout_ms. A connection that does not answer in time is dropped, so the
 * next check starts afresh. Returns 0 or OT_ESERVICE. */
static int
db_ping(struct conns *c, int timeout_ms)
{
	long long deadline = ot_now_ms() + timeout_ms;
	struct pollfd p = {PQsocket(c->db), POLLIN, 0};
	PGresult *res;
	int ok = 0;

	if (!PQsendQuery(c->db, "SELECT 1"))
		return OT_ESERVICE;
	while (PQisBusy(c->db)) {
		int left = (int)(deadline - ot_now_ms());
		if (left <= 0 || poll(&p, 1, left) == 0) {
			PQfinish(c->db);
			c->db = NULL;
			return OT_ESERVICE;
		}
		if (!PQconsumeInput(c->db))
			break;
	}
	while ((res = PQgetResult(c->db))) {
		ok |= PQresultStatus(res) == PGRES_TUPLES_OK;
		PQclear(res);
	}
	return ok ? 0 : OT_ESERVICE;
}

/* Queues the response; the body is copied, freed or persistent as mode says. */
static enum MHD_Result
reply(struct call *x, unsigned status, const char *type, const char *body, size_t len,
      enum MHD_ResponseMemoryMode mode, const char *const *headers)
{
	return ot_httpd_reply(x->rq, status, type, body, len, mode, headers);
}

/* Sends o (stolen) as one line of JSON; a NULL o (json_pack failed) becomes a 500. */
static enum MHD_Result
reply_json(struct call *x, unsigned status, json_t *o, const char *const *headers)
{
	return ot_httpd_reply_json(x->rq, status, o, headers);
}

static enum MHD_Result
reply_error(struct call *x, unsigned status, const char *msg, const char *const *headers)
{
	return ot_httpd_reply_error(x->rq, status, msg, headers);
}


static enum MHD_Result
not_allowed(struct call *x, const char *const *allow)
{
	return reply_error(x, 405, "method not allowed", allow);
}

static enum MHD_Result
unavailable(struct call *x)
{
	static const char *const retry[] = {"Retry-After", "1", NULL};

	return reply_error(x, 503, "the orders database is unavailable", retry);
}

/* The answer to a failed library call: 503 while a service is down, else 500. */
static enum MHD_Result
failed(struct call *x, int rc, const char *err)
{
	OT_WARN(x->rq->order_id, "%s %s: %s", x->rq->method, x->rq->path, err);
	/* A race still lost after the second look is worth a retry, like a service down. */
	return rc == OT_ESERVICE || rc == OT_ERACE ? unavailable(x) : reply_error(x, 500, "internal error", NULL);
}

static int
is_json(const char *ctype)
{
	return ctype && !strncasecmp(ctype, "application/json", 16) &&
	       (!ctype[16] || ctype[16] == ';' || ctype[16] == ' ');
}

static enum MHD_Result
not_found(struct call *x, const char *id)
{
	return reply_json(x, 404, json_pack("{s:s, s:s}", "error", "order not found", "order_id", id), NULL);
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

/* 1 when key is one of the comma-separated keys. */
static int
key_valid(const char *keys, const char *key)
{
	const char *k, *end;
	size_t kl = strlen(key);

	for (k = keys; *k; k = *end ? end + 1 : end) {
		size_t n = strcspn(k, ",");
		unsigned char diff = n != kl;
		end = k + n;
		/* Time independent of where the first difference is. */
		for (size_t i = 0; i < n; i++)
			diff |= (unsigned char)(k[i] ^ (i < kl ? key[i] : 0));
		if (!diff)
			return 1;
	}
	return 0;
}

/* Checks the request's key once, into rq->auth and rq->key_id. */
static void
authenticate(struct call *x)
{
	const char *key = key_of(x);

	x->sr->auth = !key ? 0 : x->h->api_keys && key_valid(x->h->api_keys, key) ? 1 : -1;
	if (x->sr->auth != 1)
		return;
	ot_sha256_hex(key, strlen(key), x->sr->key_id);
}

/* Writes and ?full=1 need a key from OT_API_KEY. Returns 1 when authenticate found a valid one. */
static int
authorized(struct call *x)
{
	return x->sr->auth == 1;
}

static enum MHD_Result
unauthorized(struct call *x)
{
	static const char *const www[] = {"WWW-Authenticate", "Bearer realm=\"ordertrack\"", NULL};

	return reply_error(x, 401, x->h->api_keys ? "a valid API key is required: Authorization: Bearer KEY"
	                                          : "writes are disabled: ot-serve runs without OT_API_KEY", www);
}

/* GET /orders/{id}?full=1: the whole order, always from the database; the caller checked the key. */
static enum MHD_Result
get_full(struct call *x, const char *id)
{
	static const char *const bypass[] = {"X-Cache", "BYPASS", NULL};
	PGconn *db;
	json_t *o;
	char err[512];
	int rc;

	if (!(db = db_of(x)))
		return unavailable(x);
	o = ot_order_get_full(db, id, &rc, err, sizeof err);
	if (!o && db_retry(x, rc, &db))
		o = ot_order_get_full(db, id, &rc, err, sizeof err);
	db_done(x, o ? 0 : rc);
	if (!o && rc)
		return failed(x, rc, err);
	if (!o)
		return not_found(x, id);
	return reply_json(x, 200, o, bypass);
}

/* Where lookup may leave the status as one JSON line, when it has one ready. */
struct body {
	char buf[512];
	size_t len;          /* 0: none */
};

/* The database half of a status read: after Redis answered a miss (via_redis: refill it under
 * the single-flight lock), or without Redis (down, its circuit open, or the order dirty).
 * What a refill answered goes into the in-process cache unless Redis invalidated the order
 * since mark. Returns as lookup. */
static int
lookup_db(struct call *x, const char *id, int via_redis, uint64_t mark, struct ot_status *st,
          enum ot_cache_result *how, char *err, size_t errsz)
{
	PGconn *db;
	int hit = -1, rc;

	*how = OT_C_BYPASS;
	if (!(db = db_of(x)))
		return ot_err(OT_ESERVICE, err, errsz, "the orders database is unavailable");
	rc = via_redis ? ot_cache_refill(x->h->cache, db, id, st, &hit, err, errsz) : ot_order_load(db, id, st, err, errsz);
	if (db_retry(x, rc, &db))
		rc = via_redis ? ot_cache_refill(x->h->cache, db, id, st, &hit, err, errsz)
		               : ot_order_load(db, id, st, err, errsz);
	db_done(x, rc);
	*how = hit == 1 ? OT_C_HIT : hit == 0 ? OT_C_MISS : OT_C_BYPASS;
	if (rc == 1 && *how != OT_C_BYPASS && x->h->lc)
		ot_lcache_put(x->h->lc, st, mark);
	return rc;
}

/* The status of one order, blocking (the live streams' first read): the in-process cache,
 * then Redis, so a hit needs no database; else the database, refilling Redis under the
 * single-flight lock; with Redis down or its circuit open, the database alone. What Redis or
 * the refill answered goes into the in-process cache unless Redis invalidated the order
 * meanwhile. Returns 1 found (*how says where from; body, if not NULL, may get the JSON line),
 * 0 unknown, or an ot_rc with err. */
static int
lookup(struct call *x, const char *id, struct ot_status *st, enum ot_cache_result *how, struct body *body,
       char *err, size_t errsz)
{
	uint64_t mark = 0;
	int rc;

	*how = OT_C_BYPASS;
	if (body)
		body->len = 0;
	/* A status this server committed while Redis did not take it: the cache may be behind. */
	if (ot_cache_dirty(x->h->cache, id))
		return lookup_db(x, id, 0, 0, st, how, err, errsz);
	if (x->h->lc && ot_lcache_get(x->h->lc, id, st, body ? body->buf : NULL, body ? sizeof body->buf : 0,
	                              body ? &body->len : NULL)) {
		*how = OT_C_LOCAL;
		ot_cache_count(x->h->cache, 1);
		return 1;
	}
	if (x->h->lc)
		mark = ot_lcache_mark(x->h->lc, id);
	rc = ot_cache_read(x->h->cache, id, st, err, errsz);
	if (rc == 1) {
		*how = OT_C_HIT;
		if (x->h->lc)
			ot_lcache_put(x->h->lc, st, mark);
		return 1;
	}
	if (rc < 0 && err[0])
		OT_WARN(id, "cache read failed, reading the database: %s", err);
	return lookup_db(x, id, rc == 0, mark, st, how, err, errsz);
}

static int call_of(void *app, struct ot_httpd_req *rq, struct call *x);

/* Runs x->sr->fn on the pool, off the event loop: it answers, then the request resumes. */
static void
slow_job(struct ot_pool_job *j)
{
	struct serve_req *sr = (struct serve_req *)(void *)((char *)j - offsetof(struct serve_req, pj));
	struct ot_httpd_req *rq = sr->rq;
	struct ot_span here;
	struct call x;

	/* The request's span is this thread's current one through a copy: the event thread may
	 * still have the span itself entered, and which span is current is each thread's own. */
	here = sr->span;
	here.current = 0;
	here.prev = NULL;
	ot_span_enter(&here);
	if (call_of(sr->h, rq, &x))
		ot_httpd_reply_error(rq, 500, "out of memory", NULL);
	else
		sr->fn(&x);
	/* Resumed without an answer, the route would run again: a write twice. */
	if (!rq->pending)
		ot_httpd_reply_error(rq, 500, "internal error", NULL);
	ot_span_leave(&here);
	ot_httpd_resume(rq);
}

/* Answers x's request with fn, run on the pool: what may wait on the database never holds an
 * event loop. */
static enum MHD_Result
offload(struct call *x, enum MHD_Result (*fn)(struct call *x))
{
	x->sr->fn = fn;
	x->sr->pj.fn = slow_job;
	ot_httpd_suspend(x->rq);
	ot_pool_run(x->h->slow, &x->sr->pj);
	return MHD_YES;
}

/* The answer to a status read that returned rc (as lookup) with st from how; body, when not
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
		return failed(x, rc, err);
	if (rc == 0)
		return not_found(x, st->order_id[0] ? st->order_id : x->sr->oid);
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

	ot_breaker_done(&h->redis_cb, rc >= 0);
	if (rc == 1) {
		ot_cache_count(h->cache, 1);
		if (h->lc)
			ot_lcache_put(h->lc, &st, sr->mark);
		answer_status(&x, 1, &st, OT_C_HIT, NULL, "");
		if (!sr->rq->pending)
			ot_httpd_reply_error(sr->rq, 500, "internal error", NULL);
		ot_httpd_resume(sr->rq);
		return;
	}
	if (rc == 0)
		ot_cache_count(h->cache, 0);
	else
		OT_WARN(sr->oid, "cache read failed, reading the database: Redis HGETALL: %s",
		        rep && rep->str ? rep->str : "no reply");
	sr->via_redis = rc == 0;
	sr->fn = get_db;
	sr->pj.fn = slow_job;
	ot_pool_run(h->slow, &sr->pj);
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

/* GET /orders/{id}: from the in-process cache at once; else Redis through the pipe, then the
 * database on the pool, the request suspended meanwhile. */
static enum MHD_Result
get_order(struct call *x, const char *id)
{
	const char *full = MHD_lookup_connection_value(x->con, MHD_GET_ARGUMENT_KIND, "full");
	struct serve_req *sr = x->sr;
	struct ot_status st;
	struct body body;
	uint64_t mark;
	int len, refresh;

	if (!ot_uuid_valid(id))
		return reply_error(x, 400, "order id must be a UUID", NULL);
	snprintf(x->rq->order_id, sizeof x->rq->order_id, "%s", id);
	snprintf(sr->oid, sizeof sr->oid, "%s", id);
	/* The whole order names a customer and an address: only a key holder may read it. */
	if (full && (!strcmp(full, "1") || !strcmp(full, "true")))
		return authorized(x) ? offload(x, get_full_db) : unauthorized(x);
	sr->inm = MHD_lookup_connection_value(x->con, MHD_HEADER_KIND, MHD_HTTP_HEADER_IF_NONE_MATCH);
	sr->via_redis = 0;
	/* A status this server committed while Redis did not take it: the cache may be behind. */
	if (ot_cache_dirty(x->h->cache, id))
		return offload(x, get_db);
	if (x->h->lc && ot_lcache_get_refresh(x->h->lc, id, &st, body.buf, sizeof body.buf, &body.len, &refresh,
	                                      &mark)) {
		if (refresh)
			refresh_ahead(x->h, id, mark);
		ot_cache_count(x->h->cache, 1);
		return answer_status(x, 1, &st, OT_C_LOCAL, &body, "");
	}
	if (!ot_breaker_allow(&x->h->redis_cb))
		return offload(x, get_db);
	if ((len = ot_redis_status_cmd(&sr->rj.cmd, id)) < 0) {
		ot_breaker_done(&x->h->redis_cb, 1);
		return reply_error(x, 500, "out of memory", NULL);
	}
	sr->rj.len = len;
	sr->rj.done = got_status;
	sr->rj.slot = (int)ot_rlink_order_slot(id);
	sr->mark = x->h->lc ? ot_lcache_mark(x->h->lc, id) : 0;
	ot_httpd_suspend(x->rq);
	ot_rpipe_send(x->h->pipe, &sr->rj);
	return MHD_YES;
}

/* The client's address, as "ip:ADDR": behind a trusted proxy, the one its headers name. */
static void
addr_of(struct call *x, char *out, size_t outsz)
{
	snprintf(out, outsz, "ip:%s", x->rq->client);
}

/* Takes one request from client's lease: 1 when it had one. */
static int
lease_take(struct ot_http *h, const char *client)
{
	struct lease *l = &h->lease[ot_hash32(client) % LEASES];
	int got = 0;

	pthread_mutex_lock(&h->lease_mu);
	if (l->left > 0 && !strcmp(l->client, client) && ot_now_ms() < l->until) {
		l->left--;
		got = 1;
	}
	pthread_mutex_unlock(&h->lease_mu);
	return got;
}

/* client may make n more requests without asking Redis, for LEASE_MS. Several of its requests
 * may have asked at once: what is left of a lease still running adds up, since Redis counted it. */
static void
lease_give(struct ot_http *h, const char *client, int n)
{
	struct lease *l = &h->lease[ot_hash32(client) % LEASES];
	long long now = ot_now_ms();

	pthread_mutex_lock(&h->lease_mu);
	if (strcmp(l->client, client) || now >= l->until)
		l->left = 0;
	snprintf(l->client, sizeof l->client, "%s", client);
	l->left += n;
	l->until = now + LEASE_MS;
	pthread_mutex_unlock(&h->lease_mu);
}

/* The slot of a client's rate-limit key, for the pipe to find its master on a cluster. */
static int
limit_slot(const char *client)
{
	char key[112];
	int n = snprintf(key, sizeof key, OT_REDIS_RL_FMT, client);

	return (int)ot_rcluster_slot(key, n < (int)sizeof key ? (size_t)n : sizeof key - 1);
}

/* Queues sr's GCRA check on the pipe; -1 when out of memory. */
static int
limit_send(struct serve_req *sr)
{
	int len = ot_redis_gcra_cmd(&sr->rj.cmd, sr->client, sr->h->rate, sr->h->burst, sr->take, sr->source);

	if (len < 0)
		return -1;
	sr->rj.len = len;
	sr->rj.slot = limit_slot(sr->client);
	ot_rpipe_send(sr->h->pipe, &sr->rj);
	return 0;
}

/* Redis answered a request's limiter check (on the pipe's thread): as within_limit decides,
 * then the request goes on (or is refused) on its event loop. */
static void
got_limit(struct ot_rpipe_job *j, redisReply *rep)
{
	struct serve_req *sr = (struct serve_req *)(void *)((char *)j - offsetof(struct serve_req, rj));
	struct ot_http *h = sr->h;
	long wait_ms;
	int rc = ot_redis_gcra_of(rep, &wait_ms);

	if (rc < 0 && ot_redis_noscript(rep) && !sr->source) { /* Redis restarted: load it again */
		sr->source = 1;
		if (!limit_send(sr))
			return;
	} else if (rc == 0 && sr->take > 1) { /* not room for a lease: perhaps for this one */
		sr->take = 1;
		sr->source = 0;
		if (!limit_send(sr))
			return;
	}
	if (rc == 1 && sr->take > 1)
		lease_give(h, sr->client, sr->take - 1);
	ot_breaker_done(&h->redis_cb, rc >= 0);
	if (rc < 0)
		OT_WARN(NULL, "rate limit not checked: Redis: %s", rep && rep->str ? rep->str : "no reply");
	sr->wait_ms = rc == 0 ? wait_ms : 0;
	sr->limit = rc == 0 ? 2 : 1;
	ot_httpd_resume(sr->rq);
}

/* ot_redis_gcra on this thread's connection to the client's key's master, once more after a
 * cluster's map was read again (a slot that moved). With Redis down or its circuit open, 1 (go
 * on: the limiter fails open). The breaker hears whether the connection held: an answer that
 * was an error is the limiter's to report, not a Redis outage. */
static int
gcra_sync(struct call *x, const char *client, double per_s, int burst, int take, long *wait_ms, char *err,
          size_t errsz)
{
	char key[112];
	redisContext *r;
	int rc = OT_ESERVICE, tries = 0;

	if (!ot_breaker_allow(&x->h->redis_cb))
		return 1;
	snprintf(key, sizeof key, OT_REDIS_RL_FMT, client);
	do
		r = ot_rlink_conn(&x->c->redis, x->h->redis_url, key);
	while ((!r || (rc = ot_redis_gcra(r, client, per_s, burst, take, wait_ms, err, errsz)) < 0) &&
	       ot_rlink_retry(&x->c->redis, r, r ? rc : OT_ESERVICE, &tries));
	ot_breaker_done(&x->h->redis_cb, r && !r->err);
	return r ? rc : 1;
}

/* GCRA in Redis, per client: a valid API key, else the address (a key that is not valid is no
 * identity: a new one per request must not buy a fresh limit), behind a trusted proxy the
 * client's own. A request with a valid key is judged by its key's budget alone; one with a
 * wrong key also counts against its address's stricter limit on failed authentications, past
 * which it gets 429, so one client sending junk keys slows itself and no one else (behind the
 * ingress, without trusted proxies, its address is everyone's). With Redis down or its circuit
 * open nothing is enforced (fails open), since refusing every client would turn a cache outage
 * into an API outage.
 * Where the rate allows (lease_n > 1), a request takes lease_n requests from Redis at once when
 * all may pass, and the client's next ones spend them here without a round trip: Redis has
 * counted them already, so no client gets more than its limit across every server; a lease not
 * spent within LEASE_MS lapses (the client loses those few). A request without a key waits for
 * Redis off the event loop: suspended while its check goes through the pipe. Returns 1 to go
 * on, 0 refused (*wait_ms), -1 suspended (its route runs again once Redis answered). */
static int
within_limit(struct call *x, long *wait_ms)
{
	char addr[72], client[96], err[256];
	/* A request with a wrong key spends no lease and takes none: it is refused all the sooner. */
	int rc = 1, n = x->sr->auth < 0 ? 1 : x->h->lease_n;

	*wait_ms = 0;
	if (x->sr->limit) { /* decided while it was suspended */
		*wait_ms = x->sr->wait_ms;
		return x->sr->limit == 1;
	}
	if (x->h->rate <= 0 && !x->sr->auth)
		return 1;
	addr_of(x, addr, sizeof addr);
	if (x->sr->auth > 0)
		snprintf(client, sizeof client, "key:%s", x->sr->key_id);
	else
		snprintf(client, sizeof client, "%s", addr);
	if (!x->sr->auth && lease_take(x->h, client))
		return 1;
	if (!x->sr->auth) {
		if (!ot_breaker_allow(&x->h->redis_cb))
			return 1;
		snprintf(x->sr->client, sizeof x->sr->client, "%s", client);
		x->sr->take = n;
		x->sr->source = 0;
		x->sr->rj.done = got_limit;
		x->sr->rj.slot = limit_slot(client);
		if ((x->sr->rj.len = ot_redis_gcra_cmd(&x->sr->rj.cmd, client, x->h->rate, x->h->burst, n, 0)) < 0) {
			ot_breaker_done(&x->h->redis_cb, 1);
			return 1; /* out of memory: fails open */
		}
		ot_httpd_suspend(x->rq);
		ot_rpipe_send(x->h->pipe, &x->sr->rj);
		return -1;
	}
	if (x->sr->auth < 0) {
		char fails[96];
		snprintf(fails, sizeof fails, "authfail:%s", addr);
		rc = gcra_sync(x, fails, AUTH_FAIL_RATE, AUTH_FAIL_BURST, 1, wait_ms, err, sizeof err);
	}
	if (rc > 0 && x->h->rate > 0 && !(x->sr->auth > 0 && lease_take(x->h, client))) {
		rc = gcra_sync(x, client, x->h->rate, x->h->burst, n, wait_ms, err, sizeof err);
		if (rc == 0 && n > 1) /* not room for a lease: perhaps for this one */
			rc = gcra_sync(x, client, x->h->rate, x->h->burst, 1, wait_ms, err, sizeof err);
		else if (rc == 1 && n > 1)
			lease_give(x->h, client, n - 1);
	}
	if (rc < 0)
		OT_WARN(NULL, "rate limit not checked: %s", err);
	return rc != 0;
}

static enum MHD_Result
too_many(struct call *x, long wait_ms)
{
	char secs[24];
	const char *hdr[] = {"Retry-After", secs, NULL};

	snprintf(secs, sizeof secs, "%ld", (wait_ms + 999) / 1000);
	ot_metric_add(m_limited, 1);
	return reply_json(x, 429, json_pack("{s:s, s:f}", "error", "rate limit exceeded",
	                                    "retry_after_s", (double)wait_ms / 1000), hdr);
}

/* POST /orders: the same placement as ot-place. */
static enum MHD_Result
post_order(struct call *x)
{
	const char *ctype = MHD_lookup_connection_value(x->con, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
	const char *key = MHD_lookup_connection_value(x->con, MHD_HEADER_KIND, "Idempotency-Key");
	const char *hdr[] = {"Location", NULL, NULL}, *msg = NULL;
	json_t *req, *rid, *order = NULL;
	json_error_t jerr;
	char err[512], loc[128];
	struct ot_status st;
	int created = 0, rc;
	PGconn *db;

	if (!authorized(x))
		return unauthorized(x);
	if (!is_json(ctype))
		return reply_error(x, 415, "Content-Type must be application/json", NULL);
	if (x->rq->seen > MAX_BODY)
		return reply_error(x, 413, "request body larger than 64 KiB", NULL);
	if (!(req = json_loadb(x->rq->body ? x->rq->body : "", x->rq->len, JSON_REJECT_DUPLICATES, &jerr))) {
		snprintf(err, sizeof err, "body is not JSON: %s at line %d, column %d", jerr.text, jerr.line,
		         jerr.column);
		return reply_error(x, 400, err, NULL);
	}
	if (!json_is_object(req)) {
		msg = "body must be a JSON object";
	} else if (key && *key) {
		rid = json_object_get(req, "request_id");
		if (!rid || json_is_null(rid)) {
			if (json_object_set_new(req, "request_id", json_string(key)))
				msg = "Idempotency-Key must be UTF-8";
		} else if (!json_is_string(rid) || strcmp(json_string_value(rid), key)) {
			msg = "Idempotency-Key and request_id differ";
		}
	}
	if (msg) {
		json_decref(req);
		return reply_error(x, 400, msg, NULL);
	}
	if (!(db = db_of(x))) {
		json_decref(req);
		return unavailable(x);
	}
	/* An Idempotency-Key is the caller's own: another key's holder never gets this order back. */
	rc = ot_order_place_as(db, req, "ot-serve", x->sr->key_id, &order, &created, &st, err, sizeof err);
	/* Only a request_id makes a second try safe: a lost connection may hide a commit. */
	rid = json_object_get(req, "request_id");
	if (rid && !json_is_null(rid) && db_retry(x, rc, &db))
		rc = ot_order_place_as(db, req, "ot-serve", x->sr->key_id, &order, &created, &st, err, sizeof err);
	db_done(x, rc);
	if (!rc && st.version)
		ot_cache_put(x->h->cache, &st);
	json_decref(req);
	if (rc == OT_EINPUT)
		return reply_error(x, 400, err, NULL);
	if (rc == OT_ECONFLICT)
		return reply_error(x, 422, key && *key ? "Idempotency-Key already used with a different request body"
		                                       : err, NULL);
	if (rc)
		return failed(x, rc, err);
	snprintf(x->rq->order_id, sizeof x->rq->order_id, "%s",
	         json_string_value(json_object_get(order, "order_id")));
	ot_lcache_forget(x->h->lc, x->rq->order_id);
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
		return unauthorized(x);
	if (!ot_uuid_valid(id))
		return reply_error(x, 400, "order id must be a UUID", NULL);
	snprintf(x->rq->order_id, sizeof x->rq->order_id, "%s", id);
	if (x->rq->seen > MAX_BODY)
		return reply_error(x, 413, "request body larger than 64 KiB", NULL);
	if (x->rq->len && !(req = json_loadb(x->rq->body, x->rq->len, 0, NULL)))
		return reply_error(x, 400, "body is not JSON", NULL);
	if (!(db = db_of(x))) {
		json_decref(req);
		return unavailable(x);
	}
	reason = json_object_get(req, "reason");
	ot_event_init(&ev, OT_EV_ORDER_CANCELLED, id, 0, "ot-serve",
	              json_pack("{s:s}", "reason", json_is_string(reason) ? json_string_value(reason)
	                                                               : "cancelled by the customer"), NULL);
	json_decref(req);
	/* A repeated cancel is a stale transition, so a second try is safe. */
	rc = ot_order_apply(db, &ev, "ot-serve", &st, err, sizeof err);
	if (db_retry(x, rc, &db))
		rc = ot_order_apply(db, &ev, "ot-serve", &st, err, sizeof err);
	db_done(x, rc);
	if (rc >= 0 && st.version)
		ot_cache_put(x->h->cache, &st);
	ot_event_clear(&ev);
	/* What this server wrote: no read after the answer may show the status from before. */
	ot_lcache_forget(x->h->lc, id);
	if (rc == OT_ENOTFOUND)
		return not_found(x, id);
	if (rc == OT_EINPUT)
		return reply_error(x, 409, err, NULL);
	if (rc < 0)
		return failed(x, rc, err);
	/* Applied, or already cancelled: either way the answer is the order as it now is. */
	if ((rc = ot_order_load(db, id, &st, err, sizeof err)) != 1)
		return failed(x, rc ? rc : OT_EINTERNAL, rc ? err : "the order vanished");
	if (strcmp(st.status, "CANCELLED"))
		return reply_error(x, 409, "the order can no longer be cancelled", NULL);
	return reply_json(x, 200, ot_status_to_json(&st), NULL);
}

static enum MHD_Result
cancel_db(struct call *x)
{
	return cancel_order(x, x->sr->oid);
}

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
static enum MHD_Result
stream(struct call *x, const char *id, int ws_only)
{
	const char *leid = MHD_lookup_connection_value(x->con, MHD_HEADER_KIND, "Last-Event-ID");
	const char *q = MHD_lookup_connection_value(x->con, MHD_GET_ARGUMENT_KIND, "last_event_id");
	const char *up = MHD_lookup_connection_value(x->con, MHD_HEADER_KIND, MHD_HTTP_HEADER_UPGRADE);
	const char *key = MHD_lookup_connection_value(x->con, MHD_HEADER_KIND, "Sec-WebSocket-Key");
	int ws = up && !strcasecmp(up, "websocket");
	struct ot_live_event ev[OT_REDIS_LOG_MAX + 1];
	enum ot_cache_result how;
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
	if ((rc = lookup(x, id, &st, &how, NULL, err, sizeof err)) < 0)
		return failed(x, rc, err);
	if (rc == 0)
		return not_found(x, id);
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

/* 1 when reads cannot use Redis now: its circuit is not closed, the live subscription is down,
 * or the last readiness check (if recent) found it down. No I/O: /healthz and /metrics stay cheap. */
static int
cache_degraded(struct ot_http *h)
{
	struct ot_live_stats ls;
	long opens, rejected;
	int down;

	ot_live_read(h->live, &ls);
	pthread_mutex_lock(&h->ready_mu);
	down = h->ready_at && ot_now_ms() - h->ready_at < READY_FRESH_MS && !h->ready_redis;
	pthread_mutex_unlock(&h->ready_mu);
	return down || !ls.connected || ot_breaker_read(&h->redis_cb, &opens, &rejected) != OT_BREAKER_CLOSED;
}

/* 1 while the orders database does not answer, as far as is known without I/O: the last
 * readiness check (if recent) found it down, or its circuit is open. Writes then get 503. */
static int
db_down(struct ot_http *h)
{
	long opens, rejected;
	int down;

	pthread_mutex_lock(&h->ready_mu);
	down = h->ready_at && ot_now_ms() - h->ready_at < READY_FRESH_MS && !h->ready_db;
	pthread_mutex_unlock(&h->ready_mu);
	return down || ot_breaker_read(&h->pg_cb, &opens, &rejected) == OT_BREAKER_OPEN;
}

/* Before each scrape: the circuits, the cache and the live streams as they are now. */
static void
collect(void *arg)
{
	struct ot_http *h = arg;
	struct ot_breaker *cbs[2] = {&h->redis_cb, &h->pg_cb};
	static const char *const dep[2] = {"redis", "postgres"};
	struct ot_live_stats ls;
	struct ot_lcache_stats lcs;
	long opens, rejected;

	for (int i = 0; i < 2; i++) {
		ot_metric_set(m_circuit, ot_breaker_read(cbs[i], &opens, &rejected), dep[i]);
		ot_metric_set(m_opens, (double)opens, dep[i]);
		ot_metric_set(m_rejected, (double)rejected, dep[i]);
	}
	ot_metric_set(m_degraded, cache_degraded(h));
	ot_metric_set(m_db_down, db_down(h));
	ot_live_read(h->live, &ls);
	ot_metric_set(m_streams, ls.sse, "sse");
	ot_metric_set(m_streams, ls.ws, "websocket");
	ot_metric_set(m_subscribed, ls.connected);
	ot_metric_set(m_messages, (double)ls.messages);
	ot_metric_set(m_sent, (double)ls.sent);
	ot_lcache_read(h->lc, &lcs);
	ot_metric_set(m_lentries, (double)lcs.entries);
	ot_metric_set(m_lflushes, (double)lcs.flushes);
}

/* ot-serve's own families, beside ot_httpd's HTTP ones. */
static void
register_metrics(void)
{
	m_reads = ot_metric_new(OT_COUNTER, "ot_cache_reads_total", "Order reads by where they were served from: "
	                        "local (in-process cache), hit (Redis), miss (database, refilled), bypass (database, "
	                        "Redis skipped).",
	                        "result", NULL, 0);
	for (int c = 0; c < OT_C_COUNT; c++)
		ot_metric_add(m_reads, 0, cache_label[c]);
	m_limited = ot_metric_new(OT_COUNTER, "ot_rate_limited_total", "Requests refused with 429.", NULL, NULL, 0);
	m_circuit = ot_metric_new(OT_GAUGE, "ot_circuit_state",
	                          "Circuit breaker per dependency: 0 closed, 1 half-open, 2 open.", "circuit", NULL, 0);
	m_opens = ot_metric_new(OT_COUNTER, "ot_circuit_opens_total", "Times a circuit opened.", "circuit", NULL, 0);
	m_rejected = ot_metric_new(OT_COUNTER, "ot_circuit_rejected_total", "Calls failed fast while a circuit was open.",
	                           "circuit", NULL, 0);
	m_degraded = ot_metric_new(OT_GAUGE, "ot_cache_degraded", "1 while reads cannot use Redis and go to the database.",
	                           NULL, NULL, 0);
	m_db_down = ot_metric_new(OT_GAUGE, "ot_db_down", "1 while the orders database does not answer: writes get "
	                          "503, reads come from the caches.", NULL, NULL, 0);
	m_streams = ot_metric_new(OT_GAUGE, "ot_live_streams", "Live status streams open, by protocol.", "protocol", NULL, 0);
	m_subscribed = ot_metric_new(OT_GAUGE, "ot_live_subscribed",
	                             "1 while the Redis subscription feeding the streams holds.", NULL, NULL, 0);
	m_messages = ot_metric_new(OT_COUNTER, "ot_live_messages_total", "Changes received from Redis pub/sub.",
	                           NULL, NULL, 0);
	m_sent = ot_metric_new(OT_COUNTER, "ot_live_sent_total", "Changes queued to streams.", NULL, NULL, 0);
	m_lentries = ot_metric_new(OT_GAUGE, "ot_local_cache_entries", "Order statuses held in the in-process cache.",
	                           NULL, NULL, 0);
	m_lflushes = ot_metric_new(OT_COUNTER, "ot_local_cache_flushes_total",
	                           "Times the in-process cache was emptied: its subscription (re)connected or dropped.",
	                           NULL, NULL, 0);
}


static int
db_ready(struct call *x)
{
	PGconn *db = db_connect(x);
	int rc = db ? db_ping(x->c, READY_TIMEOUT_MS) : OT_ESERVICE;

	if (db && rc && x->c->db && db_retry(x, rc, &db))
		rc = db_ping(x->c, READY_TIMEOUT_MS);
	return rc;
}

static int
redis_ready(struct call *x)
{
	struct timeval quick = {0, READY_TIMEOUT_MS * 1000};
	struct timeval normal = {REDIS_TIMEOUT_MS / 1000, (REDIS_TIMEOUT_MS % 1000) * 1000};
	redisContext *r;
	long long t0;
	char err[256];
	int tries, rc = OT_ESERVICE;

	for (tries = 0; tries < 2 && rc; tries++) {
		if (!(r = ot_rlink_conn(&x->c->redis, x->h->redis_url, NULL)))
			break;
		t0 = ot_now_ms();
		redisSetTimeout(r, quick);
		if ((rc = ot_redis_ping(r, err, sizeof err)) == 0)
			redisSetTimeout(r, normal);
		/* A connection Redis dropped (a restart) fails at once and deserves a fresh one; a
		 * timeout does not. */
		else if (ot_now_ms() - t0 >= READY_TIMEOUT_MS / 2)
			break;
	}
	return rc;
}

/* The last readiness check, run again first when it is over READY_MAX_AGE_MS old. The checks
 * go past the circuit breakers (this is their probe from outside). One thread checks while the
 * others wait for its result, so probes from many replicas' kubelets and load balancers cost one
 * SELECT 1 and one PING a second at most. */
static void
ready_state(struct call *x, int *db, int *redis)
{
	pthread_mutex_lock(&x->h->ready_mu);
	if (!x->h->ready_at || ot_now_ms() - x->h->ready_at >= READY_MAX_AGE_MS) {
		x->h->ready_db = db_ready(x) == 0;
		x->h->ready_redis = redis_ready(x) == 0;
		x->h->ready_at = ot_now_ms();
	}
	*db = x->h->ready_db;
	*redis = x->h->ready_redis;
	pthread_mutex_unlock(&x->h->ready_mu);
}

/* GET /healthz: 200 while the process runs; the body says whether the cache is degraded and
 * whether the database is down. */
static enum MHD_Result
healthz(struct call *x)
{
	return reply_json(x, 200, json_pack("{s:s, s:s, s:s}", "status", "ok", "cache",
	                                    cache_degraded(x->h) ? "degraded" : "ok", "db",
	                                    db_down(x->h) ? "down" : "ok"), NULL);
}

/* GET /readyz: can this replica serve reads? With Redis down they come from the database; with
 * the database down, from Redis (writes and cache misses get 503 meanwhile). Either one down is
 * reported, not 503: an outage of one must not take every replica out of its Service at once,
 * when each can still answer. Both down is 503. */
static enum MHD_Result
readyz(struct call *x)
{
	static const char *const retry[] = {"Retry-After", "1", NULL};
	int db, redis;
	json_t *o;

	ready_state(x, &db, &redis);
	o = json_pack("{s:s, s:s, s:s}", "status", db || redis ? "ready" : "unavailable", "db", db ? "ok" : "down",
	              "redis", redis ? "ok" : "down");
	if (o && !redis)
		json_object_set_new(o, "cache", json_string("degraded"));
	if (o && !db)
		json_object_set_new(o, "writes", json_string("unavailable"));
	if (o && !db && !redis)
		json_object_set_new(o, "error", json_string("PostgreSQL and Redis are down"));
	return reply_json(x, db || redis ? 200 : 503, o, db || redis ? NULL : retry);
}


/* Fills the call a route works with; -1 when out of memory. */
static int
call_of(void *app, struct ot_httpd_req *rq, struct call *x)
{
	x->h = app;
	x->rq = rq;
	x->con = rq->con;
	x->sr = rq->ext;
	x->sr->h = x->h;
	x->sr->rq = rq;
	return (x->c = thread_conns(x->h)) ? 0 : -1;
}

static enum MHD_Result
page_route(void *app, struct ot_httpd_req *rq)
{
	static const char *const page_hdr[] = {"Content-Security-Policy", PAGE_CSP, NULL};

	(void)app;
	return ot_httpd_reply(rq, 200, "text/html; charset=utf-8", ot_page_html, strlen(ot_page_html),
	                      MHD_RESPMEM_PERSISTENT, page_hdr);
}

static enum MHD_Result
healthz_route(void *app, struct ot_httpd_req *rq)
{
	struct call x;

	if (call_of(app, rq, &x))
		return ot_httpd_reply_error(rq, 500, "out of memory", NULL);
	return healthz(&x);
}

static enum MHD_Result
readyz_route(void *app, struct ot_httpd_req *rq)
{
	struct call x;

	if (call_of(app, rq, &x))
		return ot_httpd_reply_error(rq, 500, "out of memory", NULL);
	return offload(&x, readyz); /* its check may wait up to a second */
}

static const char *const allow_get[] = {"Allow", "GET, HEAD", NULL};
static const char *const allow_post[] = {"Allow", "POST", NULL};
/* The route label of each resource in the metrics. */
static const char *const res_name[] = {
	[OT_RES_ORDERS] = "order_post", [OT_RES_ORDER] = "order_get", [OT_RES_CANCEL] = "order_cancel",
	[OT_RES_EVENTS] = "order_events", [OT_RES_WS] = "order_ws",
};

/* Before the body of a request to the order API is read (ot_httpd_opts.head): what would be
 * refused whatever the body holds is refused now, so sending a body slowly buys nothing: 404,
 * 405, a write without a valid key 401 (a wrong key past its address's limit on failed
 * authentications 429, as within_limit counts it), a placement not in JSON 415. */
static enum MHD_Result
orders_head(void *app, struct ot_httpd_req *rq)
{
	const char *ctype = MHD_lookup_connection_value(rq->con, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
	enum ot_order_res res;
	char oid[64];
	long wait_ms;
	struct call x;

	if (call_of(app, rq, &x))
		return ot_httpd_reply_error(rq, 500, "out of memory", NULL);
	if ((res = ot_http_order_path(rq->url, oid, sizeof oid)) == OT_RES_NONE)
		return reply_error(&x, 404, "no such resource", NULL);
	rq->route = res_name[res];
	if (res != OT_RES_ORDERS && res != OT_RES_CANCEL)
		return not_allowed(&x, allow_get);
	if (strcmp(rq->method, MHD_HTTP_METHOD_POST))
		return not_allowed(&x, allow_post);
	authenticate(&x);
	/* A wrong key's check is the event thread's (gcra_sync): within_limit does not suspend it. */
	if (x.sr->auth < 0 && !within_limit(&x, &wait_ms))
		return too_many(&x, wait_ms);
	if (x.sr->auth < 1)
		return unauthorized(&x);
	if (res == OT_RES_ORDERS && !is_json(ctype))
		return reply_error(&x, 415, "Content-Type must be application/json", NULL);
	return MHD_YES;
}

/* /orders and /orders/{id}[/cancel|/events|/ws]: authenticated and rate-limited; anything
 * else is 404. */
static enum MHD_Result
orders_route(void *app, struct ot_httpd_req *rq)
{
	const char *url = rq->url, *method = rq->method;
	int get = !strcmp(method, MHD_HTTP_METHOD_GET) || !strcmp(method, MHD_HTTP_METHOD_HEAD);
	int post = !strcmp(method, MHD_HTTP_METHOD_POST);
	enum ot_order_res res;
	char oid[64];
	long wait_ms;
	struct call x;
	int lim;

	if (call_of(app, rq, &x))
		return ot_httpd_reply_error(rq, 500, "out of memory", NULL);
	if ((res = ot_http_order_path(url, oid, sizeof oid)) == OT_RES_NONE)
		return reply_error(&x, 404, "no such resource", NULL);
	rq->route = res_name[res];
	authenticate(&x);
	if ((lim = within_limit(&x, &wait_ms)) < 0)
		return MHD_YES; /* suspended: this runs again once Redis answered */
	if (!lim)
		return too_many(&x, wait_ms);
	/* Writes wait on the database: off the event loop. */
	if (res == OT_RES_ORDERS)
		return post ? offload(&x, post_order) : not_allowed(&x, allow_post);
	ot_id_canon(oid); /* one cache entry per order, whatever the letter case asked */
	if (res == OT_RES_ORDER)
		return get ? get_order(&x, oid) : not_allowed(&x, allow_get);
	snprintf(x.sr->oid, sizeof x.sr->oid, "%s", oid);
	if (res == OT_RES_CANCEL)
		return post ? offload(&x, cancel_db) : not_allowed(&x, allow_post);
	return get ? stream(&x, oid, res == OT_RES_WS) : not_allowed(&x, allow_get);
}

enum ot_order_res
ot_http_order_path(const char *path, char *id, size_t idsz)
{
	/* Spelt so that GCC 12 with sanitizers does not take path for the literal (stringop-overread). */
	const char *p = path[0] == '/' && !strncmp(path + 1, "orders/", 7) ? path + 8 : NULL;
	size_t idlen = p ? strcspn(p, "/") : 0;
	const char *rest = p ? p + idlen : NULL;

	if (idsz)
		id[0] = '\0';
	if (!strcmp(path, "/orders"))
		return OT_RES_ORDERS;
	if (!idlen || (*rest && strcmp(rest, "/cancel") && strcmp(rest, "/events") && strcmp(rest, "/ws")))
		return OT_RES_NONE;
	if (idsz)
		snprintf(id, idsz, "%.*s", (int)(idlen < idsz ? idlen : idsz - 1), p);
	return !*rest ? OT_RES_ORDER : !strcmp(rest, "/cancel") ? OT_RES_CANCEL
	     : !strcmp(rest, "/ws") ? OT_RES_WS : OT_RES_EVENTS;
}

static const struct ot_httpd_route routes[] = {
	{"/", "page", "GET", page_route},
	{"/index.html", "page", "GET", page_route},
	{"/healthz", "healthz", "GET", healthz_route},
	{"/readyz", "readyz", "GET", readyz_route},
	{NULL, NULL, NULL, NULL}
};

/* Begins the request's span, a child of its traceparent header if it has a valid one. */
static void
request_span(struct ot_httpd_req *rq, struct serve_req *sr)
{
	const char *rest = rq->url + 7, *slash;
	char name[64];

	slash = *rest == '/' ? strchr(rest + 1, '/') : NULL;
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
static enum MHD_Result
orders(void *app, struct ot_httpd_req *rq)
{
	struct serve_req *sr = rq->ext;
	enum MHD_Result r;

	if (!sr->span.trace_id[0] && (!strcmp(rq->method, MHD_HTTP_METHOD_POST) ||
	                              MHD_lookup_connection_value(rq->con, MHD_HEADER_KIND, "traceparent")))
		request_span(rq, sr);
	if (sr->span.trace_id[0])
		rq->span = &sr->span;
	ot_span_enter(&sr->span);
	r = orders_route(app, rq);
	ot_span_leave(&sr->span);
	return r;
}

/* The client went before its 101 was written: the stream it was to get goes too. The
 * request's span ends with the request. */
static void
request_done(void *app, struct ot_httpd_req *rq)
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

static void
quiesce(void *app)
{
	struct ot_http *h = app;

	ot_live_close_all(h->live);
}

struct ot_http *
ot_http_start(const struct ot_config *cfg, const struct ot_http_opts *o, int *rc, char *errstr, size_t errsz)
{
	struct ot_httpd_opts so = {
		.addr = cfg->http_addr, .threads = THREADS, .max_per_client = o->max_per_client, .routes = routes,
		.fallback = orders, .head = orders_head, .trusted = o->trusted, .request_ms = o->request_ms,
		.req_size = sizeof(struct serve_req), .done = request_done, .quiesce = quiesce,
		.max_connections = o->max_streams + API_CONNECTIONS,
	};
	struct ot_redis_url u;
	struct ot_rsub_hooks hooks;
	struct ot_http *h = NULL;
	redisContext *r;
	PGconn *db;
	char err[512];

	if (ot_redis_parse_url(cfg->redis_url, &u, errstr, errsz)) {
		*rc = OT_ECONFIG;
		return NULL;
	}
	/* Migrations run once here, so worker threads only connect. */
	if (!(db = ot_pg_open(cfg->orders_db, "orders", rc, errstr, errsz)))
		goto fail;
	PQfinish(db);
	if ((r = ot_redis_connect(cfg->redis_url, REDIS_TIMEOUT_MS, err, sizeof err)))
		redisFree(r);
	else
		OT_WARN(NULL, "%s; reads fall back to the database until it answers", err);
	if ((h = calloc(1, sizeof *h))) {
		pthread_mutex_init(&h->mu, NULL);
		pthread_mutex_init(&h->ready_mu, NULL);
		pthread_mutex_init(&h->lease_mu, NULL);
	}
	if (!h || !(h->orders_db = strdup(cfg->orders_db)) || !(h->redis_url = strdup(cfg->redis_url)) ||
	    (o->api_keys && *o->api_keys && !(h->api_keys = strdup(o->api_keys)))) {
		*rc = ot_err(OT_EINTERNAL, errstr, errsz, "out of memory");
		goto fail;
	}
	if (!h->api_keys)
		OT_WARN(NULL, "no OT_API_KEY: POST /orders and cancels answer 401 until one is set");
	if (o->ws_origins && *o->ws_origins && !(h->ws_origins = strdup(o->ws_origins))) {
		*rc = ot_err(OT_EINTERNAL, errstr, errsz, "out of memory");
		goto fail;
	}
	h->cache = o->cache;
	h->rate = o->rate;
	h->burst = o->burst > 0 ? o->burst : 1;
	h->lease_n = (int)(h->rate * LEASE_MS / 1000);
	h->lease_n = h->lease_n < h->burst / 4 ? h->lease_n : h->burst / 4;
	h->lease_n = h->lease_n > LEASE_MAX ? LEASE_MAX : h->lease_n < 1 ? 1 : h->lease_n;
	ot_breaker_init(&h->redis_cb, "Redis", BREAKER_FAILURES, BREAKER_OPEN_MS);
	ot_breaker_init(&h->pg_cb, "PostgreSQL", BREAKER_FAILURES, BREAKER_OPEN_MS);
	h->breakers = 1;
	ot_cache_set_breaker(h->cache, &h->redis_cb);
	if (o->local_cache_ms > 0 && o->local_cache_max > 0 &&
	    !(h->lc = ot_lcache_new((size_t)o->local_cache_max, o->local_cache_ms))) {
		*rc = ot_err(OT_EINTERNAL, errstr, errsz, "out of memory");
		goto fail;
	}
	if (!(h->pipe = ot_rpipe_new(cfg->redis_url)) || !(h->slow = ot_pool_new(SLOW_THREADS))) {
		*rc = ot_err(OT_EINTERNAL, errstr, errsz, "cannot start a thread");
		goto fail;
	}
	if (h->lc)
		ot_lcache_hooks(h->lc, &hooks);
	if (!(h->live = ot_live_start(cfg->redis_url, o->stream_max_s, o->max_streams, h->lc ? &hooks : NULL,
	                              errstr, errsz))) {
		*rc = OT_EINTERNAL;
		goto fail;
	}
	register_metrics();
	if (ot_metrics_collector(collect, h)) {
		*rc = ot_err(OT_EINTERNAL, errstr, errsz, "out of memory");
		goto fail;
	}
	so.app = h;
	if (!(h->srv = ot_httpd_start(&so, rc, errstr, errsz)))
		goto fail;
	return h;
fail:
	ot_http_stop(h);
	return NULL;
}

void
ot_http_stop(struct ot_http *h)
{
	struct conns *c, *next;

	if (!h)
		return;
	/* Requests off their event loops were answered before the server stopped: the pool and
	 * the pipe are idle, and the pool's threads leave their connections on the list. */
	ot_httpd_stop(h->srv);
	ot_pool_free(h->slow);
	ot_rpipe_free(h->pipe);
	ot_metrics_collector_remove(collect, h);
	for (c = h->conns; c; c = next) {
		next = c->next;
		PQfinish(c->db);
		ot_rlink_close(&c->redis);
		free(c);
	}
	ot_live_stop(h->live);
	ot_lcache_free(h->lc);
	if (h->breakers) {
		ot_cache_set_breaker(h->cache, NULL);
		ot_breaker_destroy(&h->redis_cb);
		ot_breaker_destroy(&h->pg_cb);
	}
	pthread_mutex_destroy(&h->mu);
	pthread_mutex_destroy(&h->ready_mu);
	pthread_mutex_destroy(&h->lease_mu);
	free(h->api_keys);
	free(h->ws_origins);
	free(h->orders_db);
	free(h->redis_url);
	free(h);
}
