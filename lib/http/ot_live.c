/* ot_live: one Redis subscription per server fans each order's changes out to its streams. */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "ot_event.h"
#include "ot_err.h"
#include "ot_live.h"
#include "ot_ws.h"
#include "ot_log.h"
#include "ot_redis.h"
#include "ot_text.h"

#define BUCKETS 4096
#define PING_MS 15000            /* a comment or ping frame this often keeps proxies from closing */
#define MAX_QUEUE (256 * 1024)   /* a client this far behind is cut off; it reconnects and resumes */
#define CUT_MS 5000              /* an ended stream whose client reads nothing is cut after this */
#define WS_IN 4096               /* the largest frame a client of this stream may send */
#define EVENTS 512               /* epoll events taken at once */

/*
 * Who writes a stream's socket. An SSE stream starts in libmicrohttpd, which writes the
 * response head and what was queued (the backlog). Once its queue is empty the connection is
 * suspended, and while suspended MHD leaves the socket alone: the hub then writes each change
 * to it directly, as an HTTP chunk, and watches it for the client's close. A stream that ends
 * is resumed, and MHD writes the last chunk and finishes the request. A WebSocket is the hub's
 * from its upgrade to its close. So one thread, the hub's event loop, writes every change to
 * every stream: one send() per stream, no thread or wake-up per stream.
 *
 * A stream the hub owns (an SSE stream parked, a WebSocket live) is written by the hub alone,
 * or by its helper for the streams the hub hands it, and a fan-out writes those without
 * lv->mu, so that MHD's threads never wait for one: other threads ask the hub (lv->adopt,
 * lv->req) rather than touch them. Every other field, and every stream the hub does not own,
 * is guarded by lv->mu. A sub is freed only by the hub, at the top of its loop, once no epoll
 * event or fan-out can name it (see lv->dead).
 */
enum kind { SSE, WS };

struct sub {
	struct sub *next, **pprev;      /* in its bucket */
	struct sub *adopt_next;         /* on lv->adopt */
	struct sub *dead_next;          /* on lv->dead */
	struct ot_live *lv;
	enum kind kind;
	atomic_int parked;              /* SSE: suspended in MHD; the hub writes its socket. Set
	                                 * by MHD's thread (under lv->mu), cleared by the hub */
	unsigned char live;             /* WS: upgraded; the hub owns its socket */
	unsigned char closed;           /* end the stream once buf is written */
	unsigned char gone;             /* the client went, or the socket failed: end it now */
	unsigned char bye;              /* WS: a close frame is queued */
	unsigned char out;              /* EPOLLOUT is armed */
	unsigned char dead;             /* off the hub: events that name it are stale */
	int frag;                       /* WS: inside a fragmented message from the client */
	int fd;                         /* the socket, once the hub writes it; -1 before */
	long long last;                 /* the highest version queued */
	char *buf;                      /* bytes not yet written: SSE data for MHD while the
	                                 * connection runs in MHD, else raw bytes for the socket */
	size_t len, off, cap;
	long long deadline;             /* ms: the stream ends here (--stream-max) */
	long long cut_at;               /* ms: ended, and cut here if the client still does not read */
	struct MHD_Connection *con;     /* SSE */
	struct MHD_UpgradeResponseHandle *urh; /* WS */
	void **slot;                    /* WS: where the request holds it until the upgrade */
	unsigned char *part;            /* WS: a client frame not yet whole */
	size_t partlen;
	char order_id[37];
};

struct ot_live {
	char *url;
	int max_s, max_streams;
	pthread_t th;
	int started;
	atomic_int stop;
	int ep;                         /* the hub's epoll: Redis, wake, and the sockets it writes */
	int wake;                       /* an eventfd that ends the hub's wait */
	pthread_mutex_t mu;             /* guards the buckets, the counts, the lists below and
	                                 * every sub the hub does not own */
	struct sub *bucket[BUCKETS];
	long nsse, nws;
	struct sub *dead;               /* off the hub, to free once no event can name them */
	struct sub *adopt;              /* WebSockets upgraded, for the hub to take */
	int req, req_done;              /* what other threads ask of every stream: END_ALL, CUT_ALL */
	struct sub **fan;               /* the hub's: the streams of one change */
	size_t fancap;
	struct helper *helper;          /* takes half of a large fan-out */
	int closing;                    /* no new streams: the server stops */
	atomic_long messages, sent;
	atomic_int connected;
	struct ot_rsub_hooks hooks;     /* the in-process cache's */
};

