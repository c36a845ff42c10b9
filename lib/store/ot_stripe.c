/* ot_stripe: charges and refunds at a Stripe-compatible processor: the operations and their answers. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <jansson.h>

#include "ot_breaker.h"
#include "ot_err.h"
#include "ot_metrics.h"
#include "ot_text.h"
#include "ot_stripe.h"
#include "ot_stripe_int.h"

static const char *const outcome_names[] = { "ok", "declined", "invalid", "not_found", "unknown", "unavailable" };

const char *
ot_pay_outcome_name(enum ot_pay_outcome o)
{
	return (unsigned)o < sizeof outcome_names / sizeof *outcome_names ? outcome_names[o] : "unknown";
}

static void
copy(char *dst, size_t dstsz, const char *src)
{
	ot_utf8_copy(dst, dstsz, src ? src : "");
}

static long
positive(long v, long dflt)
{
	return v > 0 ? v : dflt;
}

/* Before each scrape: the client's own breaker, as ot-serve shows its circuits. */
static void
collect_circuit(void *arg)
{
	struct ot_stripe *s = arg;
	long opens, rejected;
	enum ot_breaker_state st = ot_breaker_read(&s->own, &opens, &rejected);

	ot_metric_set(ot_metric_new(OT_GAUGE, "ot_circuit_state", "Circuit breaker per dependency: 0 closed, "
	                            "1 half-open, 2 open.", "circuit", NULL, 0), st, s->own.name);
	ot_metric_set(ot_metric_new(OT_COUNTER, "ot_circuit_opens_total", "Times a circuit opened.", "circuit", NULL, 0),
	              (double)opens, s->own.name);
	ot_metric_set(ot_metric_new(OT_COUNTER, "ot_circuit_rejected_total", "Calls failed fast while a circuit was "
	                            "open.", "circuit", NULL, 0), (double)rejected, s->own.name);
}

struct ot_stripe *
ot_stripe_new(const struct ot_stripe_config *cfg, char *errstr, size_t errsz)
{
	struct ot_stripe *s;
	char *hdr = NULL;
	size_t n;
	const char *k;

	if (!cfg->url || !*cfg->url || !cfg->key || !*cfg->key) {
		ot_err(OT_ECONFIG, errstr, errsz, "the payment processor's URL and key are required");
		return NULL;
	}
	for (k = cfg->key; *k; k++)
		if (!isgraph((unsigned char)*k)) {
			ot_err(OT_ECONFIG, errstr, errsz, "the payment processor's key has a character a header cannot carry");
			return NULL;
		}
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
		ot_err(OT_EINTERNAL, errstr, errsz, "libcurl failed to start");
		return NULL;
	}
	if (!(s = calloc(1, sizeof *s)))
		goto fail;
	s->connect_timeout_ms = positive(cfg->connect_timeout_ms, 3000);
	s->request_timeout_ms = positive(cfg->request_timeout_ms, 10000);
	s->deadline_ms = positive(cfg->deadline_ms, 30000);
	s->max_attempts = (int)positive(cfg->max_attempts, 4);
	s->backoff_ms = positive(cfg->backoff_ms, 200);
	s->backoff_max_ms = positive(cfg->backoff_max_ms, 5000);
	n = strlen("Authorization: Bearer ") + strlen(cfg->key) + 1;
	if (!(s->url = strdup(cfg->url)) || !(s->key = strdup(cfg->key)) || !(hdr = malloc(n)) ||
	    !(s->curl = curl_easy_init()))
		goto fail;
	snprintf(hdr, n, "Authorization: Bearer %s", cfg->key);
	for (n = strlen(s->url); n > 0 && s->url[n - 1] == '/'; n--)
		s->url[n - 1] = '\0';
	s->auth = hdr;
	hdr = NULL;
	if (cfg->breaker) {
		s->breaker = cfg->breaker;
	} else {
		ot_breaker_init(&s->own, "payment processor", (int)positive(cfg->breaker_threshold, 5),
		                (int)positive(cfg->breaker_open_ms, 30000));
		s->breaker = &s->own;
		ot_metrics_collector(collect_circuit, s); /* a shared breaker is its owner's to show */
	}
	return s;
