/* ot_cdc: the outbox read from PostgreSQL's write-ahead log (logical replication, pgoutput). */
#ifndef OT_CDC_H
#define OT_CDC_H

#include <stddef.h>

struct ot_out;

/* Streams every row inserted into db's outbox ("orders"/"inventory", at conninfo) to out, in
 * commit order, through the publication ot_outbox (a migration makes it) and the replication
 * slot `slot` (created on first use: the role needs REPLICATION, and DML on the outbox). A transaction's LSN is confirmed to the server only after all its
 * records were acknowledged, and its rows are then deleted; standby status updates go out at
 * least every few seconds, confirming the server's position while nothing is pending, so an
 * idle database's WAL is not held back. Resumes after a restart from the last confirmed LSN;
 * rows left in the table (from before the slot, or not deleted before a crash) are swept
 * first, as the poll relay would.
 * With once, returns when caught up. Returns OT_OK or an ot_rc with errstr; *total counts
 * records sent. */
int ot_cdc_run(const char *conninfo, const char *db, const char *slot, struct ot_out *out,
               int once, long *total, char *errstr, size_t errsz);

/* ot_cdc_run, and after a lost connection (a PostgreSQL restart) again from the slot, as a
 * restart would, up to attempts times in a row (each failure logged, with backoff); with once,
 * a single run. Returns as ot_cdc_run; *total counts the records of every run. */
int ot_cdc_relay(const char *conninfo, const char *db, const char *slot, struct ot_out *out, int once,
                 int attempts, long *total, char *errstr, size_t errsz);

/* Drops the replication slot `slot` of the database at conninfo, so the server stops keeping
 * WAL for it. Returns 1 when dropped, 0 when there was none, or an ot_rc (OT_ESERVICE while
 * a relay still streams from it) with errstr. */
int ot_cdc_drop(const char *conninfo, const char *slot, char *errstr, size_t errsz);

#endif