/* epoll data of what is not a stream */
static char tag_redis, tag_wake;

enum { END_ALL = 1, CUT_ALL = 2 };

/* The hub writes s's socket, and nobody else touches s's queue. */
static int
owned(struct sub *s)
{
	return atomic_load(&s->parked) || s->live;
}

static void
wake_hub(struct ot_live *lv)
{
	uint64_t one = 1;

	if (write(lv->wake, &one, sizeof one) < 0 && errno != EAGAIN)
		OT_WARN(NULL, "live streams: waking the hub: %s", strerror(errno));
}

static unsigned
bucket_of(const char *id)
{
	return ot_hash32(id) % BUCKETS;
}

/* Appends n bytes to s's queue; a queue past MAX_QUEUE ends the stream at once instead. */
static void
enqueue(struct sub *s, const void *p, size_t n)
{
	if (s->gone)
		return;
	if (s->off && s->off == s->len)
		s->off = s->len = 0;
	if (s->len - s->off + n > MAX_QUEUE) {
		OT_WARN(s->order_id, "live stream client too slow: closing it");
		s->closed = s->gone = 1;
		return;
	}
	if (s->len + n > s->cap) {
		size_t cap = s->len + n < 256 ? 256 : (s->len + n) * 2;
		if (s->off) { /* what was written goes first */
			memmove(s->buf, s->buf + s->off, s->len - s->off);
			s->len -= s->off;
			s->off = 0;
		}
		if (s->len + n > s->cap) {
			char *nb = realloc(s->buf, cap);
			if (!nb) {
				s->closed = s->gone = 1;
				return;
			}
			s->buf = nb;
			s->cap = cap;
		}
	}
	memcpy(s->buf + s->len, p, n);
	s->len += n;
}

/* One message as each kind of stream carries it: SSE data for MHD to frame, the same as an
 * HTTP chunk for the hub to write, a WebSocket frame. */
struct wire {
	char *sse, *chunk, *ws;
	size_t sse_len, chunk_len, ws_len;
};

static void
wire_free(struct wire *m)
{
	free(m->sse);
	free(m->chunk);
	free(m->ws);
}

/* The wire forms of an SSE text and of a WebSocket frame of opcode with payload p[0, n).
 * Returns 0, or -1 when out of memory. */
static int
wire_make(struct wire *m, const char *sse, size_t sse_len, int opcode, const void *p, size_t n)
{
	unsigned char h[10];
	size_t hl = ot_ws_header(h, opcode, n);
	char cl[24];
	int cn = snprintf(cl, sizeof cl, "%zx\r\n", sse_len);

	memset(m, 0, sizeof *m);
	m->sse = malloc(sse_len);
	m->chunk = malloc((size_t)cn + sse_len + 2);
	m->ws = malloc(hl + n);
	if (!m->sse || !m->chunk || !m->ws) {
		wire_free(m);
		return -1;
	}
	memcpy(m->sse, sse, sse_len);
	m->sse_len = sse_len;
	memcpy(m->chunk, cl, (size_t)cn);
	memcpy(m->chunk + cn, sse, sse_len);
	memcpy(m->chunk + cn + sse_len, "\r\n", 2);
	m->chunk_len = (size_t)cn + sse_len + 2;
	memcpy(m->ws, h, hl);
	memcpy(m->ws + hl, p, n);
	m->ws_len = hl + n;
	return 0;
}

/* The wire forms of one change: an SSE event (id, event: status, data) and a WebSocket text
 * frame of the status JSON. Returns 0, or -1 when out of memory. */
