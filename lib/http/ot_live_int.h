/* ot_live_int: what the hub (ot_live.c) and the streams (ot_live_stream.c) share: a
 * stream, the hub, the wire forms of a message and the calls each makes of the other. */
#ifndef OT_LIVE_INT_H
#define OT_LIVE_INT_H

#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>

#include "ot_rsub.h"
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

struct ot_halves;
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
	struct ot_halves *helper;       /* takes half of a large fan-out */
	int closing;                    /* no new streams: the server stops */
	atomic_long messages, sent;
	atomic_int connected;
	struct ot_rsub_hooks hooks[OT_LIVE_HOOKS]; /* the in-process cache's, gRPC's streams' */
	size_t nhooks;
};

enum { END_ALL = 1, CUT_ALL = 2 };

/* The hub writes s's socket, and nobody else touches s's queue. */
static inline int
owned(struct sub *s)
{
	return atomic_load(&s->parked) || s->live;
}

static inline unsigned
bucket_of(const char *id)
{
	return ot_hash32(id) % BUCKETS;
}

/* One message as each kind of stream carries it: SSE data for MHD to frame, the same as an
 * HTTP chunk for the hub to write, a WebSocket frame. */
struct wire {
	char *sse, *chunk, *ws;
	size_t sse_len, chunk_len, ws_len;
};

/* What to do once the lock is dropped: MHD is never called with it held. */
struct wakes {
	struct MHD_Connection **con;    /* suspended SSE connections to resume */
	struct MHD_UpgradeResponseHandle **urh; /* WebSockets to close */
	size_t ncon, nurh, capcon, capurh;
};

/* ot_live_stream.c: the wire forms of a message (0, or -1 when out of memory). */
int live_wire_make(struct wire *m, const char *sse, size_t sse_len, int opcode, const void *p, size_t n);
int live_change_wire(struct wire *m, long long version, const char *json);
void live_wire_free(struct wire *m);
/* Does what w holds: resumes, closes. Lock not held. */
void live_wake_all(struct wakes *w);
/* A stream's state; each with lv->mu held (see the comments above their definitions). */
void live_finish(struct sub *s, struct wakes *w);
void live_service(struct sub *s, struct wakes *w);
void live_end_stream(struct sub *s);
int live_send_one(struct sub *s, long long version, const struct wire *m);
/* WebSocket: the client's frames into the hub's buffer in of WS_IN bytes; an upgraded one taken. */
void live_ws_input(struct sub *s, unsigned char *in);
void live_adopt(struct sub *s, struct wakes *w);

/* ot_live.c: ends the hub's wait, to take what other threads asked of it. */
void live_wake_hub(struct ot_live *lv);

#endif
