/* ot_cache: the order status cache — Redis's copy of each order's status, owned in one place. */
#ifndef OT_CACHE_H
#define OT_CACHE_H

#include <hiredis/hiredis.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stddef.h>
#include <stdint.h>

#include "ot_rpipe.h"
#include "ot_status.h"

/* One object holds everything the cache is: its connections, the versioned writes, reads with
 * a single-flight refill, the orders whose write failed (the dirty set) and their repair,
 * warm-up, counters, statistics and drift checks. The domain (ot_order) commits and returns
 * statuses; the tools hand them here. The cache is a copy: a failed write is logged and
 * repaired later, never an error for the caller. Every function is safe from any thread: each
 * call takes a connection from the object's own pool and gives it back. */
/* How long "no such order" is remembered after a read found none in the database. */
#define OT_CACHE_NONE_MS 5000

struct ot_cache;
struct ot_batch_res;
struct ot_breaker;
struct ot_lcache;

/* A cache over the Redis at url (the forms ot_redis_connect takes), connected on first use
 * and again after a failure (at most five attempts a second). Exports its counters at 0 for
 * this tool. NULL when out of memory. */
struct ot_cache *ot_cache_new(const char *url);
/* Accepts NULL. Only once no other thread uses c. */
void ot_cache_free(struct ot_cache *c);
/* Makes every later call go through cb (which outlives c): while it is open, Redis is not
 * tried (a write is marked for repair at once, a read fails), and each call that tried reports
 * whether its connection held. */
void ot_cache_set_breaker(struct ot_cache *c, struct ot_breaker *cb);
/* PING. Returns 0, or OT_ESERVICE with errstr. */
int ot_cache_ping(struct ot_cache *c, char *errstr, size_t errsz);

/* Writes st with the versioned compare-and-set (a newer cached version stays) and publishes
 * the change; a failed write marks the order dirty for ot_cache_repair. Its "cache write" span
 * is a child of the thread's current span. */
void ot_cache_put(struct ot_cache *c, const struct ot_status *st);
/* ot_cache_put for n statuses in one round trip, in order. Each write's span is a child of
 * tps[i] (a traceparent; tps NULL, or an entry NULL or "": the thread's current span). */
void ot_cache_put_many(struct ot_cache *c, const struct ot_status *sts, const char *const *tps, size_t n);
/* ot_cache_put_many of the statuses a batch committed: res[i].st where its version is not 0,
 * under res[i].tp. */
void ot_cache_put_results(struct ot_cache *c, const struct ot_batch_res *res, size_t n);
/* For a replayed change (ot-cache rebuild and sync): writes only where Redis knows the order.
 * Returns 1 written, 0 stale, 2 unknown to Redis (write the database's status instead), or
 * OT_ESERVICE with errstr. */
int ot_cache_put_known(struct ot_cache *c, const struct ot_status *st, char *errstr, size_t errsz);

/* Writes st, read from the database after a miss, counted as a fill. Returns 1 written, 0
 * stale (Redis held a newer version), or OT_ESERVICE with errstr. */
int ot_cache_fill(struct ot_cache *c, const struct ot_status *st, char *errstr, size_t errsz);

/* Redis alone: 1 with st filled, 0 a miss (both counted for the statistics), or OT_ESERVICE
 * (not counted) with errstr, which is "" when Redis was not tried (unreachable a moment ago,
 * or its circuit open). */
int ot_cache_read(struct ot_cache *c, const char *order_id, struct ot_status *st, char *errstr, size_t errsz);
/* After a miss: the database, refilling Redis under a single-flight lock (readers of the same
 * missing order wait up to 0.5 s for one refill instead of all querying). An order the database
 * does not have is remembered as such for OT_CACHE_NONE_MS (until it is written, if sooner),
 * and answered 0 without the database meanwhile. *hit gets 1 when
 * another's refill answered from Redis, 0 when the database did with Redis answering, -1 when
 * the database did without Redis (down). Returns 1, 0 (no such order), or an ot_rc. */
int ot_cache_refill(struct ot_cache *c, PGconn *db, const char *order_id, struct ot_status *st, int *hit,
                    char *errstr, size_t errsz);
/* Cache-aside: ot_cache_read, then on a miss or failure ot_cache_refill. *hit is 1 when Redis
 * answered. Returns 1, 0, or an ot_rc. */
int ot_cache_get(struct ot_cache *c, PGconn *db, const char *order_id, struct ot_status *st, int *hit,
                 char *errstr, size_t errsz);
/* Counts a read the caller served without ot_cache_read (its own pipeline, an in-process copy):
 * 1 a hit, 0 a miss. */
void ot_cache_count(struct ot_cache *c, int hit);
/* The read order of a server (ot-serve), in one place: an order this process committed while
 * Redis did not take it is read from the database; a fresh entry of the in-process cache
 * answers at once; else Redis (through the pipe, or blocking); after a miss the database,
 * refilling Redis (ot_cache_refill), after a failure the database alone. */

/* Puts lc (may be NULL) and pipe (may be NULL: Redis is read blocking) in front of c; both
 * outlive c's reads. */
void ot_cache_front(struct ot_cache *c, struct ot_lcache *lc, struct ot_rpipe *pipe);
/* Drops the in-process entry of order_id: for a write of this process, before it answers, so
 * no read after it sees the status from before. */
void ot_cache_forget(struct ot_cache *c, const char *order_id);

/* Where a read was answered from. */
enum ot_cache_from { OT_FROM_LOCAL, OT_FROM_HIT, OT_FROM_MISS, OT_FROM_BYPASS, OT_FROM_COUNT };

