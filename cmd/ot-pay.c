/* ot-pay: the Payment Service — authorise, capture, void and refund with the processor. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>

#include "ot_config.h"
#include "ot_err.h"
#include "ot_health.h"
#include "ot_io.h"
#include "ot_log.h"
#include "ot_payment.h"
#include "ot_payment_watch.h"
#include "ot_pg.h"
#include "ot_rpc_pay.h"
#include "ot_run.h"
#include "ot_stripe.h"
#include "ot_text.h"
#include "ot_tool.h"

static const char *argv0 = "ot-pay";

enum { OPT_PAY_URL = OT_OPT_TOOL_BASE, OPT_CURRENCY, OPT_OLDER_THAN, OPT_GRPC_ADDR, OPT_GRPC_RATE };

static const struct ot_opt opts[] = {
	{"input", 'i', "SPEC", "- (stdin, default), a file, or kafka:TOPIC[,TOPIC]"},
	{"pay-url", OPT_PAY_URL, "URL", "the processor's API (OT_PAY_URL; https://api.stripe.com); its secret\n"
	 "key is OT_PAY_KEY, from the environment only"},
	{"currency", OPT_CURRENCY, "CODE", "ISO 4217, lower case (OT_PAY_CURRENCY, usd)"},
	{"grpc-addr", OPT_GRPC_ADDR, "ADDR", "[host]:port of ordertrack.Payment, served on a long run from Kafka\n"
	 "(OT_PAY_GRPC_ADDR; none unless given, e.g. :9096); its API keys are OT_API_KEY,\nfrom the environment only"},
	{"grpc-rate", OPT_GRPC_RATE, "R", "ordertrack.Payment calls a second per API key, after a burst of 2R, in\n"
	 "this process (OT_PAY_GRPC_RATE, 5; 0: no limit)"},
};

static const char about[] =
	"Pays for orders with a Stripe-compatible processor, one event at a time:\n"
	"  INVENTORY_RESERVED with a payment -> authorise the amount: PAYMENT_AUTHORIZED or\n"
	"  PAYMENT_DECLINED {code, decline_code}; ORDER_STATUS_UPDATED to DELIVERED -> capture\n"
	"  (PAYMENT_CAPTURED); ORDER_CANCELLED -> void (PAYMENT_VOIDED) or refund (PAYMENT_REFUNDED).\n"
	"Each change is a row of the payments database and an event in its outbox (payments.events\n"
	"through ot-relay --db payments). Every call carries an idempotency key of the order and the\n"
	"step; an outcome the processor did not tell is looked up by the order, never guessed.\n"
	"PAYMENT_REFUND_REQUESTED (from ordertrack.Payment/Refund) -> the refund (PAYMENT_REFUNDED).\n"
	"Subcommand: reconcile (ot-pay reconcile -h).";

static const char reconcile_about[] =
	"Settles the payments left UNKNOWN (an authorisation no answer told) for longer than\n"
	"--older-than, each in its own transaction, from the processor and never by guessing: the\n"
	"charge looked up by the order (found: AUTHORIZED or DECLINED as it is), or, when none was\n"
	"made, authorised now with the same idempotency key; each change written as the consumer\n"
	"writes it (PAYMENT_AUTHORIZED or PAYMENT_DECLINED in the outbox). One JSON line per payment\n"
	"settled on stdout, a summary on stderr. Exit 0 when none is left UNKNOWN, 69 when the\n"
	"processor left some so.";

struct pay_opts {
	const char *input, *url, *currency, *grpc, *grpc_rate;
};

/* --grpc-rate's value: calls a second, 0 to 1e6; -1 if it is not one. */
static double
rate_of(const char *s)
{
	char *end;
	double r = strtod(s, &end);

	return end == s || *end || !(r >= 0) || r > 1e6 ? -1 : r;
}

static int
take(void *arg, int key, const char *val)
{
	struct pay_opts *o = arg;

	switch (key) {
	case 'i': o->input = val; break;
	case OPT_PAY_URL: o->url = val; break;
	case OPT_GRPC_ADDR: o->grpc = val; break;
	case OPT_GRPC_RATE:
		if (rate_of(val) < 0) {
			fprintf(stderr, "%s: --grpc-rate %s: expected calls a second, 0 (no limit) to 1000000\n", argv0, val);
			return EX_USAGE;
		}
		o->grpc_rate = val;
		break;
	case OPT_CURRENCY:
		if (strlen(val) != 3 || strspn(val, "abcdefghijklmnopqrstuvwxyz") != 3) {
			fprintf(stderr, "%s: --currency %s: expected three lower-case letters (usd, eur)\n", argv0, val);
			return EX_USAGE;
		}
		o->currency = val;
		break;
	}
	return 0;
}

/* The consumer's state: the payer, and what counts its payments left UNKNOWN. */
struct pay_run {
	struct ot_payer py;
	struct ot_payment_watch *watch;
};

