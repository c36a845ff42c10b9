/* ot-reserve: the Inventory Service — load stock, reserve it for new orders. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>

#include "ot_config.h"
#include "ot_err.h"
#include "ot_health.h"
#include "ot_inventory.h"
#include "ot_io.h"
#include "ot_log.h"
#include "ot_pg.h"
#include "ot_run.h"
#include "ot_signal.h"
#include "ot_text.h"
#include "ot_tool.h"
#include "ot_trace.h"

static const char *argv0 = "ot-reserve";

struct reserve {
	PGconn *db;
	const char *consumer;
};

static int
apply_one(void *arg, const struct ot_event *ev, char *errstr, size_t errsz)
{
	struct reserve *r = arg;

	return ot_inventory_handle(r->db, ev, r->consumer, errstr, errsz);
}

/* The events waiting, in one transaction. */
static int
apply_batch(void *arg, const struct ot_msg *ms, const struct ot_event *evs, size_t n, struct ot_batch_res *res,
            char *errstr, size_t errsz)
{
	struct reserve *r = arg;

	return ot_inventory_handle_batch(r->db, ms, evs, n, r->consumer, res, errstr, errsz);
}

static int
handle_stock(void *arg, const struct ot_msg *m, char *errstr, size_t errsz)
{
	struct reserve *r = arg;
	json_error_t jerr;
	json_t *line;
	int rc;

	if (!(line = json_loadb(m->value, m->len, JSON_REJECT_DUPLICATES, &jerr)))
		return ot_err(OT_EINPUT, errstr, errsz, "not JSON: %s at column %d", jerr.text, jerr.column);
	if (!(rc = ot_pg_ensure(r->db, errstr, errsz)))
		rc = ot_inventory_stock(r->db, line, errstr, errsz);
	json_decref(line);
	return rc;
}

static const struct ot_opt input_opt[] = {
	{"input", 'i', "SPEC", "- (stdin, default), a file, or kafka:TOPIC[,TOPIC]"},
};
static const struct ot_opt stock_opt[] = {
	{"input", 'i', "SPEC", "- (stdin, default) or a file"},
};
static const struct ot_opt expire_opt[] = {
	{"older-than", OT_OPT_TOOL_BASE, "D", "the deadline: 90s, 15m, 2h or seconds (default 15m)"},
};

static int
take_duration(void *arg, int key, const char *val)
{
	(void)key;
	if ((*(long *)arg = ot_duration(val)) < 0) {
		fprintf(stderr, "%s: --older-than %s: expected 90s, 15m, 2h or seconds\n", argv0, val);
		return EX_USAGE;
	}
	return 0;
}

/* The options, the start and the inventory database of a subcommand; 0 with r->db, or the
 * exit status. */
static int
start(struct ot_config *cfg, const struct ot_cli *cli, int argc, char **argv, const char *addr,
      struct reserve *r)
{
	char err[1024];
	int rc;

	if ((rc = ot_tool_begin(cfg, argv0, cli, argc, argv, addr)))
		return rc;
	r->consumer = argv0; /* processed_events is per service, whatever the Kafka group */
	if (!(r->db = ot_pg_open(cfg->inventory_db, "inventory", &rc, err, sizeof err))) {
		OT_ERROR(NULL, "%s", err);
		ot_config_free(cfg);
		return ot_exit_status(rc);
	}
	return 0;
}

/* "expire": releases the reservations of orders left unconfirmed. */
static int
expire_main(int argc, char **argv)
{
	long older = 15 * 60;
	const struct ot_cli cli = {"expire [--older-than DURATION]",
	                           "Releases reservations whose order was not confirmed within DURATION, each as\n"
	                           "INVENTORY_RELEASED \"expired\".", OT_USE_INVENTORY, expire_opt, 1, take_duration, &older, 0};
	struct ot_config cfg;
	struct reserve rs = {0};
	char err[1024];
	long n;
	int rc;

	if ((rc = start(&cfg, &cli, argc, argv, NULL, &rs)))
		return rc < 0 ? 0 : rc;
	if ((n = ot_inventory_expire(rs.db, older, err, sizeof err)) < 0) {
		OT_ERROR(NULL, "expire: %s", err);
		rc = (int)n;
	} else {
		OT_INFO(NULL, "expired the reservations of %ld orders unconfirmed after %lds", n, older);
	}
	PQfinish(rs.db);
	ot_config_free(&cfg);
	return ot_exit_status(rc);
}

