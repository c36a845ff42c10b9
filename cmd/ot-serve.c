/* ot-serve: the Order Service HTTP API and the live tracking page. */
#include <stddef.h>
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
#include "ot_rpc.h"
#include "ot_rsub.h"
#include "ot_signal.h"
#include "ot_tool.h"

static const char *argv0 = "ot-serve";

static const char about[] =
	"Serves the orders API and the tracking page on [HOST:]PORT (default :8080, every\n"
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
	"On --grpc-addr (:9090), gRPC (proto/ordertrack.proto): ordertrack.Delivery/Track, an\n"
	"order's changes after after_version as a server stream ending after a final state;\n"
	"Delivery/Report, a courier's updates streamed in (with the API key) and written to\n"
	"delivery.updates on Kafka (-b); grpc.health.v1.Health/Check.\n"
	"Writes (POST) and ?full=1 need an API key: Authorization: Bearer KEY or\n"
	"X-API-Key: KEY (else 401).\n"
	"Requests under /orders are rate limited per client in Redis (GCRA; 429 + Retry-After):\n"
	"a valid API key (by its budget alone), else the address; wrong keys count per address\n"
	"against a stricter limit (10, then one every 6 s), past which they get 429. Behind\n"
	"--trusted-proxies the address is the client's, from X-Forwarded-For or Forwarded.\n"
	"Redis may be down at start: reads then come from the database. With PostgreSQL down\n"
	"later, reads come from Redis and writes get 503 with Retry-After.\n"
	"Exits 0 on SIGINT/SIGTERM; 64 usage; 69 the orders database unreachable at start or the\n"
	"address (HTTP or gRPC) in use; 78 a bad address, Redis URL or OT_TRUSTED_PROXIES.";

/* ot-serve's own settings: flag, variable, and for a number its bounds and where it goes in
 * the options (a string stays in value). */
static struct setting {
	struct ot_opt o;
	const char *env;
	char kind;            /* 'n' a number, 'w' a whole number, 's' a string */
	double lo, hi;
	size_t off;           /* in struct ot_http_opts, for 'n' and 'w' */
	const char *value;    /* the flag's, else the variable's, else NULL */
	int flag;             /* value came from the flag */
} settings[] = {
	{{"api-key", OT_OPT_TOOL_BASE, "KEY[,KEY]", "keys that may write (OT_API_KEY)"}, "OT_API_KEY", 's', 0, 0, 0, NULL, 0},
	{{"rate", OT_OPT_TOOL_BASE + 1, "N", "requests a second per client, 0 for no limit (OT_RATE_LIMIT; 50)"},
	 "OT_RATE_LIMIT", 'n', 0, 1e6, offsetof(struct ot_http_opts, rate), NULL, 0},
	{{"burst", OT_OPT_TOOL_BASE + 2, "N", "requests a client may make at once (OT_RATE_BURST; 100)"},
	 "OT_RATE_BURST", 'w', 1, 1000000, offsetof(struct ot_http_opts, burst), NULL, 0},
	{{"stream-max", OT_OPT_TOOL_BASE + 3, "S", "seconds a live stream lasts before the client resumes it\n"
	  "(OT_STREAM_MAX_S; 300)"}, "OT_STREAM_MAX_S", 'w', 1, 86400, offsetof(struct ot_http_opts, stream_max_s), NULL, 0},
	{{"max-streams", OT_OPT_TOOL_BASE + 4, "N", "live streams open at once (OT_MAX_STREAMS; 512)"},
	 "OT_MAX_STREAMS", 'w', 1, 100000, offsetof(struct ot_http_opts, max_streams), NULL, 0},
	{{"ws-origins", OT_OPT_TOOL_BASE + 5, "O[,O]", "the only Origins a WebSocket may come from, as\n"
	  "https://host[:port] (OT_WS_ORIGINS; any)"}, "OT_WS_ORIGINS", 's', 0, 0, 0, NULL, 0},
	{{"max-per-client", OT_OPT_TOOL_BASE + 6, "N", "connections open at once from one address (behind a trusted\n"
	  "proxy, requests at once from one client), 0 for no limit\n(OT_MAX_PER_CLIENT; 64)"},
	 "OT_MAX_PER_CLIENT", 'w', 0, 100000, offsetof(struct ot_http_opts, max_per_client), NULL, 0},
	{{"trusted-proxies", OT_OPT_TOOL_BASE + 7, "CIDR[,CIDR]", "reverse proxies (the ingress) whose X-Forwarded-For or\n"
	  "Forwarded names the client (OT_TRUSTED_PROXIES; none)"},
	 "OT_TRUSTED_PROXIES", 's', 0, 0, 0, NULL, 0},
	{{"request-timeout", OT_OPT_TOOL_BASE + 8, "S", "seconds a request's head and body may take to arrive, from\n"
	  "the connection's start or its previous answer; a body must\nalso keep up 1 KiB a second "
	  "(OT_REQUEST_TIMEOUT_S; 10)"}, "OT_REQUEST_TIMEOUT_S", 'w', 1, 300, offsetof(struct ot_http_opts, request_ms),
	 NULL, 0},
	{{"local-cache-ms", OT_OPT_TOOL_BASE + 9, "MS", "an in-process cache entry serves reads at most this long;\n"
	  "Redis invalidates it sooner on any change; 0 turns the\nin-process cache off (OT_LOCAL_CACHE_MS; 1000)"},
	 "OT_LOCAL_CACHE_MS", 'w', 0, 60000, offsetof(struct ot_http_opts, local_cache_ms), NULL, 0},
	{{"local-cache-max", OT_OPT_TOOL_BASE + 10, "N", "order statuses the in-process cache holds at most\n"
	  "(OT_LOCAL_CACHE_MAX; 10000)"}, "OT_LOCAL_CACHE_MAX", 'w', 1, 10000000,
	 offsetof(struct ot_http_opts, local_cache_max), NULL, 0},
	{{"grpc-addr", OT_OPT_TOOL_BASE + 11, "[HOST]:PORT", "where the gRPC services listen (ordertrack.Delivery,\n"
	  "grpc.health.v1.Health); \"off\" for none (OT_GRPC_ADDR; :9090)"}, "OT_GRPC_ADDR", 's', 0, 0, 0, NULL, 0},
};
#define NSETTINGS (sizeof settings / sizeof *settings)
enum { S_API_KEY, S_WS_ORIGINS = 5, S_PROXIES = 7, S_TIMEOUT = 8, S_GRPC = 11 };

