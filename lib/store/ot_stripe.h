/* ot_stripe: a client of a Stripe-compatible payment processor's HTTP API: charges and refunds. */
#ifndef OT_STRIPE_H
#define OT_STRIPE_H

#include <stddef.h>

struct ot_breaker;

/* How a call ended. A value, never text: callers switch on it. */
enum ot_pay_outcome {
	OT_PAY_OK = 0,       /* done; the result holds the charge (or the refund) */
	OT_PAY_DECLINED,     /* the card was declined (402): code and decline_code say why; final */
	OT_PAY_INVALID,      /* refused (4xx other than 402, 404, 409, 429): not retried, final */
	OT_PAY_NOT_FOUND,    /* no such charge (404), or no charge carries the order (lookup) */
	OT_PAY_UNKNOWN,      /* a request may have had an effect and no answer said which (a
	                      * timeout after it was sent, a reset, a 5xx, through every retry):
	                      * look the order up (ot_stripe_find_by_order), never guess */
	OT_PAY_UNAVAILABLE   /* nothing was done: the circuit breaker was open or no connection could
	                      * be made, so no request was sent, or every answer was 429; retry later */
};

/* Settings; zero (or NULL) picks the default in brackets. */
struct ot_stripe_config {
	const char *url;          /* the API's base URL, e.g. https://api.stripe.com (required) */
	const char *key;          /* the secret key, sk_… (required); only ever sent, never shown */
	long connect_timeout_ms;  /* one connection attempt [3000] */
	long request_timeout_ms;  /* one request, connection included [10000] */
	long deadline_ms;         /* a whole call, retries and their waits included [30000] */
	int max_attempts;         /* requests per call at most [4] */
	long backoff_ms;          /* the first wait between attempts, doubling [200] */
	long backoff_max_ms;      /* the longest wait between attempts [5000] */
	int breaker_threshold;    /* failed requests in a row that open the breaker [5] */
	int breaker_open_ms;      /* how long it then fails fast before one probe [30000] */
	struct ot_breaker *breaker; /* one shared with other clients (it is thread-safe), or NULL
	                             * for one of the client's own */
};

#define OT_PAY_ID_LEN 72
#define OT_PAY_CODE_LEN 64

/* What a call found out. Strings are empty when the answer did not carry them. */
struct ot_pay_result {
	enum ot_pay_outcome outcome;
	int http_status;            /* the last answer's status; 0 when none came */
	int attempts;               /* requests sent (0: none) */
	char request_id[OT_PAY_ID_LEN]; /* the processor's Request-Id of the last answer */
	/* The charge (for a refund: the refunded charge's id). */
	char charge_id[OT_PAY_ID_LEN];
	char status[32];            /* succeeded, pending or failed */
	int captured, refunded, paid;
	long long amount, amount_captured, amount_refunded;
	char currency[8];
	char order_id[OT_PAY_ID_LEN]; /* the charge's metadata[order_id] */
	char refund_id[OT_PAY_ID_LEN];
	long long refund_amount;
	int matches;                /* ot_stripe_find_by_order: charges that carry the order */
	/* The processor's error object, on an answer that was not 2xx; for a failed charge read
	 * back, its failure_code and outcome.reason as err_code and decline_code. */
	char err_type[OT_PAY_CODE_LEN];     /* card_error, invalid_request_error, api_error… */
	char err_code[OT_PAY_CODE_LEN];     /* card_declined, resource_missing… */
	char decline_code[OT_PAY_CODE_LEN]; /* insufficient_funds, generic_decline… */
	char message[256];          /* why, for logs: the error's message or the transport's; never
	                             * the key */
};

/* An authorisation: a charge that is not captured (capture=false). */
struct ot_pay_charge {
	const char *order_id;        /* goes to metadata[order_id], for the lookup (required) */
	long long amount;            /* in the currency's smallest unit, > 0 */
	const char *currency;        /* ISO 4217, lower case: "eur" */
	const char *source;          /* a card token, tok_… */
	const char *idempotency_key; /* from the order and the step: "ORDER_ID:authorize" */
};