static int
apply_one(void *arg, const struct ot_event *ev, char *errstr, size_t errsz)
{
	struct pay_run *pr = arg;
	int rc = ot_payment_handle(&pr->py, ev, errstr, errsz);

	if (ev->kind == OT_EV_INVENTORY_RESERVED)
		ot_payment_watch_poke(pr->watch); /* it may have become UNKNOWN, or been settled */
	return rc;
}

static int
apply_batch(void *arg, const struct ot_msg *ms, const struct ot_event *evs, size_t n, struct ot_batch_res *res,
            char *errstr, size_t errsz)
{
	struct pay_run *pr = arg;
	int rc = ot_payment_handle_batch(&pr->py, evs, n, res, errstr, errsz);
	size_t i;

	(void)ms;
	for (i = 0; i < n && evs[i].kind != OT_EV_INVENTORY_RESERVED; i++)
		;
	if (i < n)
		ot_payment_watch_poke(pr->watch); /* one may have become UNKNOWN, or been settled */
	return rc;
}

/* A setting: the option's value when given, else the environment's (set, even empty), else def. */
static const char *
setting(const char *opt, const char *env, const char *def)
{
	const char *v = getenv(env);

	return opt ? opt : v ? v : def;
}

/* The processor's client, from the options and the environment; NULL with the error logged. */
static struct ot_stripe *
processor(const char *url)
{
	struct ot_stripe_config sc = {0};
	struct ot_stripe *s;
	char err[512];

	sc.url = setting(url, "OT_PAY_URL", "https://api.stripe.com");
	sc.key = getenv("OT_PAY_KEY");
	if (!sc.key || !*sc.key) {
		OT_ERROR(NULL, "OT_PAY_KEY is not set: the processor's secret key (sk_...) comes from the environment");
		return NULL;
	}
	if (!(s = ot_stripe_new(&sc, err, sizeof err)))
		OT_ERROR(NULL, "the processor's client: %s", err);
	return s;
}

/* The processor's client and the payments database; 0, or the ot_rc that stops the start. */
static int
open_payer(const struct ot_config *cfg, const char *url, struct ot_payer *py)
{
	char err[1024];
	int rc = OT_OK;

	py->consumer = argv0; /* processed_events is per service, whatever the Kafka group */
	if (!(py->processor = processor(url)))
		return OT_ECONFIG;
	if (!(py->db = ot_pg_open(cfg->payments_db, "payments", &rc, err, sizeof err)))
		OT_ERROR(NULL, "%s", err);
	return rc;
}

static const struct ot_opt reconcile_opts[] = {
	{"older-than", OPT_OLDER_THAN, "D", "settle payments UNKNOWN for longer than D: 90s, 15m, 2h or seconds\n"
	 "(default 60)"},
	{"pay-url", OPT_PAY_URL, "URL", "the processor's API (OT_PAY_URL; https://api.stripe.com)"},
};

struct reconcile_opts {
	long older;
	const char *url;
};

static int
take_reconcile(void *arg, int key, const char *val)
{
	struct reconcile_opts *o = arg;

	if (key == OPT_PAY_URL) {
		o->url = val;
	} else if ((o->older = ot_duration(val)) < 0) {
		fprintf(stderr, "%s: --older-than %s: expected 90s, 15m, 2h or seconds\n", argv0, val);
		return EX_USAGE;
	}
	return 0;
}

/* "reconcile": payments left UNKNOWN settled from the processor; 69 while some stay so. */
static int
reconcile_main(int argc, char **argv)
{
	struct reconcile_opts o = {60, NULL};
	const struct ot_cli cli = {"reconcile [--older-than D] [--pay-url URL] [options]", reconcile_about,
	                           OT_USE_PAYMENTS, reconcile_opts, 2, take_reconcile, &o, 0};
	struct ot_config cfg;
	struct ot_payer py = {0};
	struct ot_pay_reconcile_stats st = {0};
	char err[1024];
	int rc, r;

	if ((r = ot_tool_begin(&cfg, argv0, &cli, argc, argv, NULL)))
		return r < 0 ? 0 : r;
	if ((rc = open_payer(&cfg, o.url, &py)))
		goto out;
	if ((rc = ot_payment_reconcile(&py, o.older, stdout, &st, err, sizeof err)))
		OT_ERROR(NULL, "reconcile: %s", err);
	OT_INFO(NULL, "reconcile: %ld payments UNKNOWN for over %lds: %ld authorised, %ld declined, %ld left UNKNOWN, "
	        "%ld settled meanwhile", st.seen, o.older, st.authorized, st.declined, st.unknown, st.skipped);
	if (!rc && st.unknown)
		rc = OT_ESERVICE;
out:
	PQfinish(py.db);
	ot_stripe_free(py.processor);
	ot_config_free(&cfg);
	if (fflush(stdout) || ferror(stdout))
		return EX_IOERR;
	return rc == OT_ECONFIG ? EX_CONFIG : ot_exit_status(rc);
}

