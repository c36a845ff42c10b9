/* ot_grpc: the gRPC server core — registered methods on one completion queue, polled by the
 * server's threads; each call a small state machine of batches (see struct ot_grpc_call). */
#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ot_grpc.h"
#include "ot_log.h"
#include "ot_metrics.h"
#include "ot_time.h"
#include "ot_trace.h"

#define MAX_MESSAGE (64 * 1024)
#define THREADS 2

enum tag_kind { T_NEW, T_SEND, T_STATUS, T_CLOSE, T_RECV, T_SHUTDOWN };

struct tag {
	struct ot_grpc_call *c;
	enum tag_kind kind;
};

/* A message packed and waiting for the one SEND_MESSAGE a call may have in flight. */
struct outmsg {
	grpc_byte_buffer *bb;
	struct outmsg *next;
};

/*
 * A call, from the request that asked for it to its free. Its batches: the one that took it
 * (T_NEW), RECV_CLOSE_ON_SERVER started at once (T_CLOSE: completes when the call is over,
 * however it ends), one SEND_MESSAGE at a time (T_SEND, with the initial metadata on the
 * first), and last SEND_STATUS_FROM_SERVER (T_STATUS). refs counts the handler and each batch
 * in flight; the last one out frees it.
 */
struct ot_grpc_call {
	struct ot_grpc *g;
	const struct ot_grpc_method *m; /* NULL: an unknown method */
	grpc_call *call;
	gpr_timespec deadline;
	grpc_call_details details;      /* an unknown method's */
	grpc_metadata_array md;
	grpc_byte_buffer *payload;      /* the request, or the client stream's latest */
	struct tag t_new, t_send, t_status, t_close, t_recv;
	int cancelled;                  /* RECV_CLOSE_ON_SERVER's answer */
	pthread_mutex_t mu;             /* guards everything below */
	int refs;
	int sent_md, sending, ended, status_out;
	int over;                       /* the call is over or broken: nothing more goes out */
	grpc_status_code code;
	grpc_slice details_out;
	int has_details;
	struct outmsg *head, **tail;
	size_t queued;
	void *data;
	long long started;              /* ms */
	struct ot_span span;            /* the call's, a child of its traceparent metadata; current
	                                 * while its handler runs; ended when the call is freed */
	const char *end_code;           /* the status the client saw, once the call is over */
};

struct ot_grpc {
	grpc_server *server;
	grpc_completion_queue *cq;
	const struct ot_grpc_method *methods;
	void **handles;                 /* grpc_server_register_method's, per method */
	size_t nmethods;
	void *app;
	int port;
	pthread_t th[THREADS];
	int nth;
	atomic_int stopping;
	int started;
	struct tag t_shutdown;
};

static struct ot_metric *m_calls, *m_open, *m_sent;

static const char *const code_names[] = {
	"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
	"PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
	"UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"};

const char *
ot_grpc_code_name(grpc_status_code code)
{
	return (unsigned)code < sizeof code_names / sizeof code_names[0] ? code_names[code] : "UNKNOWN";
}

static const char *
method_name(const struct ot_grpc_call *c)
{
	return c->m ? c->m->name : "unknown";
}

static void
call_free(struct ot_grpc_call *c)
{
	struct outmsg *o;

	if (c->span.trace_id[0]) { /* begun: the call arrived */
		if (c->span.exported) {
			ot_span_tag(&c->span, "rpc.grpc.status_code", c->end_code ? c->end_code : "UNKNOWN");
			if (!c->end_code || strcmp(c->end_code, "OK"))
				ot_span_error(&c->span, c->end_code ? c->end_code : "UNKNOWN");
		}
		ot_span_end(&c->span);
	}

	while ((o = c->head)) {
		c->head = o->next;
		grpc_byte_buffer_destroy(o->bb);
		free(o);
	}
	if (c->has_details)
		grpc_slice_unref(c->details_out);
	if (c->payload)
		grpc_byte_buffer_destroy(c->payload);
	if (c->call)
		grpc_call_unref(c->call);
	grpc_metadata_array_destroy(&c->md);
	grpc_call_details_destroy(&c->details);
	pthread_mutex_destroy(&c->mu);
	free(c);
}

/* Drops one reference; c->mu held on entry, released here. */
static void
unref_locked(struct ot_grpc_call *c)
{
	int last = --c->refs == 0;

	pthread_mutex_unlock(&c->mu);
	if (last)
		call_free(c);
}

/* Starts the next batch c needs, if none is in flight: the next message, else the status once
 * ended. c->mu held. */
