/* ot_http: ot-serve's server — its start and stop, health and readiness, and the metrics it
 * adds; the routes are ot_api's. */
#include <jansson.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "ot_breaker.h"
#include "ot_cache.h"
#include "ot_config.h"
#include "ot_err.h"
#include "ot_http.h"
#include "ot_http_int.h"
#include "ot_lcache.h"
#include "ot_limit.h"
#include "ot_live.h"
#include "ot_log.h"
#include "ot_metrics.h"
#include "ot_pg.h"
#include "ot_pool.h"
#include "ot_redis.h"
#include "ot_rlink.h"
#include "ot_rpipe.h"
#include "ot_time.h"

#define THREADS 4
#define API_CONNECTIONS 1024      /* connections beside the live streams */
#define SLOW_THREADS 4            /* threads with a database connection each, for the slow part */
#define READY_TIMEOUT_MS 500      /* per check, so /readyz answers well within a probe's timeout */
#define READY_MAX_AGE_MS 1000     /* /readyz answers from a check at most this old */
#define READY_FRESH_MS 10000      /* /healthz trusts the last readiness check this long */
#define BREAKER_FAILURES 5        /* failures in a row that open a circuit */
#define BREAKER_OPEN_MS 2000      /* how long it stays open before one probe */

static struct ot_metric *m_circuit, *m_opens, *m_rejected, *m_degraded, *m_streams, *m_subscribed, *m_messages,
	*m_sent, *m_lentries, *m_lflushes, *m_db_down;

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
	ot_read_metrics();
	ot_limit_metrics();
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
	PGconn *db = ot_call_db_connect(x);
	int rc = db ? ot_call_db_ping(x->c, READY_TIMEOUT_MS) : OT_ESERVICE;

	if (db && rc && x->c->db && ot_call_db_retry(x, rc, &db))
		rc = ot_call_db_ping(x->c, READY_TIMEOUT_MS);
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

enum MHD_Result
ot_http_healthz(void *app, struct ot_httpd_req *rq)
{
	struct call x;

	if (ot_call_of(app, rq, &x))
		return ot_httpd_reply_error(rq, 500, "out of memory", NULL);
	return healthz(&x);
}

enum MHD_Result
ot_http_readyz(void *app, struct ot_httpd_req *rq)
{
	struct call x;

	if (ot_call_of(app, rq, &x))
		return ot_httpd_reply_error(rq, 500, "out of memory", NULL);
	return ot_call_offload(&x, readyz); /* its check may wait up to a second */
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
		.addr = cfg->http_addr, .threads = THREADS, .max_per_client = o->max_per_client,
		.fallback = ot_api_dispatch, .head = ot_api_head, .trusted = o->trusted, .request_ms = o->request_ms,
		.req_size = sizeof(struct serve_req), .done = ot_api_done, .quiesce = quiesce,
		.max_connections = o->max_streams + API_CONNECTIONS,
	};
	struct ot_redis_url u;
	struct ot_rsub_hooks hooks[OT_LIVE_HOOKS];
	size_t nhooks = 0;
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
	ot_cache_front(h->cache, h->lc, h->pipe);
	if (!(h->limit = ot_limit_new(o->rate, o->burst, h->redis_url, &h->redis_cb, h->pipe))) {
		*rc = ot_err(OT_EINTERNAL, errstr, errsz, "out of memory");
		goto fail;
	}
	if (h->lc)
		ot_lcache_hooks(h->lc, &hooks[nhooks++]);
	if (o->listen)
		hooks[nhooks++] = *o->listen;
	if (!(h->live = ot_live_start(cfg->redis_url, o->stream_max_s, o->max_streams, hooks, nhooks, errstr, errsz))) {
		*rc = OT_EINTERNAL;
		goto fail;
	}
	register_metrics();
	if (ot_metrics_collector(collect, h)) {
		*rc = ot_err(OT_EINTERNAL, errstr, errsz, "out of memory");
		goto fail;
	}
	ot_api_plain_routes(h->routes);
	so.routes = h->routes;
	so.app = h;
	if (!(h->srv = ot_httpd_start(&so, rc, errstr, errsz)))
		goto fail;
	return h;
fail:
	ot_http_stop(h);
	return NULL;
}

struct ot_limit *
ot_http_limit(struct ot_http *h)
{
	return h->limit;
}

void
ot_http_stop(struct ot_http *h)
{
	if (!h)
		return;
	/* Requests off their event loops were answered before the server stopped: the pool and
	 * the pipe are idle, and the pool's threads leave their connections on the list. */
	ot_httpd_stop(h->srv);
	ot_pool_free(h->slow);
	ot_limit_free(h->limit);
	ot_rpipe_free(h->pipe);
	ot_metrics_collector_remove(collect, h);
	ot_call_conns_free(h);
	ot_live_stop(h->live);
	if (h->cache)
		ot_cache_front(h->cache, NULL, NULL);
	ot_lcache_free(h->lc);
	if (h->breakers) {
		ot_cache_set_breaker(h->cache, NULL);
		ot_breaker_destroy(&h->redis_cb);
		ot_breaker_destroy(&h->pg_cb);
	}
	pthread_mutex_destroy(&h->mu);
	pthread_mutex_destroy(&h->ready_mu);
	free(h->api_keys);
	free(h->ws_origins);
	free(h->orders_db);
	free(h->redis_url);
	free(h);
}

