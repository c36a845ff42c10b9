/* ot_payment_watch: the payments whose outcome is not known, counted for the metrics by a
 * thread of its own, so that neither the consumer nor a scrape waits on the database. */
#ifndef OT_PAYMENT_WATCH_H
#define OT_PAYMENT_WATCH_H

#include <stddef.h>

struct ot_payment_watch;

/* Starts a thread that, over a connection of its own to conninfo, sets the gauges
 * ot_payments_unknown (payments in UNKNOWN now) and ot_payments_unknown_oldest_seconds (the age
 * of the oldest of them, from when its first answer was missed; 0 when none) at once, then every
 * interval_ms and whenever poked. A database that does not answer leaves the gauges as they
 * were and is tried again at the next round. Returns NULL with errstr when the thread cannot
 * start. Stop with ot_payment_watch_stop. */
struct ot_payment_watch *ot_payment_watch_start(const char *conninfo, long interval_ms, char *errstr, size_t errsz);
/* Asks for a count now (after a payment became UNKNOWN or was settled); returns at once. NULL
 * is fine. Thread-safe. */
void ot_payment_watch_poke(struct ot_payment_watch *w);
/* Stops the thread, joins it and frees w; NULL is fine. */
void ot_payment_watch_stop(struct ot_payment_watch *w);

#endif
