/* ot-reserve: the Inventory Service — load stock, reserve it for new orders. */
#include <getopt.h>
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

static void
usage(FILE *f, int full)
{
	fprintf(f, "usage: %s [run] [-i INPUT] [options]\n"
	        "       %s stock [-i INPUT]\n"
	        "       %s expire [--older-than DURATION]\n", argv0, argv0, argv0);
	if (!full)
		return;
	fprintf(f, "\nrun (default): on ORDER_CREATED, reserves every line of the order or none, and\n"
	        "  writes INVENTORY_RESERVED or INVENTORY_RESERVATION_FAILED (naming the short SKUs)\n"
	        "  to the inventory outbox. A repeated event changes nothing.\n"
	        "  ORDER_CANCELLED releases the order's reservation (INVENTORY_RELEASED); an\n"
	        "  ORDER_STATUS_UPDATED to CONFIRMED marks it confirmed.\n"
	        "stock: sets available stock from lines {\"sku\":\"A\",\"qty\":100}.\n"
	        "expire: releases reservations whose order was not confirmed within DURATION\n"
	        "  (default 15m; 90s, 15m, 2h or seconds), each as INVENTORY_RELEASED \"expired\".\n\n"
	        "      --older-than D      expire: the deadline\n"
	        "  -i, --input SPEC        - (stdin, default), a file, or kafka:TOPIC[,TOPIC]\n"
	        "  -h, --help              this help\n"
	        "  -V, --version           print the version\n%s", ot_config_usage);
}

static int
handle_event(void *arg, const struct ot_msg *m, char *errstr, size_t errsz)
{
	struct reserve *r = arg;
	struct ot_event ev;
	struct ot_span sp;
	int rc;

	if (ot_event_parse(&ev, m->value, m->len, errstr, errsz))
		return OT_EINPUT;
	ot_run_span(&sp, m, &ev);
	if (!(rc = ot_pg_ensure(r->db, errstr, errsz)))
		rc = ot_inventory_handle(r->db, &ev, r->consumer, errstr, errsz);
	if (rc < 0)
		ot_span_error(&sp, errstr);
	ot_span_end(&sp);
	ot_event_clear(&ev);
	return rc;
}

/* The records waiting, in one transaction; those that do not parse are left to handle_event. */
static int
handle_batch(void *arg, const struct ot_msg *ms, size_t n, struct ot_batch_res *res, char *errstr, size_t errsz)
{
	struct reserve *r = arg;
	struct ot_event *evs;
	int rc;

	if (!(evs = ot_run_events(ms, n, res)))
		return ot_err(OT_EINTERNAL, errstr, errsz, "out of memory");
	if (!(rc = ot_pg_ensure(r->db, errstr, errsz)))
		rc = ot_inventory_handle_batch(r->db, ms, evs, n, r->consumer, res, errstr, errsz);
	ot_run_events_free(evs, n);
	return rc;
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

int
main(int argc, char **argv)
{
	static const struct option longopts[] = {
		OT_CONFIG_LONGOPTS,
		{"input", required_argument, NULL, 'i'},
		{"older-than", required_argument, NULL, OT_OPT_TOOL_BASE},
		{"help", no_argument, NULL, 'h'},
		{"version", no_argument, NULL, 'V'},
		{NULL, 0, NULL, 0}
	};
	struct ot_config cfg;
	struct reserve rs = {0};
	struct ot_in *in = NULL;
	struct ot_health *health = NULL;
	struct ot_health_deps deps = {0};
	struct ot_run_stats st;
	const char *input = "-", *cmd = "run";
	long older = 15 * 60;
	char err[1024];
	int c, rc = OT_OK, r;

	ot_config_init(&cfg, argv0);
	while ((c = getopt_long(argc, argv, OT_CONFIG_SHORTOPTS "i:hV", longopts, NULL)) != -1) {
		if ((r = ot_config_arg(&cfg, c, optarg, usage)) != OT_ARG_TOOL) {
			if (r >= 0)
				return r;
			continue;
		}
		switch (c) {
		case 'i': input = optarg; break;
		case OT_OPT_TOOL_BASE:
			if ((older = ot_duration(optarg)) < 0) {
				fprintf(stderr, "%s: --older-than %s: expected 90s, 15m, 2h or seconds\n", argv0, optarg);
				return EX_USAGE;
			}
			break;
		}
	}
	if (optind < argc)
		cmd = argv[optind++];
	if (optind < argc || (strcmp(cmd, "run") && strcmp(cmd, "stock") && strcmp(cmd, "expire"))) {
		fprintf(stderr, "%s: unknown command or extra argument: %s\n", argv0, optind < argc ? argv[optind] : cmd);
		usage(stderr, 0);
		return EX_USAGE;
	}
	if (!strcmp(cmd, "stock") && !strncmp(input, "kafka", 5)) {
		fprintf(stderr, "%s: stock reads - or a file, not Kafka\n", argv0);
		return EX_USAGE;
	}
	if ((r = ot_tool_start(&cfg, strcmp(cmd, "run") ? NULL : ":8081")))
		return r;
	if (!(rs.db = ot_pg_open(cfg.inventory_db, "inventory", &rc, err, sizeof err))) {
		OT_ERROR(NULL, "%s", err);
		goto out;
	}
	rs.consumer = argv0; /* processed_events is per service, whatever the Kafka group */
	if (!strcmp(cmd, "expire")) {
		long n = ot_inventory_expire(rs.db, older, err, sizeof err);
		if (n < 0) {
			OT_ERROR(NULL, "expire: %s", err);
			rc = (int)n;
		} else {
			OT_INFO(NULL, "expired the reservations of %ld orders unconfirmed after %lds", n, older);
		}
		goto out;
	}
	if (!(in = ot_in_open(input, &cfg, &rc, err, sizeof err))) {
		OT_ERROR(NULL, "%s", err);
		goto out;
	}
	deps.inventory_db = cfg.inventory_db;
	deps.in = in;
	if (!(health = ot_health_serve(&cfg, !strcmp(cmd, "run") && ot_in_is_kafka(in) && !cfg.exit_at_end &&
	                               !cfg.count, &deps, &rc, err, sizeof err)) && rc) {
		OT_ERROR(NULL, "%s", err);
		goto out;
	}
	if (!strcmp(cmd, "stock")) {
		rc = ot_run(in, handle_stock, &rs, &st);
		OT_INFO(NULL, "%ld stock lines: %ld loaded, %ld bad", st.records, st.ok, st.bad);
	} else {
		ot_run_set_batch(handle_batch);
		rc = ot_run(in, handle_event, &rs, &st);
		OT_INFO(NULL, "%ld records: %ld handled, %ld skipped, %ld bad, %ld dead-lettered, %ld retries",
		        st.records, st.ok, st.skipped, st.bad, st.dead, st.retries);
	}
out:
	ot_health_stop(health);
	ot_in_free(in);
	PQfinish(rs.db);
	ot_config_free(&cfg);
	return ot_exit_status(rc);
}
