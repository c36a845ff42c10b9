/* ot_io: records in and out, from stdio ("-") or Kafka ("kafka:TOPIC[,TOPIC]"), behind one interface. */
#ifndef OT_IO_H
#define OT_IO_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

struct ot_config;

/* One input record. Pointers stay valid until the next ot_in_next or ot_in_free. */
struct ot_msg {
	const char *value;
	size_t len;
	const char *key;      /* NULL on stdin */
	size_t key_len;
	const char *topic;    /* "-" on stdin */
	int32_t partition;
	int64_t offset;       /* line number on stdin */
	int64_t ts_ms;        /* the Kafka record's timestamp, ms since the epoch; -1 or 0 unknown */
	char where[160];      /* "line 7" or "orders.events [2] at offset 41", for messages */
	const char *traceparent; /* the record's traceparent header (NUL-terminated), or NULL */
	void *raw;            /* the Kafka message (its headers, for dead letters); NULL on stdin */
};

struct ot_in;

/* Opens "-" (stdin), a file, or "kafka:T1,T2" as a consumer in cfg->group, starting at
 * cfg->offset. Returns NULL with errstr on failure (rc in *rc if rc: OT_EINPUT for a file
 * that cannot be opened). */
struct ot_in *ot_in_open(const char *spec, const struct ot_config *cfg, int *rc,
                         char *errstr, size_t errsz);
/* As ot_in_open, for a reader that never dead-letters what it reads (replay, whose input is
 * itself a dead-letter topic): no dead-letter producer, and no word about a missing
 * "<topic>.dlq"; ot_in_dead_letter fails on it. */
struct ot_in *ot_in_open_no_dlq(const char *spec, const struct ot_config *cfg, int *rc,
                                char *errstr, size_t errsz);
/* Returns 1 with a record in m, 0 when nothing came within timeout_ms (with 0, when none can
 * be read without waiting), -1 at the end (EOF,
 * -e at the end of every partition, -c reached, or ot_stop), -2 on an error (errstr). */
int ot_in_next(struct ot_in *in, struct ot_msg *m, int timeout_ms, char *errstr, size_t errsz);
/* Keeps m, the record ot_in_next returned last, past the next ot_in_next: its raw message
 * stays for ot_in_dead_letter and ot_in_describe until ot_in_release (the other pointers do
 * not; copy them). */
void ot_in_hold(struct ot_in *in, struct ot_msg *m);
/* Frees what ot_in_hold kept of m. Accepts a record never held. */
void ot_in_release(struct ot_in *in, struct ot_msg *m);
/* Marks m processed: its offset may now be committed. Call only after its effect is durable. */
void ot_in_done(struct ot_in *in, const struct ot_msg *m);
int ot_in_is_kafka(const struct ot_in *in);
/* From Kafka: reads each partition of the subscribed topics only up to its end as it is now
 * (its high watermark); a record written later is not returned, and with -e the run ends at
 * those ends. For a run whose own output may come back to its input (replay). Call once, right
 * after ot_in_open. Returns 0 (stdin: nothing to do) or OT_ESERVICE with errstr. */
int ot_in_stop_at_end(struct ot_in *in, char *errstr, size_t errsz);
/* The tool it reads for (cfg->tool), for metric labels. */
const char *ot_in_tool(const struct ot_in *in);
/* Asks a Kafka broker for metadata within timeout_ms, from any thread: 0 when one answered (or
 * in is not Kafka), else OT_ESERVICE with errstr. For readiness checks. */
int ot_in_ping(struct ot_in *in, int timeout_ms, char *errstr, size_t errsz);
/* How many times a record may be tried before it is given up on (the config's attempts). */
int ot_in_attempts(const struct ot_in *in);
/* How many records a consumer may apply in one transaction (the config's batch, 1 at least). */
int ot_in_batch(const struct ot_in *in);
/* Sends the Kafka record m to "<topic>.dlq" with its key, value and headers, adding
 * ot-dlq-topic, -partition, -offset, -group, -error, -attempts and -ts, and waits for the
 * acknowledgement. Returns 0 (the caller may then mark m done) or an ot_rc. */
int ot_in_dead_letter(struct ot_in *in, const struct ot_msg *m, const char *error, int attempts,
                      char *errstr, size_t errsz);
/* The record with where it came from, for inspection: {"topic","partition","offset",
 * "timestamp" (ms),"key","headers":{...},"value"} where value is the parsed JSON if it parses, else the string.
 * Returns a new reference. */
json_t *ot_in_describe(const struct ot_in *in, const struct ot_msg *m);
/* For a one-off read in a group of its own (ot-cache rebuild): ot_in_done stores nothing, so
 * the group commits no offset and leaves nothing behind whose lag would grow. */
void ot_in_keep_no_place(struct ot_in *in);
/* Commits what is done and closes. Accepts NULL. */
void ot_in_free(struct ot_in *in);

struct ot_header { const char *name; const char *value; };

struct ot_out;

/* Opens "-" (stdout) or "kafka" / "kafka:TOPIC" (TOPIC is the default when a send names none).
 * Returns NULL with errstr on failure. */
struct ot_out *ot_out_open(const char *spec, const struct ot_config *cfg, int *rc,
                           char *errstr, size_t errsz);
/* Queues one record. key may be NULL. On stdout only the value and a newline are written.
 * Returns 0 or an ot_rc. */
int ot_out_send(struct ot_out *o, const char *topic, const char *key, const char *value,
                size_t len, const struct ot_header *hdrs, size_t nhdrs, char *errstr, size_t errsz);
/* Waits until every queued record is acknowledged (Kafka) or written and flushed (stdout).
 * Returns 0 if all got through since the last flush, else an ot_rc with errstr. */
int ot_out_flush(struct ot_out *o, int timeout_ms, char *errstr, size_t errsz);
int ot_out_is_kafka(const struct ot_out *o);
/* The topic a send that names none goes to ("kafka:TOPIC"), or NULL (stdout, or "kafka"). */
const char *ot_out_topic(const struct ot_out *o);
/* As ot_in_ping, for a producer. */
int ot_out_ping(struct ot_out *o, int timeout_ms, char *errstr, size_t errsz);
/* Flushes (10 s at most) and closes. Accepts NULL. */
void ot_out_free(struct ot_out *o);
/* Calls each(id, len, arg) with the ot-id header of every one of the last `last` records of
 * each partition of topic, as the broker has them now: what an earlier run of a producer may
 * have published just before it died. Uses o's Kafka settings; does nothing for stdout, or
 * for a topic that does not exist. Returns 0 or an ot_rc. */
int ot_out_recent_ids(struct ot_out *o, const char *topic, long last,
                      void (*each)(const char *id, size_t len, void *arg), void *arg,
                      char *errstr, size_t errsz);

/* A client for metadata and the admin API (ot_topics), with cfg's brokers and properties,
 * once a broker answered. Returns NULL with *rc (OT_ECONFIG, OT_ESERVICE) and errstr; the
 * caller frees it with rd_kafka_destroy. */
struct rd_kafka_s *ot_kafka_admin(const struct ot_config *cfg, int *rc, char *errstr, size_t errsz);

#endif
