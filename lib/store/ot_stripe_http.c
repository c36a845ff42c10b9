/* ot_stripe_http: the payment client's requests: one over libcurl, and the retries around it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <curl/curl.h>
#include <jansson.h>

#include "ot_breaker.h"
#include "ot_log.h"
#include "ot_metrics.h"
#include "ot_signal.h"
#include "ot_text.h"
#include "ot_time.h"
#include "ot_stripe.h"
#include "ot_stripe_int.h"

#define MAX_BODY (4 << 20) /* a list page of 100 charges is well under this */

/* One answer: its body, status and the headers the retry policy reads. */
struct answer {
	char *body;
	size_t len, cap;
	long status;
	long retry_after_ms;      /* -1: no Retry-After */
	int should_retry;         /* Stripe-Should-Retry: -1 absent, 0 false, 1 true */
	char request_id[OT_PAY_ID_LEN];
};

/* What one attempt came to, for the retry loop: an answer that settles the call, one to try
 * again, or one not to try again (Stripe-Should-Retry: false) that settles nothing. */
enum verdict { FINAL, RETRY, GIVE_UP };

/* Replaces every occurrence of the key in msg by OT_REDACTED, in place. The processor's errors
 * censor keys themselves, but nothing we pass on should depend on that. */
void
ot_stripe_scrub(char *msg, const char *key)
{
	size_t klen = strlen(key), rlen = strlen(OT_REDACTED);
	char *p;

	if (klen < rlen)
		return;
	while ((p = strstr(msg, key))) {
		memcpy(p, OT_REDACTED, rlen);
		memmove(p + rlen, p + klen, strlen(p + klen) + 1);
	}
}

static void
copy(char *dst, size_t dstsz, const char *src)
{
	ot_utf8_copy(dst, dstsz, src ? src : "");
}

static size_t
on_body(char *p, size_t size, size_t n, void *arg)
{
	struct answer *a = arg;
	size_t len = size * n;
	char *b;

	if (a->len + len + 1 > MAX_BODY)
		return 0; /* libcurl ends the transfer with a write error */
	if (a->len + len + 1 > a->cap) {
		size_t cap = a->cap ? a->cap : 4096;
		while (cap < a->len + len + 1)
			cap *= 2;
		if (!(b = realloc(a->body, cap)))
			return 0;
		a->body = b;
		a->cap = cap;
	}
	memcpy(a->body + a->len, p, len);
	a->len += len;
	a->body[a->len] = '\0';
	return len;
}

/* The value of header name in the line p (n bytes), trimmed, into out; 1 if it is that header. */
static int
header_value(const char *p, size_t n, const char *name, char *out, size_t outsz)
{
	size_t nl = strlen(name), i;

	if (n <= nl || strncasecmp(p, name, nl) || p[nl] != ':')
		return 0;
	for (p += nl + 1, n -= nl + 1; n > 0 && (*p == ' ' || *p == '\t'); p++, n--)
		;
	while (n > 0 && (p[n - 1] == '\r' || p[n - 1] == '\n' || p[n - 1] == ' '))
		n--;
	i = n < outsz - 1 ? n : outsz - 1;
	memcpy(out, p, i);
	out[i] = '\0';
	return 1;
}

static size_t
on_header(char *p, size_t size, size_t n, void *arg)
{
	struct answer *a = arg;
	size_t len = size * n;
	char v[128];
	char *end;
	long sec;
	time_t when;

	if (header_value(p, len, "Retry-After", v, sizeof v)) {
		sec = strtol(v, &end, 10);
		if (end != v && !*end && sec >= 0) {
			a->retry_after_ms = sec * 1000;
		} else if ((when = curl_getdate(v, NULL)) != (time_t)-1) {
			a->retry_after_ms = when > time(NULL) ? (long)(when - time(NULL)) * 1000 : 0;
		}
	} else if (header_value(p, len, "Stripe-Should-Retry", v, sizeof v)) {
		a->should_retry = !strcasecmp(v, "true");
	} else if (header_value(p, len, "Request-Id", v, sizeof v)) {
		copy(a->request_id, sizeof a->request_id, v);
	}
	return len;
}

/* One request. Returns libcurl's code; *sent is 1 when any of it left (a failure before that
 * had no effect at the processor). */