/* One status read between its steps: the caller's memory, the cache's fields. */
struct ot_cache_rd {
	struct ot_rpipe_job rj;  /* first: its Redis read through the pipe */
	struct ot_cache *c;
	/* After ot_cache_read_send returned 1, called once on the pipe's thread: found 1 with
	 * st (Redis had it), 0 when the database comes next (ot_cache_read_db with rd). */
	void (*done)(struct ot_cache_rd *rd, int found, const struct ot_status *st);
	enum ot_cache_from from; /* where the answer came from, once there is one */
	uint64_t mark;           /* the in-process cache's mark, taken before Redis was read */
	int via_redis;           /* Redis answered a miss: the database read refills it */
	char oid[64];
};

/* Begins a read of order_id without waiting: 1 with st (and, when body is not NULL, the
 * status as one JSON line in body, its length in *blen) from the in-process cache, renewed
 * from Redis in the background past half its age; 0 when the database comes next
 * (ot_cache_read_db); 2 when Redis does (ot_cache_read_send). */
int ot_cache_read_start(struct ot_cache *c, const char *order_id, struct ot_cache_rd *rd, struct ot_status *st,
                        char *body, size_t bodysz, size_t *blen);
/* Asks Redis through the pipe for rd's order: 1 when sent (done follows, on the pipe's
 * thread, perhaps before this returns), 0 when not (no pipe, the breaker open, out of memory):
 * the database comes next. */
int ot_cache_read_send(struct ot_cache *c, struct ot_cache_rd *rd,
                       void (*done)(struct ot_cache_rd *rd, int found, const struct ot_status *st));
/* The same read, blocking on Redis: 1 with st, 0 when the database comes next. */
int ot_cache_read_near(struct ot_cache *c, const char *order_id, struct ot_cache_rd *rd, struct ot_status *st);
/* The database step of rd's read on db; what it found goes into the in-process cache unless
 * Redis invalidated the order since rd->mark, and rd->from says where it came from. Returns 1,
 * 0 (no such order) or an ot_rc with errstr. */
int ot_cache_read_db(struct ot_cache *c, PGconn *db, struct ot_cache_rd *rd, struct ot_status *st,
                     char *errstr, size_t errsz);

/* The changes of one order newer than version after, oldest first (orderlog:{id}): an array of
 * member (the status JSON) and score (the version) pairs; caller freeReplyObject's. NULL with
 * errstr ("" when Redis was not tried, as ot_cache_read). */
redisReply *ot_cache_history(struct ot_cache *c, const char *order_id, long long after, char *errstr,
                             size_t errsz);
/* Deletes the entry of order_id. Returns 1 deleted, 0 absent, OT_ESERVICE. */
int ot_cache_invalidate(struct ot_cache *c, const char *order_id, char *errstr, size_t errsz);

/* 1 when this process committed a status of order_id that Redis did not take: reads should go
 * to the database until ot_cache_repair catches up. */
int ot_cache_dirty(struct ot_cache *c, const char *order_id);
/* Rewrites from the database every dirty order, with the versioned compare-and-set, so no stale
 * status outlives a Redis outage. Returns how many were repaired, or an ot_rc (the rest are
 * kept for later). */
long ot_cache_repair(struct ot_cache *c, PGconn *db, char *errstr, size_t errsz);
/* At exit: ot_cache_repair (db NULL: not tried), then each order still dirty is logged at warn
 * by id, so an operator knows what a later verify --repair mends. Returns how many are left. */
long ot_cache_finish(struct ot_cache *c, PGconn *db);
/* Writes every order not yet in a final state. Returns the count, or an ot_rc. */
long ot_cache_warm(struct ot_cache *c, PGconn *db, char *errstr, size_t errsz);

/* Adds the hits, misses and fills counted since the last call to the hash ot:stats in Redis
 * (kept for the next call if Redis fails). Returns 0 or OT_ESERVICE. */
int ot_cache_stats_flush(struct ot_cache *c, char *errstr, size_t errsz);
/* {"hits","misses","fills","hit_ratio","keys","keys_per_state":{...}} as a new reference, or
 * NULL with errstr. Scans the order:* keys. */
json_t *ot_cache_stats(struct ot_cache *c, char *errstr, size_t errsz);

struct ot_drift {
	long checked, stale, ahead, mismatch, orphan, missing, repaired;
};

/* Compares every cached order, and every active order in the database, with the database.
 * Each drift (stale: an older version cached; ahead: a version the database never had;
 * mismatch: same version, other status, payment or position; orphan: cached, not in the database;
 * missing: an active order not cached, which is not drift) is written to out as a JSON line.
 * With repair, drifted entries are replaced by the database's state (orphans deleted).
 * Returns 0 or an ot_rc. */
int ot_cache_verify(struct ot_cache *c, PGconn *db, int repair, FILE *out, struct ot_drift *d, char *errstr,
                    size_t errsz);

/* ot_cache_verify of the orders the database changed in the last seconds only, from the
 * database's side: a cached entry older (or other) than the database's is drift, an order not
 * cached is counted as missing. Cheap enough to run every minute: this is what repairs an
 * entry whose writer died before it could (its dirty set went with it). Returns how many
 * orders were compared, or an ot_rc. */
long ot_cache_verify_since(struct ot_cache *c, PGconn *db, double seconds, int repair, FILE *out,
                           struct ot_drift *d, char *errstr, size_t errsz);

#endif
