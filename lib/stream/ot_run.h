/* ot_run: the record loop every filter shares — bad records reported and skipped, transient
 * failures retried with backoff, offsets marked done only after the handler succeeded. */
#ifndef OT_RUN_H
#define OT_RUN_H

#include <stddef.h>

#include <libpq-fe.h>

#include "ot_event.h"
#include "ot_io.h"
#include "ot_outcome.h"
#include "ot_status.h"
#include "ot_trace.h"

/* Handles one record. Returns its ot_outcome (OT_APPLIED, or why it changed nothing), a
 * refusal (OT_EINPUT, OT_ENOTFOUND: a poison record), OT_ESERVICE or OT_ERACE (a transient
 * failure: retried), or another ot_rc (retried, then treated as poison). */
typedef int (*ot_handler)(void *arg, const struct ot_msg *m, char *errstr, size_t errsz);

/* What a batch handler did with one record. */
struct ot_batch_res {
	int rc;           /* an ot_outcome (OT_APPLIED, or why it changed nothing), a refusal
	                   * (ot_refused: a poison record, judged where it stands in the batch), or
	                   * anything else: not taken, for the per-record path */
	char err[256];    /* for an outcome a message to log at info, for a refusal the reason */
	/* Set by a handler that committed a status for the cache (version 0: none), in the order
	 * committed; tp the record's trace (a traceparent, "": the caller's current span). */
	struct ot_status st;
	char tp[56];
};

/* Applies records ms[0..n) in one transaction, in order. Returns OT_OK once it committed,
 * with each record's outcome in res[i]; a record it refused or could not take (res[i].rc
 * below 0) must have left nothing committed. ot_run then reports or dead-letters the
 * refused (ot_refused) with res[i].err, and sends the others through the
 * per-record handler. Any other return means nothing of the batch was committed (errstr says
 * why): every record goes through the per-record handler, with its retries and dead letter. */
typedef int (*ot_batch_handler)(void *arg, const struct ot_msg *ms, size_t n, struct ot_batch_res *res,
                                char *errstr, size_t errsz);

struct ot_run_stats {
	long records, ok, skipped, bad, dead, retries;
};

/* Runs until the input ends or ot_stop. A failing record is tried ot_in_attempts(in) times
 * with backoff. A poison record is reported with its place; from Kafka it then goes to the
 * dead-letter topic and its offset is committed, from stdin it is skipped and counted bad.
 * A service still failing after the last attempt stops the loop with the record not done, so
 * nothing on that partition is skipped. Returns OT_OK, OT_EINPUT if any stdin record was bad,
 * or the error that stopped it. The stats, if given, are filled.
 * Counts each record in ot_records_total{tool,topic,result} (result applied, duplicate, stale,
 * late, ignored, dead_lettered or bad; each extra attempt as retried), its handling time in
 * ot_record_handling_seconds{tool,topic}, and from Kafka the age of the last record handled
 * per topic in ot_kafka_last_record_age_seconds{tool,topic}. */
int ot_run(struct ot_in *in, ot_handler h, void *arg, struct ot_run_stats *stats);
/* A step of the saga over envelopes, run by ot_run_step: one applies ev; batch, if not NULL,
 * applies evs[0..n) (those with res[i].rc OT_OK: the others did not parse) in one transaction,
 * as an ot_batch_handler does. Both run on db, reconnected first if it was lost, and return what
 * an ot_handler and an ot_batch_handler return. */
struct ot_step {
	PGconn *db;
	int (*one)(void *arg, const struct ot_event *ev, char *errstr, size_t errsz);
	int (*batch)(void *arg, const struct ot_msg *ms, const struct ot_event *evs, size_t n,
	             struct ot_batch_res *res, char *errstr, size_t errsz);
	void *arg;
};
/* ot_run over a step: each record's envelope parsed (one that does not parse is refused with
 * OT_EINPUT), handled in its span (ot_run_span), and the message of a skip or refusal prefixed
 * with "order ID: ", so it can be found by order id in the logs. Sets the batch handler. */
int ot_run_step(struct ot_in *in, const struct ot_step *step, struct ot_run_stats *stats);
/* Lets ot_run apply the records that are waiting, up to ot_in_batch(in) of them, with hb in
 * one transaction (and h for what hb could not take). NULL: one record at a time. */
void ot_run_set_batch(ot_batch_handler hb);
/* A function ot_run calls with arg when no record came for a while (each 500 ms wait that
 * ends empty), for housekeeping such as cache repair. NULL for none. */
void ot_run_set_idle(void (*fn)(void *arg), void *arg);

/* Begins s, the span of handling record m that carries ev, named "handle TYPE": a child of the
 * record's traceparent header (Kafka), else of the envelope's traceparent field, else a new
 * trace. s is the thread's current span until ot_span_end, so the handler's log lines and the
 * events it emits belong to it. */
void ot_run_span(struct ot_span *s, const struct ot_msg *m, const struct ot_event *ev);

/* Sleeps the backoff for attempt n (0-based): 100 ms doubling to 5 s, with jitter.
 * Returns early on ot_stop. */
void ot_backoff(int attempt);

#endif