static int
change_wire(struct wire *m, long long version, const char *json)
{
	size_t n = strlen(json);
	char *text = malloc(n + 64);
	int hl, r;

	if (!text)
		return -1;
	hl = snprintf(text, 64, "id: %lld\nevent: status\ndata: ", version);
	memcpy(text + hl, json, n);
	memcpy(text + hl + n, "\n\n", 2);
	r = wire_make(m, text, (size_t)hl + n + 2, 1, json, n);
	free(text);
	return r;
}

/* What to do once the lock is dropped: MHD is never called with it held. */
struct wakes {
	struct MHD_Connection **con;    /* suspended SSE connections to resume */
	struct MHD_UpgradeResponseHandle **urh; /* WebSockets to close */
	size_t ncon, nurh, capcon, capurh;
};

static int
grow(void **v, size_t *cap, size_t n, size_t size)
{
	void *nv;
	size_t c;

	if (n < *cap)
		return 0;
	c = *cap ? *cap * 2 : 64;
	if (!(nv = realloc(*v, c * size)))
		return -1;
	*v = nv;
	*cap = c;
	return 0;
}

/* Lock not held. */
static void
wake_all(struct wakes *w)
{
	for (size_t i = 0; i < w->ncon; i++)
		MHD_resume_connection(w->con[i]);
	for (size_t i = 0; i < w->nurh; i++)
		MHD_upgrade_action(w->urh[i], MHD_UPGRADE_ACTION_CLOSE);
	free(w->con);
	free(w->urh);
	memset(w, 0, sizeof *w);
}

/* Arms or disarms EPOLLOUT on s's socket as its queue needs. Lock held. */
static void
want_out(struct sub *s, int on)
{
	struct epoll_event ev = {.events = EPOLLRDHUP | (s->kind == WS ? EPOLLIN : 0) | (on ? EPOLLOUT : 0),
	                         .data.ptr = s};

	if (s->out == on || s->fd < 0)
		return;
	if (!epoll_ctl(s->lv->ep, EPOLL_CTL_MOD, s->fd, &ev))
		s->out = (unsigned char)on;
}

/* Writes what s has queued to its socket, as much as it takes now. Lock held; s is the hub's. */
static void
flush(struct sub *s)
{
	while (s->off < s->len && !s->gone) {
		ssize_t w = send(s->fd, s->buf + s->off, s->len - s->off, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (w > 0) {
			s->off += (size_t)w;
		} else if (w < 0 && errno == EINTR) {
			continue;
		} else if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			want_out(s, 1);
			return;
		} else {
			s->gone = 1;
		}
	}
	if (s->off == s->len) {
		s->off = s->len = 0;
		if (s->cap > 4096) { /* a burst is over: its buffer goes */
			free(s->buf);
			s->buf = NULL;
			s->cap = 0;
		}
		want_out(s, 0);
	}
}

/* Writes p[0, n) to a socket the hub owns: straight to it when nothing waits before, the rest
 * queued for EPOLLOUT. Lock held. */
static void
put(struct sub *s, const void *p, size_t n)
{
	ssize_t w = 0;

	if (s->gone)
		return;
	if (s->off == s->len) {
		do
			w = send(s->fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
		while (w < 0 && errno == EINTR);
		if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
			s->gone = 1;
			return;
		}
		if (w < 0)
			w = 0;
		if ((size_t)w == n)
			return;
	}
	enqueue(s, (const char *)p + w, n - (size_t)w);
	if (!s->gone)
		want_out(s, 1);
}

/* Takes s off the hub: no longer counted, no longer found, freed by the hub soon. Lock held. */
static void
sub_unlink(struct sub *s)
{
	struct ot_live *lv = s->lv;

	if (s->dead)
		return;
	if ((*s->pprev = s->next))
		s->next->pprev = s->pprev;
	if (s->kind == SSE)
		lv->nsse--;
	else
		lv->nws--;
	s->dead = 1;
	s->dead_next = lv->dead;
	lv->dead = s;
}

