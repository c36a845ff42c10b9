/* stripe-call: one payment client operation (lib/store/ot_stripe) from the command line, its
 * outcome as one JSON line on stdout, so that tests can drive the client.
 *
 *   stripe-call [-n N] [-a ATTEMPTS] [-c CONNECT_MS] [-t REQUEST_MS] [-d DEADLINE_MS]
 *               [-b BACKOFF_MS] [-T THRESHOLD] [-O OPEN_MS] OP ARG...
 *     authorize ORDER_ID AMOUNT CURRENCY SOURCE KEY
 *     capture CHARGE_ID AMOUNT KEY       (AMOUNT 0: the whole authorisation)
 *     void CHARGE_ID KEY                 (a refund of the whole of a charge not captured)
 *     refund CHARGE_ID AMOUNT KEY        (AMOUNT 0: what is left)
 *     get CHARGE_ID
 *     find ORDER_ID [SINCE]
 *     pairs AMOUNT CURRENCY SOURCE       (-n pairs of an authorisation and its capture, each
 *                                         for an order of its own: the processor's throughput)
 *
 * The processor is OT_PAY_URL, the key OT_PAY_KEY (never an argument: argv is public). -n runs
 * the operation N times in a row on one client, one line each, so that its breaker is seen
 * opening. Exit status: 0 when every line was printed (whatever the outcomes), 64 usage, 78
 * configuration, 74 output failed. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>

#include <jansson.h>

#include "ot_id.h"
#include "ot_log.h"
#include "ot_text.h"
#include "ot_stripe.h"
#include "ot_time.h"

static void
usage(FILE *f)
{
	fputs("usage: stripe-call [-n N] [-a ATTEMPTS] [-c CONNECT_MS] [-t REQUEST_MS] [-d DEADLINE_MS]\n"
	      "                   [-b BACKOFF_MS] [-T THRESHOLD] [-O OPEN_MS] OP ARG...\n"
	      "  authorize ORDER_ID AMOUNT CURRENCY SOURCE KEY | capture CHARGE_ID AMOUNT KEY |\n"
	      "  void CHARGE_ID KEY | refund CHARGE_ID AMOUNT KEY | get CHARGE_ID | find ORDER_ID [SINCE] |\n"
	      "  pairs AMOUNT CURRENCY SOURCE\n"
	      "environment: OT_PAY_URL, OT_PAY_KEY\n", f);
}

static void
put_str(json_t *o, const char *k, const char *v)
{
	if (v && *v)
		json_object_set_new(o, k, json_string(v));
}

static int
print(const char *op, const struct ot_pay_result *r)
{
	json_t *o = json_object(), *e;
	int rc;

	json_object_set_new(o, "op", json_string(op));
	json_object_set_new(o, "outcome", json_string(ot_pay_outcome_name(r->outcome)));
	json_object_set_new(o, "http_status", json_integer(r->http_status));
	json_object_set_new(o, "attempts", json_integer(r->attempts));
	put_str(o, "charge_id", r->charge_id);
	put_str(o, "status", r->status);
	if (r->charge_id[0] && r->outcome == OT_PAY_OK && !r->refund_id[0]) {
		json_object_set_new(o, "captured", json_boolean(r->captured));
		json_object_set_new(o, "refunded", json_boolean(r->refunded));
		json_object_set_new(o, "amount", json_integer(r->amount));
		json_object_set_new(o, "amount_captured", json_integer(r->amount_captured));
		json_object_set_new(o, "amount_refunded", json_integer(r->amount_refunded));
	}
	put_str(o, "currency", r->currency);
	put_str(o, "order_id", r->order_id);
	put_str(o, "refund_id", r->refund_id);
	if (r->refund_id[0])
		json_object_set_new(o, "refund_amount", json_integer(r->refund_amount));
	if (!strcmp(op, "find"))
		json_object_set_new(o, "matches", json_integer(r->matches));
	if (r->err_type[0] || r->err_code[0] || r->message[0]) {
		e = json_object();
		put_str(e, "type", r->err_type);
		put_str(e, "code", r->err_code);
		put_str(e, "decline_code", r->decline_code);
		put_str(e, "message", r->message);
		json_object_set_new(o, "error", e);
	}
	put_str(o, "request_id", r->request_id);
	rc = json_dumpf(o, stdout, OT_JSON_FLAGS);
	json_decref(o);
	return rc || putchar('\n') == EOF ? -1 : 0;
}

static long long
num(const char *s)
{
	char *end;
	long long v = strtoll(s, &end, 10);

	return *s && !*end ? v : -1;
}

/* Runs op with its arguments once. Returns 0, or -1 for a usage error. */
static int
run(struct ot_stripe *s, const char *op, int argc, char **argv, struct ot_pay_result *r)
{
	struct ot_pay_charge c;

	if (!strcmp(op, "authorize") && argc == 5) {
		c.order_id = argv[0];
		c.amount = num(argv[1]);
		c.currency = argv[2];
		c.source = argv[3];
		c.idempotency_key = argv[4];
		ot_stripe_authorize(s, &c, r);
	} else if (!strcmp(op, "capture") && argc == 3) {
		ot_stripe_capture(s, argv[0], num(argv[1]), argv[2], r);
	} else if (!strcmp(op, "void") && argc == 2) {
		ot_stripe_refund(s, argv[0], 0, argv[1], r);
	} else if (!strcmp(op, "refund") && argc == 3) {
		ot_stripe_refund(s, argv[0], num(argv[1]), argv[2], r);
	} else if (!strcmp(op, "get") && argc == 1) {
		ot_stripe_get(s, argv[0], r);
	} else if (!strcmp(op, "find") && (argc == 1 || argc == 2)) {
		ot_stripe_find_by_order(s, argv[0], argc == 2 ? num(argv[1]) : 0, 0, r);
	} else {
		return -1;
	}
	return 0;
}

