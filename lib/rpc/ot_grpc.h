/* ot_grpc: a gRPC server on the gRPC core library (libgrpc) with protobuf-c messages — the
 * HTTP/2 framing, flow control and deadlines are the library's; this is the dispatch, the
 * send queue of each call, the status codes, the metadata and the metrics around them. */
#ifndef OT_GRPC_H
#define OT_GRPC_H

#include <grpc/status.h>
#include <protobuf-c/protobuf-c.h>
#include <stddef.h>

struct ot_grpc;
struct ot_grpc_call;

/* One method: its path ("/package.Service/Method"), its request's descriptor, and the
 * handler, called on a server thread with the request unpacked (freed after the handler
 * returns). The handler answers now or later, from any thread, with ot_grpc_send and
 * ot_grpc_finish, and says once it is done with the call (ot_grpc_release). A client-streaming
 * method (message not NULL) has its handler called with req NULL when the call arrives, then
 * message with each request in turn, and with NULL once the client has sent its last; a
 * request that is not a valid message ends the call INVALID_ARGUMENT. closed, when not NULL,
 * hears that the call ended (the status went out, the client cancelled, the deadline passed):
 * from then on ot_grpc_send and ot_grpc_finish do nothing; it runs once, on a server thread,
 * before the call is freed. */
struct ot_grpc_method {
	const char *path;
	const ProtobufCMessageDescriptor *request;
	void (*handler)(struct ot_grpc_call *c, const ProtobufCMessage *req, void *app);
	void (*closed)(struct ot_grpc_call *c, void *app);
	const char *name; /* for metrics and logs: "Delivery/Track" */
	void (*message)(struct ot_grpc_call *c, const ProtobufCMessage *req, void *app);
};

/* Binds addr ("host:port"; port 0 picks one) and serves methods (an array ending with a
 * NULL path, which must outlive the server) on one thread, handing app to the handlers; a
 * method not among them answers UNIMPLEMENTED. Requests are at most 64 KiB
 * (RESOURCE_EXHAUSTED beyond). Returns NULL with errstr when the address cannot be bound. */
struct ot_grpc *ot_grpc_start(const char *addr, const struct ot_grpc_method *methods, void *app, char *errstr,
                              size_t errsz);
/* The port bound. */
int ot_grpc_port(const struct ot_grpc *g);
/* Stops taking calls, gives those open a second to end (then cancels them; each hears
 * closed), stops the threads and frees. Accepts NULL. */
void ot_grpc_stop(struct ot_grpc *g);

/* Queues msg on c's stream (packed now: msg may go after). Thread-safe. Returns 0, or -1 when
 * the call has ended or memory ran out. */
int ot_grpc_send(struct ot_grpc_call *c, const ProtobufCMessage *msg);
/* A message packed once, for many calls (a change going to every stream of an order). */
struct ot_grpc_msg;
struct ot_grpc_msg *ot_grpc_msg_new(const ProtobufCMessage *msg);
void ot_grpc_msg_free(struct ot_grpc_msg *m);
/* ot_grpc_send of a message packed before. */
int ot_grpc_send_msg(struct ot_grpc_call *c, const struct ot_grpc_msg *m);
/* Ends c with code and message, once what ot_grpc_send queued is written. Thread-safe; only
 * the first call counts. */
void ot_grpc_finish(struct ot_grpc_call *c, grpc_status_code code, const char *message);
/* The handler is done with c (after its last ot_grpc_send/ot_grpc_finish, or in closed). */
void ot_grpc_release(struct ot_grpc_call *c);
/* Messages queued and not yet written. */
size_t ot_grpc_queued(struct ot_grpc_call *c);

/* The value of request metadata key (lower case), NUL-terminated in buf; NULL when absent or
 * longer than bufsz - 1. */
const char *ot_grpc_metadata(const struct ot_grpc_call *c, const char *key, char *buf, size_t bufsz);
/* The client's address without its port ("127.0.0.1", "::1"), in buf; "" when unknown. */
const char *ot_grpc_peer_address(const struct ot_grpc_call *c, char *buf, size_t bufsz);
/* Milliseconds until the client's deadline (a large number when it set none). */
long long ot_grpc_deadline_ms(const struct ot_grpc_call *c);
/* Where the handler keeps its state of c. */
void ot_grpc_set_data(struct ot_grpc_call *c, void *data);
void *ot_grpc_data(const struct ot_grpc_call *c);

/* The status code's name as gRPC spells it: "OK", "NOT_FOUND", ... */
const char *ot_grpc_code_name(grpc_status_code code);

#endif
