/* ot_httpd_server: libmicrohttpd with the limits every listener here needs, a route table, and the
 * health, readiness and metrics endpoints (the limits on each connection: ot_httpd_conn.c). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "ot_err.h"
#include "ot_event.h"
#include "ot_httpd.h"
#include "ot_httpd_int.h"
#include "ot_log.h"
#include "ot_text.h"
#include "ot_trace.h"
#include "ot_metrics.h"

/* What ot_httpd keeps of a request beside what the app sees; the app's ext follows it. */
struct req {
	struct ot_httpd_req rq; /* first: the two convert */
	int counted;         /* on the per-client counts, as a request of rq.client */
	int dispatched;      /* its body is in and its route ran */
};

static const double http_bounds[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5};
static struct ot_metric *m_requests, *m_duration;

enum MHD_Result
ot_httpd_reply(struct ot_httpd_req *rq, unsigned status, const char *type, const char *body, size_t len,
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
	if (rq->parked == 1) { /* off the event loop: queued on resume */
		if (rq->pending)
			MHD_destroy_response(rq->pending);
		rq->pending = r;
		rq->pending_status = status;
		return MHD_YES;
	}
	if ((ret = MHD_queue_response(rq->con, status, r)) == MHD_YES)
		rq->status = status;
	MHD_destroy_response(r);
	return ret;
}

enum MHD_Result
ot_httpd_reply_json(struct ot_httpd_req *rq, unsigned status, json_t *o, const char *const *headers)
{
	static const char oom[] = "{\"error\":\"internal error\"}\n";
	char *s = o ? json_dumps(o, OT_JSON_FLAGS) : NULL, *line;
	size_t n;

	json_decref(o);
	if (!s || !(line = realloc(s, (n = strlen(s)) + 2))) {
		free(s);
		return ot_httpd_reply(rq, 500, "application/json", oom, sizeof oom - 1, MHD_RESPMEM_PERSISTENT, NULL);
	}
	line[n++] = '\n';
	line[n] = '\0';
	return ot_httpd_reply(rq, status, "application/json", line, n, MHD_RESPMEM_MUST_FREE, headers);
}

enum MHD_Result
ot_httpd_reply_error(struct ot_httpd_req *rq, unsigned status, const char *msg, const char *const *headers)
{
	return ot_httpd_reply_json(rq, status, json_pack("{s:s}", "error", msg), headers);
}

void
ot_httpd_suspend(struct ot_httpd_req *rq)
{
	rq->parked = 1;
	atomic_fetch_add(&rq->srv->parked, 1);
	MHD_suspend_connection(rq->con);
}

void
ot_httpd_resume(struct ot_httpd_req *rq)
{
	rq->parked = 2;
	MHD_resume_connection(rq->con);
}

/* Back on the event loop after ot_httpd_resume, with an answer: it goes out. */
static enum MHD_Result
resumed(struct ot_httpd_req *rq)
{
	struct MHD_Response *r = rq->pending;
	enum MHD_Result ret;

	rq->pending = NULL;
	if ((ret = MHD_queue_response(rq->con, rq->pending_status, r)) == MHD_YES)
		rq->status = rq->pending_status;
	MHD_destroy_response(r);
	return ret;
}

/* GET /healthz: the process runs and answers. */
static enum MHD_Result
healthz(void *app, struct ot_httpd_req *rq)
{
	(void)app;
	return ot_httpd_reply_json(rq, 200, json_pack("{s:s}", "status", "ok"), NULL);
}

enum MHD_Result
ot_httpd_metrics(void *app, struct ot_httpd_req *rq)
{
	char *buf = NULL;
	size_t len = 0;

	(void)app;
	if (ot_metrics_render(&buf, &len)) {
		free(buf);
		return ot_httpd_reply_error(rq, 500, "out of memory", NULL);
	}
	return ot_httpd_reply(rq, 200, "text/plain; version=0.0.4; charset=utf-8", buf ? buf : "", len,
	                      buf ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT, NULL);
}

/* GET /readyz: the tool's check, run again when the last is over READY_MAX_AGE_MS old; the
 * other threads wait for its result, so many probes cost one check a second at most. */
