/* ot_http: routes, JSON errors, and per-thread database and cache connections. */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <microhttpd.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "ot_config.h"
#include "ot_err.h"
#include "ot_event.h"
#include "ot_http.h"
#include "ot_log.h"
#include "ot_order.h"
#include "ot_pg.h"
#include "ot_redis.h"

#define THREADS 4
#define MAX_BODY (64 * 1024)      /* a larger request body is answered 413 */
#define MAX_DISCARD (1024 * 1024) /* a body past this is not even read: the connection closes */
#define REDIS_TIMEOUT_MS 1000     /* as ot_redis_live connects */
#define READY_TIMEOUT_MS 500      /* per check, so /readyz answers well within a probe's timeout */
#define DRAIN_MS 5000             /* how long a stop waits for requests in flight */
/* A stuck statement must not hold one of the few worker threads for long. */
#define STATEMENT_TIMEOUT "SET statement_timeout = '5s'"

/* The page may run its own inline script and style, and talk to this server only. */
#define PAGE_CSP "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; " \
                 "connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'"

/* One worker thread's connections, on the list ot_http_stop frees. */
struct conns {
	PGconn *db;
	int db_pid;          /* the backend STATEMENT_TIMEOUT was set on: PQreset forgets it */
	redisContext *redis;
	struct conns *next;
};

struct ot_http {
	struct MHD_Daemon *d;
	char *orders_db, *redis_url;
	pthread_mutex_t mu;  /* guards conns */
	struct conns *conns;
	atomic_int inflight; /* requests begun and not completed */
};

/* One request, from its headers to its completion. */
struct req {
	char method[16], path[128], order_id[64];
	char *body;          /* the first MAX_BODY bytes */
	size_t len, seen;    /* bytes kept, bytes received */
	unsigned status;     /* 0 until a response is queued */
	long long t0;        /* ms, monotonic */
};

/* What a route works with. */
struct call {
	struct ot_http *h;
	struct conns *c;
	struct MHD_Connection *con;
	struct req *rq;
};

static _Thread_local struct conns *tconns;

