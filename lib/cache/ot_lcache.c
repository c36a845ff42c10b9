/* ot_lcache: an in-process cache of order statuses, coherent through Redis's invalidations. */
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ot_event.h"
#include "ot_lcache.h"
#include "ot_rsub.h"
#include "ot_log.h"
#include "ot_text.h"

#define STRIPES 64   /* locks: a bucket's is STRIPES apart from its neighbours' */
#define SWEEP 4      /* buckets each put looks through for entries past their age */
#define BODY_MAX 512

struct entry {
	struct entry *next;
	struct ot_status st;
	long long at;    /* ms, monotonic: stored or replaced */
	int published;   /* replaced by a published change whose invalidation has not come yet */
	long long asked; /* ms, monotonic: a refresh was last handed out; 0 none */
	size_t blen;     /* body: the status as one JSON line; 0 when it did not fit */
	char body[BODY_MAX];
};

struct stripe {
	pthread_mutex_t mu;
	uint32_t gen;    /* bumped by every invalidation of one of its orders */
} __attribute__((aligned(64)));

struct ot_lcache {
	size_t max, nbuckets;
	int max_age_ms;
	struct entry **bucket;
	struct stripe stripe[STRIPES];
	atomic_long count, flushes, invalidations;
	atomic_uint epoch;      /* bumped by every flush: marks from before are void */
	atomic_int online;      /* the subscription and tracking hold */
	int tracking;           /* hub thread only: CLIENT TRACKING took on this connection */
	atomic_size_t hand;     /* the next bucket a put sweeps */
};

static struct stripe *
stripe_of(struct ot_lcache *c, size_t b)
{
	return &c->stripe[b % STRIPES];
}

struct ot_lcache *
ot_lcache_new(size_t max, int max_age_ms)
{
	struct ot_lcache *c = calloc(1, sizeof *c);

	if (!c)
		return NULL;
	c->max = max ? max : 1;
	for (c->nbuckets = STRIPES; c->nbuckets < c->max; c->nbuckets *= 2)
		;
	c->max_age_ms = max_age_ms;
	if (!(c->bucket = calloc(c->nbuckets, sizeof *c->bucket))) {
		free(c);
		return NULL;
	}
	for (int i = 0; i < STRIPES; i++)
		pthread_mutex_init(&c->stripe[i].mu, NULL);
	return c;
}

/* Unlinks and frees every entry; a mark taken before is void. */
static void
flush(struct ot_lcache *c)
{
	atomic_fetch_add(&c->epoch, 1);
	for (size_t b = 0; b < c->nbuckets; b++) {
		struct stripe *s = stripe_of(c, b);
		struct entry *e, *next;

		pthread_mutex_lock(&s->mu);
		e = c->bucket[b];
		c->bucket[b] = NULL;
		s->gen++;
		pthread_mutex_unlock(&s->mu);
		for (; e; e = next) {
			next = e->next;
			free(e);
			atomic_fetch_sub(&c->count, 1);
		}
	}
	atomic_fetch_add(&c->flushes, 1);
}

void
ot_lcache_free(struct ot_lcache *c)
{
	if (!c)
		return;
	flush(c);
	for (int i = 0; i < STRIPES; i++)
		pthread_mutex_destroy(&c->stripe[i].mu);
	free(c->bucket);
	free(c);
}

/* The entry of id in bucket b, with *pp pointing at its link. Stripe lock held. */
static struct entry *
find(struct ot_lcache *c, size_t b, const char *id, struct entry ***pp)
{
	struct entry **p;

	for (p = &c->bucket[b]; *p; p = &(*p)->next)
		if (!strcmp((*p)->st.order_id, id))
			break;
	if (pp)
		*pp = p;
	return *p;
}

int
ot_lcache_get_refresh(struct ot_lcache *c, const char *order_id, struct ot_status *st, char *body, size_t bodysz,
                      size_t *blen, int *refresh, uint64_t *mark)
{
	size_t b = ot_hash32(order_id) & (c->nbuckets - 1);
	struct stripe *s = stripe_of(c, b);
	struct entry *e;
	long long now, age;
	int hit = 0;

	if (refresh)
		*refresh = 0;
	if (!atomic_load_explicit(&c->online, memory_order_relaxed))
		return 0;
	if (refresh) /* the epoch first: a flush bumps it before it clears the stripes */
		*mark = (uint64_t)atomic_load(&c->epoch) << 32;
	now = ot_now_ms();
	pthread_mutex_lock(&s->mu);
	if ((e = find(c, b, order_id, NULL)) && (age = now - e->at) <= c->max_age_ms) {
		*st = e->st;
		hit = 1;
		if (body) {
			*blen = e->blen < bodysz ? e->blen : 0;
			memcpy(body, e->body, *blen);
			if (bodysz)
				body[*blen] = '\0';
		}
		/* Past half its age, one refresh at a time (another once the last had time to land). */
		if (refresh && age > c->max_age_ms / 2 && (!e->asked || now - e->asked > c->max_age_ms / 4)) {
			e->asked = now;
			*refresh = 1;
			*mark |= s->gen;
		}
	}
	pthread_mutex_unlock(&s->mu);
	return hit;
}