static enum MHD_Result
readyz(struct ot_httpd *s, struct ot_httpd_req *rq)
{
	static const char *const retry[] = {"Retry-After", "1", NULL};
	char why[256];
	int ok;

	if (!s->o.ready)
		return healthz(s->o.app, rq);
	pthread_mutex_lock(&s->ready_mu);
	if (!s->ready_at || ot_now_ms() - s->ready_at >= READY_MAX_AGE_MS) {
		s->ready_why[0] = '\0';
		s->ready = s->o.ready(s->o.app, s->ready_why, sizeof s->ready_why) == 0;
		s->ready_at = ot_now_ms();
	}
	ok = s->ready;
	snprintf(why, sizeof why, "%s", s->ready_why);
	pthread_mutex_unlock(&s->ready_mu);
	if (ok)
		return ot_httpd_reply_json(rq, 200, json_pack("{s:s}", "status", "ready"), NULL);
	return ot_httpd_reply_json(rq, 503, json_pack("{s:s, s:s}", "status", "unavailable", "error",
	                                              why[0] ? why : "not ready"), retry);
}

static const struct ot_httpd_route builtin[] = {
	{"/healthz", "healthz", "GET", healthz},
	{"/readyz", "readyz", "GET", NULL}, /* readyz: needs the server */
	{"/metrics", "metrics", "GET", ot_httpd_metrics},
	{NULL, NULL, NULL, NULL}
};

static const struct ot_httpd_route *
find(const struct ot_httpd_route *t, const char *url)
{
	for (; t && t->path; t++)
		if (!strcmp(t->path, url))
			return t;
	return NULL;
}

/* Where a request goes: *r its route, or NULL for the fallback. Returns 1 with *ret when it is
 * answered here instead: a control character in the path 400, no route and no fallback 404, a
 * method the route does not take 405. */
static int
route_of(struct ot_httpd *s, struct ot_httpd_req *rq, const char *url, const char *method,
         const struct ot_httpd_route **r, enum MHD_Result *ret)
{
	static const char *const allow_get[] = {"Allow", "GET, HEAD", NULL};
	static const char *const allow_post[] = {"Allow", "POST", NULL};
	int get = !strcmp(method, MHD_HTTP_METHOD_GET) || !strcmp(method, MHD_HTTP_METHOD_HEAD);

	*r = NULL;
	for (const char *p = url; *p; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f) {
			*ret = ot_httpd_reply_error(rq, 400, "the path holds a control character", NULL);
			return 1;
		}
	if (!(*r = find(s->o.routes, url)) && !(*r = find(builtin, url))) {
		if (s->o.fallback)
			return 0;
		*ret = ot_httpd_reply_error(rq, 404, "no such resource", NULL);
		return 1;
	}
	rq->route = (*r)->name;
	if (!strcmp((*r)->methods, "GET") ? !get : strcmp(method, (*r)->methods)) {
		*ret = ot_httpd_reply_error(rq, 405, "method not allowed", strcmp((*r)->methods, "POST") ? allow_get
		                                                                                     : allow_post);
		return 1;
	}
	return 0;
}

static enum MHD_Result
dispatch(struct ot_httpd *s, struct ot_httpd_req *rq, const char *url, const char *method)
{
	const struct ot_httpd_route *r;
	enum MHD_Result ret;

	if (route_of(s, rq, url, method, &r, &ret))
		return ret;
	if (!r)
		return s->o.fallback(s->o.app, rq);
	if (!r->fn)
		return readyz(s, rq);
	return r->fn(s->o.app, rq);
}

/* MHD calls this once with the headers, once per piece of body, and once at the end. */
/* 431 with nothing MHD does not add itself: what is left of the connection's memory after a
 * head this large may hold little more than the status line. */
static enum MHD_Result
too_large(struct ot_httpd_req *rq)
{
	struct MHD_Response *r = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
	enum MHD_Result ret;

	if (!r)
		return MHD_NO;
	if ((ret = MHD_queue_response(rq->con, 431, r)) == MHD_YES)
		rq->status = 431;
	MHD_destroy_response(r);
	return ret;
}

static enum MHD_Result
add_len(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
	size_t *n = cls;

	(void)kind;
	*n += strlen(key) + (value ? strlen(value) : 0) + 4; /* ": " and CRLF */
	return MHD_YES;
}

/* A request's head is in: what can be answered without its body is, at once (431, 429 past the
 * per-client cap, 413, a GET with a body 400, 404, 405 and whatever the app's head hook
 * refuses); otherwise the connection waits for the body, if one comes, against the deadline. */
