/* ot_metrics: one registry of counters, gauges and histograms with labels, shared by every
 * tool and rendered in Prometheus text format. */
#ifndef OT_METRICS_H
#define OT_METRICS_H

#include <stddef.h>

enum ot_metric_type { OT_COUNTER, OT_GAUGE, OT_HISTOGRAM };

/* A family: one name, one help text, fixed label names; a series per label values. */
struct ot_metric;

/* Bucket bounds, in seconds, for request and record handling times. */
extern const double ot_metrics_latency_buckets[];
extern const size_t ot_metrics_latency_nbuckets;

/* Registers a family, or returns the one already registered under name (same type expected).
 * labels: comma-separated label names ("tool,topic"), NULL or "" for none (the family then
 * shows a 0 sample from the start). A histogram takes nbounds increasing bucket bounds (NULL:
 * ot_metrics_latency_buckets); other types ignore them. Families live until ot_metrics_reset.
 * Returns NULL when out of memory, or when name is registered with another type; every
 * function below accepts a NULL family and then does nothing. Thread-safe. */
struct ot_metric *ot_metric_new(enum ot_metric_type type, const char *name, const char *help,
                                const char *labels, const double *bounds, size_t nbounds);
/* Each takes exactly as many label values (const char *, NULL reads as "") as the family has
 * label names, in their order, and creates the series on first use. Thread-safe. */
void ot_metric_add(struct ot_metric *m, double v, ...);     /* counter or gauge += v */
void ot_metric_set(struct ot_metric *m, double v, ...);     /* gauge = v */
void ot_metric_observe(struct ot_metric *m, double v, ...); /* histogram: one observation */
/* The current value of a counter or gauge series (0 if it does not exist yet). */
double ot_metric_get(struct ot_metric *m, ...);
/* Drops every series of m: for gauges of things that went away (a revoked partition). */
void ot_metric_clear(struct ot_metric *m);
/* Drops the series of m for which keep(label values, arg) returns 0, under the lock, so a
 * scrape sees the set before or after, never a gap. */
void ot_metric_retain(struct ot_metric *m, int (*keep)(const char *const *values, void *arg), void *arg);

/* Adds fn(arg) to the functions run before each render, for gauges read at scrape time from
 * state already in memory (never I/O that may block). Returns 0, or -1 when out of memory. */
int ot_metrics_collector(void (*fn)(void *arg), void *arg);
/* Removes a collector added with the same fn and arg. */
void ot_metrics_collector_remove(void (*fn)(void *arg), void *arg);

/* Registers ot_build_info{tool,version} and the process gauges (process_start_time_seconds,
 * process_resident_memory_bytes, process_open_fds), read from /proc at each render. */
void ot_metrics_process(const char *tool, const char *version);

/* The tool whose metrics these are, for their tool label: set by ot_metrics_set_tool (at
 * configuration), "ordertrack" before. */
void ot_metrics_set_tool(const char *tool);
const char *ot_metrics_tool(void);

/* Appends every family in Prometheus text format (version 0.0.4) to a growing buffer: *buf
 * (malloc'd, may be NULL at first), *len used. Returns 0, or -1 when out of memory. */
int ot_metrics_render(char **buf, size_t *len);

/* Frees every family and collector (every ot_metric pointer goes with them); for tests. */
void ot_metrics_reset(void);

#endif
