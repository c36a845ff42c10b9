/* ot_gcra: an in-process rate limiter — GCRA per client name in a fixed table, for a server
 * with no shared store to keep the counts in (each process enforces its own). */
#ifndef OT_GCRA_H
#define OT_GCRA_H

struct ot_gcra;

/* A limiter of rate requests a second per client after a burst of burst (at least 1), over
 * at most slots clients at once (by hash: of two that clash, the later starts afresh, so a
 * clash loosens the limit and never refuses early). NULL when rate is not above 0 or out of
 * memory. */
struct ot_gcra *ot_gcra_new(double rate, int burst, int slots);
/* Accepts NULL. */
void ot_gcra_free(struct ot_gcra *g);
/* Takes one request of client's at now_ms: 0 when it may go on, else how many milliseconds
 * until it may (the request is not counted). Thread-safe. */
long ot_gcra_take(struct ot_gcra *g, const char *client, long long now_ms);

#endif
