/* ot_health: a long-running tool's /healthz, /readyz and /metrics, with /readyz asking the
 * tool's own dependencies. */
#ifndef OT_HEALTH_H
#define OT_HEALTH_H

#include <stddef.h>

struct ot_in;
struct ot_out;
struct ot_health;

/* What /readyz checks; NULL members are not checked. */
struct ot_health_deps {
	const char *orders_db, *inventory_db, *payments_db; /* libpq connection strings: the server answers */
	const char *redis_url;                /* PING answers */
	struct ot_in *in;                     /* its Kafka consumer reaches a broker */
	struct ot_out *out;                   /* its Kafka producer reaches a broker */
};

/* Serves /healthz (200 while the process runs), /readyz (200 {"status":"ready"} when every
 * dependency answered, each within 500 ms (a Kafka broker 1 s), else 503 naming the first that did not; checked at most
 * once a second) and /metrics (the ot_metrics registry) on addr with one thread. The deps'
 * strings and clients must outlive the server. Returns NULL with *rc and errstr (see
 * ot_httpd_start). Free with ot_health_stop. */
struct ot_health *ot_health_start(const char *addr, const struct ot_health_deps *deps, int *rc,
                                  char *errstr, size_t errsz);
/* ot_health_start for a tool's main, with ot_build_info and the process gauges registered:
 * only when the run is long_running (Kafka, no -e, no -c, no --once: a one-shot run never
 * listens) and cfg->http_addr is not empty (--http-addr '' turns it off). Otherwise returns
 * NULL with *rc 0. */
struct ot_config;
struct ot_health *ot_health_serve(const struct ot_config *cfg, int long_running,
                                  const struct ot_health_deps *deps, int *rc, char *errstr, size_t errsz);
/* Adds the tool's own readiness check, asked after deps from the server's thread: check(arg)
 * returns 0 when ready, else -1 with why. Call right after start; h NULL does nothing. */
void ot_health_check(struct ot_health *h, int (*check)(void *arg, char *why, size_t whysz), void *arg);
/* Stops serving and frees. Accepts NULL. */
void ot_health_stop(struct ot_health *h);

#endif