/* Ends s now: an SSE stream goes back to MHD, which writes the last chunk (or finds the client
 * gone) and finishes the request; a WebSocket gets its close frame if it has not had one and is
 * closed. Lock held; the MHD calls wait in w. */
static void
finish(struct sub *s, struct wakes *w)
{
	static const unsigned char bye[4] = {0x88, 0x02, 0x03, 0xe9}; /* 1001 going away */

	if (s->fd >= 0)
		epoll_ctl(s->lv->ep, EPOLL_CTL_DEL, s->fd, NULL);
	s->closed = 1;
	if (s->kind == SSE) {
		if (!atomic_load(&s->parked) || grow((void **)&w->con, &w->capcon, w->ncon, sizeof *w->con))
			return; /* out of memory: tried again at the next sweep */
		if (s->gone || s->off < s->len)
			shutdown(s->fd, SHUT_RDWR); /* no half chunk before MHD's: MHD sees the end */
		s->gone |= s->off < s->len;
		s->off = s->len = 0;
		atomic_store(&s->parked, 0);
		s->fd = -1;
		w->con[w->ncon++] = s->con;
		return;
	}
	if (!s->live || grow((void **)&w->urh, &w->capurh, w->nurh, sizeof *w->urh))
		return;
	if (!s->gone && !s->bye)
		send(s->fd, bye, sizeof bye, MSG_NOSIGNAL | MSG_DONTWAIT);
	s->live = 0;
	s->fd = -1;
	w->urh[w->nurh++] = s->urh;
	sub_unlink(s);
}

/* Whatever s's state asks of the hub now: write its queue, end it once written or gone. */
static void
service(struct sub *s, struct wakes *w)
{
	if (s->dead || !owned(s))
		return;
	flush(s);
	if (s->gone || (s->closed && s->off == s->len))
		finish(s, w);
}

/* Marks s to end once its queue is written, within CUT_MS. Lock held. */
static void
end_stream(struct sub *s)
{
	if (!s->closed) {
		s->closed = 1;
		s->cut_at = ot_now_ms() + CUT_MS;
	}
}

/* Sends one message to s, if it is newer than what s has had (version 0: always, a ping),
 * and leaves a stream that failed for finish. Lock held (or lent by the hub to the helper,
 * for streams only it touches). Returns 1 when sent or queued. */
static int
send_one(struct sub *s, long long version, const struct wire *m)
{
	if (s->closed || s->gone || (version && version <= s->last))
		return 0;
	if (version)
		s->last = version;
	if (s->kind == SSE && !atomic_load(&s->parked))
		enqueue(s, m->sse, m->sse_len); /* MHD asks for it soon: it runs, or is about to */
	else if (s->kind == SSE)
		put(s, m->chunk, m->chunk_len);
	else if (s->live)
		put(s, m->ws, m->ws_len);
	else
		enqueue(s, m->ws, m->ws_len); /* its upgrade writes it */
	return 1;
}

static int
send_to(struct sub *s, long long version, const struct wire *m, struct wakes *w)
{
	int r = send_one(s, version, m);

	if (s->gone)
		finish(s, w);
	return r;
}

/* send_one from a fan-out, which holds no lock: a stream the hub owns is written at once,
 * any other under lv->mu (MHD's thread may be reading its queue, or freeing it). */
static int
send_any(struct ot_live *lv, struct sub *s, long long version, const struct wire *m)
{
	int r = 0;

	if (owned(s))
		return send_one(s, version, m);
	pthread_mutex_lock(&lv->mu);
	if (!s->dead)
		r = send_one(s, version, m);
	pthread_mutex_unlock(&lv->mu);
	return r;
}

/* The helper: a second thread for the sends of a large fan-out. The sends are the cost of one
 * (the kernel's TCP work, per stream) and spread over cores. Each stream is written by one of
 * the two; the hub waits for the helper's half before it goes on. */
#define SPLIT 1024                /* fan-outs to this many streams or more are shared */