fail:
	if (hdr) {
		memset(hdr, 0, strlen(hdr));
		free(hdr);
	}
	if (s) {
		if (s->curl)
			curl_easy_cleanup(s->curl);
		free(s->url);
		free(s->key);
		free(s->auth);
		free(s);
	}
	curl_global_cleanup();
	ot_err(OT_EINTERNAL, errstr, errsz, "out of memory starting the payment client");
	return NULL;
}

struct ot_breaker *
ot_stripe_breaker(struct ot_stripe *s)
{
	return s->breaker;
}

void
ot_stripe_free(struct ot_stripe *s)
{
	if (!s)
		return;
	curl_easy_cleanup(s->curl);
	memset(s->auth, 0, strlen(s->auth));
	free(s->auth);
	if (s->breaker == &s->own) {
		ot_metrics_collector_remove(collect_circuit, s);
		ot_breaker_destroy(&s->own);
	}
	memset(s->key, 0, strlen(s->key));
	free(s->key);
	free(s->url);
	free(s);
	curl_global_cleanup();
}

static long long
int_of(json_t *o, const char *k)
{
	return json_integer_value(json_object_get(o, k));
}

static void
fill_charge(json_t *c, struct ot_pay_result *r)
{
	copy(r->charge_id, sizeof r->charge_id, json_string_value(json_object_get(c, "id")));
	copy(r->status, sizeof r->status, json_string_value(json_object_get(c, "status")));
	copy(r->currency, sizeof r->currency, json_string_value(json_object_get(c, "currency")));
	copy(r->order_id, sizeof r->order_id,
	     json_string_value(json_object_get(json_object_get(c, "metadata"), "order_id")));
	r->captured = json_is_true(json_object_get(c, "captured"));
	r->refunded = json_is_true(json_object_get(c, "refunded"));
	r->paid = json_is_true(json_object_get(c, "paid"));
	r->amount = int_of(c, "amount");
	r->amount_captured = int_of(c, "amount_captured");
	r->amount_refunded = int_of(c, "amount_refunded");
	/* A failed charge read back (a lookup) says why as an error would have. */
	if (!strcmp(r->status, "failed")) {
		if (!*r->err_code)
			copy(r->err_code, sizeof r->err_code, json_string_value(json_object_get(c, "failure_code")));
		if (!*r->decline_code)
			copy(r->decline_code, sizeof r->decline_code,
			     json_string_value(json_object_get(json_object_get(c, "outcome"), "reason")));
	}
}

/* A form of name=value pairs, each escaped; NULL after a failure. */
struct form {
	char *s;
	size_t len;
	int failed;
};

static void
form_add(CURL *c, struct form *f, const char *name, const char *value)
{
	char *n = curl_easy_escape(c, name, 0), *v = curl_easy_escape(c, value, 0), *p;
	size_t need;

	if (!n || !v || f->failed) {
		f->failed = 1;
		goto out;
	}
	need = f->len + strlen(n) + strlen(v) + 3;
	if (!(p = realloc(f->s, need))) {
		f->failed = 1;
		goto out;
	}
	f->s = p;
	f->len += (size_t)sprintf(f->s + f->len, "%s%s=%s", f->len ? "&" : "", n, v);
out:
	curl_free(n);
	curl_free(v);
}

static void
form_num(CURL *c, struct form *f, const char *name, long long v)
{
	char b[32];

	snprintf(b, sizeof b, "%lld", v);
	form_add(c, f, name, b);
}

/* An object id fit for a path: letters, digits and _ only. */
static int
id_ok(const char *id)
{
	const char *p;

	if (!id || !*id || strlen(id) >= OT_PAY_ID_LEN)
		return 0;
	for (p = id; *p; p++)
		if (!isalnum((unsigned char)*p) && *p != '_')
			return 0;
	return 1;
}

