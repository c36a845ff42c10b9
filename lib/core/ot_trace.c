/* ot_trace: spans with W3C ids, queued on end and posted in batches by one exporter thread. */
#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "ot_err.h"
#include "ot_id.h"
#include "ot_time.h"
#include "ot_log.h"
#include "ot_metrics.h"
#include "ot_text.h"
#include "ot_trace.h"

#define QUEUE_MAX 8192      /* spans waiting for the exporter; more are dropped, not waited for */
#define BATCH_MAX 512       /* spans in one POST */
#define FLUSH_MS 1000       /* a span waits at most this long before it is sent */
#define POST_TIMEOUT_MS 3000
#define CONNECT_TIMEOUT_MS 1000

/* What only an exported span needs: built at begin, turned into JSON at end. */
struct detail {
	char name[96];
	enum ot_span_kind kind;
	long long start_us; /* since the epoch */
	json_t *tags;
};

static _Thread_local struct ot_span *cur;

static atomic_int enabled;
static atomic_long dropped, sent;
static char service[32] = "ordertrack";
static char *export_url;
static char shown_url[512]; /* export_url without a password, for log lines */

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static json_t *queue[QUEUE_MAX]; /* a ring: head is the oldest */
static size_t qhead, qlen;
static int stopping, running;
static long long stop_deadline; /* ms, monotonic */
static pthread_t exporter;

static long long
epoch_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return ts.tv_sec * 1000000LL + ts.tv_nsec / 1000;
}

/* Ids need to be unique, not secret: a per-thread splitmix64 seeded once from the kernel costs
 * no system call per span. */
static _Thread_local uint64_t rng;

static uint64_t
next_random(void)
{
	uint64_t z;

	if (!rng) {
		struct timespec ts;
		if (getrandom(&rng, sizeof rng, 0) != (ssize_t)sizeof rng || !rng) {
			clock_gettime(CLOCK_REALTIME, &ts); /* no getrandom: still unique enough */
			rng = (uint64_t)ts.tv_nsec * 0x9e3779b97f4a7c15ULL ^ (uint64_t)ts.tv_sec ^
			      ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)&rng;
		}
	}
	z = (rng += 0x9e3779b97f4a7c15ULL);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

/* n (8 or 16) random bytes as 2n hex digits, never all zero (W3C calls an all-zero id invalid). */
static void
random_hex(char *out, size_t n)
{
	unsigned char b[16];
	uint64_t v = 0;
	size_t i;

	for (i = 0; i < n; i++) {
		if (i % 8 == 0)
			while (!(v = next_random()))
				;
		b[i] = (unsigned char)(v >> (8 * (i % 8)));
	}
	ot_hex(out, b, n);
}

static void
lower_copy(char *dst, const char *src, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		dst[i] = (char)(src[i] >= 'A' && src[i] <= 'F' ? src[i] - 'A' + 'a' : src[i]);
	dst[n] = '\0';
}

/* The log's context: the ids of the thread's current span. */
static int
log_context(const char **trace_id, const char **span_id)
{
	if (!cur)
		return 0;
	*trace_id = cur->trace_id;
	*span_id = cur->id;
	return 1;
}

static void
set_log_context(void)
{
	ot_log_set_context(log_context);
}

static void
begin(struct ot_span *s, const char *name, enum ot_span_kind kind, const char *parent)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;
	const struct ot_span *p = cur;
	struct detail *d;

	pthread_once(&once, set_log_context);

	memset(s, 0, sizeof *s);
	if (parent && ot_traceparent_valid(parent)) {
		lower_copy(s->trace_id, parent + 3, 32);
		lower_copy(s->parent_id, parent + 36, 16);
	} else if (p) {
		memcpy(s->trace_id, p->trace_id, sizeof s->trace_id);
		memcpy(s->parent_id, p->id, sizeof s->parent_id);
	} else {
		random_hex(s->trace_id, 16);
	}
	random_hex(s->id, 8);
	if (!atomic_load_explicit(&enabled, memory_order_relaxed))
		return;
	if (!(d = calloc(1, sizeof *d)))
		return; /* not exported, still propagated */
	snprintf(d->name, sizeof d->name, "%s", name ? name : "span");
	d->kind = kind;
	d->start_us = epoch_us();
	s->detail = d;
	s->exported = 1;
}

void
ot_span_begin(struct ot_span *s, const char *name, enum ot_span_kind kind, const char *parent)
{
	begin(s, name, kind, parent);
	ot_span_enter(s);
}