int
ot_lcache_get(struct ot_lcache *c, const char *order_id, struct ot_status *st, char *body, size_t bodysz,
              size_t *blen)
{
	return ot_lcache_get_refresh(c, order_id, st, body, bodysz, blen, NULL, NULL);
}

uint64_t
ot_lcache_mark(struct ot_lcache *c, const char *order_id)
{
	size_t b = ot_hash32(order_id) & (c->nbuckets - 1);
	struct stripe *s = stripe_of(c, b);
	uint64_t m;

	/* The epoch first: a flush bumps it before it clears the stripes. */
	m = (uint64_t)atomic_load(&c->epoch) << 32;
	pthread_mutex_lock(&s->mu);
	m |= s->gen;
	pthread_mutex_unlock(&s->mu);
	return m;
}

/* Renders st into e's body. */
static void
render(struct entry *e)
{
	json_t *o = ot_status_to_json(&e->st);
	char *j = o ? json_dumps(o, OT_JSON_FLAGS) : NULL;
	size_t n = j ? strlen(j) : 0;

	json_decref(o);
	e->blen = 0;
	if (j && n + 2 <= sizeof e->body) {
		memcpy(e->body, j, n);
		e->body[n++] = '\n';
		e->body[n] = '\0';
		e->blen = n;
	}
	free(j);
}

/* Frees the entries past their age in the next SWEEP buckets, so orders read once do not hold
 * their place. */
static void
sweep(struct ot_lcache *c)
{
	long long now = ot_now_ms();

	for (int i = 0; i < SWEEP; i++) {
		size_t b = atomic_fetch_add(&c->hand, 1) & (c->nbuckets - 1);
		struct stripe *s = stripe_of(c, b);
		struct entry **p, *e, *gone = NULL;

		pthread_mutex_lock(&s->mu);
		for (p = &c->bucket[b]; (e = *p);) {
			if (now - e->at > c->max_age_ms) {
				*p = e->next;
				e->next = gone;
				gone = e;
			} else {
				p = &e->next;
			}
		}
		pthread_mutex_unlock(&s->mu);
		for (; gone; gone = e) {
			e = gone->next;
			free(gone);
			atomic_fetch_sub(&c->count, 1);
		}
	}
}

void
ot_lcache_put(struct ot_lcache *c, const struct ot_status *st, uint64_t mark)
{
	size_t b = ot_hash32(st->order_id) & (c->nbuckets - 1);
	struct stripe *s = stripe_of(c, b);
	struct entry *e, *fresh = NULL, **p;

	if (!atomic_load(&c->online) || (uint32_t)(mark >> 32) != atomic_load(&c->epoch))
		return;
	sweep(c);
	/* Rendered outside the lock; thrown away if the put is refused. */
	if (!(fresh = malloc(sizeof *fresh)))
		return;
	fresh->st = *st;
	fresh->published = 0;
	fresh->asked = 0;
	render(fresh);
	pthread_mutex_lock(&s->mu);
	if (s->gen != (uint32_t)mark || (uint32_t)(mark >> 32) != atomic_load(&c->epoch)) {
		/* invalidated since the mark: what was read may be older */
	} else if ((e = find(c, b, st->order_id, &p))) {
		if (st->version > e->st.version) {
			fresh->next = e->next;
			*p = fresh;
			fresh->at = ot_now_ms();
			free(e);
			fresh = NULL;
		} else if (st->version == e->st.version) {
			e->at = ot_now_ms(); /* confirmed: as fresh as the read */
		}
	} else if ((size_t)atomic_load(&c->count) < c->max) {
		fresh->at = ot_now_ms();
		fresh->next = c->bucket[b];
		c->bucket[b] = fresh;
		atomic_fetch_add(&c->count, 1);
		fresh = NULL;
	}
	pthread_mutex_unlock(&s->mu);
	free(fresh);
}

/* Drops id's entry. With keep_published, an entry a published change replaced stays: this is
 * the invalidation of that change, and the entry holds what it wrote. */
