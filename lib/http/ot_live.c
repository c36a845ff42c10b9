/* ot_live: one Redis subscription per server fans each order's changes out to its streams. */
#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "ot_event.h"
#include "ot_halves.h"
#include "ot_err.h"
#include "ot_live.h"
#include "ot_live_int.h"
#include "ot_log.h"
#include "ot_redis.h"
#include "ot_text.h"

/* epoll data of what is not a stream */
static char tag_redis, tag_wake;

void
live_wake_hub(struct ot_live *lv)
{
	uint64_t one = 1;

	if (write(lv->wake, &one, sizeof one) < 0 && errno != EAGAIN)
		OT_WARN(NULL, "live streams: waking the hub: %s", strerror(errno));
}

/* send_one from a fan-out, which holds no lock: a stream the hub owns is written at once,
 * any other under lv->mu (MHD's thread may be reading its queue, or freeing it). */
static int
send_any(struct ot_live *lv, struct sub *s, long long version, const struct wire *m)
{
	int r = 0;

	if (owned(s))
		return live_send_one(s, version, m);
	pthread_mutex_lock(&lv->mu);
	if (!s->dead)
		r = live_send_one(s, version, m);
	pthread_mutex_unlock(&lv->mu);
	return r;
}

/* Fan-outs to this many streams or more share their sends with the helper thread (ot_halves):
 * the sends are the cost of one (the kernel's TCP work, per stream) and spread over cores.
 * Each stream is written by one of the two; the hub waits for the helper's half. */
#define SPLIT 1024

/* One change going out: what ot_halves hands send_each. */
struct fan_job {
	struct ot_live *lv;
	long long version;
	const struct wire *m;
};

static long
send_each(void *item, void *arg)
{
	struct fan_job *j = arg;

	return send_any(j->lv, item, j->version, j->m);
}

/* Sends m to v[0, n): the helper takes the second half when there are many. The hub's thread,
 * lock not held. Returns how many were sent. */
static long
fan_out(struct ot_live *lv, struct sub **v, size_t n, long long version, const struct wire *m)
{
	struct fan_job j = {lv, version, m};

	return ot_halves_run(lv->helper, (void *const *)v, n, SPLIT, send_each, &j);
}

/* Applies f to every stream (lock held in f), then does what it left in w. */
static void
each_sub(struct ot_live *lv, void (*f)(struct sub *, void *, struct wakes *), void *arg)
{
	struct wakes w = {0};
	struct sub *s, *next;

	pthread_mutex_lock(&lv->mu);
	for (int b = 0; b < BUCKETS; b++)
		for (s = lv->bucket[b]; s; s = next) {
			next = s->next; /* f may unlink s */
			f(s, arg, &w);
		}
	pthread_mutex_unlock(&lv->mu);
	live_wake_all(&w);
}

/* Streams past their lifetime end; ended ones whose client does not read are cut. */
static void
expire_one(struct sub *s, void *arg, struct wakes *w)
{
	long long now = *(long long *)arg;

	if (!s->closed && now >= s->deadline)
		live_end_stream(s);
	if (s->closed && s->cut_at && now >= s->cut_at)
		s->gone = 1;
	live_service(s, w);
}

static void
close_one(struct sub *s, void *arg, struct wakes *w)
{
	(void)arg;
	live_end_stream(s);
	live_service(s, w);
}

static void
cut_one(struct sub *s, void *arg, struct wakes *w)
{
	(void)arg;
	live_end_stream(s);
	s->gone = 1;
	live_service(s, w);
}

/* Sends m to every stream of order id (NULL: every stream), the streams the hub owns without
 * lv->mu, then ends those whose socket failed. The hub's thread. Returns how many were sent. */
static long
broadcast(struct ot_live *lv, const char *id, long long version, const struct wire *m)
{
	struct wakes w = {0};
	size_t k = 0;
	long sent;

	pthread_mutex_lock(&lv->mu);
	for (int b = id ? (int)bucket_of(id) : 0; b < BUCKETS; b = id ? BUCKETS : b + 1)
		for (struct sub *s = lv->bucket[b]; s; s = s->next) {
			if (id && strcmp(s->order_id, id))
				continue;
			if (k == lv->fancap && ot_grow((void **)&lv->fan, &lv->fancap, k, sizeof *lv->fan))
				break; /* out of memory: the others miss it, and resume when their stream ends */
			lv->fan[k++] = s;
		}
	pthread_mutex_unlock(&lv->mu);
	/* Nothing frees a stream before the hub's next reap, so the list stays good unlocked. */
	sent = fan_out(lv, lv->fan, k, version, m);
	pthread_mutex_lock(&lv->mu);
	for (size_t i = 0; i < k; i++)
		if (lv->fan[i]->gone)
			live_finish(lv->fan[i], &w);
	pthread_mutex_unlock(&lv->mu);
	live_wake_all(&w);
	return sent;
}

