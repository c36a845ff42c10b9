/* ot_live_stream: one live stream, SSE or WebSocket: its queue, its socket, its end. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ot_halves.h"
#include "ot_live.h"
#include "ot_live_int.h"
#include "ot_log.h"
#include "ot_text.h"
#include "ot_time.h"
#include "ot_ws.h"

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

void
live_wire_free(struct wire *m)
{
	free(m->sse);
	free(m->chunk);
	free(m->ws);
}

/* The wire forms of an SSE text and of a WebSocket frame of opcode with payload p[0, n).
 * Returns 0, or -1 when out of memory. */
int
live_wire_make(struct wire *m, const char *sse, size_t sse_len, int opcode, const void *p, size_t n)
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
		live_wire_free(m);
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
int
live_change_wire(struct wire *m, long long version, const char *json)
{
	size_t n = strlen(json);
	char *text = malloc(n + 64);
	int hl, r;

	if (!text)
		return -1;
	hl = snprintf(text, 64, "id: %lld\nevent: status\ndata: ", version);
	memcpy(text + hl, json, n);
	memcpy(text + hl + n, "\n\n", 2);
	r = live_wire_make(m, text, (size_t)hl + n + 2, 1, json, n);
	free(text);
	return r;
}

/* Lock not held. */
void
live_wake_all(struct wakes *w)
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
void
live_finish(struct sub *s, struct wakes *w)
{
	static const unsigned char bye[4] = {0x88, 0x02, 0x03, 0xe9}; /* 1001 going away */

	if (s->fd >= 0)
		epoll_ctl(s->lv->ep, EPOLL_CTL_DEL, s->fd, NULL);
	s->closed = 1;
	if (s->kind == SSE) {
		if (!atomic_load(&s->parked) || ot_grow((void **)&w->con, &w->capcon, w->ncon, sizeof *w->con))
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
	if (!s->live || ot_grow((void **)&w->urh, &w->capurh, w->nurh, sizeof *w->urh))
		return;
	if (!s->gone && !s->bye)
		send(s->fd, bye, sizeof bye, MSG_NOSIGNAL | MSG_DONTWAIT);
	s->live = 0;
	s->fd = -1;
	w->urh[w->nurh++] = s->urh;
	sub_unlink(s);
}

/* Whatever s's state asks of the hub now: write its queue, end it once written or gone. */
void
live_service(struct sub *s, struct wakes *w)
{
	if (s->dead || !owned(s))
		return;
	flush(s);
	if (s->gone || (s->closed && s->off == s->len))
		live_finish(s, w);
}

/* Marks s to end once its queue is written, within CUT_MS. Lock held. */
void
live_end_stream(struct sub *s)
{
	if (!s->closed) {
		s->closed = 1;
		s->cut_at = ot_now_ms() + CUT_MS;
	}
}

/* Sends one message to s, if it is newer than what s has had (version 0: always, a ping),
 * and leaves a stream that failed for finish. Lock held (or lent by the hub to the helper,
 * for streams only it touches). Returns 1 when sent or queued. */
int
live_send_one(struct sub *s, long long version, const struct wire *m)
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
	int r = live_send_one(s, version, m);

	if (s->gone)
		live_finish(s, w);
	return r;
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
		if (backlog[i].version > s->last && !live_change_wire(&m, backlog[i].version, backlog[i].json)) {
			send_to(s, backlog[i].version, &m, &w);
			live_wire_free(&m);
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
	live_wake_all(&w);
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
	live_end_stream(s);
}

/* Reads the client's frames: answers pings, notices a close, fails the connection (a close
 * frame with the reason, then the end) on a frame RFC 6455 forbids. in is the hub's buffer of
 * WS_IN bytes; a frame not yet whole waits in s->part. Lock held. */
void
live_ws_input(struct sub *s, unsigned char *in)
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
void
live_adopt(struct sub *s, struct wakes *w)
{
	struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.ptr = s};

	s->live = 1;
	if (s->lv->closing) /* upgraded while the server stops: only the close */
		live_end_stream(s);
	if (epoll_ctl(s->lv->ep, EPOLL_CTL_ADD, s->fd, &ev)) {
		OT_WARN(s->order_id, "WebSocket: cannot watch its socket: %s", strerror(errno));
		s->gone = 1;
	}
	live_service(s, w);
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
	live_wake_hub(lv);
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
