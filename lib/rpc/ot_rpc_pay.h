/* ot_rpc_pay: ot-pay's gRPC services — ordertrack.Payment (GetPayment, Refund; see
 * proto/ordertrack.proto) and grpc.health.v1.Health — on the gRPC server of ot_grpc. */
#ifndef OT_RPC_PAY_H
#define OT_RPC_PAY_H

#include <stddef.h>

struct ot_breaker;
struct ot_rpc_pay;

struct ot_rpc_pay_opts {
	const char *addr;            /* "host:port" to listen on (port 0: any free one) */
	const char *payments_db;     /* conninfo of the payments database (a connection of its own) */
	const char *api_keys;        /* comma-separated; NULL or "": every call is UNAUTHENTICATED */
	struct ot_breaker *breaker;  /* the processor's: Refund is UNAVAILABLE while it is open, and
	                              * health NOT_SERVING (outlives the server; may be NULL) */
	double rate;                 /* calls a second per API key after a burst of twice that, in
	                              * this process (RESOURCE_EXHAUSTED past it); 0: no limit. Failed
	                              * authentications are limited per address as ot-serve's are. */
};

/* Listens on o->addr and serves. Returns the server, or NULL with errstr (the address in use
 * or bad, out of memory). *port gets the port bound. */
struct ot_rpc_pay *ot_rpc_pay_start(const struct ot_rpc_pay_opts *o, int *port, char *errstr, size_t errsz);
/* Stops taking calls, ends those open and frees. Accepts NULL. */
void ot_rpc_pay_stop(struct ot_rpc_pay *r);

#endif