static long long
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

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
db_of(struct call *x)
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
	if (c->db && ot_pg_ensure(c->db)) {
		snprintf(err, sizeof err, "%s", PQerrorMessage(c->db));
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

/* True when a call that failed with rc may run once more: the connection broke under it (a
 * server restart) and a fresh one is at hand in *db. */
static int
db_retry(struct call *x, int rc, PGconn **db)
{
	if (rc != OT_ESERVICE || PQstatus(*db) != CONNECTION_BAD)
		return 0;
	OT_INFO(x->rq->order_id, "PostgreSQL connection lost, trying once more");
	return (*db = db_of(x)) != NULL;
}

/* SELECT 1 within timeout_ms. A connection that does not answer in time is dropped, so the
 * next check starts afresh. Returns 0 or OT_ESERVICE. */
static int
db_ping(struct conns *c, int timeout_ms)
{
	long long deadline = now_ms() + timeout_ms;
	struct pollfd p = {PQsocket(c->db), POLLIN, 0};
	PGresult *res;
	int ok = 0;

	if (!PQsendQuery(c->db, "SELECT 1"))
		return OT_ESERVICE;
	while (PQisBusy(c->db)) {
		int left = (int)(deadline - now_ms());
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
	struct MHD_Response *r;
	enum MHD_Result ret;

	if (!(r = MHD_create_response_from_buffer(len, (void *)body, mode))) {
		if (mode == MHD_RESPMEM_MUST_FREE)
			free((void *)body);
		return MHD_NO;
	}
	MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
	MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
	MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
	for (; headers && headers[0]; headers += 2)
		MHD_add_response_header(r, headers[0], headers[1]);
	if ((ret = MHD_queue_response(x->con, status, r)) == MHD_YES)
		x->rq->status = status;
	MHD_destroy_response(r);
	return ret;
}

/* Sends o (stolen) as one line of JSON; a NULL o (json_pack failed) becomes a 500. */
static enum MHD_Result
reply_json(struct call *x, unsigned status, json_t *o, const char *const *headers)
{
	static const char oom[] = "{\"error\":\"internal error\"}\n";
	char *s = o ? json_dumps(o, OT_JSON_FLAGS) : NULL, *line;
	size_t n;

	json_decref(o);
	if (!s || !(line = realloc(s, (n = strlen(s)) + 2))) {
		free(s);
		return reply(x, 500, "application/json", oom, sizeof oom - 1, MHD_RESPMEM_PERSISTENT, NULL);
	}
	line[n++] = '\n';
	line[n] = '\0';
	return reply(x, status, "application/json", line, n, MHD_RESPMEM_MUST_FREE, headers);
}

static enum MHD_Result
reply_error(struct call *x, unsigned status, const char *msg, const char *const *headers)
{
	return reply_json(x, status, json_pack("{s:s}", "error", msg), headers);
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
	return rc == OT_ESERVICE ? unavailable(x) : reply_error(x, 500, "internal error", NULL);
}

static int
is_json(const char *ctype)
{
	return ctype && !strncasecmp(ctype, "application/json", 16) &&
	       (!ctype[16] || ctype[16] == ';' || ctype[16] == ' ');
}

/* GET /orders/{id}?full=1: the whole order, always from the database. */
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
	if (!o && rc)
		return failed(x, rc, err);
	if (!o)
		return reply_json(x, 404, json_pack("{s:s, s:s}", "error", "order not found", "order_id", id), NULL);
	return reply_json(x, 200, o, bypass);
}

/* GET /orders/{id}: Redis first, so a hit needs no database; else the database, refilling Redis. */
static enum MHD_Result
get_order(struct call *x, const char *id)
{
	const char *full = MHD_lookup_connection_value(x->con, MHD_GET_ARGUMENT_KIND, "full");
	const char *hdr[] = {"X-Cache", "BYPASS", NULL};
	struct ot_status st;
	redisContext *r;
	PGconn *db;
	char err[512];
	int hit = 0, rc;

	if (!ot_uuid_valid(id))
		return reply_error(x, 400, "order id must be a UUID", NULL);
	snprintf(x->rq->order_id, sizeof x->rq->order_id, "%s", id);
	if (full && (!strcmp(full, "1") || !strcmp(full, "true")))
		return get_full(x, id);
	if ((r = ot_redis_live(&x->c->redis, x->h->redis_url))) {
		if ((rc = ot_redis_get_status(r, id, &st, err, sizeof err)) == 1) {
			hdr[1] = "HIT";
			return reply_json(x, 200, ot_status_to_json(&st), hdr);
		}
		if (rc < 0) {
			OT_WARN(id, "cache read failed, reading the database: %s", err);
			r = NULL;
		}
	}
	if (!(db = db_of(x)))
		return unavailable(x);
	rc = ot_order_get(db, r, id, &st, &hit, err, sizeof err);
	if (db_retry(x, rc, &db))
		rc = ot_order_get(db, r, id, &st, &hit, err, sizeof err);
	if (rc < 0)
		return failed(x, rc, err);
	if (rc == 0)
		return reply_json(x, 404, json_pack("{s:s, s:s}", "error", "order not found", "order_id", id), NULL);
	hdr[1] = hit ? "HIT" : r && !r->err ? "MISS" : "BYPASS";
	return reply_json(x, 200, ot_status_to_json(&st), hdr);
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
	int created = 0, rc;
	PGconn *db;

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
	rc = ot_order_place(db, ot_redis_live(&x->c->redis, x->h->redis_url), req, "ot-serve", &order,
	                    &created, err, sizeof err);
	/* Only a request_id makes a second try safe: a lost connection may hide a commit. */
	rid = json_object_get(req, "request_id");
	if (rid && !json_is_null(rid) && db_retry(x, rc, &db))
		rc = ot_order_place(db, ot_redis_live(&x->c->redis, x->h->redis_url), req, "ot-serve",
		                    &order, &created, err, sizeof err);
	json_decref(req);
	if (rc == OT_EINPUT)
		return reply_error(x, 400, err, NULL);
	if (rc)
		return failed(x, rc, err);
	snprintf(x->rq->order_id, sizeof x->rq->order_id, "%s",
	         json_string_value(json_object_get(order, "order_id")));
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
	int rc, hit;

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
	ot_event_init(&ev, "ORDER_CANCELLED", id, 0, "ot-serve",
	              json_pack("{s:s}", "reason", json_is_string(reason) ? json_string_value(reason)
	                                                               : "cancelled by the customer"), NULL);
	json_decref(req);
	/* A repeated cancel is a stale transition, so a second try is safe. */
	rc = ot_order_apply(db, ot_redis_live(&x->c->redis, x->h->redis_url), &ev, "ot-serve", err, sizeof err);
	if (db_retry(x, rc, &db))
		rc = ot_order_apply(db, ot_redis_live(&x->c->redis, x->h->redis_url), &ev, "ot-serve", err,
		                    sizeof err);
	ot_event_clear(&ev);
	if (rc == OT_EINPUT && strstr(err, "unknown order"))
		return reply_json(x, 404, json_pack("{s:s, s:s}", "error", "order not found", "order_id", id), NULL);
	if (rc == OT_EINPUT)
		return reply_error(x, 409, err, NULL);
	if (rc < 0)
		return failed(x, rc, err);
	/* Applied, or already cancelled: either way the answer is the order as it now is. */
	if ((rc = ot_order_get(db, NULL, id, &st, &hit, err, sizeof err)) != 1)
		return failed(x, rc ? rc : OT_EINTERNAL, rc ? err : "the order vanished");
	if (strcmp(st.status, "CANCELLED"))
		return reply_error(x, 409, "the order can no longer be cancelled", NULL);
	return reply_json(x, 200, ot_status_to_json(&st), NULL);
}

static int
db_ready(struct call *x)
{
	PGconn *db = db_of(x);
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
		if (!(r = ot_redis_live(&x->c->redis, x->h->redis_url)))
			break;
		t0 = now_ms();
		redisSetTimeout(r, quick);
		if ((rc = ot_redis_ping(r, err, sizeof err)) == 0)
			redisSetTimeout(r, normal);
		/* A connection Redis dropped (a restart) fails at once and deserves a fresh one; a
		 * timeout does not. */
		else if (now_ms() - t0 >= READY_TIMEOUT_MS / 2)
			break;
	}
	return rc;
}

