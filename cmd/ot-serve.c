/* ot-serve: the Order Service HTTP API and the live tracking page. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sysexits.h>
#include <time.h>

#include "ot_cache.h"
#include "ot_config.h"
#include "ot_err.h"
#include "ot_http.h"
#include "ot_log.h"
#include "ot_metrics.h"
#include "ot_order.h"
#include "ot_pg.h"
#include "ot_proxy.h"
#include "ot_signal.h"
#include "ot_tool.h"

static const char *argv0 = "ot-serve";

enum {
	OPT_API_KEY = OT_OPT_TOOL_BASE, OPT_RATE, OPT_BURST, OPT_STREAM_MAX, OPT_MAX_STREAMS, OPT_WS_ORIGINS,
	OPT_MAX_PER_CLIENT, OPT_LOCAL_CACHE_MS, OPT_LOCAL_CACHE_MAX, OPT_TRUSTED_PROXIES, OPT_REQUEST_TIMEOUT
};

static void
usage(FILE *f, int full)
{
	fprintf(f, "usage: %s [--http-addr [HOST:]PORT] [options]\n", argv0);
	if (!full)
		return;
	fprintf(f, "\nServes the orders API and the tracking page on [HOST:]PORT (default :8080, every\n"
	        "IPv4 interface; [::]:PORT for IPv6), with four event threads that never wait on Redis or\n"
	        "PostgreSQL (their reads go through one pipelined connection and four pooled threads):\n"
	        "  GET  /orders/{id}   status from the in-process cache or Redis, else the database\n"
	        "                      (X-Cache: HIT|MISS|BYPASS),\n"
	        "                      with an ETag (If-None-Match -> 304); ?full=1 adds customer,\n"
	        "                      items and address, from the database (needs the API key)\n"
	        "  GET  /orders/{id}/events  the status changes as Server-Sent Events (Last-Event-ID\n"
	        "                      resumes); the same stream over WebSocket with Upgrade: websocket,\n"
	        "                      or at /orders/{id}/ws\n"
	        "  POST /orders        place an order (application/json, at most 64 KiB; an\n"
	        "                      Idempotency-Key header serves as request_id) -> 201, 200 if placed before\n"
	        "  POST /orders/{id}/cancel  cancel it while it is not yet on its way -> 200, 409\n"
	        "  GET  /              the tracking page\n"
	        "  GET  /healthz       200 while the process runs; \"cache\":\"degraded\" without Redis,\n"
	        "                      \"db\":\"down\" without PostgreSQL\n"
	        "  GET  /readyz        200 while PostgreSQL or Redis answers (reads need one of them; the\n"
	        "                      body says which is down), else 503; from a check at most a second old\n"
	        "  GET  /metrics       Prometheus text: requests, latencies, cache, circuits, streams\n"
	        "Writes (POST) and ?full=1 need an API key: Authorization: Bearer KEY or\n"
	        "X-API-Key: KEY (else 401).\n"
	        "Requests under /orders are rate limited per client in Redis (GCRA; 429 + Retry-After):\n"
	        "a valid API key (by its budget alone), else the address; wrong keys count per address\n"
	        "against a stricter limit (10, then one every 6 s), past which they get 429. Behind\n"
	        "--trusted-proxies the address is the client's, from X-Forwarded-For or Forwarded.\n"
	        "Redis may be down at start: reads then come from the database. With PostgreSQL down\n"
	        "later, reads come from Redis and writes get 503 with Retry-After.\n"
	        "Exits 0 on SIGINT/SIGTERM; 64 usage; 69 the orders database unreachable at start or the\n"
	        "address in use; 78 a bad address, Redis URL or OT_TRUSTED_PROXIES.\n\n"
	        "  -h, --help              this help\n"
	        "  -V, --version           print the version\n"
	        "      --api-key KEY[,KEY] keys that may write (OT_API_KEY)\n"
	        "      --rate N            requests a second per client, 0 for no limit (OT_RATE_LIMIT; 50)\n"
	        "      --burst N           requests a client may make at once (OT_RATE_BURST; 100)\n"
	        "      --stream-max S      seconds a live stream lasts before the client resumes it\n"
	        "                          (OT_STREAM_MAX_S; 300)\n"
	        "      --max-streams N     live streams open at once (OT_MAX_STREAMS; 512)\n"
	        "      --ws-origins O[,O]  the only Origins a WebSocket may come from, as\n"
	        "                          https://host[:port] (OT_WS_ORIGINS; any)\n"
	        "      --max-per-client N  connections open at once from one address (behind a trusted\n"
	        "                          proxy, requests at once from one client), 0 for no limit\n"
	        "                          (OT_MAX_PER_CLIENT; 64)\n"
	        "      --trusted-proxies CIDR[,CIDR]\n"
	        "                          reverse proxies (the ingress) whose X-Forwarded-For or\n"
	        "                          Forwarded names the client (OT_TRUSTED_PROXIES; none)\n"
	        "      --request-timeout S seconds a request's head and body may take to arrive, from\n"
	        "                          the connection's start or its previous answer; a body must\n"
	        "                          also keep up 1 KiB a second (OT_REQUEST_TIMEOUT_S; 10)\n"
	        "      --local-cache-ms MS an in-process cache entry serves reads at most this long;\n"
	        "                          Redis invalidates it sooner on any change; 0 turns the\n"
	        "                          in-process cache off (OT_LOCAL_CACHE_MS; 1000)\n"
	        "      --local-cache-max N order statuses the in-process cache holds at most\n"
	        "                          (OT_LOCAL_CACHE_MAX; 10000)\n%s", ot_config_usage);
}

/* Each live stream holds a descriptor: the soft limit goes up to the hard one, and a hard
 * limit too low for max_streams is said at start rather than found by the clients. */