/* us of CPU this thread has used */
static long long
cpu_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return ts.tv_sec * 1000000LL + ts.tv_nsec / 1000;
}

/* Each message the subscription receives on order:{id}, and the one place it is handled: the
 * change goes to every stream of the order that has not had it. */
static void
deliver(struct ot_live *lv, const char *channel, const char *msg)
{
	char id[64];
	struct wire m;
	json_t *o;
	long long version, t0, c0;
	long sent;

	if (!ot_redis_order_of(channel, id))
		return;
	atomic_fetch_add(&lv->messages, 1);
	if (!(o = json_loads(msg, 0, NULL)))
		return;
	version = json_integer_value(json_object_get(o, "version"));
	json_decref(o);
	if (version <= 0 || live_change_wire(&m, version, msg))
		return;
	t0 = ot_now_us();
	c0 = cpu_us();
	sent = broadcast(lv, id, version, &m);
	live_wire_free(&m);
	atomic_fetch_add(&lv->sent, sent);
	OT_DEBUG(id, "version %lld to %ld streams in %lld us (%lld us on the CPU)", version, sent,
	         ot_now_us() - t0, cpu_us() - c0);
}

/* Frees the streams no epoll event can name any more. The hub's own thread, between waits. */
static void
reap(struct ot_live *lv)
{
	struct sub *s, *next;

	pthread_mutex_lock(&lv->mu);
	s = lv->dead;
	lv->dead = NULL;
	pthread_mutex_unlock(&lv->mu);
	for (; s; s = next) {
		next = s->dead_next;
		free(s->buf);
		free(s->part);
		free(s);
	}
}

/* One epoll event on a stream's socket. */
static void
on_socket(struct ot_live *lv, struct sub *s, unsigned events, unsigned char *in)
{
	struct wakes w = {0};

	pthread_mutex_lock(&lv->mu);
	if (!s->dead && owned(s)) {
		if (s->kind == WS && (events & EPOLLIN))
			live_ws_input(s, in);
		/* An SSE client sends nothing after its request: a hang-up means it went. */
		if (s->kind == SSE && (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)))
			s->gone = 1;
		if (s->kind == WS && (events & (EPOLLHUP | EPOLLERR)))
			s->gone = 1;
		if (!s->dead)
			live_service(s, &w);
	}
	pthread_mutex_unlock(&lv->mu);
	live_wake_all(&w);
}

/* Hands each reply hiredis holds to the cache's hook, and each order:{id} message to deliver. */
/* Tells every listener the subscription holds (up) or dropped. */
static void
hooks_subscribed(struct ot_live *lv, int up)
{
	for (size_t k = 0; k < lv->nhooks; k++)
		if (lv->hooks[k].subscribed)
			lv->hooks[k].subscribed(lv->hooks[k].arg, up);
}

static void
take_replies(struct ot_live *lv, redisContext *r)
{
	redisReply *rep;
	void *v;

	while (redisGetReplyFromReader(r, &v) == REDIS_OK && v) {
		rep = v;
		for (size_t k = 0; k < lv->nhooks; k++)
			if (lv->hooks[k].message)
				lv->hooks[k].message(lv->hooks[k].arg, rep);
		if (rep->type == REDIS_REPLY_ARRAY && rep->elements == 4 && rep->element[2]->str && rep->element[3]->str)
			deliver(lv, rep->element[2]->str, rep->element[3]->str);
		freeReplyObject(rep);
	}
}

/* Reads what the subscription has; -1 when it broke. */
static int
on_redis(struct ot_live *lv, redisContext *r)
{
	if (redisBufferRead(r) != REDIS_OK)
		return -1;
	take_replies(lv, r);
	return r->err ? -1 : 0;
}