static CURLcode
perform(struct ot_stripe *s, const char *method, const char *url, const char *body, const char *idem,
        long timeout_ms, struct answer *a, int *sent, char *errbuf)
{
	struct curl_slist *h = NULL, *x;
	char idh[300];
	CURLcode cc;
	long req = 0;
	CURL *c = s->curl;

	*sent = 0;
	curl_easy_reset(c); /* the open connection stays */
	snprintf(idh, sizeof idh, "Idempotency-Key: %s", idem ? idem : "");
	if (!(x = h = curl_slist_append(NULL, s->auth)) || !(x = curl_slist_append(h, "Expect:")) ||
	    (idem && !(x = curl_slist_append(h, idh)))) {
		curl_slist_free_all(h);
		return CURLE_OUT_OF_MEMORY;
	}
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(c, CURLOPT_USERAGENT, "ordertrack/" OT_VERSION);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, s->connect_timeout_ms < timeout_ms ?
	                 s->connect_timeout_ms : timeout_ms);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout_ms);
	curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, a);
	curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(c, CURLOPT_HEADERDATA, a);
	if (!strcmp(method, "POST")) {
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, body ? body : "");
		curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)(body ? strlen(body) : 0));
	}
	errbuf[0] = '\0';
	cc = curl_easy_perform(c);
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &a->status);
	curl_easy_getinfo(c, CURLINFO_REQUEST_SIZE, &req);
	*sent = req > 0;
	curl_slist_free_all(h);
	return cc;
}

/* The processor's error object into r: error.type, code, decline_code, message, charge. */
static void
parse_error(const struct answer *a, struct ot_pay_result *r)
{
	json_t *root, *e;

	if (!a->body || !(root = json_loads(a->body, 0, NULL)))
		return;
	if (json_is_object(e = json_object_get(root, "error"))) {
		copy(r->err_type, sizeof r->err_type, json_string_value(json_object_get(e, "type")));
		copy(r->err_code, sizeof r->err_code, json_string_value(json_object_get(e, "code")));
		copy(r->decline_code, sizeof r->decline_code, json_string_value(json_object_get(e, "decline_code")));
		copy(r->message, sizeof r->message, json_string_value(json_object_get(e, "message")));
		copy(r->charge_id, sizeof r->charge_id, json_string_value(json_object_get(e, "charge")));
	}
	json_decref(root);
}

/* How an answer (or its absence) ends this attempt: the outcome if final, and for the breaker
 * whether the processor worked. *effect becomes 1 when the request may have done something. */
static enum verdict
judge(CURLcode cc, int sent, const struct answer *a, int *ok_for_breaker, int *effect, enum ot_pay_outcome *o)
{
	long st = a->status;

	*ok_for_breaker = 1;
	if (cc != CURLE_OK) {
		*ok_for_breaker = 0;
		*effect |= sent;
		return RETRY;
	}
	if (st >= 200 && st < 300)
		return *o = OT_PAY_OK, FINAL;
	if (st >= 500) {
		*ok_for_breaker = 0;
		*effect = 1;
		return a->should_retry == 0 ? GIVE_UP : RETRY;
	}
	if (st == 429)
		return a->should_retry == 0 ? GIVE_UP : RETRY;
	if (st == 409) { /* the same key in flight elsewhere: that request may be doing it */
		*effect = 1;
		return a->should_retry == 0 ? GIVE_UP : RETRY;
	}
	if (a->should_retry == 1) /* the processor says another try may succeed (a lock timeout) */
		return RETRY;
	*o = st == 402 ? OT_PAY_DECLINED : st == 404 ? OT_PAY_NOT_FOUND : OT_PAY_INVALID;
	return FINAL;
}

/* The metrics' op: a lookup by id or by order is one. */
static const char *
metric_op(const char *op)
{
	return !strcmp(op, "get") || !strcmp(op, "find") ? "lookup" : op;
}

/* What went wrong with one attempt, for ot_pay_processor_errors_total; NULL when nothing did
 * (an answer that is 2xx, a decline or a refusal: the processor worked). */
static const char *
error_kind(CURLcode cc, int sent, long status)
{
	switch (cc) {
	case CURLE_OK:
		return status >= 500 ? "http_5xx" : status == 429 ? "http_429" : NULL;
	case CURLE_OPERATION_TIMEDOUT:
		return "timeout";
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_RESOLVE_PROXY:
	case CURLE_COULDNT_CONNECT:
		return "connect";
	default:
		return sent ? "reset" : "connect"; /* cut once under way, or before anything left */
	}
}

static void
count_error(const char *op, const char *kind)
{
	ot_metric_add(ot_metric_new(OT_COUNTER, "ot_pay_processor_errors_total", "Requests to the payment processor "
	                            "that failed, by operation and kind (timeout, connect, reset, http_5xx, http_429, "
	                            "breaker_open); declines and refusals are answers, not errors.", "op,kind", NULL, 0),
	              1, metric_op(op), kind);
}

/* One attempt's duration and, if it failed, its kind. */
static void
observe(const char *op, long long t0_us, CURLcode cc, int sent, long status)
{
	const char *kind = error_kind(cc, sent, status);

	ot_metric_observe(ot_metric_new(OT_HISTOGRAM, "ot_pay_processor_seconds", "Duration of each request to the "
	                                "payment processor (each attempt), by operation.", "op", NULL, 0),
	                  (double)(ot_now_us() - t0_us) / 1e6, metric_op(op));
	if (kind)
		count_error(op, kind);
}