struct helper {
	struct ot_live *lv;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct sub **v;
	size_t n;
	const struct wire *m;
	long long version;
	long sent;
	int busy, quit;
	pthread_t th;
};

static void *
helper_run(void *arg)
{
	struct helper *h = arg;

	pthread_mutex_lock(&h->mu);
	for (;;) {
		while (!h->busy && !h->quit)
			pthread_cond_wait(&h->cv, &h->mu);
		if (h->quit)
			break;
		pthread_mutex_unlock(&h->mu);
		long sent = 0;
		for (size_t i = 0; i < h->n; i++)
			sent += send_any(h->lv, h->v[i], h->version, h->m);
		pthread_mutex_lock(&h->mu);
		h->sent = sent;
		h->busy = 0;
		pthread_cond_broadcast(&h->cv);
	}
	pthread_mutex_unlock(&h->mu);
	return NULL;
}

static struct helper *
helper_start(struct ot_live *lv)
{
	struct helper *h = calloc(1, sizeof *h);

	if (!h)
		return NULL;
	h->lv = lv;
	pthread_mutex_init(&h->mu, NULL);
	pthread_cond_init(&h->cv, NULL);
	if (pthread_create(&h->th, NULL, helper_run, h)) {
		pthread_mutex_destroy(&h->mu);
		pthread_cond_destroy(&h->cv);
		free(h);
		return NULL;
	}
	return h;
}

static void
helper_stop(struct helper *h)
{
	if (!h)
		return;
	pthread_mutex_lock(&h->mu);
	h->quit = 1;
	pthread_cond_broadcast(&h->cv);
	pthread_mutex_unlock(&h->mu);
	pthread_join(h->th, NULL);
	pthread_mutex_destroy(&h->mu);
	pthread_cond_destroy(&h->cv);
	free(h);
}

/* Sends m to v[0, n): the helper takes the second half when there are many. The hub's thread,
 * lock not held. Returns how many were sent. */
static long
fan_out(struct ot_live *lv, struct sub **v, size_t n, long long version, const struct wire *m)
{
	struct helper *h = lv->helper;
	size_t mine = n;
	long sent = 0;

	if (h && n >= SPLIT) {
		mine = n / 2;
		pthread_mutex_lock(&h->mu);
		h->v = v + mine;
		h->n = n - mine;
		h->m = m;
		h->version = version;
		h->busy = 1;
		pthread_cond_broadcast(&h->cv);
		pthread_mutex_unlock(&h->mu);
	}
	for (size_t i = 0; i < mine; i++)
		sent += send_any(lv, v[i], version, m);
	if (mine < n) {
		pthread_mutex_lock(&h->mu);
		while (h->busy)
			pthread_cond_wait(&h->cv, &h->mu);
		sent += h->sent;
		pthread_mutex_unlock(&h->mu);
	}
	return sent;
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
	wake_all(&w);
}

/* Streams past their lifetime end; ended ones whose client does not read are cut. */
static void
expire_one(struct sub *s, void *arg, struct wakes *w)
{
	long long now = *(long long *)arg;

	if (!s->closed && now >= s->deadline)
		end_stream(s);
	if (s->closed && s->cut_at && now >= s->cut_at)
		s->gone = 1;
	service(s, w);
}

static void
close_one(struct sub *s, void *arg, struct wakes *w)
{
	(void)arg;
	end_stream(s);
	service(s, w);
}

static void
cut_one(struct sub *s, void *arg, struct wakes *w)
{
	(void)arg;
	end_stream(s);
	s->gone = 1;
	service(s, w);
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
			if (k == lv->fancap && grow((void **)&lv->fan, &lv->fancap, k, sizeof *lv->fan))
				break; /* out of memory: the others miss it, and resume when their stream ends */
			lv->fan[k++] = s;
		}
	pthread_mutex_unlock(&lv->mu);
	/* Nothing frees a stream before the hub's next reap, so the list stays good unlocked. */
	sent = fan_out(lv, lv->fan, k, version, m);
	pthread_mutex_lock(&lv->mu);
	for (size_t i = 0; i < k; i++)
		if (lv->fan[i]->gone)
			finish(lv->fan[i], &w);
	pthread_mutex_unlock(&lv->mu);
	wake_all(&w);
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
	if (version <= 0 || change_wire(&m, version, msg))
		return;
	t0 = ot_now_us();
	c0 = cpu_us();
	sent = broadcast(lv, id, version, &m);
	wire_free(&m);
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

