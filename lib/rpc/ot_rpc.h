/* ot_rpc: ot-serve's gRPC services — ordertrack.Delivery (proto/ordertrack.proto) and
 * grpc.health.v1.Health — on the gRPC server of ot_grpc. */
#ifndef OT_RPC_H
#define OT_RPC_H

#include <stddef.h>

struct ot_cache;
struct ot_config;
struct ot_limit;
struct ot_rpc;
struct ot_rsub_hooks;

struct ot_rpc_opts {
	const char *addr;       /* "host:port" to listen on (port 0: any free one) */
	const char *orders_db;  /* conninfo: the database behind the cache */
	const char *api_keys;   /* comma-separated; NULL or "": none */
	struct ot_cache *cache; /* the order status cache: reads and history (outlives the server) */
	int max_streams;        /* Track streams open at once; more get RESOURCE_EXHAUSTED */
	const struct ot_config *cfg; /* the Kafka settings, for Report's producer (opened on the
	                         * first Report; outlives the server) */
};

/* The services' state, before the server listens: the live changes come through the hooks
 * (ot_rpc_hooks), which must be hearing the Redis subscription before ot_rpc_listen. NULL
 * when out of memory. */
struct ot_rpc *ot_rpc_new(const struct ot_rpc_opts *o);
/* What the live hub calls for the Track streams (see ot_rsub.h). */
void ot_rpc_hooks(struct ot_rpc *r, struct ot_rsub_hooks *h);
/* Makes Track and Report answer to ot-serve's rate limiter (ot_http_limit), per key or, without
 * one, per peer address: RESOURCE_EXHAUSTED past it. limit must outlive r's server. */
void ot_rpc_set_limit(struct ot_rpc *r, struct ot_limit *limit);
/* Listens on o->addr. Returns the port, or 0 with errstr (the address in use, or bad). */
int ot_rpc_listen(struct ot_rpc *r, char *errstr, size_t errsz);
/* Stops the server: open streams end (CANCELLED), no call is taken. Accepts NULL. */
void ot_rpc_stop(struct ot_rpc *r);
/* Frees r, once the hooks are no longer called (the hub stopped). Accepts NULL. */
void ot_rpc_free(struct ot_rpc *r);

struct ot_grpc_call;
/* The key in c's "authorization" metadata ("Bearer KEY" or KEY) against api_keys (comma-
 * separated; NULL: none): 1 valid (its name, the SHA-256 of the key, in key_id), 0 none, -1 not
 * one of the keys. */
int ot_rpc_api_key(const char *api_keys, struct ot_grpc_call *c, char key_id[65]);
/* Ends c RESOURCE_EXHAUSTED, as HTTP answers 429: over its rate, or (auth_failures) too many
 * failed authentications from its address; retry after wait_ms. The handler is done with c. */
void ot_rpc_exhausted(struct ot_grpc_call *c, int auth_failures, long wait_ms);

#endif