/* "stock": sets the stock of each SKU read. */
static int
stock_main(int argc, char **argv)
{
	const char *input = "-";
	const struct ot_cli cli = {"stock [-i INPUT]", "Sets available stock from lines {\"sku\":\"A\",\"qty\":100}.",
	                           OT_USE_INVENTORY, stock_opt, 1, ot_tool_take_string, &input, 0};
	struct ot_config cfg;
	struct reserve rs = {0};
	struct ot_run_stats st;
	struct ot_in *in;
	char err[1024];
	int rc;

	if ((rc = start(&cfg, &cli, argc, argv, NULL, &rs)))
		return rc < 0 ? 0 : rc;
	if (!strncmp(input, "kafka", 5)) {
		fprintf(stderr, "%s: stock reads - or a file, not Kafka\n", argv0);
		rc = OT_ECONFIG;
	} else if (!(in = ot_in_open(input, &cfg, &rc, err, sizeof err))) {
		OT_ERROR(NULL, "%s", err);
	} else {
		rc = ot_run(in, handle_stock, &rs, &st);
		OT_INFO(NULL, "%ld stock lines: %ld loaded, %ld bad", st.records, st.ok, st.bad);
		ot_in_free(in);
	}
	PQfinish(rs.db);
	ot_config_free(&cfg);
	return rc == OT_ECONFIG ? EX_USAGE : ot_exit_status(rc);
}

/* "run" (the default): reserves, releases and confirms as the order events say. */
static int
run_main(int argc, char **argv)
{
	const char *input = "-";
	const struct ot_cli cli = {"[run] [-i INPUT] [options]",
	                           "On ORDER_CREATED, reserves every line of the order or none, and writes\n"
	                           "INVENTORY_RESERVED or INVENTORY_RESERVATION_FAILED (naming the short SKUs) to the\n"
	                           "inventory outbox. A repeated event changes nothing. ORDER_CANCELLED releases the\n"
	                           "order's reservation (INVENTORY_RELEASED); an ORDER_STATUS_UPDATED to CONFIRMED\n"
	                           "marks it confirmed. Subcommands: stock, expire (ot-reserve stock -h).",
	                           OT_USE_KAFKA | OT_USE_CONSUMER | OT_USE_BATCH | OT_USE_INVENTORY | OT_USE_HTTP,
	                           input_opt, 1, ot_tool_take_string, &input, 0};
	struct ot_config cfg;
	struct reserve rs = {0};
	struct ot_health_deps deps = {0};
	struct ot_health *health = NULL;
	struct ot_run_stats st;
	struct ot_in *in = NULL;
	int rc;

	if ((rc = start(&cfg, &cli, argc, argv, ":8081", &rs)))
		return rc < 0 ? 0 : rc;
	deps.inventory_db = cfg.inventory_db;
	if (!(in = ot_tool_input(&cfg, input, &deps, &health, &rc)))
		goto out;
	rc = ot_run_step(in, &(struct ot_step){rs.db, apply_one, apply_batch, &rs}, &st);
	OT_INFO(NULL, "%ld records: %ld handled, %ld skipped, %ld bad, %ld dead-lettered, %ld retries",
	        st.records, st.ok, st.skipped, st.bad, st.dead, st.retries);
out:
	ot_health_stop(health);
	ot_in_free(in);
	PQfinish(rs.db);
	ot_config_free(&cfg);
	return ot_exit_status(rc);
}

int
main(int argc, char **argv)
{
	static const struct ot_sub subs[] = {{"run", run_main}, {"stock", stock_main}, {"expire", expire_main}};

	return ot_tool_dispatch(argv0, subs, sizeof subs / sizeof *subs, run_main, argc, argv);
}