/* Connects and subscribes; NULL while Redis does not answer. */
static redisContext *
subscribe(struct ot_live *lv, int *down_logged)
{
	struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &tag_redis};
	redisContext *r;
	redisReply *rep;
	char err[256];

	if (!(r = ot_redis_connect(lv->url, 1000, err, sizeof err))) {
		if (!(*down_logged)++)
			OT_WARN(NULL, "live streams wait for Redis: %s", err);
		return NULL;
	}
	for (size_t k = 0; k < lv->nhooks; k++)
		if (lv->hooks[k].connecting)
			lv->hooks[k].connecting(lv->hooks[k].arg, r);
	rep = redisCommand(r, "PSUBSCRIBE order:*");
	if (!rep || rep->type == REDIS_REPLY_ERROR || epoll_ctl(lv->ep, EPOLL_CTL_ADD, r->fd, &ev)) {
		freeReplyObject(rep);
		redisFree(r);
		return NULL;
	}
	freeReplyObject(rep);
	/* Changes published while unsubscribed are lost to the streams open now: they end, and
	 * their clients resume from their Last-Event-ID. */
	if (*down_logged)
		each_sub(lv, close_one, NULL);
	*down_logged = 0;
	atomic_store(&lv->connected, 1);
	hooks_subscribed(lv, 1);
	OT_INFO(NULL, "live streams subscribed to order:*");
	/* What arrived with the subscription's reply is already in hiredis's buffer. */
	take_replies(lv, r);
	return r;
}

/* What other threads asked of the hub: WebSockets to take, every stream to end or cut. */
static void
requests(struct ot_live *lv)
{
	struct wakes w = {0};
	struct sub *s, *next;
	int req;

	pthread_mutex_lock(&lv->mu);
	s = lv->adopt;
	lv->adopt = NULL;
	for (; s; s = next) {
		next = s->adopt_next;
		live_adopt(s, &w);
	}
	req = lv->req > lv->req_done ? lv->req : 0;
	pthread_mutex_unlock(&lv->mu);
	live_wake_all(&w);
	if (req) {
		each_sub(lv, req == CUT_ALL ? cut_one : close_one, NULL);
		pthread_mutex_lock(&lv->mu);
		lv->req_done = req;
		pthread_mutex_unlock(&lv->mu);
	}
}

/* The hub: one thread, one epoll set. It holds the subscription, hands each message to
 * deliver, writes every stream the hub owns and reads what WebSocket clients send, pings,
 * expires, and frees what ended. */
static void *
hub(void *arg)
{
	struct ot_live *lv = arg;
	struct epoll_event evs[EVENTS];
	redisContext *r = NULL;
	long long now = ot_now_ms(), next_ping = now + PING_MS, next_sweep = now + 1000, next_connect = now;
	unsigned char in[WS_IN];
	int down_logged = 0, n;

	while (!atomic_load(&lv->stop)) {
		reap(lv);
		if (!r && ot_now_ms() >= next_connect && !(r = subscribe(lv, &down_logged)))
			next_connect = ot_now_ms() + 500;
		n = epoll_wait(lv->ep, evs, EVENTS, 200);
		for (int i = 0; i < n; i++) {
			void *p = evs[i].data.ptr;
			if (p == &tag_wake) {
				uint64_t v;
				if (read(lv->wake, &v, sizeof v) < 0 && errno != EAGAIN)
					OT_WARN(NULL, "live streams: reading the wake: %s", strerror(errno));
				requests(lv);
			} else if (p == &tag_redis) {
				if (r && on_redis(lv, r)) {
					OT_WARN(NULL, "live streams lost Redis: %s", r->errstr);
					atomic_store(&lv->connected, 0);
					hooks_subscribed(lv, 0);
					epoll_ctl(lv->ep, EPOLL_CTL_DEL, r->fd, NULL);
					redisFree(r);
					r = NULL;
					down_logged = 1;
					each_sub(lv, close_one, NULL);
				}
			} else {
				on_socket(lv, p, evs[i].events, in);
			}
		}
		now = ot_now_ms();
		if (now >= next_sweep) { /* streams past their lifetime end, within a second */
			each_sub(lv, expire_one, &now);
			next_sweep = now + 1000;
		}
		if (now >= next_ping) {
			static const unsigned char ping[2] = {0x89, 0x00};
			struct wire m;
			if (!live_wire_make(&m, ": ping\n\n", 8, 9, ping, 0)) {
				broadcast(lv, NULL, 0, &m);
				live_wire_free(&m);
			}
			next_ping = now + PING_MS;
		}
	}
	if (r)
		redisFree(r);
	hooks_subscribed(lv, 0);
	return NULL;
}

