/* ot_metrics: counters kept in atomics, so counting never waits on a scrape. */
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ot_metrics.h"

static const char *const route_name[OT_R_COUNT] = {
	"page", "healthz", "readyz", "metrics", "order_get", "order_post", "order_cancel",
	"order_events", "order_ws", "other"
};
static const unsigned codes[] = {101, 200, 201, 304, 400, 401, 404, 405, 409, 413, 415, 429, 431,
                                 500, 503};
#define NCODES (sizeof codes / sizeof codes[0])
static const double bounds[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5};
#define NB (sizeof bounds / sizeof bounds[0])

static atomic_long requests[OT_R_COUNT][NCODES + 1]; /* the last column: any other status */
static atomic_long hist[OT_R_COUNT][NB + 1];
static atomic_llong hist_sum_us[OT_R_COUNT];
static atomic_long cache[OT_C_COUNT];
static atomic_long limited;

void
ot_metrics_request(enum ot_route route, unsigned status, double seconds)
{
	size_t c, b;

	if (route >= OT_R_COUNT)
		route = OT_R_OTHER;
	for (c = 0; c < NCODES && codes[c] != status; c++)
		;
	atomic_fetch_add(&requests[route][c], 1);
	for (b = 0; b < NB && seconds > bounds[b]; b++)
		;
	atomic_fetch_add(&hist[route][b], 1);
	atomic_fetch_add(&hist_sum_us[route], (long long)(seconds * 1e6));
}

void
ot_metrics_cache(enum ot_cache_result r)
{
	atomic_fetch_add(&cache[r], 1);
}

void
ot_metrics_limited(void)
{
	atomic_fetch_add(&limited, 1);
}

static int
append(char **buf, size_t *len, const char *fmt, ...)
{
	va_list ap;
	char line[512];
	int n;
	char *nb;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof line, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof line || !(nb = realloc(*buf, *len + (size_t)n + 1)))
		return -1;
	memcpy(nb + *len, line, (size_t)n + 1);
	*buf = nb;
	*len += (size_t)n;
	return 0;
}

int
ot_metrics_head(char **buf, size_t *len, const char *name, const char *type, const char *help)
{
	return append(buf, len, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

int
ot_metrics_line(char **buf, size_t *len, const char *name, const char *labels, double value)
{
	return append(buf, len, "%s%s%s%s %.17g\n", name, *labels ? "{" : "", labels, *labels ? "}" : "", value);
}

int
ot_metrics_render(char **buf, size_t *len)
{
	static const char *const cache_name[OT_C_COUNT] = {"hit", "miss", "bypass"};
	int e = 0;

	e |= ot_metrics_head(buf, len, "ot_http_requests_total", "counter", "HTTP requests answered, by route and status.");
	for (int r = 0; r < OT_R_COUNT; r++)
		for (size_t c = 0; c <= NCODES; c++) {
			long v = atomic_load(&requests[r][c]);
			if (v)
				e |= append(buf, len, "ot_http_requests_total{route=\"%s\",code=\"%s%u\"} %ld\n",
				            route_name[r], c < NCODES ? "" : "other", c < NCODES ? codes[c] : 0u, v);
		}
	e |= ot_metrics_head(buf, len, "ot_http_request_duration_seconds", "histogram",
	                     "Time from a request's headers to its answer, by route.");
	for (int r = 0; r < OT_R_COUNT; r++) {
		long cum = 0;
		for (size_t b = 0; b <= NB; b++)
			cum += atomic_load(&hist[r][b]);
		if (!cum)
			continue;
		cum = 0;
		for (size_t b = 0; b < NB; b++) {
			cum += atomic_load(&hist[r][b]);
			e |= append(buf, len, "ot_http_request_duration_seconds_bucket{route=\"%s\",le=\"%g\"} %ld\n",
			            route_name[r], bounds[b], cum);
		}
		cum += atomic_load(&hist[r][NB]);
		e |= append(buf, len, "ot_http_request_duration_seconds_bucket{route=\"%s\",le=\"+Inf\"} %ld\n"
		            "ot_http_request_duration_seconds_sum{route=\"%s\"} %.6f\n"
		            "ot_http_request_duration_seconds_count{route=\"%s\"} %ld\n",
		            route_name[r], cum, route_name[r], (double)atomic_load(&hist_sum_us[r]) / 1e6,
		            route_name[r], cum);
	}
	e |= ot_metrics_head(buf, len, "ot_cache_reads_total", "counter",
	                     "Order reads by where they were served from: hit (Redis), miss (database, refilled), bypass (database, Redis skipped).");
	for (int c = 0; c < OT_C_COUNT; c++)
		e |= append(buf, len, "ot_cache_reads_total{result=\"%s\"} %ld\n", cache_name[c], atomic_load(&cache[c]));
	e |= ot_metrics_head(buf, len, "ot_rate_limited_total", "counter", "Requests refused with 429.");
	e |= append(buf, len, "ot_rate_limited_total %ld\n", atomic_load(&limited));
	return e ? -1 : 0;
}
