/* ot_event: the event envelope — parse, validate, build and emit. */
#ifndef OT_EVENT_H
#define OT_EVENT_H

#include <jansson.h>
#include <stddef.h>

/* How every tool writes JSON: one line, fields in the order built, reals without noise digits. */
#define OT_JSON_FLAGS (JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(10))

#define OT_UUID_LEN 37   /* 36 chars + NUL */
#define OT_TS_LEN 32
#define OT_TRACEPARENT_LEN 56 /* "00-" 32 "-" 16 "-01" + NUL */

struct ot_event {
	char id[OT_UUID_LEN];
	char type[48];
	char order_id[64];
	long long version;
	char ts[OT_TS_LEN];
	char source[32];
	char traceparent[OT_TRACEPARENT_LEN]; /* "" when absent */
	json_t *data; /* owned; always an object after parse or init */
};

/* Parses and validates one envelope; order_id must be a UUID and comes out in lower case (the
 * canonical form). Returns 0, or -1 with errstr naming the field and why.
 * On success the caller owns ev->data (free with ot_event_clear). */
int ot_event_parse(struct ot_event *ev, const char *buf, size_t len, char *errstr, size_t errsz);
int ot_event_from_json(struct ot_event *ev, json_t *obj, char *errstr, size_t errsz);

/* A new event with a fresh id and timestamp; a UUID order_id is kept in its canonical form. data
 * is stolen (NULL means {}). Its traceparent names the thread's current span (ot_trace) if there
 * is one, else parent_tp if that is valid, else a new trace; ot_outbox_add then puts the span of
 * its insert in between. */
void ot_event_init(struct ot_event *ev, const char *type, const char *order_id, long long version,
                   const char *source, json_t *data, const char *parent_tp);
void ot_event_clear(struct ot_event *ev);

/* The envelope as a new JSON object, or as a compact malloc'd string (caller frees). */
json_t *ot_event_to_json(const struct ot_event *ev);
char *ot_event_dump(const struct ot_event *ev);

/* Helpers. Each writes a NUL-terminated string into out. */
void ot_uuid(char out[OT_UUID_LEN]);
/* n bytes of b as 2n lower-case hex digits and a NUL, into out (2n + 1 bytes). */
void ot_hex(char *out, const unsigned char *b, size_t n);
/* The SHA-256 of p[0, n) as 64 hex digits and a NUL (nettle). */
void ot_sha256_hex(const void *p, size_t n, char out[65]);
int ot_uuid_valid(const char *s);
/* An order id's one canonical form is a UUID in lower case. Lower-cases id in place and returns
 * 0 when it is a UUID in any letter case; returns -1 and leaves id as it was otherwise. Every
 * boundary (HTTP path, stdin, Kafka record) calls it before the id names a key, row or log line. */
int ot_id_canon(char *id);
void ot_now_rfc3339(char out[OT_TS_LEN]);
/* Milliseconds on the monotonic clock: for intervals and deadlines, never for timestamps. */
long long ot_now_ms(void);
/* The same clock in microseconds. */
long long ot_now_us(void);
int ot_rfc3339_valid(const char *s);
void ot_traceparent_new(char out[OT_TRACEPARENT_LEN], const char *parent_or_null);
/* 1 when s is a W3C traceparent a trace may continue from (not version ff, no all-zero id). */
int ot_traceparent_valid(const char *s);

#endif