static void
pump(struct ot_grpc_call *c)
{
	grpc_op ops[2];
	size_t n = 0;
	struct outmsg *o;

	if (c->sending || c->status_out || c->over)
		return;
	memset(ops, 0, sizeof ops);
	if (!c->sent_md) {
		ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
		c->sent_md = 1;
	}
	if ((o = c->head)) {
		ops[n].op = GRPC_OP_SEND_MESSAGE;
		ops[n++].data.send_message.send_message = o->bb;
		c->sending = 1;
		c->refs++;
		if (grpc_call_start_batch(c->call, ops, n, &c->t_send, NULL) != GRPC_CALL_OK) {
			c->sending = 0;
			c->refs--;
			c->over = 1;
		}
		return;
	}
	if (!c->ended)
		return;
	ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
	ops[n].data.send_status_from_server.status = c->code;
	ops[n++].data.send_status_from_server.status_details = c->has_details ? &c->details_out : NULL;
	c->status_out = 1;
	c->refs++;
	if (grpc_call_start_batch(c->call, ops, n, &c->t_status, NULL) != GRPC_CALL_OK) {
		c->refs--;
		c->over = 1;
	}
}

int
ot_grpc_send(struct ot_grpc_call *c, const ProtobufCMessage *msg)
{
	struct ot_grpc_msg *m = ot_grpc_msg_new(msg);
	int rc;

	if (!m)
		return -1;
	rc = ot_grpc_send_msg(c, m);
	ot_grpc_msg_free(m);
	return rc;
}

struct ot_grpc_msg {
	grpc_slice s;
};

struct ot_grpc_msg *
ot_grpc_msg_new(const ProtobufCMessage *msg)
{
	struct ot_grpc_msg *m = malloc(sizeof *m);

	if (!m)
		return NULL;
	m->s = grpc_slice_malloc(protobuf_c_message_get_packed_size(msg));
	protobuf_c_message_pack(msg, GRPC_SLICE_START_PTR(m->s));
	return m;
}

void
ot_grpc_msg_free(struct ot_grpc_msg *m)
{
	if (!m)
		return;
	grpc_slice_unref(m->s);
	free(m);
}

int
ot_grpc_send_msg(struct ot_grpc_call *c, const struct ot_grpc_msg *m)
{
	grpc_slice s = grpc_slice_ref(m->s);
	struct outmsg *o = malloc(sizeof *o);
	int rc = -1;

	pthread_mutex_lock(&c->mu);
	if (o && !c->ended && !c->over) {
		o->bb = grpc_raw_byte_buffer_create(&s, 1);
		o->next = NULL;
		*c->tail = o;
		c->tail = &o->next;
		c->queued++;
		o = NULL;
		rc = 0;
		pump(c);
	}
	pthread_mutex_unlock(&c->mu);
	grpc_slice_unref(s);
	free(o);
	return rc;
}

void
ot_grpc_finish(struct ot_grpc_call *c, grpc_status_code code, const char *message)
{
	pthread_mutex_lock(&c->mu);
	if (!c->ended) {
		c->ended = 1;
		c->code = code;
		if (message && *message) {
			c->details_out = grpc_slice_from_copied_string(message);
			c->has_details = 1;
		}
		pump(c);
	}
	pthread_mutex_unlock(&c->mu);
}

void
ot_grpc_release(struct ot_grpc_call *c)
{
	pthread_mutex_lock(&c->mu);
	unref_locked(c);
}

size_t
ot_grpc_queued(struct ot_grpc_call *c)
{
	size_t n;

	pthread_mutex_lock(&c->mu);
	n = c->queued;
	pthread_mutex_unlock(&c->mu);
	return n;
}

const char *
ot_grpc_metadata(const struct ot_grpc_call *c, const char *key, char *buf, size_t bufsz)
{
	size_t kl = strlen(key);

	for (size_t i = 0; i < c->md.count; i++) {
		const grpc_metadata *e = &c->md.metadata[i];
		size_t vl = GRPC_SLICE_LENGTH(e->value);

		if (GRPC_SLICE_LENGTH(e->key) != kl || memcmp(GRPC_SLICE_START_PTR(e->key), key, kl))
			continue;
		if (vl >= bufsz)
			return NULL;
		memcpy(buf, GRPC_SLICE_START_PTR(e->value), vl);
		buf[vl] = '\0';
		return buf;
	}
	return NULL;
}