static void
raise_nofile(int max_streams)
{
	struct rlimit rl;
	rlim_t want = (rlim_t)max_streams + 1024 + 64;

	if (getrlimit(RLIMIT_NOFILE, &rl))
		return;
	if (rl.rlim_cur < rl.rlim_max && rl.rlim_cur < want) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl))
			getrlimit(RLIMIT_NOFILE, &rl);
	}
	if (rl.rlim_cur < want)
		OT_WARN(NULL, "open files limited to %llu: fewer than --max-streams %d need (%llu); "
		        "raise the hard limit (ulimit -Hn, LimitNOFILE)", (unsigned long long)rl.rlim_cur,
		        max_streams, (unsigned long long)want);
}

/* Parses a number in [lo, hi] for the option named; 0, or -1 after saying why. */
static int
number(const char *s, const char *name, double lo, double hi, double *out)
{
	char *end;
	double v = strtod(s, &end);

	if (end == s || *end || v < lo || v > hi) {
		fprintf(stderr, "%s: --%s %s: expected a number from %g to %g\n", argv0, name, s, lo, hi);
		return -1;
	}
	*out = v;
	return 0;
}

static int
whole(const char *s, const char *name, int lo, int hi, int *out)
{
	double v;

	if (number(s, name, lo, hi, &v))
		return -1;
	if (v != (int)v) {
		fprintf(stderr, "%s: --%s %s: expected a whole number\n", argv0, name, s);
		return -1;
	}
	*out = (int)v;
	return 0;
}

/* The API keys must be worth guessing at: each at least OT_API_KEY_MIN characters, none the
 * example file's placeholder. 0, or -1 after saying which key (by position: never the key). */
#define OT_API_KEY_MIN 16
static int
check_keys(const char *keys)
{
	const char *k, *end;
	size_t n;
	int i = 0, count = 1;

	for (k = keys; *k; k++)
		count += *k == ',';
	for (k = keys;; k = end + 1) {
		end = k + strcspn(k, ",");
		n = (size_t)(end - k);
		i++;
		if (n < OT_API_KEY_MIN) {
			fprintf(stderr, "%s: API key %d of %d (OT_API_KEY or --api-key) is %s: use at least %d random "
			        "characters, e.g. from openssl rand -hex 32\n", argv0, i, count,
			        n == 9 && !strncmp(k, "CHANGE-ME", 9) ? "the example file's placeholder"
			        : n ? "too short" : "empty", OT_API_KEY_MIN);
			return -1;
		}
		if (!*end)
			return 0;
	}
}

