/* ot_live: live order status streams (Server-Sent Events and WebSocket) fed by Redis pub/sub. */
#ifndef OT_LIVE_H
#define OT_LIVE_H

#include <hiredis/hiredis.h>
#include <microhttpd.h>
#include <stddef.h>

#include "ot_rsub.h"

struct ot_live;

/* Starts the hub: one event loop thread holding a PSUBSCRIBE order:* connection to redis_url
 * (it reconnects by itself while Redis is down) that writes every change to every stream, SSE
 * and WebSocket alike, with a helper thread for half of a large fan-out. Streams last at most
 * max_s seconds (the client reconnects with Last-Event-ID); at most max_streams are open at
 * once. The nhooks hooks (copied; at most OT_LIVE_HOOKS) hear the subscription too. Returns NULL
 * with errstr when out of memory or the thread cannot start. Free with ot_live_stop. */
#define OT_LIVE_HOOKS 4
struct ot_live *ot_live_start(const char *redis_url, int max_s, int max_streams, const struct ot_rsub_hooks *hooks,
                              size_t nhooks, char *errstr, size_t errsz);
/* Refuses new streams and ends every open one: up to 3 s for them to write what is queued and
 * close; then those whose client does not read are cut. Returns once no WebSocket is open and
 * every suspended SSE connection is back with MHD. Accepts NULL. Call it before
 * MHD_stop_daemon: suspended SSE connections must be resumed to close, and upgraded ones
 * closed. */
void ot_live_close_all(struct ot_live *lv);
/* Stops the hub and frees lv, after ending (as ot_live_close_all, without the wait) any stream
 * still open. Accepts NULL. Call it after MHD_stop_daemon. */
void ot_live_stop(struct ot_live *lv);

/* One change, as the hub and the backlog carry it: the status JSON and its version. */
struct ot_live_event {
	long long version;
	const char *json;
};

/* Queues an SSE response on con for order_id: first the backlog (versions above last_id, in
 * order), then each change published after. The connection must have been created by a
 * daemon with MHD_ALLOW_SUSPEND_RESUME: once the backlog is written it is suspended, and the
 * hub writes each change to its socket as an HTTP chunk and watches it for the client's close
 * (which frees its slot at once). Returns what MHD_queue_response returned, or MHD_NO; *full
 * is set when max_streams are open (the caller answers 503). */
enum MHD_Result ot_live_sse(struct ot_live *lv, struct MHD_Connection *con, const char *order_id,
                            long long last_id, const struct ot_live_event *backlog, size_t n,
                            int *full);
/* The same stream over WebSocket (RFC 6455, text frames with the status JSON), for a request
 * that asked to upgrade: key is its Sec-WebSocket-Key. The daemon needs MHD_ALLOW_UPGRADE; the
 * upgraded socket is the hub's, in its event loop, until the stream ends.
 * On MHD_YES the stream waits in *slot (memory that lives as long as the request) until the
 * upgrade takes it, which sets *slot to NULL; a client that goes before the 101 is written gets
 * no upgrade, so the request's completion must pass *slot to ot_live_ws_abandon. */
enum MHD_Result ot_live_ws(struct ot_live *lv, struct MHD_Connection *con, const char *key,
                           const char *order_id, long long last_id,
                           const struct ot_live_event *backlog, size_t n, int *full, void **slot);
/* Frees a stream ot_live_ws left in its slot and no upgrade took. Accepts NULL. */
void ot_live_ws_abandon(void *stream);


/* Counters for /metrics. */
struct ot_live_stats {
	long sse, ws;          /* open now */
	long messages;         /* changes received from Redis */
	long sent;             /* changes written to streams */
	int connected;         /* the hub holds its subscription */
};
void ot_live_read(struct ot_live *lv, struct ot_live_stats *s);

#endif
