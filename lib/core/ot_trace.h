/* ot_trace: W3C trace context, spans, and their export to a Zipkin v2 collector. */
#ifndef OT_TRACE_H
#define OT_TRACE_H

#include <stddef.h>

#define OT_TRACEPARENT_LEN 56 /* "00-" 32 "-" 16 "-01" + NUL */

/* A new traceparent: a child of parent when it is valid, else the root of a new trace. */
void ot_traceparent_new(char out[OT_TRACEPARENT_LEN], const char *parent_or_null);
/* 1 when s is a W3C traceparent a trace may continue from (not version ff, no all-zero id). */
int ot_traceparent_valid(const char *s);

enum ot_span_kind { OT_SPAN_INTERNAL, OT_SPAN_SERVER, OT_SPAN_CLIENT, OT_SPAN_PRODUCER, OT_SPAN_CONSUMER };

/* One span, on the caller's stack (or in its request). Ids are always made, so the context
 * travels on; the rest (name, tags, clock) is filled only while spans are exported. */
struct ot_span {
	char trace_id[33], id[17], parent_id[17]; /* parent_id "" for a root */
	struct ot_span *prev;  /* the thread's current span before this one became current */
	int current;           /* 1 while it is the thread's current span */
	int exported;          /* 1: built and sent at ot_span_end (OT_TRACE_URL set) */
	void *detail;          /* name, kind, start, tags: only when exported */
};

/* Starts exporting spans of service to url (Zipkin v2 JSON, e.g.
 * http://127.0.0.1:9411/api/v2/spans) from a background thread. NULL or "" exports nothing and
 * builds no spans. Call once, before other threads start. Returns 0, or -1 with errstr (a URL
 * that is not http:// or https://, libcurl or the thread failing to start). */
int ot_trace_start(const char *service, const char *url, char *errstr, size_t errsz);
#define OT_TRACE_STOP_MS 3000 /* how long an exit waits for the spans still queued */

/* Stops the exporter: what it holds is sent within timeout_ms at most, the rest dropped, and
 * its thread joined. Safe to call when it never started, and more than once. */
void ot_trace_stop(int timeout_ms);
/* 1 while spans are exported. */
int ot_trace_enabled(void);
/* Spans dropped since the start (queue full, collector down or answering an error). */
long ot_trace_dropped(void);
/* Spans the collector accepted since the start. */
long ot_trace_sent(void);

/* Begins s, named name, as a child of parent: a W3C traceparent, else (NULL, "" or invalid)
 * the thread's current span, else a new trace. s becomes the thread's current span (log lines
 * carry its ids, spans begun meanwhile are its children) until ot_span_leave or ot_span_end. */
void ot_span_begin(struct ot_span *s, const char *name, enum ot_span_kind kind, const char *parent);
/* The same, without making s current: for spans that end out of order (a relay's batch). */
void ot_span_begin_detached(struct ot_span *s, const char *name, enum ot_span_kind kind,
                            const char *parent);
/* Makes s the thread's current span again, or no longer: for a span that outlives one call
 * (an HTTP request, served a piece at a time). Pairs must nest. */
void ot_span_enter(struct ot_span *s);
void ot_span_leave(struct ot_span *s);
/* Adds a tag (both strings copied). No-op unless exported. */
void ot_span_tag(struct ot_span *s, const char *key, const char *value);
/* Marks s failed with msg (the "error" tag Zipkin shows in red). */
void ot_span_error(struct ot_span *s, const char *msg);
/* Ends s: leaves it if current and queues it for export. Never blocks on the collector. */
void ot_span_end(struct ot_span *s);

/* s as a traceparent "00-<trace>-<span>-01" (56 bytes with the NUL), for a child elsewhere. */
void ot_span_traceparent(const struct ot_span *s, char out[56]);
/* The thread's current span, or NULL. */
const struct ot_span *ot_span_current(void);

#endif