static void
invalidate(struct ot_lcache *c, const char *id, int keep_published)
{
	size_t b = ot_hash32(id) & (c->nbuckets - 1);
	struct stripe *s = stripe_of(c, b);
	struct entry *e, **p;

	pthread_mutex_lock(&s->mu);
	s->gen++;
	if ((e = find(c, b, id, &p))) {
		if (keep_published && e->published) {
			e->published = 0;
			e = NULL;
		} else {
			*p = e->next;
		}
	}
	pthread_mutex_unlock(&s->mu);
	if (e) {
		free(e);
		atomic_fetch_sub(&c->count, 1);
		atomic_fetch_add(&c->invalidations, 1);
	}
}

void
ot_lcache_forget(struct ot_lcache *c, const char *order_id)
{
	if (c)
		invalidate(c, order_id, 0);
}

/* A published change replaces the entry it is not older than; an order not held stays out,
 * so a busy pipeline does not fill the cache with orders nobody reads here. Its invalidation
 * follows (Redis sends BCAST invalidations after the command that changed the key): that one
 * keeps it. */
static void
published(struct ot_lcache *c, const char *id, const char *json)
{
	size_t b = ot_hash32(id) & (c->nbuckets - 1);
	struct stripe *s = stripe_of(c, b);
	struct entry *e, *fresh, **p;
	struct ot_status st;

	if (ot_status_parse(id, json, &st) != 1 || !(fresh = malloc(sizeof *fresh)))
		return;
	fresh->st = st;
	fresh->published = 1;
	render(fresh);
	pthread_mutex_lock(&s->mu);
	if ((e = find(c, b, id, &p)) && st.version >= e->st.version) {
		fresh->next = e->next;
		fresh->at = ot_now_ms();
		*p = fresh;
		fresh = e; /* freed below */
	}
	pthread_mutex_unlock(&s->mu);
	free(fresh);
}

/* Hub thread, on each new connection: broadcast tracking of order:* to this connection. */
static void
connecting(void *arg, redisContext *r)
{
	struct ot_lcache *c = arg;
	redisReply *rep = redisCommand(r, "CLIENT ID");

	c->tracking = 0;
	if (rep && rep->type == REDIS_REPLY_INTEGER) {
		long long id = rep->integer;
		freeReplyObject(rep);
		rep = redisCommand(r, "CLIENT TRACKING on REDIRECT %lld BCAST PREFIX order:{", id);
		c->tracking = rep && rep->type == REDIS_REPLY_STATUS;
	}
	if (!c->tracking)
		OT_WARN(NULL, "the in-process cache stays off: Redis refused CLIENT TRACKING (%s)",
		        rep && rep->type == REDIS_REPLY_ERROR ? rep->str : r->err ? r->errstr : "no answer");
	freeReplyObject(rep);
}

/* Hub thread: empty either way, taking entries only while subscribed and tracked. */
static void
subscribed(void *arg, int up)
{
	struct ot_lcache *c = arg;

	atomic_store(&c->online, 0);
	flush(c);
	if (up && c->tracking)
		atomic_store(&c->online, 1);
}

/* Hub thread: a published change ("pmessage", pattern, order:{id}, JSON) or Redis's
 * invalidation ("message", "__redis__:invalidate", keys, or nil for all). */
static void
message(void *arg, const redisReply *rep)
{
	struct ot_lcache *c = arg;
	const redisReply *keys;
	char id[64];

	if (rep->type != REDIS_REPLY_ARRAY || rep->elements < 3 || !rep->element[0]->str)
		return;
	if (rep->elements == 4 && !strcmp(rep->element[0]->str, "pmessage") && rep->element[2]->str &&
	    rep->element[3]->str) {
		if (ot_redis_order_of(rep->element[2]->str, id))
			published(c, id, rep->element[3]->str);
		return;
	}
	if (rep->elements != 3 || strcmp(rep->element[0]->str, "message") || !rep->element[1]->str ||
	    strcmp(rep->element[1]->str, "__redis__:invalidate"))
		return;
	keys = rep->element[2];
	if (keys->type != REDIS_REPLY_ARRAY) { /* FLUSHALL, FLUSHDB */
		flush(c);
		return;
	}
	for (size_t i = 0; i < keys->elements; i++)
		if (keys->element[i]->str && ot_redis_order_of(keys->element[i]->str, id))
			invalidate(c, id, 1);
}

void
ot_lcache_hooks(struct ot_lcache *c, struct ot_rsub_hooks *h)
{
	memset(h, 0, sizeof *h);
	h->connecting = connecting;
	h->subscribed = subscribed;
	h->message = message;
	h->arg = c;
}

void
ot_lcache_read(struct ot_lcache *c, struct ot_lcache_stats *s)
{
	memset(s, 0, sizeof *s);
	if (!c)
		return;
	s->entries = atomic_load(&c->count);
	s->flushes = atomic_load(&c->flushes);
	s->invalidations = atomic_load(&c->invalidations);
	s->online = atomic_load(&c->online);
}