/* Sleeps ms, in steps, until ot_stop. Returns 0, or -1 when stopped. */
static int
pause_ms(long ms)
{
	struct timespec ts;

	for (; ms > 0; ms -= 50) {
		if (ot_stop)
			return -1;
		ts.tv_sec = 0;
		ts.tv_nsec = (ms < 50 ? ms : 50) * 1000000L;
		nanosleep(&ts, NULL);
	}
	return ot_stop ? -1 : 0;
}

static void
answer_reset(struct answer *a)
{
	a->len = 0;
	if (a->body)
		a->body[0] = '\0';
	a->status = 0;
	a->retry_after_ms = -1;
	a->should_retry = -1;
	a->request_id[0] = '\0';
}

/* The message of a transport failure or an answer without an error object. */
static void
describe(CURLcode cc, const char *errbuf, const struct answer *a, struct ot_pay_result *r)
{
	if (cc != CURLE_OK)
		snprintf(r->message, sizeof r->message, "%s", *errbuf ? errbuf : curl_easy_strerror(cc));
	else if (!r->message[0] && (a->status < 200 || a->status >= 300))
		snprintf(r->message, sizeof r->message, "HTTP %ld", a->status);
}

/* The wait before the next attempt, or -1 when there is none to make. */
static long
next_wait(struct ot_stripe *s, int attempt, const struct answer *a, long long deadline)
{
	long wait;

	if (attempt >= s->max_attempts)
		return -1;
	wait = a->status == 429 && a->retry_after_ms >= 0 ? a->retry_after_ms
	                                                  : ot_backoff_ms(attempt - 1, s->backoff_ms, s->backoff_max_ms);
	if (ot_now_ms() + wait + 50 >= deadline)
		return -1;
	return wait;
}

int
ot_stripe_call(struct ot_stripe *s, const char *op, const char *method, const char *path, const char *body,
               const char *idem, const char *order_id, struct ot_pay_result *r, json_t **json)
{
	struct answer a = { 0 };
	char url[2048], errbuf[CURL_ERROR_SIZE];
	long long deadline = ot_now_ms() + s->deadline_ms, left, t0;
	enum ot_pay_outcome o = OT_PAY_UNKNOWN;
	int attempt = 0, sent, ok, effect = 0, final = 0;
	enum verdict v;
	long wait;
	CURLcode cc = CURLE_OK;

	*json = NULL;
	snprintf(url, sizeof url, "%s%s", s->url, path);
	for (;;) {
		if (!ot_breaker_allow(s->breaker)) {
			count_error(op, "breaker_open");
			snprintf(r->message, sizeof r->message, "the payment processor's circuit is open");
			break;
		}
		if ((left = deadline - ot_now_ms()) < 1)
			left = 1; /* libcurl reads 0 as no timeout at all */
		answer_reset(&a);
		r->message[0] = r->err_type[0] = r->err_code[0] = r->decline_code[0] = r->charge_id[0] = '\0';
		t0 = ot_now_us();
		cc = perform(s, method, url, body, idem, left < s->request_timeout_ms ? (long)left
		             : s->request_timeout_ms, &a, &sent, errbuf);
		observe(op, t0, cc, sent, a.status);
		attempt++;
		r->attempts += sent;
		r->http_status = (int)a.status;
		copy(r->request_id, sizeof r->request_id, a.request_id);
		final = (v = judge(cc, sent, &a, &ok, &effect, &o)) == FINAL;
		ot_breaker_done(s->breaker, ok);
		if (cc == CURLE_OK && (a.status < 200 || a.status >= 300))
			parse_error(&a, r);
		describe(cc, errbuf, &a, r);
		if (v != RETRY)
			break;
		if ((wait = next_wait(s, attempt, &a, deadline)) < 0)
			break;
		ot_stripe_scrub(r->message, s->key);
		OT_WARN(order_id, "payment processor: %s attempt %d of %d: %s; again in %ld ms%s", op, attempt,
		        s->max_attempts, r->message, wait, idem ? " with the same idempotency key" : "");
		if (pause_ms(wait) < 0)
			break;
	}
	if (!final) /* retried out: known to have done nothing, or not known */
		o = effect ? OT_PAY_UNKNOWN : OT_PAY_UNAVAILABLE;
	if (o == OT_PAY_OK && !(*json = json_loadb(a.body ? a.body : "", a.len, 0, NULL))) {
		snprintf(r->message, sizeof r->message, "the processor's answer is not JSON");
		o = OT_PAY_UNKNOWN;
	}
	ot_stripe_scrub(r->message, s->key);
	free(a.body);
	return r->outcome = o;
}