/* An idempotency key fit for a header: 1 to 255 visible characters (Stripe's limit). */
static int
key_ok(const char *k)
{
	size_t n = 0;

	if (!k)
		return 0;
	for (; k[n]; n++)
		if (!isgraph((unsigned char)k[n]))
			return 0;
	return n > 0 && n <= 255;
}

static int
refuse(struct ot_pay_result *r, const char *why)
{
	snprintf(r->message, sizeof r->message, "%s", why);
	return r->outcome = OT_PAY_INVALID;
}

/* A POST of form f to path, the charge in the answer into r. */
static int
post_charge(struct ot_stripe *s, const char *op, const char *path, struct form *f, const char *idem,
            const char *order_id, struct ot_pay_result *r)
{
	json_t *j;

	if (f->failed) {
		free(f->s);
		return refuse(r, "out of memory building the request");
	}
	if (ot_stripe_call(s, op, "POST", path, f->s, idem, order_id, r, &j) == OT_PAY_OK)
		fill_charge(j, r);
	else if (r->outcome == OT_PAY_DECLINED && !r->status[0])
		snprintf(r->status, sizeof r->status, "failed");
	json_decref(j);
	free(f->s);
	return r->outcome;
}

int
ot_stripe_authorize(struct ot_stripe *s, const struct ot_pay_charge *c, struct ot_pay_result *r)
{
	struct form f = { 0 };

	memset(r, 0, sizeof *r);
	if (!c->order_id || !*c->order_id || c->amount <= 0 || !c->currency || !c->source ||
	    !key_ok(c->idempotency_key))
		return refuse(r, "an authorisation needs an order id, an amount above 0, a currency, a source and a key");
	form_num(s->curl, &f, "amount", c->amount);
	form_add(s->curl, &f, "currency", c->currency);
	form_add(s->curl, &f, "source", c->source);
	form_add(s->curl, &f, "capture", "false");
	form_add(s->curl, &f, "metadata[order_id]", c->order_id);
	return post_charge(s, "authorize", "/v1/charges", &f, c->idempotency_key, c->order_id, r);
}

int
ot_stripe_capture(struct ot_stripe *s, const char *charge_id, long long amount, const char *idempotency_key,
                  struct ot_pay_result *r)
{
	struct form f = { 0 };
	char path[128];

	memset(r, 0, sizeof *r);
	if (!id_ok(charge_id) || amount < 0 || !key_ok(idempotency_key))
		return refuse(r, "a capture needs a charge id, an amount of 0 or more and a key");
	if (amount > 0)
		form_num(s->curl, &f, "amount", amount);
	else if (!(f.s = calloc(1, 1)))
		f.failed = 1;
	snprintf(path, sizeof path, "/v1/charges/%s/capture", charge_id);
	return post_charge(s, "capture", path, &f, idempotency_key, NULL, r);
}

/* A refund (op "refund") or the release of an authorisation (op "void"): POST /v1/refunds. */
static int
refund(struct ot_stripe *s, const char *op, const char *charge_id, long long amount, const char *idempotency_key,
       struct ot_pay_result *r)
{
	struct form f = { 0 };
	json_t *j;

	memset(r, 0, sizeof *r);
	if (!id_ok(charge_id) || amount < 0 || !key_ok(idempotency_key))
		return refuse(r, "a refund needs a charge id, an amount of 0 or more and a key");
	form_add(s->curl, &f, "charge", charge_id);
	if (amount > 0)
		form_num(s->curl, &f, "amount", amount);
	if (f.failed) {
		free(f.s);
		return refuse(r, "out of memory building the request");
	}
	if (ot_stripe_call(s, op, "POST", "/v1/refunds", f.s, idempotency_key, NULL, r, &j) == OT_PAY_OK) {
		copy(r->refund_id, sizeof r->refund_id, json_string_value(json_object_get(j, "id")));
		copy(r->charge_id, sizeof r->charge_id, json_string_value(json_object_get(j, "charge")));
		copy(r->status, sizeof r->status, json_string_value(json_object_get(j, "status")));
		copy(r->currency, sizeof r->currency, json_string_value(json_object_get(j, "currency")));
		r->refund_amount = int_of(j, "amount");
	}
	json_decref(j);
	free(f.s);
	return r->outcome;
}