int
main(int argc, char **argv)
{
	static const struct option longopts[] = {
		OT_CONFIG_LONGOPTS,
		{"help", no_argument, NULL, 'h'},
		{"version", no_argument, NULL, 'V'},
		{"api-key", required_argument, NULL, OPT_API_KEY},
		{"rate", required_argument, NULL, OPT_RATE},
		{"burst", required_argument, NULL, OPT_BURST},
		{"stream-max", required_argument, NULL, OPT_STREAM_MAX},
		{"max-streams", required_argument, NULL, OPT_MAX_STREAMS},
		{"ws-origins", required_argument, NULL, OPT_WS_ORIGINS},
		{"max-per-client", required_argument, NULL, OPT_MAX_PER_CLIENT},
		{"local-cache-ms", required_argument, NULL, OPT_LOCAL_CACHE_MS},
		{"local-cache-max", required_argument, NULL, OPT_LOCAL_CACHE_MAX},
		{"trusted-proxies", required_argument, NULL, OPT_TRUSTED_PROXIES},
		{"request-timeout", required_argument, NULL, OPT_REQUEST_TIMEOUT},
		{NULL, 0, NULL, 0}
	};
	struct timespec tick = {0, 100 * 1000000L};
	struct ot_config cfg;
	struct ot_http_opts o = {getenv("OT_API_KEY"), 50, 100, 300, 512, getenv("OT_WS_ORIGINS"), 64, 1000, 10000, NULL,
	                         NULL, 10000};
	const char *rate = getenv("OT_RATE_LIMIT"), *burst = getenv("OT_RATE_BURST");
	const char *smax = getenv("OT_STREAM_MAX_S"), *nmax = getenv("OT_MAX_STREAMS");
	const char *pmax = getenv("OT_MAX_PER_CLIENT");
	const char *lms = getenv("OT_LOCAL_CACHE_MS"), *lmax = getenv("OT_LOCAL_CACHE_MAX");
	const char *proxies = getenv("OT_TRUSTED_PROXIES"), *rto = getenv("OT_REQUEST_TIMEOUT_S");
	struct ot_proxies *trusted = NULL;
	struct ot_http *h = NULL;
	PGconn *db = NULL;
	long n;
	char err[1024];
	int c, r, rc = OT_OK, timeout_s = 10, proxies_flag = 0;

	ot_config_init(&cfg, argv0);
	while ((c = getopt_long(argc, argv, OT_CONFIG_SHORTOPTS "hV", longopts, NULL)) != -1) {
		if ((r = ot_config_arg(&cfg, c, optarg, usage)) != OT_ARG_TOOL) {
			if (r >= 0)
				return r;
			continue;
		}
		switch (c) {
		case OPT_API_KEY: o.api_keys = optarg; continue;
		case OPT_RATE: rate = optarg; continue;
		case OPT_BURST: burst = optarg; continue;
		case OPT_STREAM_MAX: smax = optarg; continue;
		case OPT_MAX_STREAMS: nmax = optarg; continue;
		case OPT_WS_ORIGINS: o.ws_origins = optarg; continue;
		case OPT_MAX_PER_CLIENT: pmax = optarg; continue;
		case OPT_LOCAL_CACHE_MS: lms = optarg; continue;
		case OPT_LOCAL_CACHE_MAX: lmax = optarg; continue;
		case OPT_TRUSTED_PROXIES: proxies = optarg, proxies_flag = 1; continue;
		case OPT_REQUEST_TIMEOUT: rto = optarg; continue;
		}
	}
	if (optind < argc) {
		usage(stderr, 0);
		return EX_USAGE;
	}
	if ((rate && number(rate, "rate", 0, 1e6, &o.rate)) || (burst && whole(burst, "burst", 1, 1000000, &o.burst)) ||
	    (smax && whole(smax, "stream-max", 1, 86400, &o.stream_max_s)) ||
	    (nmax && whole(nmax, "max-streams", 1, 100000, &o.max_streams)) ||
	    (pmax && whole(pmax, "max-per-client", 0, 100000, &o.max_per_client)) ||
	    (lms && whole(lms, "local-cache-ms", 0, 60000, &o.local_cache_ms)) ||
	    (lmax && whole(lmax, "local-cache-max", 1, 10000000, &o.local_cache_max)) ||
	    (rto && whole(rto, "request-timeout", 1, 300, &timeout_s))) {
		ot_config_free(&cfg);
		return EX_USAGE;
	}
	if (o.api_keys && *o.api_keys && check_keys(o.api_keys)) {
		ot_config_free(&cfg);
		return EX_CONFIG;
	}
	if (!(trusted = ot_proxies_parse(proxies, err, sizeof err))) {
		fprintf(stderr, "%s: %s: %s\n", argv0, proxies_flag ? "--trusted-proxies" : "OT_TRUSTED_PROXIES", err);
		ot_config_free(&cfg);
		return proxies_flag ? EX_USAGE : EX_CONFIG;
	}
	o.trusted = trusted;
	o.request_ms = timeout_s * 1000;
	if ((r = ot_tool_start(&cfg, ":8080"))) {
		ot_proxies_free(trusted);
		return r;
	}
	raise_nofile(o.max_streams);
	ot_metrics_process(argv0, OT_VERSION);
	if (!(o.cache = ot_cache_new(cfg.redis_url))) {
		rc = OT_EINTERNAL;
		OT_ERROR(NULL, "out of memory");
		goto out;
	}
	if (!(h = ot_http_start(&cfg, &o, &rc, err, sizeof err))) {
		OT_ERROR(NULL, "%s", err);
		goto out;
	}
	OT_INFO(NULL, "listening on %s", cfg.http_addr);
	if (ot_proxies_count(trusted))
		OT_INFO(NULL, "clients behind %s are named by X-Forwarded-For or Forwarded", proxies);
	for (n = 0; !ot_stop; n++) {
		nanosleep(&tick, NULL);
		/* Once a second, the cache statistics the workers counted go to Redis. */
		if (n % 10 == 9) {
			ot_cache_stats_flush(o.cache, err, sizeof err);
			/* Statuses the API committed while Redis did not answer go to the cache now. */
			if ((db || (db = ot_pg_connect(cfg.orders_db, err, sizeof err))) && !ot_pg_ensure(db, NULL, 0))
				ot_cache_repair(o.cache, db, err, sizeof err);
		}
	}
	OT_INFO(NULL, "stopping");
	ot_http_stop(h);
	ot_cache_stats_flush(o.cache, err, sizeof err);
	/* What the API committed and Redis has not taken: repaired now, or named in the log. */
	ot_cache_finish(o.cache, db && !ot_pg_ensure(db, NULL, 0) ? db : NULL);
	PQfinish(db);
out:
	ot_cache_free(o.cache);
	ot_proxies_free(trusted);
	ot_config_free(&cfg);
	return ot_exit_status(rc);
}