const char *
ot_grpc_peer_address(const struct ot_grpc_call *c, char *buf, size_t bufsz)
{
	char *peer = grpc_call_get_peer(c->call), *a = peer, *end;

	buf[0] = '\0';
	if (!peer)
		return buf;
	/* "ipv4:127.0.0.1:5000", "ipv6:[::1]:5000" */
	if (!strncmp(a, "ipv4:", 5) || !strncmp(a, "ipv6:", 5))
		a += 5;
	if (*a == '[') {
		a++;
		end = strchr(a, ']');
	} else {
		end = strrchr(a, ':');
	}
	if (end && (size_t)(end - a) < bufsz) {
		memcpy(buf, a, (size_t)(end - a));
		buf[end - a] = '\0';
	}
	gpr_free(peer);
	return buf;
}

long long
ot_grpc_deadline_ms(const struct ot_grpc_call *c)
{
	gpr_timespec now = gpr_now(GPR_CLOCK_MONOTONIC);
	gpr_timespec d = gpr_convert_clock_type(c->deadline, GPR_CLOCK_MONOTONIC);

	if (gpr_time_cmp(d, gpr_inf_future(GPR_CLOCK_MONOTONIC)) == 0)
		return 1LL << 40;
	return gpr_time_to_millis(gpr_time_sub(d, now));
}

void
ot_grpc_set_data(struct ot_grpc_call *c, void *data)
{
	c->data = data;
}

void *
ot_grpc_data(const struct ot_grpc_call *c)
{
	return c->data;
}

/* Asks the server for the next call of method i (i == nmethods: of any other method). */
static int
ask(struct ot_grpc *g, size_t i)
{
	struct ot_grpc_call *c = calloc(1, sizeof *c);
	grpc_call_error e;

	if (!c)
		return -1;
	c->g = g;
	c->m = i < g->nmethods ? &g->methods[i] : NULL;
	c->t_new = (struct tag){c, T_NEW};
	c->t_send = (struct tag){c, T_SEND};
	c->t_status = (struct tag){c, T_STATUS};
	c->t_close = (struct tag){c, T_CLOSE};
	c->t_recv = (struct tag){c, T_RECV};
	c->tail = &c->head;
	c->refs = 1; /* the T_NEW request */
	pthread_mutex_init(&c->mu, NULL);
	grpc_metadata_array_init(&c->md);
	grpc_call_details_init(&c->details);
	if (c->m)
		e = grpc_server_request_registered_call(g->server, g->handles[i], &c->call, &c->deadline, &c->md,
		                                        c->m->message ? NULL : &c->payload, g->cq, g->cq, &c->t_new);
	else
		e = grpc_server_request_call(g->server, &c->call, &c->details, &c->md, g->cq, g->cq, &c->t_new);
	if (e != GRPC_CALL_OK) {
		call_free(c);
		return -1;
	}
	return 0;
}

/* The request of c as its method's message; NULL when it is not one (or none came). */
static ProtobufCMessage *
unpack(struct ot_grpc_call *c)
{
	grpc_byte_buffer_reader r;
	grpc_slice s;
	ProtobufCMessage *msg;

	if (!c->payload || !grpc_byte_buffer_reader_init(&r, c->payload))
		return NULL;
	s = grpc_byte_buffer_reader_readall(&r);
	grpc_byte_buffer_reader_destroy(&r);
	msg = protobuf_c_message_unpack(c->m->request, NULL, GRPC_SLICE_LENGTH(s), GRPC_SLICE_START_PTR(s));
	grpc_slice_unref(s);
	return msg;
}

/* Asks for the client stream's next message (T_RECV). */
static void
recv_next(struct ot_grpc_call *c)
{
	grpc_op op;

	memset(&op, 0, sizeof op);
	op.op = GRPC_OP_RECV_MESSAGE;
	op.data.recv_message.recv_message = &c->payload;
	pthread_mutex_lock(&c->mu);
	c->refs++;
	if (c->over || grpc_call_start_batch(c->call, &op, 1, &c->t_recv, NULL) != GRPC_CALL_OK)
		c->refs--;
	pthread_mutex_unlock(&c->mu);
}

/* The client stream's next message came (NULL: it sent its last): to the method, then ask for
 * the one after. */
static void
received(struct ot_grpc *g, struct ot_grpc_call *c, int ok)
{
	ProtobufCMessage *req = NULL;

	if (!ok) /* the call broke: closed follows */
		return;
	if (c->payload && !(req = unpack(c))) {
		ot_grpc_finish(c, GRPC_STATUS_INVALID_ARGUMENT, "a request is not a valid message");
		return;
	}
	if (c->payload) {
		grpc_byte_buffer_destroy(c->payload);
		c->payload = NULL;
	}
	ot_span_enter(&c->span);
	c->m->message(c, req, g->app);
	ot_span_leave(&c->span);
	if (req) {
		protobuf_c_message_free_unpacked(req, NULL);
		recv_next(c);
	}
}