/* ordertrack.Payment on --grpc-addr, for a long run from Kafka: *rpc (NULL: not served). 0, or
 * an exit status after saying why. */
static int
serve_rpc(const struct ot_config *cfg, const struct pay_opts *o, const struct ot_in *in, struct ot_breaker *b,
          struct ot_rpc_pay **rpc)
{
	const char *a = setting(o->grpc, "OT_PAY_GRPC_ADDR", "");
	const char *keys = getenv("OT_API_KEY");
	const char *rs = setting(o->grpc_rate, "OT_PAY_GRPC_RATE", "5");
	char addr[300], err[512];
	double rate = rate_of(rs);
	int port;

	*rpc = NULL;
	if (!*a || !ot_in_is_kafka(in) || cfg->exit_at_end || cfg->count)
		return 0;
	if (rate < 0) {
		fprintf(stderr, "%s: OT_PAY_GRPC_RATE=%s: expected calls a second, 0 (no limit) to 1000000\n", argv0, rs);
		return EX_CONFIG;
	}
	if (keys && *keys && ot_tool_check_keys(argv0, keys, "OT_API_KEY"))
		return EX_CONFIG;
	if (!keys || !*keys)
		OT_WARN(NULL, "no OT_API_KEY: every ordertrack.Payment call answers UNAUTHENTICATED");
	snprintf(addr, sizeof addr, "%s%s", *a == ':' ? "0.0.0.0" : "", a);
	if (!(*rpc = ot_rpc_pay_start(&(struct ot_rpc_pay_opts){addr, cfg->payments_db, keys, b, rate}, &port, err,
	                              sizeof err))) {
		OT_ERROR(NULL, "gRPC on %s: %s", a, err);
		return EX_UNAVAILABLE;
	}
	OT_INFO(NULL, "gRPC listening on %s (port %d): ordertrack.Payment, grpc.health.v1.Health", a, port);
	return 0;
}

/* "run" (the default): the consumer. */
static int
run_main(int argc, char **argv)
{
	struct pay_opts o = {"-", NULL, NULL, NULL, NULL};
	const struct ot_cli cli = {"[run] [-i INPUT] [--pay-url URL] [--currency CODE] [--grpc-addr ADDR]\n              [--grpc-rate R] [options]",
	                           about, OT_USE_KAFKA | OT_USE_CONSUMER | OT_USE_PAYMENTS | OT_USE_HTTP, opts, 5, take,
	                           &o, 0};
	struct ot_config cfg;
	struct pay_run pr = {0};
	struct ot_in *in = NULL;
	struct ot_health *health = NULL;
	struct ot_health_deps deps = {0};
	struct ot_run_stats st;
	struct ot_rpc_pay *rpc = NULL;
	char err[1024];
	int rc, r;

	if ((r = ot_tool_begin(&cfg, argv0, &cli, argc, argv, ":8086")))
		return r < 0 ? 0 : r;
	pr.py.currency = setting(o.currency, "OT_PAY_CURRENCY", "");
	if (!*pr.py.currency) /* set and empty: the default */
		pr.py.currency = "usd";
	if ((rc = open_payer(&cfg, o.url, &pr.py)))
		goto out;
	deps.payments_db = cfg.payments_db;
	if (!(in = ot_tool_input(&cfg, o.input, &deps, &health, &rc)))
		goto out;
	if ((r = serve_rpc(&cfg, &o, in, ot_stripe_breaker(pr.py.processor), &rpc))) {
		rc = r == EX_CONFIG ? OT_ECONFIG : OT_ESERVICE;
		goto out;
	}
	if (health && !(pr.watch = ot_payment_watch_start(cfg.payments_db, 15000, err, sizeof err)))
		OT_WARN(NULL, "ot_payments_unknown will not be shown: %s", err);
	rc = ot_run_step(in, &(struct ot_step){pr.py.db, apply_one, apply_batch, &pr}, &st);
	OT_INFO(NULL, "%ld records: %ld handled, %ld skipped, %ld refused, %ld dead-lettered, %ld retries",
	        st.records, st.ok, st.skipped, st.bad, st.dead, st.retries);
out:
	ot_rpc_pay_stop(rpc);
	ot_payment_watch_stop(pr.watch);
	ot_health_stop(health);
	ot_in_free(in);
	PQfinish(pr.py.db);
	ot_stripe_free(pr.py.processor);
	ot_config_free(&cfg);
	return rc == OT_ECONFIG ? EX_CONFIG : ot_exit_status(rc);
}

int
main(int argc, char **argv)
{
	static const struct ot_sub subs[] = {{"run", run_main}, {"reconcile", reconcile_main}};

	return ot_tool_dispatch(argv0, subs, sizeof subs / sizeof *subs, run_main, argc, argv);
}
