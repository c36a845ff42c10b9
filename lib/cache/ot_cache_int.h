/* ot_cache_int: what the cache's reads and writes (ot_cache.c), its read order
 * (ot_cache_read.c) and its maintenance (ot_cache_maint.c) share: the cache, its pool of connections and its list of orders to repair. */
#ifndef OT_CACHE_INT_H
#define OT_CACHE_INT_H

#include <hiredis/hiredis.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>

#include "ot_rlink.h"
#include "ot_status.h"

struct ot_breaker;
struct ot_lcache;
struct ot_rpipe;

/* Orders whose write failed after their commit, at most this many (the rest are left to the
 * TTL, ot-cache sync and ot-cache verify --repair). */
#define DIRTY_MAX 8192

/* One pooled connection (to the one server, or to every master of a cluster): taken by a
 * call, given back after. */
struct link {
	struct ot_rlink k;
	int allowed;            /* this call holds an allowance of the breaker: report it */
	int refused;            /* the breaker refused this call: Redis is not tried */
	int broke;              /* this call found Redis unreachable or a connection broken */
	struct link *next;
};

struct ot_cache {
	char *url;
	struct ot_breaker *cb;  /* NULL: none */
	pthread_mutex_t mu;     /* guards idle */
	struct link *idle;
	pthread_mutex_t dirty_mu; /* guards dirty, dirty_lost; ndirty is written under it */
	char (*dirty)[64];
	atomic_int ndirty;      /* read without the lock by ot_cache_dirty's fast path */
	int dirty_lost;
	atomic_long hits, misses, fills; /* since the last ot_cache_stats_flush */
	struct ot_lcache *lc;   /* ot_cache_front's: NULL when none */
	struct ot_rpipe *pipe;
};

/* ot_cache.c: the pool. A connection for one call, having asked the breaker (NULL when out
 * of memory); given back, with what the call found, by cache_give (accepts NULL). */
struct link *cache_take(struct ot_cache *c);
void cache_give(struct ot_cache *c, struct link *l);
/* The connection for a key (key NULL: any); NULL when unreachable or refused. */
redisContext *cache_conn(struct ot_cache *c, struct link *l, const char *key);
/* Writes st (known_only: only over an entry there); returns as ot_redis_put_status. */
int cache_put_one(struct ot_cache *c, struct link *l, const struct ot_status *st, int known_only,
                  char *errstr, size_t errsz);
/* Notes order_id for the next ot_cache_repair. */
void cache_mark_dirty(struct ot_cache *c, const char *order_id);

#endif
