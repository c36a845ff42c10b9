/* ot_metrics: ot-serve's request counters and latency histograms, in Prometheus text format. */
#ifndef OT_METRICS_H
#define OT_METRICS_H

#include <stddef.h>

/* The routes requests are counted under. */
enum ot_route {
	OT_R_PAGE, OT_R_HEALTHZ, OT_R_READYZ, OT_R_METRICS, OT_R_ORDER_GET, OT_R_ORDER_POST,
	OT_R_ORDER_CANCEL, OT_R_EVENTS, OT_R_WS, OT_R_OTHER, OT_R_COUNT
};
enum ot_cache_result { OT_C_HIT, OT_C_MISS, OT_C_BYPASS, OT_C_COUNT };

/* Counts one request: its route, status and time taken. Lock-free; any thread. */
void ot_metrics_request(enum ot_route route, unsigned status, double seconds);
void ot_metrics_cache(enum ot_cache_result r);
void ot_metrics_limited(void);

/* Appends the counters in Prometheus text format to a growing buffer: *buf (malloc'd, may be
 * NULL at first), *len used. Returns 0, or -1 when out of memory. */
int ot_metrics_render(char **buf, size_t *len);
/* Appends one line "name{labels} value\n" (labels may be "") the same way; for other modules'
 * gauges. HELP/TYPE lines go in with ot_metrics_head. */
int ot_metrics_line(char **buf, size_t *len, const char *name, const char *labels, double value);
int ot_metrics_head(char **buf, size_t *len, const char *name, const char *type, const char *help);

#endif