struct ot_live *
ot_live_start(const char *redis_url, int max_s, int max_streams, const struct ot_rsub_hooks *hooks,
              size_t nhooks, char *errstr, size_t errsz)
{
	struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &tag_wake};
	struct ot_live *lv = calloc(1, sizeof *lv);

	if (!lv || !(lv->url = strdup(redis_url))) {
		free(lv);
		ot_err(OT_EINTERNAL, errstr, errsz, "out of memory");
		return NULL;
	}
	if (nhooks > OT_LIVE_HOOKS)
		nhooks = OT_LIVE_HOOKS;
	for (lv->nhooks = 0; hooks && lv->nhooks < nhooks; lv->nhooks++)
		lv->hooks[lv->nhooks] = hooks[lv->nhooks];
	lv->max_s = max_s;
	lv->max_streams = max_streams;
	lv->wake = -1;
	pthread_mutex_init(&lv->mu, NULL);
	if ((lv->ep = epoll_create1(EPOLL_CLOEXEC)) < 0 || (lv->wake = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) < 0 ||
	    epoll_ctl(lv->ep, EPOLL_CTL_ADD, lv->wake, &ev)) {
		ot_err(OT_EINTERNAL, errstr, errsz, "live streams: %s", strerror(errno));
		ot_live_stop(lv);
		return NULL;
	}
	/* Without a helper, the hub sends every change itself. */
	if (!(lv->helper = ot_halves_start()))
		OT_WARN(NULL, "live streams: no helper thread: one thread sends every change");
	if (pthread_create(&lv->th, NULL, hub, lv)) {
		ot_live_stop(lv);
		ot_err(OT_EINTERNAL, errstr, errsz, "cannot start the live stream thread");
		return NULL;
	}
	lv->started = 1;
	return lv;
}

/* Ends every stream. Streams get grace_ms to write what is queued and their close; then those
 * whose client does not read are cut. Returns once no WebSocket is open and every suspended SSE
 * connection is back with MHD. */
/* Has the hub do req to every stream (or does it here once the hub is gone) and waits. */
static void
ask_all(struct ot_live *lv, int req)
{
	struct timespec ts = {0, 5 * 1000000L};
	int done;

	if (!lv->started || atomic_load(&lv->stop)) {
		each_sub(lv, req == CUT_ALL ? cut_one : close_one, NULL);
		return;
	}
	pthread_mutex_lock(&lv->mu);
	lv->req = req;
	pthread_mutex_unlock(&lv->mu);
	live_wake_hub(lv);
	for (done = 0; !done;) {
		pthread_mutex_lock(&lv->mu);
		done = lv->req_done >= req;
		pthread_mutex_unlock(&lv->mu);
		if (!done)
			nanosleep(&ts, NULL);
	}
}

static void
end_streams(struct ot_live *lv, int grace_ms)
{
	struct timespec ts = {0, 20 * 1000000L};
	long open;

	pthread_mutex_lock(&lv->mu);
	lv->closing = 1;
	pthread_mutex_unlock(&lv->mu);
	ask_all(lv, END_ALL);
	for (int waited = 0; waited < grace_ms; waited += 20) {
		pthread_mutex_lock(&lv->mu);
		open = lv->nsse + lv->nws;
		pthread_mutex_unlock(&lv->mu);
		if (!open)
			break;
		nanosleep(&ts, NULL);
	}
	pthread_mutex_lock(&lv->mu);
	if (lv->nws)
		OT_WARN(NULL, "%ld WebSocket streams did not end in time: cutting them off", lv->nws);
	pthread_mutex_unlock(&lv->mu);
	ask_all(lv, CUT_ALL);
}

void
ot_live_close_all(struct ot_live *lv)
{
	if (lv)
		end_streams(lv, 3000);
}

void
ot_live_stop(struct ot_live *lv)
{
	if (!lv)
		return;
	atomic_store(&lv->stop, 1);
	if (lv->started) {
		live_wake_hub(lv);
		pthread_join(lv->th, NULL);
	}
	/* Without ot_live_close_all first, no stream may outlive the memory it uses either. */
	end_streams(lv, 0);
	reap(lv);
	ot_halves_stop(lv->helper);
	free(lv->fan);
	if (lv->wake >= 0)
		close(lv->wake);
	if (lv->ep >= 0)
		close(lv->ep);
	pthread_mutex_destroy(&lv->mu);
	free(lv->url);
	free(lv);
}

void
ot_live_read(struct ot_live *lv, struct ot_live_stats *s)
{
	memset(s, 0, sizeof *s);
	if (!lv)
		return;
	pthread_mutex_lock(&lv->mu);
	s->sse = lv->nsse;
	s->ws = lv->nws;
	pthread_mutex_unlock(&lv->mu);
	s->messages = atomic_load(&lv->messages);
	s->sent = atomic_load(&lv->sent);
	s->connected = atomic_load(&lv->connected);
}