void
ot_span_begin_detached(struct ot_span *s, const char *name, enum ot_span_kind kind, const char *parent)
{
	begin(s, name, kind, parent);
}

void
ot_span_enter(struct ot_span *s)
{
	if (!s || s->current || !s->trace_id[0]) /* never begun: nothing to carry */
		return;
	s->prev = cur;
	s->current = 1;
	cur = s;
}

void
ot_span_leave(struct ot_span *s)
{
	if (!s || !s->current)
		return;
	if (cur == s)
		cur = s->prev;
	s->current = 0;
	s->prev = NULL;
}

const struct ot_span *
ot_span_current(void)
{
	return cur;
}

void
ot_span_traceparent(const struct ot_span *s, char out[56])
{
	snprintf(out, 56, "00-%.32s-%.16s-01", s->trace_id, s->id);
}

void
ot_span_tag(struct ot_span *s, const char *key, const char *value)
{
	struct detail *d = s ? s->detail : NULL;
	char esc[1024];

	if (!d || !key || !value)
		return;
	if (!d->tags)
		d->tags = json_object();
	if (ot_utf8_valid(value, strlen(value)))
		json_object_set_new(d->tags, key, json_string(value));
	else { /* JSON cannot carry it as it is */
		ot_utf8_escape(esc, sizeof esc, value);
		json_object_set_new(d->tags, key, json_string(esc));
	}
}

void
ot_span_error(struct ot_span *s, const char *msg)
{
	ot_span_tag(s, "error", msg && *msg ? msg : "failed");
}

static const char *
kind_name(enum ot_span_kind k)
{
	switch (k) {
	case OT_SPAN_SERVER: return "SERVER";
	case OT_SPAN_CLIENT: return "CLIENT";
	case OT_SPAN_PRODUCER: return "PRODUCER";
	case OT_SPAN_CONSUMER: return "CONSUMER";
	default: return NULL;
	}
}

/* The span in Zipkin's v2 model, or NULL out of memory. */
static json_t *
zipkin_span(const struct ot_span *s, const struct detail *d, long long end_us)
{
	json_t *o = json_pack("{s:s, s:s}", "traceId", s->trace_id, "id", s->id);

	if (!o)
		return NULL;
	if (s->parent_id[0])
		json_object_set_new(o, "parentId", json_string(s->parent_id));
	json_object_set_new(o, "name", json_string(d->name));
	if (kind_name(d->kind))
		json_object_set_new(o, "kind", json_string(kind_name(d->kind)));
	json_object_set_new(o, "timestamp", json_integer(d->start_us));
	/* Zipkin reads a duration of 0 as unknown. */
	json_object_set_new(o, "duration", json_integer(end_us > d->start_us ? end_us - d->start_us : 1));
	json_object_set_new(o, "localEndpoint", json_pack("{s:s}", "serviceName", service));
	if (d->tags)
		json_object_set_new(o, "tags", json_incref(d->tags));
	return o;
}

void
ot_span_end(struct ot_span *s)
{
	struct detail *d;
	json_t *o = NULL;

	if (!s)
		return;
	ot_span_leave(s);
	if (!(d = s->detail))
		return;
	s->detail = NULL;
	s->exported = 0;
	if (atomic_load_explicit(&enabled, memory_order_relaxed))
		o = zipkin_span(s, d, epoch_us());
	json_decref(d->tags);
	free(d);
	if (!o) {
		atomic_fetch_add(&dropped, 1);
		return;
	}
	pthread_mutex_lock(&mu);
	if (qlen < QUEUE_MAX && running && !stopping) {
		queue[(qhead + qlen++) % QUEUE_MAX] = o;
		o = NULL;
		if (qlen >= BATCH_MAX)
			pthread_cond_signal(&cv);
	}
	pthread_mutex_unlock(&mu);
	if (o) { /* full, or stopping: a record never waits for the collector */
		json_decref(o);
		atomic_fetch_add(&dropped, 1);
	}
}

int
ot_trace_enabled(void)
{
	return atomic_load(&enabled);
}

long
ot_trace_dropped(void)
{
	return atomic_load(&dropped);
}

long
ot_trace_sent(void)
{
	return atomic_load(&sent);
}