/* The call's span: "grpc /package.Service/Method", a child of the client's traceparent
 * metadata (else a new trace). */
static void
begin_span(struct ot_grpc_call *c)
{
	char tp[128], name[128];
	const char *path = c->m ? c->m->path : "unknown";

	snprintf(name, sizeof name, "grpc %s", path);
	ot_span_begin_detached(&c->span, name, OT_SPAN_SERVER, ot_grpc_metadata(c, "traceparent", tp, sizeof tp));
	if (c->span.exported)
		ot_span_tag(&c->span, "rpc.method", path);
}

/* A call arrived: its close is watched, the next of its method asked for, its handler run. */
static void
arrived(struct ot_grpc *g, struct ot_grpc_call *c)
{
	grpc_op op;
	ProtobufCMessage *req = NULL;

	if (!atomic_load(&g->stopping))
		ask(g, c->m ? (size_t)(c->m - g->methods) : g->nmethods);
	c->started = ot_now_ms();
	/* All that T_CLOSE's completion reads is set before it can come. */
	ot_metric_add(m_open, 1, method_name(c));
	begin_span(c);
	memset(&op, 0, sizeof op);
	op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
	op.data.recv_close_on_server.cancelled = &c->cancelled;
	pthread_mutex_lock(&c->mu);
	/* T_CLOSE's, and this function's own until it returns: the handler may end the call and
	 * release it, and another thread free it, while c is still in use here. The T_NEW
	 * reference becomes the handler's. */
	c->refs += 2;
	if (grpc_call_start_batch(c->call, &op, 1, &c->t_close, NULL) != GRPC_CALL_OK)
		c->refs--;
	pthread_mutex_unlock(&c->mu);
	if (!c->m) {
		ot_grpc_finish(c, GRPC_STATUS_UNIMPLEMENTED, "no such method");
		ot_grpc_release(c);
	} else if (c->m->message) {
		ot_span_enter(&c->span);
		c->m->handler(c, NULL, g->app);
		ot_span_leave(&c->span);
		recv_next(c);
	} else if (!(req = unpack(c))) {
		ot_grpc_finish(c, GRPC_STATUS_INVALID_ARGUMENT, "the request is not a valid message");
		ot_grpc_release(c);
	} else {
		ot_span_enter(&c->span);
		c->m->handler(c, req, g->app);
		ot_span_leave(&c->span);
		protobuf_c_message_free_unpacked(req, NULL);
	}
	ot_grpc_release(c); /* this function's */
}

/* One batch of c completed (kind), ok its success. */
static void
completed(struct ot_grpc *g, struct ot_grpc_call *c, enum tag_kind kind, int ok)
{
	struct outmsg *o;
	const char *code;

	if (kind == T_RECV)
		received(g, c, ok);
	pthread_mutex_lock(&c->mu);
	if (kind == T_SEND) {
		c->sending = 0;
		if ((o = c->head)) {
			if (!(c->head = o->next))
				c->tail = &c->head;
			c->queued--;
			grpc_byte_buffer_destroy(o->bb);
			free(o);
			if (ok)
				ot_metric_add(m_sent, 1, method_name(c));
		}
		if (!ok)
			c->over = 1;
		pump(c);
	} else if (kind == T_CLOSE) {
		/* Counted as the client saw it end: a status it did not get is CANCELLED. */
		code = c->cancelled ? "CANCELLED" : ot_grpc_code_name(c->ended ? c->code : GRPC_STATUS_UNKNOWN);
		ot_metric_add(m_calls, 1, method_name(c), code);
		c->end_code = code; /* the span ends with the call's last reference: a handler on
		                     * another thread may still have it entered */
		c->ended = 1;
		c->over = 1;
		pthread_mutex_unlock(&c->mu);
		ot_metric_add(m_open, -1, method_name(c));
		if (c->m && c->m->closed)
			c->m->closed(c, g->app);
		pthread_mutex_lock(&c->mu);
	}
	unref_locked(c);
}