static void ws_input(struct sub *s, unsigned char *in);

/* One epoll event on a stream's socket. */
static void
on_socket(struct ot_live *lv, struct sub *s, unsigned events, unsigned char *in)
{
	struct wakes w = {0};

	pthread_mutex_lock(&lv->mu);
	if (!s->dead && owned(s)) {
		if (s->kind == WS && (events & EPOLLIN))
			ws_input(s, in);
		/* An SSE client sends nothing after its request: a hang-up means it went. */
		if (s->kind == SSE && (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)))
			s->gone = 1;
		if (s->kind == WS && (events & (EPOLLHUP | EPOLLERR)))
			s->gone = 1;
		if (!s->dead)
			service(s, &w);
	}
	pthread_mutex_unlock(&lv->mu);
	wake_all(&w);
}

/* Hands each reply hiredis holds to the cache's hook, and each order:{id} message to deliver. */
static void
take_replies(struct ot_live *lv, redisContext *r)
{
	redisReply *rep;
	void *v;

	while (redisGetReplyFromReader(r, &v) == REDIS_OK && v) {
		rep = v;
		if (lv->hooks.message)
			lv->hooks.message(lv->hooks.arg, rep);
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
	if (lv->hooks.connecting)
		lv->hooks.connecting(lv->hooks.arg, r);
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
	if (lv->hooks.subscribed)
		lv->hooks.subscribed(lv->hooks.arg, 1);
	OT_INFO(NULL, "live streams subscribed to order:*");
	/* What arrived with the subscription's reply is already in hiredis's buffer. */
	take_replies(lv, r);
	return r;
}

static void adopt(struct sub *s, struct wakes *w);

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
		adopt(s, &w);
	}
	req = lv->req > lv->req_done ? lv->req : 0;
	pthread_mutex_unlock(&lv->mu);
	wake_all(&w);
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
					if (lv->hooks.subscribed)
						lv->hooks.subscribed(lv->hooks.arg, 0);
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
			if (!wire_make(&m, ": ping\n\n", 8, 9, ping, 0)) {
				broadcast(lv, NULL, 0, &m);
				wire_free(&m);
			}
			next_ping = now + PING_MS;
		}
	}
	if (r)
		redisFree(r);
	if (lv->hooks.subscribed)
		lv->hooks.subscribed(lv->hooks.arg, 0);
	return NULL;
}

struct ot_live *
ot_live_start(const char *redis_url, int max_s, int max_streams, const struct ot_rsub_hooks *hooks,
              char *errstr, size_t errsz)
{
	struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &tag_wake};
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
	lv->wake = -1;
	pthread_mutex_init(&lv->mu, NULL);
	if ((lv->ep = epoll_create1(EPOLL_CLOEXEC)) < 0 || (lv->wake = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) < 0 ||
	    epoll_ctl(lv->ep, EPOLL_CTL_ADD, lv->wake, &ev)) {
		ot_err(OT_EINTERNAL, errstr, errsz, "live streams: %s", strerror(errno));
		ot_live_stop(lv);
		return NULL;
	}
	/* Without a helper, the hub sends every change itself. */
	if (!(lv->helper = helper_start(lv)))
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
	wake_hub(lv);
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
		wake_hub(lv);
		pthread_join(lv->th, NULL);
	}
	/* Without ot_live_close_all first, no stream may outlive the memory it uses either. */
	end_streams(lv, 0);
	reap(lv);
	helper_stop(lv->helper);
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

