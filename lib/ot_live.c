/* ot_live: one Redis subscription per server fans each order's changes out to its streams. */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "ot_event.h"
#include "ot_err.h"
#include "ot_live.h"
#include "ot_log.h"
#include "ot_redis.h"

#define BUCKETS 256
#define PING_MS 15000            /* a comment or ping frame this often keeps proxies from closing */
#define MAX_QUEUE (256 * 1024)   /* a client this far behind is cut off; it reconnects and resumes */
#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#define WS_IN 4096               /* the largest frame a client of this stream may send */

enum kind { SSE, WS };

struct sub {
	struct sub *next;
	struct ot_live *lv;
	enum kind kind;
	char order_id[64];
	long long last;                 /* the highest version queued */
	char *buf;                      /* bytes not yet written */
	size_t len, off, cap;
	int closed;                     /* end the stream once buf is written */
	int suspended;                  /* SSE: its connection waits in MHD for a resume */
	struct MHD_Connection *con;     /* SSE */
	int wake[2];                    /* WS: a byte here wakes its thread */
	MHD_socket sock;                /* WS */
	struct MHD_UpgradeResponseHandle *urh;
	void **slot;                    /* WS: where the request holds it until the upgrade */
	pthread_t th;                   /* WS: its thread, joined once it ended */
	int running;                    /* WS: the thread owns sock (ot_live_close_all may cut it) */
	int frag;                       /* WS: inside a fragmented message from the client */
	long long deadline;
};

struct ot_live {
	char *url;
	int max_s, max_streams;
	pthread_t th;
	int started;
	atomic_int stop;
	pthread_mutex_t mu;             /* guards the buckets, every sub's queue and the counts */
	struct sub *bucket[BUCKETS];
	long nsse, nws;
	long nthreads;                  /* WebSocket threads started and not yet ended */
	struct sub *ended;              /* WebSocket streams whose thread ended, to join and free */
	int closing;                    /* no new streams: the server stops */
	atomic_long messages, sent;
	atomic_int connected;
	struct ot_live_hooks hooks;     /* the in-process cache's */
};

static unsigned
bucket_of(const char *id)
{
	unsigned h = 2166136261u;

	for (; *id; id++)
		h = (h ^ (unsigned char)*id) * 16777619u;
	return h % BUCKETS;
}

/* Appends n bytes to s's queue; a queue past MAX_QUEUE closes the stream instead. Lock held. */
static void
enqueue(struct sub *s, const void *p, size_t n)
{
	if (s->closed)
		return;
	if (s->off && s->off == s->len)
		s->off = s->len = 0;
	if (s->len - s->off + n > MAX_QUEUE) {
		OT_WARN(s->order_id, "live stream client too slow: closing it");
		s->closed = 1;
		return;
	}
	if (s->len + n > s->cap) {
		size_t cap = (s->len + n) * 2;
		char *nb = realloc(s->buf, cap);
		if (!nb) {
			s->closed = 1;
			return;
		}
		s->buf = nb;
		s->cap = cap;
	}
	memcpy(s->buf + s->len, p, n);
	s->len += n;
}

/* A WebSocket frame header for a server frame of n payload bytes; returns its length. */
static size_t
ws_header(unsigned char *h, int opcode, size_t n)
{
	h[0] = (unsigned char)(0x80 | opcode);
	if (n < 126) {
		h[1] = (unsigned char)n;
		return 2;
	}
	if (n < 65536) {
		h[1] = 126;
		h[2] = (unsigned char)(n >> 8);
		h[3] = (unsigned char)n;
		return 4;
	}
	h[1] = 127;
	for (int i = 0; i < 8; i++)
		h[2 + i] = (unsigned char)((uint64_t)n >> (56 - 8 * i));
	return 10;
}

