/* ot_lcache: ot-serve's small in-process cache of order statuses in front of Redis, kept
 * coherent by the Redis subscription ot_live holds (client-side caching in broadcast mode). */
#ifndef OT_LCACHE_H
#define OT_LCACHE_H

#include <hiredis/hiredis.h>
#include <stddef.h>
#include <stdint.h>

#include "ot_redis.h"

struct ot_lcache;
struct ot_rsub_hooks;

/* How it stays coherent: on each (re)connection the subscription turns on CLIENT TRACKING
 * BCAST PREFIX order: redirected to itself, so Redis tells it about every change of an
 * order:{id} key (writes, DEL, expiry, eviction; FLUSHALL drops all) besides the changes
 * published on order:{id}. A published change replaces the entry when its version is not
 * older; any other invalidation drops it. Until the subscription and tracking hold, and from
 * the moment either drops, the cache is empty and takes nothing: reads go to Redis.
 * Entries live at most max_age_ms whatever happens, and there are at most max entries. */

/* A cache of at most max entries, each at most max_age_ms old. NULL when out of memory. */
struct ot_lcache *ot_lcache_new(size_t max, int max_age_ms);
/* Accepts NULL. Only once ot_live no longer calls its hooks. */
void ot_lcache_free(struct ot_lcache *c);
/* Fills h with the hooks ot_live_start calls for c. */
void ot_lcache_hooks(struct ot_lcache *c, struct ot_rsub_hooks *h);

/* 1 with st (and, when body is not NULL, the status as one JSON line, NUL-terminated, in body,
 * its length in *blen; bodysz 512 is enough) when c holds a fresh entry for order_id; else 0. */
int ot_lcache_get(struct ot_lcache *c, const char *order_id, struct ot_status *st, char *body, size_t bodysz,
                  size_t *blen);
/* As ot_lcache_get; besides, on a hit past half its age, *refresh gets 1 and *mark a mark (as
 * ot_lcache_mark), once per quarter of the age: the caller then reads the order from Redis in
 * the background and ot_lcache_put's it with mark, so an order read often stays in the cache
 * (a put of the version held renews the entry) and never waits on Redis. refresh may be NULL. */
int ot_lcache_get_refresh(struct ot_lcache *c, const char *order_id, struct ot_status *st, char *body,
                          size_t bodysz, size_t *blen, int *refresh, uint64_t *mark);
/* What a reader takes before it reads order_id elsewhere (Redis, the database), for
 * ot_lcache_put: a put after an invalidation since the mark is refused, since what was read
 * may be older than the change that invalidated it. */
uint64_t ot_lcache_mark(struct ot_lcache *c, const char *order_id);
/* Stores st, read after mark was taken, unless an invalidation came since or the entry holds
 * a newer version. */
void ot_lcache_put(struct ot_lcache *c, const struct ot_status *st, uint64_t mark);
/* Drops the entry of order_id: for a write of this process, before it answers, so no read
 * after it can see the status from before. */
void ot_lcache_forget(struct ot_lcache *c, const char *order_id);

/* Counters for /metrics. */
struct ot_lcache_stats {
	long entries;       /* held now */
	long flushes;       /* times the whole cache was dropped */
	long invalidations; /* entries Redis invalidated */
	int online;         /* taking entries: the subscription and tracking hold */
};
void ot_lcache_read(struct ot_lcache *c, struct ot_lcache_stats *s);

#endif
