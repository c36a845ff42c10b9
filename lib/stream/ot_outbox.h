/* ot_outbox: the transactional outbox — add within a transaction, relay after it. */
#ifndef OT_OUTBOX_H
#define OT_OUTBOX_H

#include <libpq-fe.h>
#include <stddef.h>

#include "ot_event.h"
#include "ot_trace.h"

struct ot_out;

/* Inserts ev for topic into the outbox; call inside the caller's transaction. The row's and the
 * payload's traceparent name a span of this insert, a child of ev's traceparent.
 * Returns 0 or an ot_rc. */
int ot_outbox_add(PGconn *db, const char *topic, const struct ot_event *ev, char *errstr, size_t errsz);
/* ot_outbox_add for evs[0..n), in one statement, in their order. */
int ot_outbox_add_many(PGconn *db, const char *topic, const struct ot_event *evs, size_t n, char *errstr,
                       size_t errsz);

/* Relays up to batch rows, oldest first and at most one per order, to out, waits for every
 * acknowledgement, and only then deletes them; rows another relay holds are skipped (SKIP
 * LOCKED), so relays can run side by side and each order's events still leave in order.
 * more, if not NULL, is set to 0 when the table was seen empty once this batch's rows were
 * gone (so only a NOTIFY brings new work), else to 1 (poll again at once).
 * Returns the number relayed, or an ot_rc. */
long ot_outbox_relay(PGconn *db, struct ot_out *out, int batch, int *more, char *errstr, size_t errsz);

/* At start, before the first relay: a relay that died after Kafka acknowledged a batch but
 * before its DELETE committed left rows that are already published. Reads back the last
 * `last` records of each partition of every topic the outbox names and deletes, unsent, the
 * rows whose event is there. Does nothing when out is stdout. Returns the number of rows
 * deleted, or an ot_rc. */
long ot_outbox_reconcile(PGconn *db, struct ot_out *out, long last, char *errstr, size_t errsz);
/* The relay's loop: reconciles, then relays batches of batch rows to out until ot_stop (or, with
 * once, until the outbox is empty), woken by NOTIFY or polling once a second; a failing
 * service is retried up to max times with backoff, and logged. Adds what it relayed to
 * *total. Returns OT_OK, or the error that stopped it. */
int ot_outbox_drain(PGconn *db, struct ot_out *out, int batch, int once, int max, long *total);

/* Begins s, the relay's "publish TOPIC" span of one event, detached (it ends once the broker
 * acknowledged; topic NULL: the output's default), as a child of parent (the row's traceparent; NULL or "" starts a trace), and
 * writes the traceparent its Kafka header carries into tp. */
void ot_relay_span(struct ot_span *s, const char *topic, const char *key, const char *event_id,
                   const char *parent, char tp[OT_TRACEPARENT_LEN]);

/* Names the database (orders, inventory) in the relay's metrics; "orders" until called. */
void ot_outbox_metrics_db(const char *db);
/* Counts one event Kafka acknowledged in ot_relay_published_total{db,topic}, and the time since
 * its row's created_at (seconds since the epoch; 0 unknown) in ot_relay_ack_seconds{db}. */
void ot_outbox_count_published(const char *db, const char *topic, double created_s);

struct ot_outbox_watch;
/* Refreshes ot_outbox_pending_rows{db} and ot_outbox_oldest_age_seconds{db}, and with a slot
 * ot_cdc_slot_retained_wal_bytes{db,slot} and ot_cdc_confirmed_lag_bytes{db,slot}, every 5 s
 * from a thread with its own connection (never on a scrape). Returns NULL with errstr. */
struct ot_outbox_watch *ot_outbox_watch_start(const char *conninfo, const char *db, const char *slot,
                                              char *errstr, size_t errsz);
/* Stops the thread and frees. Accepts NULL. */
void ot_outbox_watch_stop(struct ot_outbox_watch *w);

/* LISTEN for new rows, and wait up to timeout_ms for a notification; every notification
 * already queued is consumed at once (they coalesce into one wake-up). Returns 1 if any came,
 * 0 if none, -1 if the connection is lost. timeout_ms 0 only drains the queue. */
int ot_outbox_listen(PGconn *db, char *errstr, size_t errsz);
int ot_outbox_wait(PGconn *db, int timeout_ms);

#endif