/* Queues one change if it is newer than what s has had. Lock held. Returns 1 when queued. */
static int
queue_event(struct sub *s, long long version, const char *json)
{
	char head[64];
	unsigned char wh[10];
	size_t n = strlen(json);

	if (version <= s->last || s->closed)
		return 0;
	s->last = version;
	if (s->kind == SSE) {
		int hl = snprintf(head, sizeof head, "id: %lld\nevent: status\ndata: ", version);
		enqueue(s, head, (size_t)hl);
		enqueue(s, json, n);
		enqueue(s, "\n\n", 2);
	} else {
		enqueue(s, wh, ws_header(wh, 1, n));
		enqueue(s, json, n);
	}
	return 1;
}

/* Subs to wake once the lock is dropped: MHD is never called with it held. */
struct wakes {
	struct MHD_Connection **con;
	size_t n, cap;
};

/* Lock held. A WebSocket thread is woken through its pipe at once; a suspended SSE connection
 * is noted for wake_all. */
static void
want_wake(struct sub *s, struct wakes *w)
{
	if (s->kind == WS) {
		if (write(s->wake[1], "x", 1) < 0 && errno != EAGAIN)
			OT_WARN(s->order_id, "waking a WebSocket stream: %s", strerror(errno));
		return;
	}
	if (!s->suspended)
		return; /* running: it finds its queue without a wake */
	if (w->n == w->cap) {
		size_t cap = w->cap ? w->cap * 2 : 64;
		struct MHD_Connection **nc = realloc(w->con, cap * sizeof *nc);
		if (!nc)
			return; /* it wakes at the next ping */
		w->con = nc;
		w->cap = cap;
	}
	/* Still suspended until resumed, so MHD cannot free it before wake_all. */
	s->suspended = 0;
	w->con[w->n++] = s->con;
}

/* Lock not held. */
static void
wake_all(struct wakes *w)
{
	for (size_t i = 0; i < w->n; i++)
		MHD_resume_connection(w->con[i]);
	free(w->con);
}

/* Applies f to every sub and wakes those it returns 1 for. */
static void
each_sub(struct ot_live *lv, int (*f)(struct sub *, void *), void *arg)
{
	struct wakes w = {NULL, 0, 0};

	pthread_mutex_lock(&lv->mu);
	for (int b = 0; b < BUCKETS; b++)
		for (struct sub *s = lv->bucket[b]; s; s = s->next)
			if (f(s, arg))
				want_wake(s, &w);
	pthread_mutex_unlock(&lv->mu);
	wake_all(&w);
}

static int
expire_one(struct sub *s, void *arg)
{
	if (s->closed || *(long long *)arg < s->deadline)
		return 0;
	s->closed = 1;
	return 1;
}

static int
ping_one(struct sub *s, void *arg)
{
	static const unsigned char ping[2] = {0x89, 0x00};

	(void)arg;
	if (s->kind == SSE)
		enqueue(s, ": ping\n\n", 8);
	else
		enqueue(s, ping, sizeof ping);
	return 1;
}

static int
close_one(struct sub *s, void *arg)
{
	(void)arg;
	s->closed = 1;
	return 1;
}

static void
deliver(struct ot_live *lv, const char *channel, const char *msg)
{
	const char *id = strncmp(channel, "order:", 6) ? NULL : channel + 6;
	struct wakes w = {NULL, 0, 0};
	json_t *o;
	long long version;

	if (!id)
		return;
	atomic_fetch_add(&lv->messages, 1);
	if (!(o = json_loads(msg, 0, NULL)))
		return;
	version = json_integer_value(json_object_get(o, "version"));
	json_decref(o);
	pthread_mutex_lock(&lv->mu);
	for (struct sub *s = lv->bucket[bucket_of(id)]; s; s = s->next)
		if (!strcmp(s->order_id, id) && queue_event(s, version, msg)) {
			atomic_fetch_add(&lv->sent, 1);
			want_wake(s, &w);
		}
	pthread_mutex_unlock(&lv->mu);
	wake_all(&w);
}