/* GET /readyz: SELECT 1 and PING, each time. */
static enum MHD_Result
readyz(struct call *x)
{
	int db = db_ready(x) == 0, redis = redis_ready(x) == 0;
	json_t *o = json_pack("{s:s, s:s, s:s}", "status", db && redis ? "ready" : "unavailable",
	                      "db", db ? "ok" : "down", "redis", redis ? "ok" : "down");

	if (o && !(db && redis))
		json_object_set_new(o, "error", json_string(!db && !redis ? "PostgreSQL and Redis are down"
		                                            : !db ? "PostgreSQL is down" : "Redis is down"));
	return reply_json(x, db && redis ? 200 : 503, o, NULL);
}

static enum MHD_Result
route(struct call *x, const char *url, const char *method)
{
	static const char *const allow_get[] = {"Allow", "GET, HEAD", NULL};
	static const char *const allow_post[] = {"Allow", "POST", NULL};
	static const char *const page_hdr[] = {"Content-Security-Policy", PAGE_CSP, NULL};
	int get = !strcmp(method, MHD_HTTP_METHOD_GET) || !strcmp(method, MHD_HTTP_METHOD_HEAD);
	int post = !strcmp(method, MHD_HTTP_METHOD_POST);
	/* Spelt so that GCC 12 with sanitizers does not take url for the literal (stringop-overread). */
	const char *id = url[0] == '/' && !strncmp(url + 1, "orders/", 7) ? url + 8 : NULL;
	size_t idlen = id ? strcspn(id, "/") : 0;
	char oid[64];

	if (!strcmp(url, "/") || !strcmp(url, "/index.html"))
		return get ? reply(x, 200, "text/html; charset=utf-8", ot_page_html, strlen(ot_page_html),
		                   MHD_RESPMEM_PERSISTENT, page_hdr)
		           : not_allowed(x, allow_get);
	if (!strcmp(url, "/healthz"))
		return get ? reply_json(x, 200, json_pack("{s:s}", "status", "ok"), NULL) : not_allowed(x, allow_get);
	if (!strcmp(url, "/readyz"))
		return get ? readyz(x) : not_allowed(x, allow_get);
	if (!strcmp(url, "/orders"))
		return post ? post_order(x) : not_allowed(x, allow_post);
	if (idlen && !id[idlen])
		return get ? get_order(x, id) : not_allowed(x, allow_get);
	if (idlen && !strcmp(id + idlen, "/cancel")) {
		snprintf(oid, sizeof oid, "%.*s", (int)(idlen < sizeof oid ? idlen : sizeof oid - 1), id);
		return post ? cancel_order(x, oid) : not_allowed(x, allow_post);
	}
	return reply_error(x, 404, "no such resource", NULL);
}