/* n authorisations, each captured, for orders of their own, in a row on one client: what the
 * processor sustains for one caller. Prints {"op":"pairs","pairs":n,"ok":k,"seconds":s}. */
static int
pairs(struct ot_stripe *s, int n, char **argv)
{
	struct ot_pay_charge c = {0};
	struct ot_pay_result r;
	char order[OT_UUID_LEN], key[OT_UUID_LEN + 16], charge[OT_PAY_ID_LEN];
	long long t0 = ot_now_ms();
	int i, ok = 0;

	c.order_id = order;
	c.amount = num(argv[0]);
	c.currency = argv[1];
	c.source = argv[2];
	c.idempotency_key = key;
	for (i = 0; i < n; i++) {
		ot_uuid(order);
		snprintf(key, sizeof key, "%s:authorize", order);
		if (ot_stripe_authorize(s, &c, &r) != OT_PAY_OK) {
			fprintf(stderr, "stripe-call: %s: %s %s\n", order, ot_pay_outcome_name(r.outcome), r.message);
			continue;
		}
		snprintf(key, sizeof key, "%s:capture", order);
		snprintf(charge, sizeof charge, "%s", r.charge_id); /* r is cleared by the next call */
		if (ot_stripe_capture(s, charge, 0, key, &r) == OT_PAY_OK)
			ok++;
		else
			fprintf(stderr, "stripe-call: %s: capture %s %s\n", order, ot_pay_outcome_name(r.outcome), r.message);
	}
	return printf("{\"op\":\"pairs\",\"pairs\":%d,\"ok\":%d,\"seconds\":%.3f}\n", n, ok,
	              (double)(ot_now_ms() - t0) / 1000) < 0 ? -1 : 0;
}

int
main(int argc, char **argv)
{
	struct ot_stripe_config cfg = { 0 };
	struct ot_stripe *s;
	struct ot_pay_result r;
	char err[256];
	int opt, n = 1, i, status = 0;

	ot_log_init("stripe-call", getenv("OT_LOG_LEVEL"));
	while ((opt = getopt(argc, argv, "hn:a:c:t:d:b:T:O:")) != -1) {
		switch (opt) {
		case 'h': usage(stdout); return 0;
		case 'n': n = atoi(optarg); break;
		case 'a': cfg.max_attempts = atoi(optarg); break;
		case 'c': cfg.connect_timeout_ms = atol(optarg); break;
		case 't': cfg.request_timeout_ms = atol(optarg); break;
		case 'd': cfg.deadline_ms = atol(optarg); break;
		case 'b': cfg.backoff_ms = atol(optarg); break;
		case 'T': cfg.breaker_threshold = atoi(optarg); break;
		case 'O': cfg.breaker_open_ms = atoi(optarg); break;
		default: usage(stderr); return EX_USAGE;
		}
	}
	if (optind >= argc || n < 1) {
		usage(stderr);
		return EX_USAGE;
	}
	cfg.url = getenv("OT_PAY_URL");
	cfg.key = getenv("OT_PAY_KEY");
	if (!(s = ot_stripe_new(&cfg, err, sizeof err))) {
		fprintf(stderr, "stripe-call: %s\n", err);
		return EX_CONFIG;
	}
	if (!strcmp(argv[optind], "pairs")) {
		if (argc - optind != 4)
			usage(stderr);
		status = argc - optind != 4 ? EX_USAGE : pairs(s, n, argv + optind + 1) < 0 ? EX_IOERR : 0;
		n = 0;
	}
	for (i = 0; i < n && !status; i++) {
		if (run(s, argv[optind], argc - optind - 1, argv + optind + 1, &r) < 0) {
			usage(stderr);
			status = EX_USAGE;
		} else if (print(argv[optind], &r) < 0 || fflush(stdout) == EOF) {
			status = EX_IOERR;
		}
	}
	ot_stripe_free(s);
	return status;
}