/* /metrics: what the exporter sent and dropped, read at each scrape. */
static void
trace_metrics(void *arg)
{
	(void)arg;
	ot_metric_set(ot_metric_new(OT_COUNTER, "ot_trace_spans_sent_total", "Spans the collector took.",
	                            NULL, NULL, 0), (double)ot_trace_sent());
	ot_metric_set(ot_metric_new(OT_COUNTER, "ot_trace_spans_dropped_total", "Spans dropped: the export "
	                            "queue was full or the collector did not take them.", NULL, NULL, 0),
	              (double)ot_trace_dropped());
}

static size_t
discard(char *p, size_t size, size_t n, void *arg)
{
	(void)p;
	(void)arg;
	return size * n; /* the collector's answer must not reach stdout, which carries data */
}

/* Posts n spans (and releases them). Returns 0 when the collector took them. */
static int
post(CURL *c, struct curl_slist *hdrs, json_t **spans, size_t n, long timeout_ms, char *errstr, size_t errsz)
{
	json_t *a = json_array();
	char *body = NULL;
	long status = 0;
	CURLcode cc;
	size_t i;
	int rc = -1;

	for (i = 0; i < n; i++)
		if (a)
			json_array_append_new(a, spans[i]);
		else
			json_decref(spans[i]);
	if (!a || !(body = json_dumps(a, JSON_COMPACT))) {
		ot_err(-1, errstr, errsz, "out of memory");
		goto out;
	}
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
	curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout_ms);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, timeout_ms < CONNECT_TIMEOUT_MS ? timeout_ms
	                                                                              : CONNECT_TIMEOUT_MS);
	if ((cc = curl_easy_perform(c)) != CURLE_OK) {
		ot_err(-1, errstr, errsz, "%s", curl_easy_strerror(cc));
		goto out;
	}
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
	if (status < 200 || status > 299) {
		ot_err(-1, errstr, errsz, "the collector answered HTTP %ld", status);
		goto out;
	}
	rc = 0;
out:
	json_decref(a);
	free(body);
	atomic_fetch_add(rc ? &dropped : &sent, (long)n);
	return rc;
}

static void *
export_loop(void *arg)
{
	json_t *batch[BATCH_MAX];
	struct curl_slist *hdrs = NULL;
	CURL *c = arg;
	char err[CURL_ERROR_SIZE + 64];
	int failing = 0;

	hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
	hdrs = curl_slist_append(hdrs, "Expect:"); /* no 100-continue round trip */
	pthread_mutex_lock(&mu);
	for (;;) {
		size_t n = 0;
		long timeout = POST_TIMEOUT_MS;

		if (!stopping && qlen < BATCH_MAX) {
			struct timespec ts;
			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_sec += FLUSH_MS / 1000;
			ts.tv_nsec += (FLUSH_MS % 1000) * 1000000L;
			if (ts.tv_nsec >= 1000000000L) {
				ts.tv_sec++;
				ts.tv_nsec -= 1000000000L;
			}
			pthread_cond_timedwait(&cv, &mu, &ts);
		}
		while (n < BATCH_MAX && qlen) {
			batch[n++] = queue[qhead];
			qhead = (qhead + 1) % QUEUE_MAX;
			qlen--;
		}
		if (stopping) {
			timeout = (long)(stop_deadline - ot_now_ms());
			if (!n || timeout <= 0) {
				for (size_t i = 0; i < n; i++)
					json_decref(batch[i]);
				atomic_fetch_add(&dropped, (long)n);
				break;
			}
			if (timeout > POST_TIMEOUT_MS)
				timeout = POST_TIMEOUT_MS;
		}
		if (!n)
			continue;
		pthread_mutex_unlock(&mu);
		if (!hdrs) {
			for (size_t i = 0; i < n; i++)
				json_decref(batch[i]);
			atomic_fetch_add(&dropped, (long)n);
		} else if (post(c, hdrs, batch, n, timeout, err, sizeof err)) {
			if (!failing)
				OT_WARN(NULL, "trace export to %s failed, dropping spans until it answers: %s",
				        shown_url, err);
			failing = 1;
		} else if (failing) {
			OT_INFO(NULL, "trace export to %s works again; %ld spans dropped so far", shown_url,
			        ot_trace_dropped());
			failing = 0;
		}
		pthread_mutex_lock(&mu);
	}
	/* Out of time: what is left goes uncounted by the collector, counted here. */
	while (qlen) {
		json_decref(queue[qhead]);
		qhead = (qhead + 1) % QUEUE_MAX;
		qlen--;
		atomic_fetch_add(&dropped, 1);
	}
	pthread_mutex_unlock(&mu);
	curl_slist_free_all(hdrs);
	return NULL;
}

static CURL *curl;

