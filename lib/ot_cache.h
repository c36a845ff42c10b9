/* ot_cache: the order status cache inspected — statistics and drift against the database. */
#ifndef OT_CACHE_H
#define OT_CACHE_H

#include <hiredis/hiredis.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <stddef.h>

/* {"hits","misses","fills","hit_ratio","keys","keys_per_state":{...}} as a new reference, or
 * NULL with errstr. Scans order:* keys. */
json_t *ot_cache_stats(redisContext *r, char *errstr, size_t errsz);

struct ot_drift {
	long checked, stale, ahead, mismatch, orphan, missing, repaired;
};

/* Compares every cached order, and every active order in the database, with the database.
 * Each drift (stale: an older version cached; ahead: a version the database never had;
 * mismatch: same version, other status or position; orphan: cached, not in the database;
 * missing: an active order not cached, which is not drift) is written to out as a JSON line.
 * With repair, drifted entries are replaced by the database's state (orphans deleted).
 * Returns 0 or an ot_rc. */
int ot_cache_verify(PGconn *db, redisContext *r, int repair, FILE *out, struct ot_drift *d,
                    char *errstr, size_t errsz);

/* Count in ot_cache_writes_total{tool,result} one status written to Redis: "applied",
 * "cas_rejected" (Redis held a newer version, so kept it) or "failed" (Redis did not answer;
 * the entry is repaired later). */
void ot_cache_count_write(const char *result);
/* Count a refill after a miss in ot_cache_fills_total{tool}. */
void ot_cache_count_fill(void);
/* Count an entry put back after a failed write in ot_cache_repairs_total{tool}. */
void ot_cache_count_repair(void);
/* Exports the three counters above at 0 for this tool, so a rate over them has a series before
 * the first write, fill or repair. A long-running tool calls it at start. */
void ot_cache_metrics_zero(void);

#endif
