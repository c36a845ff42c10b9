/* ot_stripe_int: what the payment client's operations (ot_stripe.c) and its requests and
 * retries (ot_stripe_http.c) share: the client, and the one call that sends. */
#ifndef OT_STRIPE_INT_H
#define OT_STRIPE_INT_H

#include <curl/curl.h>
#include <jansson.h>

#include "ot_breaker.h"

struct ot_pay_result;

struct ot_stripe {
	CURL *curl;
	char *url;   /* without a trailing slash */
	char *key;   /* kept only to scrub it from any text we pass on */
	char *auth;  /* the Authorization header line, the one place the key is sent */
	long connect_timeout_ms, request_timeout_ms, deadline_ms, backoff_ms, backoff_max_ms;
	int max_attempts;
	struct ot_breaker own, *breaker;
};

/* method ("GET" or "POST") url-path (with its query) with body (POST, form-encoded) under the
 * Idempotency-Key idem (NULL: none): sent until an answer is final, the attempts or the deadline
 * run out, or the breaker opens. Fills r's status, attempts and error; on OK returns the
 * answer's JSON in *json (caller decrefs; NULL otherwise). Returns the outcome, also in
 * r->outcome. order_id (may be NULL) goes to the log lines. */
int ot_stripe_call(struct ot_stripe *s, const char *op, const char *method, const char *path, const char *body,
                   const char *idem, const char *order_id, struct ot_pay_result *r, json_t **json);
/* Replaces every occurrence of key in msg by OT_REDACTED, in place. */
void ot_stripe_scrub(char *msg, const char *key);

#endif