static enum MHD_Result
head_in(struct ot_httpd *s, struct req *b, struct MHD_Connection *con, const char *url, const char *method)
{
	static const char *const retry[] = {"Retry-After", "1", NULL};
	struct ot_httpd_req *rq = &b->rq;
	const char *clen = MHD_lookup_connection_value(con, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
	const char *te = MHD_lookup_connection_value(con, MHD_HEADER_KIND, MHD_HTTP_HEADER_TRANSFER_ENCODING);
	unsigned long long len = clen ? strtoull(clen, NULL, 10) : 0;
	const struct ot_httpd_route *r;
	enum MHD_Result ret = MHD_YES;
	size_t head = strlen(method) + strlen(url) + 12;
	int n = 0;

	MHD_get_connection_values(con, MHD_HEADER_KIND, add_len, &head);
	if (head > HEAD_MAX) {
		httpd_waits(s, con, WAIT_NONE);
		return too_large(rq);
	}
	if (httpd_client_of(s, con, rq) && s->o.max_per_client) {
		pthread_mutex_lock(&s->tcp_mu);
		b->counted = (n = httpd_client_add(s, rq->client, 1)) > 0;
		pthread_mutex_unlock(&s->tcp_mu);
	}
	rq->url = url;
	if (n > s->o.max_per_client) {
		httpd_count_refused();
		ret = ot_httpd_reply_error(rq, 429, "too many requests at once from this client", retry);
	} else if (len > OT_HTTPD_MAX_BODY) {
		/* Refused before the client sends it, rather than read and thrown away. */
		ret = ot_httpd_reply_error(rq, 413, "request body larger than 64 KiB", NULL);
	} else if (len || te) {
		if (!strcmp(method, MHD_HTTP_METHOD_GET) || !strcmp(method, MHD_HTTP_METHOD_HEAD))
			ret = ot_httpd_reply_error(rq, 400, "a GET or HEAD request takes no body", NULL);
		else if (!route_of(s, rq, url, method, &r, &ret) && !r && s->o.head)
			ret = s->o.head(s->o.app, rq);
	}
	rq->url = NULL;
	httpd_waits(s, con, (len || te) && !rq->status ? WAIT_BODY : WAIT_NONE);
	return ret;
}

static enum MHD_Result
handler(void *cls, struct MHD_Connection *con, const char *url, const char *method,
        const char *version, const char *upload, size_t *upload_size, void **con_cls)
{
	struct ot_httpd *s = cls;
	struct ot_httpd_req *rq = *con_cls;
	struct req *b = (struct req *)(void *)rq;
	size_t i;

	(void)version;
	if (!rq) {
		if (!(b = calloc(1, sizeof *b + s->o.req_size)))
			return MHD_NO;
		rq = &b->rq;
		*con_cls = rq;
		rq->ext = s->o.req_size ? b + 1 : NULL;
		rq->con = con;
		rq->srv = s;
		atomic_fetch_add(&s->inflight, 1);
		rq->t0 = ot_now_us();
		rq->route = "other";
		snprintf(rq->method, sizeof rq->method, "%s", method);
		snprintf(rq->path, sizeof rq->path, "%s", url);
		for (i = 0; rq->path[i]; i++) /* the log line must stay valid JSON */
			if ((unsigned char)rq->path[i] < 0x20 || (unsigned char)rq->path[i] > 0x7e)
				rq->path[i] = '?';
		return head_in(s, b, con, url, method);
	}
	if (rq->status) { /* answered early: whatever still arrives is dropped */
		*upload_size = 0;
		return MHD_YES;
	}
	if (*upload_size) {
		httpd_body_got(s, con, *upload_size);
		/* Only a chunked body gets this far, and MHD cannot answer in mid-body. */
		if ((rq->seen += *upload_size) > MAX_DISCARD) {
			OT_WARN(NULL, "%s %s: body over %d bytes, closing the connection", rq->method, rq->path, MAX_DISCARD);
			return MHD_NO;
		}
		if (rq->seen <= OT_HTTPD_MAX_BODY) {
			char *nb = realloc(rq->body, rq->len + *upload_size + 1);
			if (!nb)
				return MHD_NO;
			rq->body = nb;
			memcpy(rq->body + rq->len, upload, *upload_size);
			rq->len += *upload_size;
			rq->body[rq->len] = '\0';
		}
		*upload_size = 0;
		return MHD_YES;
	}
	if (!b->dispatched) { /* the whole request is in: no deadline while it is answered */
		b->dispatched = 1;
		httpd_waits(s, con, WAIT_NONE);
	}
	if (rq->parked == 2) {
		rq->parked = 0;
		atomic_fetch_sub(&s->parked, 1);
		if (rq->pending)
			return resumed(rq);
		/* Resumed without an answer: the route goes on from where it left off. */
	}
	rq->url = url;
	return dispatch(s, rq, url, method);
}

/* One debug line per request, then its memory goes. */
static void
completed(void *cls, struct MHD_Connection *con, void **con_cls, enum MHD_RequestTerminationCode toe)
{
	struct ot_httpd *s = cls;
	struct ot_httpd_req *rq = *con_cls;
	char code[16];
	double secs;

	if (!rq)
		return;
	if (((struct req *)(void *)rq)->counted) {
		pthread_mutex_lock(&s->tcp_mu);
		httpd_client_add(s, rq->client, -1);
		pthread_mutex_unlock(&s->tcp_mu);
	}
	/* A kept-alive connection waits for its next request from now; an upgraded one ends. */
	if (rq->status != 101)
		httpd_waits(s, con, WAIT_REQUEST);
	atomic_fetch_sub(&s->inflight, 1);
	secs = (double)(ot_now_us() - rq->t0) / 1e6;
	snprintf(code, sizeof code, "%u", rq->status);
	ot_metric_add(m_requests, 1, rq->route, code);
	ot_metric_observe(m_duration, secs, rq->route);
	if (rq->span)
		ot_span_enter(rq->span); /* the line below carries its ids; done ends it */
	OT_DEBUG(rq->order_id, "%s %s %u %lld ms%s", rq->method, rq->path, rq->status, (ot_now_us() - rq->t0) / 1000,
	         toe == MHD_REQUEST_TERMINATED_COMPLETED_OK ? "" : " (connection closed early)");
	if (s->o.done)
		s->o.done(s->o.app, rq);
	if (rq->pending)
		MHD_destroy_response(rq->pending);
	if (rq->parked) /* resumed, and the client had gone */
		atomic_fetch_sub(&s->parked, 1);
	free(rq->body);
	free(rq);
	*con_cls = NULL;
}

/* MHD's messages, by their format: most come once per connection (refused, dropped by its
 * client, cut for slowness, a live stream whose client went), so under a flood each says itself
 * once every LOG_EVERY_MS as a warning, with how many more there were, the rest at debug level. */
static pthread_mutex_t said_mu = PTHREAD_MUTEX_INITIALIZER;
static struct said {
	unsigned key;        /* ot_hash32 of the format; 0: free */
	long long last;      /* ms, monotonic, when it was last a warning */
	long quiet;          /* times since, at debug level */
} said[64];

static void
mhd_log(void *cls, const char *fmt, va_list ap)
{
	char msg[512];
	size_t n;
	unsigned key = ot_hash32(fmt) | 1;
	struct said *w = &said[key % (sizeof said / sizeof said[0])];
	long long now = ot_now_ms();
	long quiet = 0;
	int loud = 1;

	(void)cls;
	vsnprintf(msg, sizeof msg, fmt, ap);
	n = strlen(msg);
	while (n && msg[n - 1] == '\n')
		msg[--n] = '\0';
	pthread_mutex_lock(&said_mu);
	if (w->key == key && now - w->last < LOG_EVERY_MS) {
		w->quiet++;
		loud = 0;
	} else {
		quiet = w->key == key ? w->quiet : 0;
		*w = (struct said){key, now, 0};
	}
	pthread_mutex_unlock(&said_mu);
	if (!loud)
		OT_DEBUG(NULL, "http: %s", msg);
	else if (quiet)
		OT_WARN(NULL, "http: %s (and %ld more like it since the last, at debug level)", msg, quiet);
	else
		OT_WARN(NULL, "http: %s", msg);
}

/* MHD decodes the path in place, so an encoded NUL would end it early and "/orders/{id}%00"
 * would read as the order. It decodes as DEL instead, a control character like any other,
 * which dispatch refuses. */
static size_t
unescape(void *cls, struct MHD_Connection *con, char *s)
{
	(void)cls, (void)con;
	for (char *p = s; (p = strstr(p, "%00")); p += 3)
		p[1] = '7', p[2] = 'F';
	return MHD_http_unescape(s);
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

struct ot_httpd *
ot_httpd_start(const struct ot_httpd_opts *o, int *rc, char *errstr, size_t errsz)
{
	unsigned poller = MHD_is_feature_supported(MHD_FEATURE_EPOLL) == MHD_YES ? MHD_USE_EPOLL : MHD_USE_POLL;
	struct ot_httpd *s = NULL;
	int fd = -1, threads = o->threads > 1 ? o->threads : 1;
	/* A pool of one is MHD's own polling thread, and MHD warns when asked for it. */
	struct MHD_OptionItem pool[] = {{threads > 1 ? MHD_OPTION_THREAD_POOL_SIZE : MHD_OPTION_END,
	                                 (intptr_t)threads, NULL}, {MHD_OPTION_END, 0, NULL}};

	m_requests = ot_metric_new(OT_COUNTER, "ot_http_requests_total", "HTTP requests answered, by route and status.",
	                           "route,code", NULL, 0);
	m_duration = ot_metric_new(OT_HISTOGRAM, "ot_http_request_duration_seconds",
	                           "Time from a request's headers to its answer, by route.", "route", http_bounds,
	                           sizeof http_bounds / sizeof http_bounds[0]);
	httpd_conn_metrics();
	if ((*rc = listen_on(o->addr, &fd, errstr, errsz)))
		return NULL;
	if (!(s = calloc(1, sizeof *s))) {
		*rc = ot_err(OT_EINTERNAL, errstr, errsz, "out of memory");
		goto fail;
	}
	s->o = *o;
	s->o.max_per_client = o->max_per_client > 0 ? o->max_per_client : 0;
	s->o.max_connections = o->max_connections > 0 ? o->max_connections : MAX_CONNECTIONS;
	s->o.request_ms = o->request_ms > 0 ? o->request_ms : REQUEST_MS;
	pthread_mutex_init(&s->ready_mu, NULL);
	pthread_mutex_init(&s->tcp_mu, NULL);
	/* The per-client cap is notify's, not MHD's (MHD_OPTION_PER_IP_CONNECTION_LIMIT), so that
	 * a trusted proxy's connections are left out of it. */
	s->d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | poller | MHD_USE_ITC | MHD_USE_ERROR_LOG |
	                        MHD_ALLOW_SUSPEND_RESUME | MHD_ALLOW_UPGRADE,
	                        0, NULL, NULL, handler, s,
	                        MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
	                        MHD_OPTION_LISTEN_SOCKET, (MHD_socket)fd,
	                        MHD_OPTION_ARRAY, pool,
	                        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)IDLE_S,
	                        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)HEADER_LIMIT,
	                        MHD_OPTION_CONNECTION_LIMIT, (unsigned)s->o.max_connections,
	                        MHD_OPTION_NOTIFY_COMPLETED, completed, s,
	                        MHD_OPTION_UNESCAPE_CALLBACK, unescape, NULL,
	                        MHD_OPTION_NOTIFY_CONNECTION, httpd_notify, s,
	                        MHD_OPTION_END);
	if (!s->d) {
		*rc = ot_err(OT_EINTERNAL, errstr, errsz, "cannot start the HTTP server on %s", o->addr);
		goto fail;
	}
	if (pthread_create(&s->sweeper, NULL, httpd_sweep, s)) {
		*rc = ot_err(OT_EINTERNAL, errstr, errsz, "cannot start a thread");
		goto fail;
	}
	s->sweeping = 1;
	OT_DEBUG(NULL, "http: %d threads, %s", threads, poller == MHD_USE_EPOLL ? "epoll" : "poll");
	return s;