/* A client. Its calls are not thread-safe (it keeps one connection open): one client per
 * thread, sharing a breaker through the config if they should fail fast together. */
struct ot_stripe;

/* Returns a client, or NULL with errstr (a missing url or key, a key with control
 * characters, libcurl failing to start). Copies what it keeps of cfg, except cfg->breaker,
 * which must outlive it. Free with ot_stripe_free. A client with a breaker of its own shows it
 * on the metrics as ot_circuit_state{circuit="payment processor"} (with opens and rejections);
 * every request is timed in ot_pay_processor_seconds{op} and each failed one counted in
 * ot_pay_processor_errors_total{op,kind} (op authorize, capture, void, refund, lookup). */
struct ot_stripe *ot_stripe_new(const struct ot_stripe_config *cfg, char *errstr, size_t errsz);
/* The breaker the client fails fast with (its own, or the config's), for a reader such as a
 * health check (ot_breaker_read is thread-safe); it lives as long as the client. */
struct ot_breaker *ot_stripe_breaker(struct ot_stripe *s);
/* Frees the client (and its own breaker); NULL is fine. */
void ot_stripe_free(struct ot_stripe *s);

/* Every call below fills *r (cleared first) and returns r->outcome. Each POST carries the
 * caller's Idempotency-Key; a request that timed out after it was sent, was reset, or got a
 * 5xx or a 409 is sent again with the same key after a backoff, a 429 after its Retry-After,
 * until max_attempts or the deadline; while the breaker is open nothing is sent. Bad
 * arguments (a charge id other than letters, digits and _, an idempotency key that is not 1 to
 * 255 visible characters, an amount out of range): OT_PAY_INVALID, nothing sent. */

/* POST /v1/charges: amount, currency, source, capture=false, metadata[order_id]. OK: the
 * charge is authorised and not captured. DECLINED: r->charge_id names the failed charge. */
int ot_stripe_authorize(struct ot_stripe *s, const struct ot_pay_charge *c, struct ot_pay_result *r);
/* POST /v1/charges/{id}/capture: amount (0 for the whole authorisation). */
int ot_stripe_capture(struct ot_stripe *s, const char *charge_id, long long amount, const char *idempotency_key,
                      struct ot_pay_result *r);
/* POST /v1/refunds charge={id}[&amount]: amount 0 refunds what is left. On a charge not
 * captured it releases the authorisation (a void: only the whole of it). OK: r->refund_id,
 * r->refund_amount and r->charge_id. */
int ot_stripe_refund(struct ot_stripe *s, const char *charge_id, long long amount, const char *idempotency_key,
                     struct ot_pay_result *r);
/* ot_stripe_refund of the whole of a charge not captured: its authorisation released. The
 * same request; only its metrics' op differs ("void"). */
int ot_stripe_void(struct ot_stripe *s, const char *charge_id, const char *idempotency_key, struct ot_pay_result *r);
/* GET /v1/charges/{id}. */
int ot_stripe_get(struct ot_stripe *s, const char *charge_id, struct ot_pay_result *r);
/* The charge that carries order_id in its metadata, for reconciling an UNKNOWN outcome: the
 * charges listed newest first (GET /v1/charges, 100 a page, created at or after since, a Unix
 * time, when since > 0), at most max_pages pages (0: 20). The newest that did not fail, else the
 * newest that did; r->matches counts them all. NOT_FOUND when none carries it. The search API
 * is not used: it lags behind writes by up to a minute. */
int ot_stripe_find_by_order(struct ot_stripe *s, const char *order_id, long long since, int max_pages,
                            struct ot_pay_result *r);

/* "ok", "declined", "invalid", "not_found", "unknown", "unavailable". */
const char *ot_pay_outcome_name(enum ot_pay_outcome o);

#endif