static int
take(void *arg, int key, const char *val)
{
	(void)arg;
	settings[key - OT_OPT_TOOL_BASE].value = val;
	settings[key - OT_OPT_TOOL_BASE].flag = 1;
	return 0;
}

/* Each number set by flag or variable, checked and stored in o. 0, or -1 after saying why. */
static int
numbers(struct ot_http_opts *o)
{
	struct setting *t;
	char *end;
	double v;
	size_t i;

	for (i = 0; i < NSETTINGS; i++) {
		t = &settings[i];
		if (t->kind == 's' || !t->value)
			continue;
		v = strtod(t->value, &end);
		if (end == t->value || *end || v < t->lo || v > t->hi || (t->kind == 'w' && v != (int)v)) {
			fprintf(stderr, "%s: --%s %s: expected a%s number from %g to %g\n", argv0, t->o.name, t->value,
			        t->kind == 'w' ? " whole" : "", t->lo, t->hi);
			return -1;
		}
		if (t->kind == 'n')
			*(double *)((char *)o + t->off) = v;
		else
			*(int *)((char *)o + t->off) = (int)v;
	}
	o->request_ms *= 1000; /* given in seconds */
	return 0;
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

/* The gRPC services of --grpc-addr into *rpc, not yet listening (NULL when "off"). 0, or an
 * ot_rc after saying why. */
static int
rpc_new(const struct ot_config *cfg, const struct ot_http_opts *o, struct ot_rpc **rpc)
{
	const char *a = settings[S_GRPC].value && *settings[S_GRPC].value ? settings[S_GRPC].value : ":9090";
	char addr[300];
	struct ot_rpc_opts ro = {addr, cfg->orders_db, o->api_keys, o->cache, o->max_streams, cfg};

	*rpc = NULL;
	if (!strcmp(a, "off"))
		return 0;
	/* gRPC takes "host:port"; no host means every IPv4 interface, as --http-addr. */
	snprintf(addr, sizeof addr, "%s%s", a[0] == ':' ? "0.0.0.0" : "", a);
	if (!strchr(a, ':')) {
		OT_ERROR(NULL, "--grpc-addr %s: give [HOST]:PORT, or off", a);
		return OT_ECONFIG;
	}
	if (!(*rpc = ot_rpc_new(&ro))) {
		OT_ERROR(NULL, "out of memory");
		return OT_EINTERNAL;
	}
	return 0;
}

int
main(int argc, char **argv)
{
	const struct ot_cli cli = {"[--http-addr [HOST:]PORT] [options]", about, OT_USE_KAFKA | OT_USE_ORDERS | OT_USE_REDIS | OT_USE_HTTP,
	                           &settings[0].o, NSETTINGS, take, NULL, sizeof settings[0]};
	struct timespec tick = {0, 100 * 1000000L};
	struct ot_config cfg;
	struct ot_http_opts o = {NULL, 50, 100, 300, 512, NULL, 64, 1000, 10000, NULL, NULL, 10, NULL};
	struct ot_proxies *trusted = NULL;
	struct ot_http *h = NULL;
	struct ot_rpc *rpc = NULL;
	struct ot_rsub_hooks listen;
	PGconn *db = NULL;
	size_t i;
	long n;
	char err[1024];
	int r, rc = OT_OK, next, done;

	for (i = 0; i < NSETTINGS; i++)
		settings[i].value = getenv(settings[i].env);
	ot_config_init(&cfg, argv0);
	if ((r = ot_tool_args(&cfg, &cli, argc, argv, &next, &done)) || done) {
		ot_config_free(&cfg);
		return r;
	}
	if (next < argc) {
		ot_tool_usage(&cfg, &cli, stderr);
		ot_config_free(&cfg);
		return EX_USAGE;
	}
	if (numbers(&o)) {
		ot_config_free(&cfg);
		return EX_USAGE;
	}
	o.api_keys = settings[S_API_KEY].value;
	o.ws_origins = settings[S_WS_ORIGINS].value;
	if (o.api_keys && *o.api_keys && ot_tool_check_keys(argv0, o.api_keys, "OT_API_KEY or --api-key")) {
		ot_config_free(&cfg);
		return EX_CONFIG;
	}
	if (!(trusted = ot_proxies_parse(settings[S_PROXIES].value, err, sizeof err))) {
		fprintf(stderr, "%s: %s: %s\n", argv0, settings[S_PROXIES].flag ? "--trusted-proxies" : "OT_TRUSTED_PROXIES", err);
		ot_config_free(&cfg);
		return settings[S_PROXIES].flag ? EX_USAGE : EX_CONFIG;
	}
	o.trusted = trusted;
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
	if ((rc = rpc_new(&cfg, &o, &rpc)))
		goto out;
	if (rpc) {
		ot_rpc_hooks(rpc, &listen);
		o.listen = &listen;
	}
	if (!(h = ot_http_start(&cfg, &o, &rc, err, sizeof err))) {
		OT_ERROR(NULL, "%s", err);
		goto out;
	}
	OT_INFO(NULL, "listening on %s", cfg.http_addr);
	if (rpc)
		ot_rpc_set_limit(rpc, ot_http_limit(h));
	if (rpc && (r = ot_rpc_listen(rpc, err, sizeof err)) == 0) {
		rc = OT_ESERVICE;
		OT_ERROR(NULL, "%s", err);
		goto stop;
	}
	if (rpc)
		OT_INFO(NULL, "gRPC listening on port %d", r);
	if (ot_proxies_count(trusted))
		OT_INFO(NULL, "clients behind %s are named by X-Forwarded-For or Forwarded", settings[S_PROXIES].value);
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
stop:
	ot_rpc_stop(rpc);
	ot_http_stop(h);
	ot_cache_stats_flush(o.cache, err, sizeof err);
	/* What the API committed and Redis has not taken: repaired now, or named in the log. */
	ot_cache_finish(o.cache, db && !ot_pg_ensure(db, NULL, 0) ? db : NULL);
	PQfinish(db);
out:
	ot_rpc_free(rpc);
	ot_cache_free(o.cache);
	ot_proxies_free(trusted);
	ot_config_free(&cfg);
	return ot_exit_status(rc);
}