/* A new stream with its backlog queued, registered with the hub; NULL when full or out of memory. */
static struct sub *
sub_new(struct ot_live *lv, enum kind kind, const char *order_id, long long last_id,
        const struct ot_live_event *backlog, size_t n, int *full)
{
	struct wakes w = {0};
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
	s->fd = -1;
	snprintf(s->order_id, sizeof s->order_id, "%s", order_id);
	s->last = last_id;
	s->deadline = ot_now_ms() + lv->max_s * 1000LL;
	if (kind == SSE)
		enqueue(s, "retry: 1000\n\n", 13);
	for (size_t i = 0; i < n; i++) {
		struct wire m;
		if (backlog[i].version > s->last && !change_wire(&m, backlog[i].version, backlog[i].json)) {
			send_to(s, backlog[i].version, &m, &w);
			wire_free(&m);
		}
	}
	if ((s->next = lv->bucket[b]))
		s->next->pprev = &s->next;
	s->pprev = &lv->bucket[b];
	lv->bucket[b] = s;
	if (kind == SSE)
		lv->nsse++;
	else
		lv->nws++;
	pthread_mutex_unlock(&lv->mu);
	wake_all(&w);
	return s;
}

/* Ends a stream MHD is done with: SSE, or WebSocket before its upgrade. */
static void
sub_free(struct sub *s)
{
	pthread_mutex_lock(&s->lv->mu);
	sub_unlink(s);
	pthread_mutex_unlock(&s->lv->mu);
}

/* MHD asks for more of the stream: what is queued, or the end; with nothing queued the
 * connection is suspended and its socket becomes the hub's to write until the stream ends. */