/* url with the password of its user:password@ replaced by OT_REDACTED. */
static void
redact_url(const char *url, char *out, size_t outsz)
{
	const char *auth = strstr(url, "://"), *end, *at, *colon;

	snprintf(out, outsz, "%s", url);
	if (!auth)
		return;
	auth += 3;
	end = auth + strcspn(auth, "/?#");
	for (at = end; at > auth && at[-1] != '@'; at--)
		;
	if (at == auth || !(colon = memchr(auth, ':', (size_t)(at - 1 - auth))))
		return;
	snprintf(out, outsz, "%.*s:" OT_REDACTED "%s", (int)(colon - url), url, at - 1);
}

int
ot_trace_start(const char *svc, const char *url, char *errstr, size_t errsz)
{
	int rc = -1, e;

	if (!url || !*url)
		return 0;
	if (running)
		return ot_err(-1, errstr, errsz, "tracing already started");
	redact_url(url, shown_url, sizeof shown_url);
	if (strncasecmp(url, "http://", 7) && strncasecmp(url, "https://", 8))
		return ot_err(-1, errstr, errsz, "OT_TRACE_URL=%s: expected an http:// or https:// URL",
		              shown_url);
	if (svc)
		snprintf(service, sizeof service, "%s", svc);
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
		return ot_err(-1, errstr, errsz, "libcurl failed to start");
	if (!(export_url = strdup(url)) || !(curl = curl_easy_init())) {
		ot_err(-1, errstr, errsz, "out of memory");
		goto out;
	}
	curl_easy_setopt(curl, CURLOPT_URL, export_url);
	curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L); /* timeouts without SIGALRM, in a thread */
	curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, discard);
	curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(curl, CURLOPT_USERAGENT, "ordertrack/" OT_VERSION);
	stopping = 0;
	if ((e = pthread_create(&exporter, NULL, export_loop, curl))) {
		ot_err(-1, errstr, errsz, "cannot start the trace exporter: %s", strerror(e));
		goto out;
	}
	running = 1;
	ot_metrics_collector(trace_metrics, NULL);
	atomic_store(&enabled, 1);
	rc = 0;
out:
	if (rc) {
		if (curl)
			curl_easy_cleanup(curl);
		curl = NULL;
		free(export_url);
		export_url = NULL;
		curl_global_cleanup();
	}
	return rc;
}

void
ot_trace_stop(int timeout_ms)
{
	pthread_mutex_lock(&mu);
	if (!running || stopping) {
		pthread_mutex_unlock(&mu);
		return;
	}
	atomic_store(&enabled, 0);
	stopping = 1;
	stop_deadline = ot_now_ms() + (timeout_ms > 0 ? timeout_ms : 0);
	pthread_cond_signal(&cv);
	pthread_mutex_unlock(&mu);
	pthread_join(exporter, NULL);
	ot_metrics_collector_remove(trace_metrics, NULL);
	if (atomic_load(&dropped))
		OT_INFO(NULL, "tracing: %ld spans exported, %ld dropped", ot_trace_sent(), ot_trace_dropped());
	curl_easy_cleanup(curl);
	curl = NULL;
	curl_global_cleanup();
	pthread_mutex_lock(&mu);
	running = 0;
	stopping = 0;
	pthread_mutex_unlock(&mu);
	free(export_url);
	export_url = NULL;
}

int
ot_traceparent_valid(const char *s)
{
	/* W3C Trace Context: version ff and an all-zero trace id or parent id are invalid. */
	return s && strlen(s) == 55 && ot_hex_valid(s, 2) && strncasecmp(s, "ff", 2) && s[2] == '-' &&
	       ot_hex_valid(s + 3, 32) && s[35] == '-' && ot_hex_valid(s + 36, 16) && s[52] == '-' && ot_hex_valid(s + 53, 2) &&
	       strncmp(s + 3, "00000000000000000000000000000000", 32) && strncmp(s + 36, "0000000000000000", 16);
}

void
ot_traceparent_new(char out[OT_TRACEPARENT_LEN], const char *parent)
{
	unsigned char b[24];
	char h[49];

	ot_random(b, sizeof b);
	ot_hex(h, b, sizeof b);
	if (parent && ot_traceparent_valid(parent))
		snprintf(out, OT_TRACEPARENT_LEN, "00-%.32s-%.16s-01", parent + 3, h);
	else
		snprintf(out, OT_TRACEPARENT_LEN, "00-%.32s-%.16s-01", h, h + 32);
}
