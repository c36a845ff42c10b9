/* ot_health: the shared server with a readiness check over libpq, hiredis and librdkafka. */
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>

#include "ot_config.h"
#include "ot_err.h"
#include "ot_health.h"
#include "ot_httpd.h"
#include "ot_io.h"
#include "ot_log.h"
#include "ot_metrics.h"
#include "ot_redis.h"

#define CHECK_MS 500        /* per database or Redis, so /readyz answers within a probe's timeout */
#define KAFKA_CHECK_MS 1000 /* a broker's metadata answer may queue behind a busy consumer's fetches */
/* Connections at once from one address: the kubelet and Prometheus need a few; one client must
 * not fill the server's 1,024 and fail the liveness probe. */
#define PER_CLIENT 16

struct ot_health {
	struct ot_health_deps deps;
	struct ot_httpd *srv;
	int (*_Atomic check)(void *arg, char *why, size_t whysz);
	void *_Atomic check_arg;
};

/* 0 when the PostgreSQL server behind conninfo accepts connections. A fresh connection attempt
 * each time (at most one a second): no session is held open for probes. */
static int
pg_answers(const char *conninfo)
{
	const char *const keys[] = {"dbname", "connect_timeout", NULL};
	const char *const vals[] = {conninfo, "1", NULL};

	return PQpingParams(keys, vals, 1) == PQPING_OK ? 0 : -1;
}

static int
redis_answers(const char *url, char *why, size_t whysz)
{
	char err[256];
	redisContext *r = ot_redis_connect(url, CHECK_MS, err, sizeof err);
	int rc = r ? ot_redis_ping(r, err, sizeof err) : -1;

	if (r)
		redisFree(r);
	if (rc)
		snprintf(why, whysz, "Redis: %s", err);
	return rc ? -1 : 0;
}

static int
ready(void *app, char *why, size_t whysz)
{
	struct ot_health *h = app;
	char err[256];

	if (h->deps.orders_db && pg_answers(h->deps.orders_db)) {
		snprintf(why, whysz, "the orders database does not answer");
		return -1;
	}
	if (h->deps.inventory_db && pg_answers(h->deps.inventory_db)) {
		snprintf(why, whysz, "the inventory database does not answer");
		return -1;
	}
	if (h->deps.payments_db && pg_answers(h->deps.payments_db)) {
		snprintf(why, whysz, "the payments database does not answer");
		return -1;
	}
	if (h->deps.redis_url && redis_answers(h->deps.redis_url, why, whysz))
		return -1;
	if ((h->deps.in && ot_in_ping(h->deps.in, KAFKA_CHECK_MS, err, sizeof err)) ||
	    (h->deps.out && ot_out_ping(h->deps.out, KAFKA_CHECK_MS, err, sizeof err))) {
		snprintf(why, whysz, "%s", err);
		return -1;
	}
	return h->check ? h->check(h->check_arg, why, whysz) : 0;
}

struct ot_health *
ot_health_start(const char *addr, const struct ot_health_deps *deps, int *rc, char *errstr, size_t errsz)
{
	struct ot_httpd_opts o = {.addr = addr, .threads = 1, .max_per_client = PER_CLIENT, .ready = ready};
	struct ot_health *h = calloc(1, sizeof *h);

	if (!h) {
		*rc = ot_err(OT_EINTERNAL, errstr, errsz, "out of memory");
		return NULL;
	}
	h->deps = *deps;
	o.app = h;
	if (!(h->srv = ot_httpd_start(&o, rc, errstr, errsz))) {
		free(h);
		return NULL;
	}
	return h;
}

void
ot_health_check(struct ot_health *h, int (*check)(void *arg, char *why, size_t whysz), void *arg)
{
	if (!h)
		return;
	h->check_arg = arg;
	h->check = check;
}

void
ot_health_stop(struct ot_health *h)
{
	if (!h)
		return;
	ot_httpd_stop(h->srv);
	free(h);
}

struct ot_health *
ot_health_serve(const struct ot_config *cfg, int long_running, const struct ot_health_deps *deps, int *rc,
                char *errstr, size_t errsz)
{
	struct ot_health *h;

	*rc = 0;
	if (!long_running || !cfg->http_addr || !*cfg->http_addr)
		return NULL;
	ot_metrics_process(cfg->tool, OT_VERSION);
	if ((h = ot_health_start(cfg->http_addr, deps, rc, errstr, errsz)))
		OT_INFO(NULL, "health and metrics on %s", cfg->http_addr);
	return h;
}