static ssize_t
sse_read(void *cls, uint64_t pos, char *out, size_t max)
{
	struct sub *s = cls;
	struct ot_live *lv = s->lv;
	const union MHD_ConnectionInfo *ci;
	struct epoll_event ev = {.events = EPOLLRDHUP, .data.ptr = s};
	ssize_t n;

	(void)pos;
	pthread_mutex_lock(&lv->mu);
	if (s->gone) {
		n = MHD_CONTENT_READER_END_WITH_ERROR;
	} else if (s->off < s->len) {
		n = (ssize_t)(s->len - s->off < max ? s->len - s->off : max);
		memcpy(out, s->buf + s->off, (size_t)n);
		s->off += (size_t)n;
		if (s->off == s->len) { /* the backlog is out: its buffer goes */
			free(s->buf);
			s->buf = NULL;
			s->off = s->len = s->cap = 0;
		}
	} else if (s->closed) {
		n = MHD_CONTENT_READER_END_OF_STREAM;
	} else if ((ci = MHD_get_connection_info(s->con, MHD_CONNECTION_INFO_CONNECTION_FD)) &&
	           !epoll_ctl(lv->ep, EPOLL_CTL_ADD, ci->connect_fd, &ev)) {
		MHD_suspend_connection(s->con);
		/* Each change is one small write that must leave at once, not wait for an ACK. */
		setsockopt(ci->connect_fd, IPPROTO_TCP, TCP_NODELAY, &(int){1}, sizeof(int));
		s->fd = ci->connect_fd;
		s->out = 0;
		atomic_store(&s->parked, 1); /* after fd: the hub may write to it without the lock */
		n = 0;
	} else {
		OT_WARN(s->order_id, "live stream: cannot watch its socket: %s", strerror(errno));
		n = MHD_CONTENT_READER_END_WITH_ERROR;
	}
	pthread_mutex_unlock(&lv->mu);
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
	if (!(r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 64, sse_read, s, sse_free))) {
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

/* Queues a close frame with code; the stream ends once it is written. Lock held. */
static void
ws_close(struct sub *s, int code)
{
	unsigned char bye[4] = {0x88, 0x02, (unsigned char)(code >> 8), (unsigned char)code};

	put(s, bye, sizeof bye);
	s->bye = 1;
	end_stream(s);
}

/* Reads the client's frames: answers pings, notices a close, fails the connection (a close
 * frame with the reason, then the end) on a frame RFC 6455 forbids. in is the hub's buffer of
 * WS_IN bytes; a frame not yet whole waits in s->part. Lock held. */
static void
ws_input(struct sub *s, unsigned char *in)
{
	struct ot_ws_frame f;
	size_t inlen = s->partlen, at = 0;
	ssize_t got;
	int rc;

	if (s->partlen)
		memcpy(in, s->part, s->partlen);
	got = recv(s->fd, in + inlen, WS_IN - inlen, MSG_DONTWAIT);
	if (got == 0 || (got < 0 && errno != EAGAIN && errno != EINTR)) {
		s->gone = 1;
		return;
	}
	if (got < 0 || s->closed) /* after a close, what the client sends is dropped */
		return;
	inlen += (size_t)got;
	while ((rc = ot_ws_frame(in + at, inlen - at, WS_IN, &s->frag, &f)) == 1) {
		const unsigned char *p = in + at + f.head;
		if (f.opcode == 8) { /* the client's close, answered with its own code */
			ws_close(s, f.code ? f.code : 1000);
			return;
		}
		if (f.opcode == 9) { /* ping: pong with the same payload, unmasked */
			unsigned char pong[10 + 125];
			size_t hl = ot_ws_header(pong, 10, f.len);
			for (size_t i = 0; i < f.len; i++)
				pong[hl + i] = p[i] ^ f.mask[i % 4];
			put(s, pong, hl + f.len);
		}
		at += f.head + f.len;
	}
	if (rc < 0) {
		OT_INFO(s->order_id, "WebSocket client broke RFC 6455: closing with %d", f.code);
		ws_close(s, f.code);
		return;
	}
	s->partlen = inlen - at;
	if (!s->partlen) {
		free(s->part);
		s->part = NULL;
	} else if ((s->part || (s->part = malloc(WS_IN)))) {
		memmove(s->part, in + at, s->partlen);
	} else {
		s->gone = 1;
	}
}

/* The hub takes an upgraded WebSocket: its socket joins the loop, and its backlog goes. Lock
 * held. */
static void
adopt(struct sub *s, struct wakes *w)
{
	struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.ptr = s};

	s->live = 1;
	if (s->lv->closing) /* upgraded while the server stops: only the close */
		end_stream(s);
	if (epoll_ctl(s->lv->ep, EPOLL_CTL_ADD, s->fd, &ev)) {
		OT_WARN(s->order_id, "WebSocket: cannot watch its socket: %s", strerror(errno));
		s->gone = 1;
	}
	service(s, w);
}

/* MHD's thread, once the 101 is written: the socket goes to the hub. */
static void
ws_upgraded(void *cls, struct MHD_Connection *con, void *con_cls, const char *extra, size_t extra_len,
            MHD_socket sock, struct MHD_UpgradeResponseHandle *urh)
{
	struct sub *s = cls;
	struct ot_live *lv = s->lv;
	int fl;

	(void)con, (void)con_cls, (void)extra, (void)extra_len;
	if ((fl = fcntl(sock, F_GETFL)) != -1)
		fcntl(sock, F_SETFL, fl | O_NONBLOCK);
	pthread_mutex_lock(&lv->mu);
	/* The request no longer owns s: its completion must not free it. */
	*s->slot = NULL;
	s->slot = NULL;
	s->fd = sock;
	s->urh = urh;
	s->adopt_next = lv->adopt;
	lv->adopt = s;
	pthread_mutex_unlock(&lv->mu);
	wake_hub(lv);
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
	if (!(r = MHD_create_response_for_upgrade(ws_upgraded, s))) {
		sub_free(s);
		return MHD_NO;
	}
	ot_ws_accept(key, accept);
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
	pthread_mutex_lock(&lv->mu);
	s->slot = slot;
	*slot = s;
	pthread_mutex_unlock(&lv->mu);
	return ret;
}

void
ot_live_ws_abandon(void *stream)
{
	if (stream)
		sub_free(stream);
}
