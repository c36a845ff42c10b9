/* ot-serve: the Order Service HTTP API and the live tracking page. */
#include <getopt.h>
#include <stdio.h>
#include <sysexits.h>
#include <time.h>

#include "ot_config.h"
#include "ot_err.h"
#include "ot_http.h"
#include "ot_log.h"
#include "ot_order.h"
#include "ot_redis.h"
#include "ot_signal.h"

static const char *argv0 = "ot-serve";

static void
usage(FILE *f, int full)
{
	fprintf(f, "usage: %s [--http-addr [HOST:]PORT] [options]\n", argv0);
	if (!full)
		return;
	fprintf(f, "\nServes the orders API and the tracking page on [HOST:]PORT (default :8080, every\n"
	        "IPv4 interface; [::]:PORT for IPv6), with four threads, each with its own connections:\n"
	        "  GET  /orders/{id}   status from Redis, else the database (X-Cache: HIT|MISS|BYPASS);\n"
	        "                      ?full=1 adds items and address, from the database\n"
	        "  POST /orders        place an order (application/json, at most 64 KiB; an\n"
	        "                      Idempotency-Key header serves as request_id) -> 201, 200 if placed before\n"
	        "  POST /orders/{id}/cancel  cancel it while it is not yet on its way -> 200, 409\n"
	        "  GET  /              the tracking page\n"
	        "  GET  /healthz       200 while the process runs\n"
	        "  GET  /readyz        200 when PostgreSQL and Redis answer, else 503 naming which is down\n"
	        "Redis may be down at start: reads then come from the database.\n"
	        "Exits 0 on SIGINT/SIGTERM; 64 usage; 69 the orders database unreachable at start or the\n"
	        "address in use; 78 a bad address or Redis URL.\n\n"
	        "  -h, --help              this help\n"
	        "  -V, --version           print the version\n%s", ot_config_usage);
}

int
main(int argc, char **argv)
{
	static const struct option longopts[] = {
		OT_CONFIG_LONGOPTS,
		{"help", no_argument, NULL, 'h'},
		{"version", no_argument, NULL, 'V'},
		{NULL, 0, NULL, 0}
	};
	struct timespec tick = {0, 100 * 1000000L};
	struct ot_config cfg;
	struct ot_http *h;
	redisContext *stats = NULL;
	long n;
	char err[1024];
	int c, r, rc = OT_OK;

	ot_config_init(&cfg, argv0);
	while ((c = getopt_long(argc, argv, OT_CONFIG_SHORTOPTS "hV", longopts, NULL)) != -1) {
		if ((r = ot_config_opt(&cfg, c, optarg, err, sizeof err)) == 1)
			continue;
		if (r < 0) {
			fprintf(stderr, "%s: %s\n", argv0, err);
			return EX_USAGE;
		}
		switch (c) {
		case 'h': usage(stdout, 1); return EX_OK;
		case 'V': puts(OT_VERSION); return EX_OK;
		default: usage(stderr, 0); return EX_USAGE;
		}
	}
	if (optind < argc) {
		usage(stderr, 0);
		return EX_USAGE;
	}
	if (ot_config_finish(&cfg, ":8080", err, sizeof err)) {
		fprintf(stderr, "%s: %s\n", argv0, err);
		ot_config_free(&cfg);
		return EX_CONFIG;
	}
	ot_signal_install();
	if (!(h = ot_http_start(&cfg, &rc, err, sizeof err))) {
		OT_ERROR(NULL, "%s", err);
		goto out;
	}
	OT_INFO(NULL, "listening on %s", cfg.http_addr);
	for (n = 0; !ot_stop; n++) {
		nanosleep(&tick, NULL);
		/* Once a second, the cache statistics the workers counted go to Redis. */
		if (n % 10 == 9)
			ot_cache_stats_flush(ot_redis_live(&stats, cfg.redis_url), err, sizeof err);
	}
	OT_INFO(NULL, "stopping");
	ot_http_stop(h);
	ot_cache_stats_flush(ot_redis_live(&stats, cfg.redis_url), err, sizeof err);
	if (stats)
		redisFree(stats);
out:
	ot_config_free(&cfg);
	return ot_exit_status(rc);
}