int
ot_stripe_refund(struct ot_stripe *s, const char *charge_id, long long amount, const char *idempotency_key,
                 struct ot_pay_result *r)
{
	return refund(s, "refund", charge_id, amount, idempotency_key, r);
}

int
ot_stripe_void(struct ot_stripe *s, const char *charge_id, const char *idempotency_key, struct ot_pay_result *r)
{
	return refund(s, "void", charge_id, 0, idempotency_key, r);
}

int
ot_stripe_get(struct ot_stripe *s, const char *charge_id, struct ot_pay_result *r)
{
	char path[128];
	json_t *j;

	memset(r, 0, sizeof *r);
	if (!id_ok(charge_id))
		return refuse(r, "a charge id is letters, digits and _");
	snprintf(path, sizeof path, "/v1/charges/%s", charge_id);
	if (ot_stripe_call(s, "get", "GET", path, NULL, NULL, NULL, r, &j) == OT_PAY_OK)
		fill_charge(j, r);
	json_decref(j);
	return r->outcome;
}

static int
failed(json_t *c)
{
	const char *st = json_string_value(json_object_get(c, "status"));

	return st && !strcmp(st, "failed");
}

/* Looks at one page's charges for the order: the best match so far into best, the count into
 * r->matches, the page's last id into last (where the next page starts). */
static void
scan_page(json_t *data, const char *order_id, json_t **best, struct ot_pay_result *r, char *last, size_t lastsz)
{
	size_t i;
	json_t *c;
	const char *oid;

	json_array_foreach(data, i, c) {
		copy(last, lastsz, json_string_value(json_object_get(c, "id")));
		oid = json_string_value(json_object_get(json_object_get(c, "metadata"), "order_id"));
		if (!oid || strcmp(oid, order_id))
			continue;
		r->matches++;
		/* Newest first: the first that did not fail wins; a failed one only until then. */
		if (!*best || (!failed(c) && failed(*best))) {
			json_decref(*best);
			*best = json_incref(c);
		}
	}
}

int
ot_stripe_find_by_order(struct ot_stripe *s, const char *order_id, long long since, int max_pages,
                        struct ot_pay_result *r)
{
	char path[256], last[OT_PAY_ID_LEN] = "";
	json_t *j = NULL, *best = NULL;
	int page, more = 1, matches = 0, attempts = 0;

	memset(r, 0, sizeof *r);
	if (!order_id || !*order_id)
		return refuse(r, "a lookup needs an order id");
	for (page = 0; more && page < (max_pages > 0 ? max_pages : 20); page++) {
		int n = snprintf(path, sizeof path, "/v1/charges?limit=100");
		if (since > 0)
			n += snprintf(path + n, sizeof path - (size_t)n, "&created%%5Bgte%%5D=%lld", since);
		if (last[0])
			snprintf(path + n, sizeof path - (size_t)n, "&starting_after=%s", last);
		r->matches = matches;
		r->attempts = attempts;
		if (ot_stripe_call(s, "find", "GET", path, NULL, NULL, order_id, r, &j) != OT_PAY_OK)
			goto out;
		attempts = r->attempts;
		scan_page(json_object_get(j, "data"), order_id, &best, r, last, sizeof last);
		matches = r->matches;
		more = json_is_true(json_object_get(j, "has_more")) && last[0];
		json_decref(j);
		j = NULL;
	}
	if (best)
		fill_charge(best, r);
	else
		snprintf(r->message, sizeof r->message, "no charge carries order %s", order_id);
	r->outcome = best ? OT_PAY_OK : OT_PAY_NOT_FOUND;
out:
	json_decref(best);
	return r->outcome;
}