/* Frees what a stream holds once nothing refers to it any more. */
static void
sub_destroy(struct sub *s)
{
	if (s->wake[0] >= 0)
		close(s->wake[0]);
	if (s->wake[1] >= 0)
		close(s->wake[1]);
	free(s->buf);
	free(s);
}

/* Joins the WebSocket threads that ended and frees their streams. */
static void
reap(struct ot_live *lv)
{
	struct sub *s, *next;

	pthread_mutex_lock(&lv->mu);
	s = lv->ended;
	lv->ended = NULL;
	pthread_mutex_unlock(&lv->mu);
	for (; s; s = next) {
		next = s->next;
		pthread_join(s->th, NULL);
		sub_destroy(s);
	}
}

/* Waits up to ms, or until stop. */
static void
nap(struct ot_live *lv, int ms)
{
	struct timespec ts = {0, 50 * 1000000L};

	for (int i = 0; i < ms / 50 && !atomic_load(&lv->stop); i++)
		nanosleep(&ts, NULL);
}

static void *
hub(void *arg)
{
	struct ot_live *lv = arg;
	redisContext *r = NULL;
	redisReply *rep;
	long long next_ping = ot_now_ms() + PING_MS, next_expiry = ot_now_ms() + 1000;
	char err[256];
	int down_logged = 0;

	while (!atomic_load(&lv->stop)) {
		reap(lv); /* WebSocket threads that ended, also while Redis is away */
		if (!r) {
			if (!(r = ot_redis_connect(lv->url, 1000, err, sizeof err))) {
				if (!down_logged++)
					OT_WARN(NULL, "live streams wait for Redis: %s", err);
				nap(lv, 500);
				continue;
			}
			if (lv->hooks.connecting)
				lv->hooks.connecting(lv->hooks.arg, r);
			rep = redisCommand(r, "PSUBSCRIBE order:*");
			if (!rep || rep->type == REDIS_REPLY_ERROR) {
				freeReplyObject(rep);
				redisFree(r);
				r = NULL;
				nap(lv, 500);
				continue;
			}
			freeReplyObject(rep);
			/* Changes published while unsubscribed are lost to the streams open now: they end,
			 * and their clients resume from their Last-Event-ID. */
			if (down_logged)
				each_sub(lv, close_one, NULL);
			down_logged = 0;
			atomic_store(&lv->connected, 1);
			if (lv->hooks.subscribed)
				lv->hooks.subscribed(lv->hooks.arg, 1);
			OT_INFO(NULL, "live streams subscribed to order:*");
		}
		struct pollfd p = {r->fd, POLLIN, 0};
		int n = poll(&p, 1, 200);
		if (n > 0) {
			void *v;
			if (redisBufferRead(r) != REDIS_OK)
				goto lost;
			while (redisGetReplyFromReader(r, &v) == REDIS_OK && v) {
				rep = v;
				if (lv->hooks.message)
					lv->hooks.message(lv->hooks.arg, rep);
				if (rep->type == REDIS_REPLY_ARRAY && rep->elements == 4 && rep->element[2]->str &&
				    rep->element[3]->str)
					deliver(lv, rep->element[2]->str, rep->element[3]->str);
				freeReplyObject(rep);
			}
			if (r->err)
				goto lost;
		}
		long long now = ot_now_ms();
		if (now >= next_expiry) { /* streams past their lifetime end, within a second */
			each_sub(lv, expire_one, &now);
			next_expiry = now + 1000;
		}
		if (now >= next_ping) {
			each_sub(lv, ping_one, NULL);
			next_ping = now + PING_MS;
		}
		continue;
lost:
		OT_WARN(NULL, "live streams lost Redis: %s", r->errstr);
		atomic_store(&lv->connected, 0);
		if (lv->hooks.subscribed)
			lv->hooks.subscribed(lv->hooks.arg, 0);
		redisFree(r);
		r = NULL;
		down_logged = 1;
		each_sub(lv, close_one, NULL);
	}
	if (r)
		redisFree(r);
	if (lv->hooks.subscribed)
		lv->hooks.subscribed(lv->hooks.arg, 0);
	return NULL;
}