fail:
	/* MHD owns the socket once it started; before that, or if it closed it, it is ours. */
	if (fd >= 0 && fcntl(fd, F_GETFD) != -1 && (!s || !s->d))
		close(fd);
	ot_httpd_stop(s);
	return NULL;
}

void
ot_httpd_stop(struct ot_httpd *s)
{
	struct timespec tick = {0, 50 * 1000000L};
	MHD_socket sock;
	int waited;

	if (!s)
		return;
	if (s->d) {
		/* No new connections; requests in flight get their answers before the rest close. */
		if ((sock = MHD_quiesce_daemon(s->d)) != MHD_INVALID_SOCKET)
			close(sock);
		if (s->o.quiesce)
			s->o.quiesce(s->o.app);
		for (waited = 0; atomic_load(&s->inflight) > 0 && waited < DRAIN_MS; waited += 50)
			nanosleep(&tick, NULL);
		/* MHD cannot stop with a connection suspended, and whoever holds one resumes it soon
		 * (each of its waits has a timeout). */
		for (waited = 0; atomic_load(&s->parked) > 0; waited += 50) {
			if (waited % DRAIN_MS == 0)
				OT_WARN(NULL, "http: waiting for %d requests to finish", atomic_load(&s->parked));
			nanosleep(&tick, NULL);
		}
		MHD_stop_daemon(s->d);
	}
	if (s->sweeping) {
		atomic_store(&s->stop_sweep, 1);
		pthread_join(s->sweeper, NULL);
	}
	for (size_t i = 0; i < CLIENT_BUCKETS; i++)
		for (struct client *c = s->clients[i], *next; c; c = next) {
			next = c->next;
			free(c);
		}
	pthread_mutex_destroy(&s->ready_mu);
	pthread_mutex_destroy(&s->tcp_mu);
	free(s);
}