static void *
serve(void *arg)
{
	struct ot_grpc *g = arg;

	for (;;) {
		grpc_event ev = grpc_completion_queue_next(g->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
		struct tag *t;

		if (ev.type == GRPC_QUEUE_SHUTDOWN)
			break;
		if (ev.type != GRPC_OP_COMPLETE || !(t = ev.tag) || t->kind == T_SHUTDOWN)
			continue;
		if (t->kind == T_NEW) {
			if (ev.success)
				arrived(g, t->c);
			else
				call_free(t->c); /* the server is shutting down */
			continue;
		}
		completed(g, t->c, t->kind, ev.success);
	}
	return NULL;
}

static void
metrics(void)
{
	m_calls = ot_metric_new(OT_COUNTER, "ot_grpc_calls_total", "gRPC calls ended, by method and status code "
	                        "(CANCELLED also when the client went or its deadline passed).",
	                        "method,code", NULL, 0);
	m_open = ot_metric_new(OT_GAUGE, "ot_grpc_calls_open", "gRPC calls open now (streams included), by method.",
	                       "method", NULL, 0);
	m_sent = ot_metric_new(OT_COUNTER, "ot_grpc_messages_sent_total", "Messages written on gRPC calls, by method.",
	                       "method", NULL, 0);
}

struct ot_grpc *
ot_grpc_start(const char *addr, const struct ot_grpc_method *methods, void *app, char *errstr, size_t errsz)
{
	struct ot_grpc *g = calloc(1, sizeof *g);
	grpc_arg args[3];
	grpc_channel_args cargs = {3, args};
	grpc_server_credentials *creds;
	size_t i;

	if (!g) {
		snprintf(errstr, errsz, "out of memory");
		return NULL;
	}
	metrics();
	grpc_init();
	while (methods[g->nmethods].path)
		g->nmethods++;
	g->methods = methods;
	g->app = app;
	g->t_shutdown.kind = T_SHUTDOWN;
	args[0].type = args[1].type = args[2].type = GRPC_ARG_INTEGER;
	args[0].key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
	args[0].value.integer = MAX_MESSAGE;
	args[1].key = GRPC_ARG_MAX_CONCURRENT_STREAMS;
	args[1].value.integer = 100000;
	/* A second server on the same port is an error, not a silent share of its calls. */
	args[2].key = GRPC_ARG_ALLOW_REUSEPORT;
	args[2].value.integer = 0;
	g->cq = grpc_completion_queue_create_for_next(NULL);
	g->server = grpc_server_create(&cargs, NULL);
	grpc_server_register_completion_queue(g->server, g->cq, NULL);
	if (!(g->handles = calloc(g->nmethods + 1, sizeof *g->handles)))
		goto oom;
	for (i = 0; i < g->nmethods; i++)
		g->handles[i] = grpc_server_register_method(g->server, methods[i].path, NULL,
		                                            methods[i].message ? GRPC_SRM_PAYLOAD_NONE
		                                                               : GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER, 0);
	creds = grpc_insecure_server_credentials_create();
	g->port = grpc_server_add_http2_port(g->server, addr, creds);
	grpc_server_credentials_release(creds);
	if (!g->port) {
		snprintf(errstr, errsz, "cannot listen for gRPC on %s: the address is in use or not one of this "
		         "machine's (set --grpc-addr)", addr);
		ot_grpc_stop(g);
		return NULL;
	}
	grpc_server_start(g->server);
	g->started = 1;
	for (i = 0; i <= g->nmethods; i++)
		if (ask(g, i))
			goto oom;
	for (g->nth = 0; g->nth < THREADS; g->nth++)
		if (pthread_create(&g->th[g->nth], NULL, serve, g))
			goto oom;
	return g;
oom:
	snprintf(errstr, errsz, "out of memory or threads");
	ot_grpc_stop(g);
	return NULL;
}

int
ot_grpc_port(const struct ot_grpc *g)
{
	return g->port;
}

void
ot_grpc_stop(struct ot_grpc *g)
{
	grpc_completion_queue *done;

	if (!g)
		return;
	atomic_store(&g->stopping, 1);
	if (g->started) {
		/* Calls in flight are cancelled (each hears closed on the threads), then the server
		 * says it is down on a queue of its own. */
		done = grpc_completion_queue_create_for_pluck(NULL);
		grpc_server_shutdown_and_notify(g->server, done, &g->t_shutdown);
		/* Calls the handlers ended get a second to say so; the rest are cut. */
		if (grpc_completion_queue_pluck(done, &g->t_shutdown, gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
		                                gpr_time_from_millis(1000, GPR_TIMESPAN)), NULL).type != GRPC_OP_COMPLETE) {
			grpc_server_cancel_all_calls(g->server);
			grpc_completion_queue_pluck(done, &g->t_shutdown, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
		}
		grpc_completion_queue_shutdown(done);
		grpc_completion_queue_destroy(done);
	}
	grpc_server_destroy(g->server);
	grpc_completion_queue_shutdown(g->cq);
	if (g->nth)
		for (int i = 0; i < g->nth; i++)
			pthread_join(g->th[i], NULL);
	else
		serve(g); /* no thread ran: drain the queue here */
	grpc_completion_queue_destroy(g->cq);
	free(g->handles);
	free(g);
	grpc_shutdown();
}