struct ot_live *
ot_live_start(const char *redis_url, int max_s, int max_streams, const struct ot_live_hooks *hooks,
              char *errstr, size_t errsz)
{
	struct ot_live *lv = calloc(1, sizeof *lv);

	if (!lv || !(lv->url = strdup(redis_url))) {
		free(lv);
		ot_err(OT_EINTERNAL, errstr, errsz, "out of memory");
		return NULL;
	}
	if (hooks)
		lv->hooks = *hooks;
	lv->max_s = max_s;
	lv->max_streams = max_streams;
	pthread_mutex_init(&lv->mu, NULL);
	if (pthread_create(&lv->th, NULL, hub, lv)) {
		ot_live_stop(lv);
		ot_err(OT_EINTERNAL, errstr, errsz, "cannot start the live stream thread");
		return NULL;
	}
	lv->started = 1;
	return lv;
}

/* Ends every stream and returns once every WebSocket thread is joined. Streams get grace_ms to
 * write what is queued and their close; then the sockets of WebSocket streams still open are
 * shut down, which ends a send blocked on a client that does not read at once. */
static void
end_streams(struct ot_live *lv, int grace_ms)
{
	struct timespec ts = {0, 20 * 1000000L};
	long open;

	pthread_mutex_lock(&lv->mu);
	lv->closing = 1;
	pthread_mutex_unlock(&lv->mu);
	each_sub(lv, close_one, NULL);
	for (int waited = 0; waited < grace_ms; waited += 20) {
		pthread_mutex_lock(&lv->mu);
		open = lv->nsse + lv->nthreads;
		pthread_mutex_unlock(&lv->mu);
		if (!open)
			break;
		nanosleep(&ts, NULL);
	}
	pthread_mutex_lock(&lv->mu);
	if (lv->nthreads)
		OT_WARN(NULL, "%ld WebSocket streams did not end in time: cutting them off", lv->nthreads);
	for (int b = 0; b < BUCKETS; b++)
		for (struct sub *s = lv->bucket[b]; s; s = s->next)
			if (s->kind == WS && s->running)
				shutdown(s->sock, SHUT_RDWR);
	pthread_mutex_unlock(&lv->mu);
	for (;;) {
		pthread_mutex_lock(&lv->mu);
		open = lv->nthreads;
		pthread_mutex_unlock(&lv->mu);
		if (!open)
			break;
		nanosleep(&ts, NULL);
	}
	reap(lv);
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
	if (lv->started)
		pthread_join(lv->th, NULL);
	/* Without ot_live_close_all first, no thread may outlive the memory it uses either. */
	end_streams(lv, 0);
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

/* A new stream with its backlog queued, registered with the hub; NULL when full or out of memory. */
static struct sub *
sub_new(struct ot_live *lv, enum kind kind, const char *order_id, long long last_id,
        const struct ot_live_event *backlog, size_t n, int *full)
{
	struct sub *s;
	unsigned b = bucket_of(order_id);

	*full = 0;
	pthread_mutex_lock(&lv->mu);
	if (lv->closing || lv->nsse + lv->nws >= lv->max_streams) {
		pthread_mutex_unlock(&lv->mu);
		*full = 1;
		return NULL;
	}
	if (!(s = calloc(1, sizeof *s))) {
		pthread_mutex_unlock(&lv->mu);
		return NULL;
	}
	s->lv = lv;
	s->kind = kind;
	snprintf(s->order_id, sizeof s->order_id, "%s", order_id);
	s->last = last_id;
	s->wake[0] = s->wake[1] = -1;
	s->deadline = ot_now_ms() + lv->max_s * 1000LL;
	if (kind == SSE)
		enqueue(s, "retry: 1000\n\n", 13);
	for (size_t i = 0; i < n; i++)
		queue_event(s, backlog[i].version, backlog[i].json);
	s->next = lv->bucket[b];
	lv->bucket[b] = s;
	if (kind == SSE)
		lv->nsse++;
	else
		lv->nws++;
	pthread_mutex_unlock(&lv->mu);
	return s;
}

/* Takes s off the hub. Lock held. */
static void
sub_unlink(struct sub *s)
{
	struct ot_live *lv = s->lv;
	struct sub **pp;

	for (pp = &lv->bucket[bucket_of(s->order_id)]; *pp; pp = &(*pp)->next)
		if (*pp == s) {
			*pp = s->next;
			break;
		}
	if (s->kind == SSE)
		lv->nsse--;
	else
		lv->nws--;
}

/* Ends a stream no thread of ours runs: SSE, or WebSocket before its upgrade. */
static void
sub_free(struct sub *s)
{
	pthread_mutex_lock(&s->lv->mu);
	sub_unlink(s);
	pthread_mutex_unlock(&s->lv->mu);
	sub_destroy(s);
}

/* MHD asks for more of the stream: what is queued, or nothing yet (the connection waits,
 * suspended, for the hub's resume), or the end. */
static ssize_t
sse_read(void *cls, uint64_t pos, char *out, size_t max)
{
	struct sub *s = cls;
	ssize_t n;

	(void)pos;
	pthread_mutex_lock(&s->lv->mu);
	if (s->off < s->len) {
		n = (ssize_t)(s->len - s->off < max ? s->len - s->off : max);
		memcpy(out, s->buf + s->off, (size_t)n);
		s->off += (size_t)n;
	} else if (s->closed) {
		n = MHD_CONTENT_READER_END_OF_STREAM;
	} else {
		s->suspended = 1;
		MHD_suspend_connection(s->con);
		n = 0;
	}
	pthread_mutex_unlock(&s->lv->mu);
	return n;
}

static void
sse_free(void *cls)
{
	sub_free(cls);
}

enum MHD_Result
ot_live_sse(struct ot_live *lv, struct MHD_Connection *con, const char *order_id, long long last_id,
            const struct ot_live_event *backlog, size_t n, int *full)
{
	struct MHD_Response *r;
	struct sub *s;
	enum MHD_Result ret;

	if (!(s = sub_new(lv, SSE, order_id, last_id, backlog, n, full)))
		return MHD_NO;
	s->con = con;
	if (!(r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, sse_read, s, sse_free))) {
		sub_free(s);
		return MHD_NO;
	}
	MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream; charset=utf-8");
	MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
	MHD_add_response_header(r, "X-Accel-Buffering", "no");
	MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
	ret = MHD_queue_response(con, MHD_HTTP_OK, r);
	MHD_destroy_response(r);
	return ret;
}

