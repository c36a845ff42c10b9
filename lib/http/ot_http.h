/* ot_http: the Order Service HTTP API and tracking page behind ot-serve. */
#ifndef OT_HTTP_H
#define OT_HTTP_H

#include <stddef.h>

struct ot_cache;
struct ot_config;
struct ot_http;
struct ot_limit;
struct ot_proxies;
struct ot_rsub_hooks;

/* What ot-serve adds to the shared configuration. */
struct ot_http_opts {
	const char *api_keys;  /* comma-separated keys that may write; NULL or "": writes get 401 */
	double rate;           /* requests a second per client (API key, else address); 0: no limit */
	int burst;             /* requests a client may make at once before the rate applies */
	int stream_max_s;      /* a live stream ends after this long; the client resumes */
	int max_streams;       /* live streams open at once; more get 503 */
	const char *ws_origins; /* comma-separated Origins a WebSocket upgrade may come from (403
	                         * otherwise; a request without Origin passes); NULL or "": any */
	int max_per_client;    /* connections open at once from one address; more are closed at
	                        * once; 0: no limit (the global 1024 still applies) */
	int local_cache_ms;    /* an in-process cache entry serves reads this long at most; 0: no
	                        * in-process cache (see ot_lcache.h) */
	int local_cache_max;   /* entries it holds at most */
	struct ot_cache *cache; /* the order status cache (required): used from ot_http_start to
	                         * ot_http_stop, behind the server's Redis circuit breaker */
	const struct ot_proxies *trusted; /* reverse proxies whose X-Forwarded-For or Forwarded
	                         * names the client, for the rate limits and max_per_client; NULL:
	                         * none. Must outlive the server */
	int request_ms;        /* each request's head and body must arrive within this; 0: 10 s */
	const struct ot_rsub_hooks *listen; /* hears the live streams' Redis subscription too (the
	                         * gRPC streams); NULL: none. Copied */
};

/* Binds cfg->http_addr ("[host:]port"; no host means every IPv4 interface, "[v6]:port" IPv6),
 * migrates the orders database once, then serves on a pool of four threads, each with its own
 * PostgreSQL and Redis connections made on its first request, and one more thread that closes
 * connections whose request takes over o->request_ms to arrive. The orders database must answer
 * at start; Redis need not (reads then come from the database). Later, either may go: reads
 * need one of them, writes the database (503 with Retry-After without it). Returns NULL with
 * *rc and errstr: OT_ESERVICE when the database is unreachable or the address is in use, OT_ECONFIG
 * for a bad address or Redis URL. Free with ot_http_stop. */
struct ot_http *ot_http_start(const struct ot_config *cfg, const struct ot_http_opts *o, int *rc,
                              char *errstr, size_t errsz);
/* The server's rate limiter (the one ot-serve's gRPC calls answer to as well); NULL when none. */
struct ot_limit *ot_http_limit(struct ot_http *h);
/* Stops accepting, lets requests in flight finish (up to 5 s), stops serving and frees every
 * connection. Accepts NULL. */
void ot_http_stop(struct ot_http *h);

/* The order API's resources, by request path. */
enum ot_order_res {
	OT_RES_NONE,    /* not one of them: 404 */
	OT_RES_ORDERS,  /* /orders */
	OT_RES_ORDER,   /* /orders/{id} */
	OT_RES_CANCEL,  /* /orders/{id}/cancel */
	OT_RES_EVENTS,  /* /orders/{id}/events */
	OT_RES_WS       /* /orders/{id}/ws */
};
/* Which resource path names, with its {id} segment copied into id (at most idsz - 1 bytes; not
 * yet checked to be a UUID: ot_id_canon does that) for the per-order ones, "" otherwise. Pure:
 * the route and id parser of the HTTP boundary, read from ot_api.c's route table. */
enum ot_order_res ot_http_order_path(const char *path, char *id, size_t idsz);

/* The tracking page: build/lib/ot_page.c, generated from lib/page/index.html by scripts/embed-page. */
extern const char ot_page_html[];

#endif