/* MHD calls this once with the headers, once per piece of body, and once at the end. */
static enum MHD_Result
handler(void *cls, struct MHD_Connection *con, const char *url, const char *method,
        const char *version, const char *upload, size_t *upload_size, void **con_cls)
{
	struct call x = {cls, NULL, con, *con_cls};
	const char *clen;
	size_t i;

	(void)version;
	if (!x.rq) {
		if (!(x.rq = calloc(1, sizeof *x.rq)))
			return MHD_NO;
		*con_cls = x.rq;
		atomic_fetch_add(&x.h->inflight, 1);
		x.rq->t0 = now_ms();
		snprintf(x.rq->method, sizeof x.rq->method, "%s", method);
		snprintf(x.rq->path, sizeof x.rq->path, "%s", url);
		for (i = 0; x.rq->path[i]; i++) /* the log line must stay valid JSON */
			if ((unsigned char)x.rq->path[i] < 0x20 || (unsigned char)x.rq->path[i] > 0x7e)
				x.rq->path[i] = '?';
		/* Refused before the client sends it, rather than read and thrown away. */
		clen = MHD_lookup_connection_value(con, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
		if (clen && strtoull(clen, NULL, 10) > MAX_DISCARD)
			return reply_error(&x, 413, "request body larger than 64 KiB", NULL);
		return MHD_YES;
	}
	if (x.rq->status) { /* answered early: whatever still arrives is dropped */
		*upload_size = 0;
		return MHD_YES;
	}
	if (*upload_size) {
		/* Only a chunked body gets this far, and MHD cannot answer in mid-body. */
		if ((x.rq->seen += *upload_size) > MAX_DISCARD) {
			OT_WARN(NULL, "%s %s: body over %d bytes, closing the connection", x.rq->method,
			        x.rq->path, MAX_DISCARD);
			return MHD_NO;
		}
		if (x.rq->seen <= MAX_BODY) {
			char *nb = realloc(x.rq->body, x.rq->len + *upload_size + 1);
			if (!nb)
				return MHD_NO;
			x.rq->body = nb;
			memcpy(x.rq->body + x.rq->len, upload, *upload_size);
			x.rq->len += *upload_size;
		}
		*upload_size = 0;
		return MHD_YES;
	}
	if (!(x.c = thread_conns(x.h)))
		return reply_error(&x, 500, "out of memory", NULL);
	return route(&x, url, method);
}

/* One debug line per request, then its memory goes. */
static void
completed(void *cls, struct MHD_Connection *con, void **con_cls, enum MHD_RequestTerminationCode toe)
{
	struct ot_http *h = cls;
	struct req *rq = *con_cls;

	(void)con;
	if (!rq)
		return;
	atomic_fetch_sub(&h->inflight, 1);
	OT_DEBUG(rq->order_id, "%s %s %u %lld ms%s", rq->method, rq->path, rq->status, now_ms() - rq->t0,
	         toe == MHD_REQUEST_TERMINATED_COMPLETED_OK ? "" : " (connection closed early)");
	free(rq->body);
	free(rq);
	*con_cls = NULL;
}

static void
mhd_log(void *cls, const char *fmt, va_list ap)
{
	char msg[512];
	size_t n;

	(void)cls;
	vsnprintf(msg, sizeof msg, fmt, ap);
	n = strlen(msg);
	while (n && msg[n - 1] == '\n')
		msg[--n] = '\0';
	OT_WARN(NULL, "http: %s", msg);
}

/* Binds "[host:]port": no host or "*" is every IPv4 interface, "[v6addr]" an IPv6 address,
 * anything else a name or address to resolve. Returns 0 with *fd listening, OT_ESERVICE when
 * the address is in use, OT_ECONFIG when it is not one this host can listen on. */
static int
listen_on(const char *addr, int *fd, char *errstr, size_t errsz)
{
	struct addrinfo hints, *ai = NULL, *a;
	const char *colon = strrchr(addr, ':'), *port = colon ? colon + 1 : addr;
	char host[256], *end;
	size_t hl = colon ? (size_t)(colon - addr) : 0;
	int r, e = EADDRNOTAVAIL, one = 1;
	long n;

	*fd = -1;
	n = strtol(port, &end, 10);
	if (*port < '0' || *port > '9' || *end || n < 1 || n > 65535 || hl >= sizeof host)
		return ot_err(OT_ECONFIG, errstr, errsz, "listen address \"%s\": expected [host:]port", addr);
	memcpy(host, addr, hl);
	host[hl] = '\0';
	if (hl >= 2 && host[0] == '[' && host[hl - 1] == ']') {
		memmove(host, host + 1, hl - 2);
		host[hl - 2] = '\0';
	} else if (strchr(host, ':')) {
		return ot_err(OT_ECONFIG, errstr, errsz, "listen address \"%s\": an IPv6 address goes in "
		              "brackets, as [::1]:8080", addr);
	}
	memset(&hints, 0, sizeof hints);
	hints.ai_family = *host && strcmp(host, "*") ? AF_UNSPEC : AF_INET;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
	if ((r = getaddrinfo(hints.ai_family == AF_INET ? NULL : host, port, &hints, &ai)))
		return ot_err(r == EAI_AGAIN ? OT_ESERVICE : OT_ECONFIG, errstr, errsz,
		              "listen address \"%s\": %s", addr, gai_strerror(r));
	for (a = ai; a && *fd < 0; a = a->ai_next) {
		if ((*fd = socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol)) < 0) {
			e = errno;
			continue;
		}
		setsockopt(*fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
		if (bind(*fd, a->ai_addr, a->ai_addrlen) == 0 && listen(*fd, SOMAXCONN) == 0)
			break;
		e = errno;
		close(*fd);
		*fd = -1;
	}
	freeaddrinfo(ai);
	if (*fd >= 0)
		return 0;
	return ot_err(e == EADDRINUSE ? OT_ESERVICE : OT_ECONFIG, errstr, errsz, "cannot listen on %s: %s",
	              addr, strerror(e));
}

struct ot_http *
ot_http_start(const struct ot_config *cfg, int *rc, char *errstr, size_t errsz)
{
	unsigned poller = MHD_is_feature_supported(MHD_FEATURE_EPOLL) == MHD_YES ? MHD_USE_EPOLL : MHD_USE_POLL;
	struct ot_redis_url u;
	struct ot_http *h = NULL;
	redisContext *r;
	PGconn *db;
	char err[512];
	int fd = -1;

	if (ot_redis_parse_url(cfg->redis_url, &u, errstr, errsz)) {
		*rc = OT_ECONFIG;
		return NULL;
	}
	if ((*rc = listen_on(cfg->http_addr, &fd, errstr, errsz)))
		return NULL;
	/* Migrations run once here, so worker threads only connect. */
	if (!(db = ot_pg_open(cfg->orders_db, "orders", rc, errstr, errsz)))
		goto fail;
	PQfinish(db);
	if ((r = ot_redis_connect(cfg->redis_url, REDIS_TIMEOUT_MS, err, sizeof err)))
		redisFree(r);
	else
		OT_WARN(NULL, "%s; reads fall back to the database until it answers", err);
	if ((h = calloc(1, sizeof *h)))
		pthread_mutex_init(&h->mu, NULL);
	if (!h || !(h->orders_db = strdup(cfg->orders_db)) || !(h->redis_url = strdup(cfg->redis_url))) {
		*rc = ot_err(OT_EINTERNAL, errstr, errsz, "out of memory");
		goto fail;
	}
	h->d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | poller | MHD_USE_ITC | MHD_USE_ERROR_LOG,
	                        0, NULL, NULL, handler, h,
	                        MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
	                        MHD_OPTION_LISTEN_SOCKET, (MHD_socket)fd,
	                        MHD_OPTION_THREAD_POOL_SIZE, (unsigned)THREADS,
	                        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)30,
	                        MHD_OPTION_NOTIFY_COMPLETED, completed, h,
	                        MHD_OPTION_END);
	if (!h->d) {
		*rc = ot_err(OT_EINTERNAL, errstr, errsz, "cannot start the HTTP server on %s", cfg->http_addr);
		goto fail;
	}
	OT_DEBUG(NULL, "%d threads, %s", THREADS, poller == MHD_USE_EPOLL ? "epoll" : "poll");
	return h;
fail:
	/* MHD owns the socket once it started; before that, or if it closed it, it is ours. */
	if (fd >= 0 && fcntl(fd, F_GETFD) != -1)
		close(fd);
	ot_http_stop(h);
	return NULL;
}

void
ot_http_stop(struct ot_http *h)
{
	struct timespec tick = {0, 50 * 1000000L};
	struct conns *c, *next;
	MHD_socket s;
	int waited;

	if (!h)
		return;
	if (h->d) {
		/* No new connections; requests in flight get their answers before the rest close. */
		if ((s = MHD_quiesce_daemon(h->d)) != MHD_INVALID_SOCKET)
			close(s);
		for (waited = 0; atomic_load(&h->inflight) > 0 && waited < DRAIN_MS; waited += 50)
			nanosleep(&tick, NULL);
		MHD_stop_daemon(h->d);
	}
	for (c = h->conns; c; c = next) {
		next = c->next;
		PQfinish(c->db);
		if (c->redis)
			redisFree(c->redis);
		free(c);
	}
	pthread_mutex_destroy(&h->mu);
	free(h->orders_db);
	free(h->redis_url);
	free(h);
}