/* ---- WebSocket ---- */

static uint32_t
rol(uint32_t v, int n)
{
	return (v << n) | (v >> (32 - n));
}

static void
sha1(const unsigned char *msg, size_t len, unsigned char out[20])
{
	uint32_t h[5] = {0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0};
	unsigned char block[64];
	uint64_t bits = (uint64_t)len * 8;
	size_t total = ((len + 8) / 64 + 1) * 64;

	for (size_t off = 0; off < total; off += 64) {
		uint32_t w[80], a, b, c, d, e, f, k, t;
		for (size_t i = 0; i < 64; i++) {
			size_t at = off + i;
			block[i] = at < len ? msg[at] : at == len ? 0x80 : 0;
			if (at >= total - 8)
				block[i] = (unsigned char)(bits >> (8 * (total - 1 - at)));
		}
		for (int i = 0; i < 16; i++)
			w[i] = (uint32_t)block[4 * i] << 24 | (uint32_t)block[4 * i + 1] << 16 |
			       (uint32_t)block[4 * i + 2] << 8 | block[4 * i + 3];
		for (int i = 16; i < 80; i++)
			w[i] = rol(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
		a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
		for (int i = 0; i < 80; i++) {
			if (i < 20)
				f = (b & c) | (~b & d), k = 0x5A827999;
			else if (i < 40)
				f = b ^ c ^ d, k = 0x6ED9EBA1;
			else if (i < 60)
				f = (b & c) | (b & d) | (c & d), k = 0x8F1BBCDC;
			else
				f = b ^ c ^ d, k = 0xCA62C1D6;
			t = rol(a, 5) + f + e + k + w[i];
			e = d, d = c, c = rol(b, 30), b = a, a = t;
		}
		h[0] += a, h[1] += b, h[2] += c, h[3] += d, h[4] += e;
	}
	for (int i = 0; i < 20; i++)
		out[i] = (unsigned char)(h[i / 4] >> (24 - 8 * (i % 4)));
}

void
ot_live_ws_accept(const char *key, char out[29])
{
	static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	unsigned char in[128], d[20];
	size_t kl = strlen(key), i, o = 0;

	if (kl > sizeof in - sizeof WS_GUID)
		kl = sizeof in - sizeof WS_GUID;
	memcpy(in, key, kl);
	memcpy(in + kl, WS_GUID, sizeof WS_GUID - 1);
	sha1(in, kl + sizeof WS_GUID - 1, d);
	for (i = 0; i + 2 < 20; i += 3) {
		uint32_t v = (uint32_t)d[i] << 16 | (uint32_t)d[i + 1] << 8 | d[i + 2];
		out[o++] = b64[v >> 18 & 63], out[o++] = b64[v >> 12 & 63];
		out[o++] = b64[v >> 6 & 63], out[o++] = b64[v & 63];
	}
	/* 20 = 6 * 3 + 2: two bytes left, one '=' */
	uint32_t v = (uint32_t)d[18] << 16 | (uint32_t)d[19] << 8;
	out[o++] = b64[v >> 18 & 63], out[o++] = b64[v >> 12 & 63], out[o++] = b64[v >> 6 & 63];
	out[o++] = '=';
	out[o] = '\0';
}

static int
send_all(MHD_socket fd, const void *p, size_t n)
{
	const char *c = p;

	while (n) {
		ssize_t w = send(fd, c, n, MSG_NOSIGNAL);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		c += w;
		n -= (size_t)w;
	}
	return 0;
}

/* Close status codes a peer may send (RFC 6455 7.4, and the IANA registry). */
static int
ws_code_valid(unsigned code)
{
	return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
	       (code >= 3000 && code <= 4999);
}

int
ot_live_ws_frame(const unsigned char *b, size_t n, size_t max, int *frag, struct ot_ws_frame *f)
{
	uint64_t len;
	size_t hl = 6; /* two bytes and the mask */

	memset(f, 0, sizeof *f);
	if (n < 2)
		return 0;
	f->fin = b[0] >> 7;
	f->opcode = b[0] & 0x0f;
	len = b[1] & 0x7f;
	/* No extension was agreed, so no RSV bit; a client masks every frame. */
	if ((b[0] & 0x70) || (f->opcode > 2 && f->opcode < 8) || f->opcode > 10 || !(b[1] & 0x80))
		goto protocol;
	if (f->opcode >= 8 && (!f->fin || len > 125))
		goto protocol;
	if ((f->opcode == 0 && !*frag) || ((f->opcode == 1 || f->opcode == 2) && *frag))
		goto protocol;
	hl += len == 126 ? 2 : len == 127 ? 8 : 0;
	if (n < hl)
		return 0;
	if (len == 126) {
		len = (uint64_t)b[2] << 8 | b[3];
	} else if (len == 127) {
		len = 0;
		for (int i = 0; i < 8; i++)
			len = len << 8 | b[2 + i];
	}
	if (len > max || hl + len > max) {
		f->code = 1009;
		return -1;
	}
	if (n < hl + len)
		return 0;
	f->head = hl;
	f->len = (size_t)len;
	f->mask = b + hl - 4;
	if (f->opcode == 8 && len == 1) /* half a status code: read no byte past the frame */
		goto protocol;
	if (f->opcode == 8 && len) {
		unsigned code = (unsigned)(b[hl] ^ f->mask[0]) << 8 | (b[hl + 1] ^ f->mask[1]);
		if (!ws_code_valid(code))
			goto protocol;
		f->code = (int)code;
	}
	if (f->opcode <= 2)
		*frag = !f->fin;
	return 1;
protocol:
	f->code = 1002;
	return -1;
}

/* Sends a close frame with code. */
static void
ws_close(struct sub *s, int code)
{
	unsigned char bye[4] = {0x88, 0x02, (unsigned char)(code >> 8), (unsigned char)code};

	send_all(s->sock, bye, sizeof bye);
}

/* Reads the client's frames: answers pings, notices a close, fails the connection (a close
 * frame with the reason, then the end) on a frame RFC 6455 forbids. Returns 1 to go on, 0 to end. */
static int
ws_input(struct sub *s, unsigned char *in, size_t *inlen)
{
	ssize_t got = recv(s->sock, in + *inlen, WS_IN - *inlen, 0);
	struct ot_ws_frame f;
	size_t at = 0;
	int rc;

	if (got <= 0)
		return got < 0 && (errno == EAGAIN || errno == EINTR);
	*inlen += (size_t)got;
	while ((rc = ot_live_ws_frame(in + at, *inlen - at, WS_IN, &s->frag, &f)) == 1) {
		const unsigned char *p = in + at + f.head;
		if (f.opcode == 8) { /* the client's close, answered with its own code */
			ws_close(s, f.code ? f.code : 1000);
			return 0;
		}
		if (f.opcode == 9) { /* ping: pong with the same payload, unmasked */
			unsigned char h[10], body[125];
			for (size_t i = 0; i < f.len; i++)
				body[i] = p[i] ^ f.mask[i % 4];
			if (send_all(s->sock, h, ws_header(h, 10, f.len)) || send_all(s->sock, body, f.len))
				return 0;
		}
		at += f.head + f.len;
	}
	if (rc < 0) {
		OT_INFO(s->order_id, "WebSocket client broke RFC 6455: closing with %d", f.code);
		ws_close(s, f.code);
		return 0;
	}
	memmove(in, in + at, *inlen - at);
	*inlen -= at;
	return 1;
}

static void *
ws_thread(void *arg)
{
	struct sub *s = arg;
	unsigned char in[WS_IN];
	size_t inlen = 0;
	int go = 1;

	while (go) {
		char *out = NULL;
		size_t n = 0;
		int closed;
		pthread_mutex_lock(&s->lv->mu);
		if (s->off < s->len && (out = malloc(s->len - s->off))) {
			n = s->len - s->off;
			memcpy(out, s->buf + s->off, n);
			s->off = s->len = 0;
		}
		closed = s->closed;
		pthread_mutex_unlock(&s->lv->mu);
		if (n && send_all(s->sock, out, n))
			go = 0;
		free(out);
		if (!go || closed)
			break;
		struct pollfd p[2] = {{s->sock, POLLIN, 0}, {s->wake[0], POLLIN, 0}};
		if (poll(p, 2, 1000) < 0 && errno != EINTR)
			break;
		if (p[1].revents) {
			char drain[64];
			while (read(s->wake[0], drain, sizeof drain) > 0)
				;
		}
		if (p[0].revents & (POLLIN | POLLHUP | POLLERR))
			go = ws_input(s, in, &inlen);
	}
	if (go) { /* the server ends it: a close frame, 1001 going away */
		static const unsigned char bye[4] = {0x88, 0x02, 0x03, 0xe9};
		send_all(s->sock, bye, sizeof bye);
	}
	pthread_mutex_lock(&s->lv->mu);
	s->running = 0; /* from here on the socket is MHD's */
	pthread_mutex_unlock(&s->lv->mu);
	MHD_upgrade_action(s->urh, MHD_UPGRADE_ACTION_CLOSE);
	/* Done with everything but s itself: on the list the hub (or a stop) joins and frees. */
	pthread_mutex_lock(&s->lv->mu);
	sub_unlink(s);
	s->th = pthread_self();
	s->next = s->lv->ended;
	s->lv->ended = s;
	s->lv->nthreads--;
	pthread_mutex_unlock(&s->lv->mu);
	return NULL;
}

static void
ws_upgraded(void *cls, struct MHD_Connection *con, void *con_cls, const char *extra, size_t extra_len,
            MHD_socket sock, struct MHD_UpgradeResponseHandle *urh)
{
	static const unsigned char bye[4] = {0x88, 0x02, 0x03, 0xe9};
	struct sub *s = cls;
	struct ot_live *lv = s->lv;
	struct timeval tv = {5, 0};
	pthread_t th;
	int fl, closing;

	(void)con, (void)con_cls, (void)extra, (void)extra_len;
	/* The request no longer owns s: its completion must not free it. */
	*s->slot = NULL;
	s->slot = NULL;
	s->sock = sock;
	s->urh = urh;
	/* Blocking writes with a deadline: a stalled client costs its own thread, no one else's. */
	if ((fl = fcntl(sock, F_GETFL)) != -1)
		fcntl(sock, F_SETFL, fl & ~O_NONBLOCK);
	setsockopt(sock, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
	pthread_mutex_lock(&lv->mu);
	if (!(closing = lv->closing)) {
		lv->nthreads++;
		s->running = 1;
	}
	pthread_mutex_unlock(&lv->mu);
	if (closing) { /* upgraded while the server stops: no thread may start now */
		send_all(sock, bye, sizeof bye);
		goto close;
	}
	if (pthread_create(&th, NULL, ws_thread, s)) { /* joinable: the thread notes its id in s */
		OT_WARN(s->order_id, "cannot start a WebSocket thread");
		pthread_mutex_lock(&lv->mu);
		lv->nthreads--;
		s->running = 0;
		pthread_mutex_unlock(&lv->mu);
		goto close;
	}
	return;
close:
	MHD_upgrade_action(urh, MHD_UPGRADE_ACTION_CLOSE);
	sub_free(s);
}

enum MHD_Result
ot_live_ws(struct ot_live *lv, struct MHD_Connection *con, const char *key, const char *order_id,
           long long last_id, const struct ot_live_event *backlog, size_t n, int *full, void **slot)
{
	struct MHD_Response *r;
	struct sub *s;
	enum MHD_Result ret;
	char accept[29];

	if (!(s = sub_new(lv, WS, order_id, last_id, backlog, n, full)))
		return MHD_NO;
	if (pipe2(s->wake, O_NONBLOCK | O_CLOEXEC)) {
		s->wake[0] = s->wake[1] = -1;
		sub_free(s);
		return MHD_NO;
	}
	if (!(r = MHD_create_response_for_upgrade(ws_upgraded, s))) {
		sub_free(s);
		return MHD_NO;
	}
	ot_live_ws_accept(key, accept);
	MHD_add_response_header(r, MHD_HTTP_HEADER_UPGRADE, "websocket");
	MHD_add_response_header(r, "Sec-WebSocket-Accept", accept);
	ret = MHD_queue_response(con, MHD_HTTP_SWITCHING_PROTOCOLS, r);
	MHD_destroy_response(r);
	/* Refused (the client went away): the upgrade handler will never own s. */
	if (ret != MHD_YES) {
		sub_free(s);
		return ret;
	}
	/* Queued, but the client may still go before the 101 is written: then no upgrade comes,
	 * and the request's completion frees s with ot_live_ws_abandon. */
	s->slot = slot;
	*slot = s;
	return ret;
}

void
ot_live_ws_abandon(void *stream)
{
	if (stream)
		sub_free(stream);
}
