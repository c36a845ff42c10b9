/* grpc-fanout: the gRPC pass of scripts/bench-sse, as test/tools/fanout does the SSE one: N
 * ordertrack.Delivery/Track streams from a client on the gRPC core library, over C channels
 * (C HTTP/2 connections, 1 by default; the streams in turn), spread over the order ids of IDS, each asking for the changes after LAST - 1
 * (its first message says it is open); then for each change K lines of EVENTS go to CMD's
 * stdin at once (ot-consume applying them), and per stream the delay from that write to the
 * change's arrival is measured. Figures go to stdout as "key value" lines.
 *
 *   grpc-fanout -a HOST:PORT -n N -i IDS -l LAST -x CMD -e EVENTS [-k K] [-P PID] [-c C] */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ordertrack.pb-c.h"

#define WAIT_MS 10000 /* how long a change may take to reach everyone */
#define OPEN_MS 60000 /* how long opening every stream may take */

enum kind { START, RECV, STATUS };

struct stream;
struct tag {
	struct stream *s;
	enum kind kind;
};

struct stream {
	grpc_call *call;
	grpc_metadata_array md, trailing;
	grpc_byte_buffer *in;
	grpc_status_code status;
	grpc_slice details;
	struct tag t_start, t_recv, t_status;
	int open, over;
	double got;          /* ms after the change's write; -1 not yet */
	int rearm;           /* got this change: ask for the next message after the round */
};

static double
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static long
rss_kb(long pid)
{
	char path[64], line[256];
	long kb = 0;
	FILE *f;

	snprintf(path, sizeof path, "/proc/%ld/status", pid);
	if (!(f = fopen(path, "r")))
		return 0;
	while (fgets(line, sizeof line, f))
		if (sscanf(line, "VmRSS: %ld", &kb) == 1)
			break;
	fclose(f);
	return kb;
}

static int
cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/* Lines of a file, NULL-terminated, in *n. */
static char **
lines_of(const char *path, size_t *n)
{
	FILE *f = fopen(path, "r");
	char **v = NULL, *line = NULL;
	size_t cap = 0, lcap = 0;
	ssize_t len;

	*n = 0;
	if (!f)
		return NULL;
	while ((len = getline(&line, &lcap, f)) > 0) {
		if (line[len - 1] == '\n')
			line[--len] = '\0';
		if (!len)
			continue;
		if (*n + 1 >= cap && !(v = realloc(v, (cap = cap ? 2 * cap : 64) * sizeof *v)))
			exit(1);
		v[(*n)++] = strdup(line);
	}
	free(line);
	fclose(f);
	if (v)
		v[*n] = NULL;
	return v;
}

static void
recv_next(struct stream *s)
{
	grpc_op op;

	memset(&op, 0, sizeof op);
	op.op = GRPC_OP_RECV_MESSAGE;
	op.data.recv_message.recv_message = &s->in;
	if (grpc_call_start_batch(s->call, &op, 1, &s->t_recv, NULL) != GRPC_CALL_OK)
		s->over = 1;
}

/* The version of the message s received (and frees it); -1 when none. */
static long long
version_in(struct stream *s)
{
	grpc_byte_buffer_reader r;
	Ordertrack__OrderStatus *m;
	long long v = -1;
	grpc_slice sl;

	if (!s->in)
		return -1;
	if (grpc_byte_buffer_reader_init(&r, s->in)) {
		sl = grpc_byte_buffer_reader_readall(&r);
		grpc_byte_buffer_reader_destroy(&r);
		if ((m = ordertrack__order_status__unpack(NULL, GRPC_SLICE_LENGTH(sl), GRPC_SLICE_START_PTR(sl)))) {
			v = m->version;
			ordertrack__order_status__free_unpacked(m, NULL);
		}
		grpc_slice_unref(sl);
	}
	grpc_byte_buffer_destroy(s->in);
	s->in = NULL;
	return v;
}

static void
start(grpc_channel *ch, grpc_completion_queue *cq, struct stream *s, const char *id, long long after)
{
	Ordertrack__TrackRequest req = ORDERTRACK__TRACK_REQUEST__INIT;
	grpc_slice method = grpc_slice_from_static_string("/ordertrack.Delivery/Track");
	grpc_op ops[4], st;
	grpc_slice body;
	grpc_byte_buffer *bb;

	req.order_id = (char *)id;
	req.after_version = after;
	body = grpc_slice_malloc(ordertrack__track_request__get_packed_size(&req));
	ordertrack__track_request__pack(&req, GRPC_SLICE_START_PTR(body));
	bb = grpc_raw_byte_buffer_create(&body, 1);
	grpc_slice_unref(body);
	s->t_start = (struct tag){s, START};
	s->t_recv = (struct tag){s, RECV};
	s->t_status = (struct tag){s, STATUS};
	s->got = -1;
	grpc_metadata_array_init(&s->md);
	grpc_metadata_array_init(&s->trailing);
	s->call = grpc_channel_create_call(ch, NULL, GRPC_PROPAGATE_DEFAULTS, cq, method, NULL,
	                                   gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
	memset(ops, 0, sizeof ops);
	ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
	ops[1].op = GRPC_OP_SEND_MESSAGE;
	ops[1].data.send_message.send_message = bb;
	ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
	ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
	ops[3].data.recv_initial_metadata.recv_initial_metadata = &s->md;
	grpc_call_start_batch(s->call, ops, 4, &s->t_start, NULL);
	grpc_byte_buffer_destroy(bb); /* the batch holds its own reference */
	memset(&st, 0, sizeof st);
	st.op = GRPC_OP_RECV_STATUS_ON_CLIENT;
	st.data.recv_status_on_client.trailing_metadata = &s->trailing;
	st.data.recv_status_on_client.status = &s->status;
	st.data.recv_status_on_client.status_details = &s->details;
	grpc_call_start_batch(s->call, &st, 1, &s->t_status, NULL);
	recv_next(s);
}

int
main(int argc, char **argv)
{
	const char *addr = NULL, *ids_path = NULL, *cmd = NULL, *ev_path = NULL;
	long long last = 0, version;
	size_t n = 0, nids, nev, k = 1, i, opened = 0, refused = 0, nlat = 0, min_got, nch = 1;
	long pid = 0;
	char **ids, **events;
	double t0, *lat;
	struct stream *ss;
	int c;

	while ((c = getopt(argc, argv, "a:n:i:l:x:e:k:P:c:")) != -1)
		switch (c) {
		case 'a': addr = optarg; break;
		case 'n': n = strtoul(optarg, NULL, 10); break;
		case 'i': ids_path = optarg; break;
		case 'l': last = strtoll(optarg, NULL, 10); break;
		case 'x': cmd = optarg; break;
		case 'e': ev_path = optarg; break;
		case 'k': k = strtoul(optarg, NULL, 10); break;
		case 'P': pid = strtol(optarg, NULL, 10); break;
		case 'c': nch = strtoul(optarg, NULL, 10); break;
		default:
			fprintf(stderr, "usage: grpc-fanout -a HOST:PORT -n N -i IDS -l LAST -x CMD -e EVENTS [-k K] [-P PID] "
			        "[-c CHANNELS]\n");
			return 64;
		}
	if (!addr || !n || !nch || !ids_path || !cmd || !ev_path || !k || !(ids = lines_of(ids_path, &nids)) ||
	    !(events = lines_of(ev_path, &nev))) {
		fprintf(stderr, "grpc-fanout: -a, -n, -i (a file of ids), -x and -e (a file of events) are needed\n");
		return 64;
	}
	grpc_init();
	grpc_channel_credentials *cr = grpc_insecure_credentials_create();
	/* Each channel its own connection: no subchannel shared between them. */
	grpc_arg own = {GRPC_ARG_INTEGER, GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, {.integer = 1}};
	grpc_channel_args args = {1, &own};
	grpc_channel **chs = calloc(nch, sizeof *chs);
	grpc_completion_queue *cq = grpc_completion_queue_create_for_next(NULL);

	for (i = 0; chs && i < nch; i++)
		chs[i] = grpc_channel_create(addr, cr, &args);
	grpc_channel_credentials_release(cr);
	if (!chs || !(ss = calloc(n, sizeof *ss)) || !(lat = calloc(n * (nev / k + 1), sizeof *lat)))
		return 1;
	if (pid)
		printf("rss_before_kb %ld\n", rss_kb(pid));

	/* Open every stream; each is open once its first message (version LAST) came. */
	t0 = now_ms();
	for (i = 0; i < n; i++)
		start(chs[i % nch], cq, &ss[i], ids[i % nids], last - 1);
	while (opened + refused < n && now_ms() < t0 + OPEN_MS) {
		grpc_event e = grpc_completion_queue_next(cq, gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
		                                          gpr_time_from_millis(100, GPR_TIMESPAN)), NULL);
		struct tag *t = e.tag;

		if (e.type != GRPC_OP_COMPLETE)
			continue;
		if (t->kind == STATUS) {
			t->s->over = 1;
			refused += !t->s->open;
		} else if (t->kind == RECV) {
			if (version_in(t->s) >= 0 && !t->s->open) {
				t->s->open = 1;
				opened++;
			}
			if (e.success && !t->s->over)
				recv_next(t->s);
		}
	}
	printf("open_ms %.0f\nopened %zu\nrefused %zu\n", now_ms() - t0, opened, refused);
	fflush(stdout);
	if (pid) {
		usleep(500000);
		printf("rss_after_kb %ld\n", rss_kb(pid));
	}

	/* The changes, one at a time. */
	FILE *to = popen(cmd, "w");
	if (!to)
		return 1;
	min_got = n;
	version = last;
	for (size_t ch_i = 0; ch_i < nev / k; ch_i++) {
		size_t got = 0, want = 0;
		double deadline;

		usleep(300000);
		for (i = 0; i < n; i++) {
			ss[i].got = -1;
			want += ss[i].open && !ss[i].over;
		}
		t0 = now_ms();
		for (size_t j = 0; j < k; j++)
			fprintf(to, "%s\n", events[ch_i * k + j]);
		fflush(to);
		deadline = t0 + WAIT_MS;
		while (got < want && now_ms() < deadline) {
			grpc_event e = grpc_completion_queue_next(cq, gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
			                                          gpr_time_from_millis(50, GPR_TIMESPAN)), NULL);
			struct tag *t = e.tag;

			if (e.type != GRPC_OP_COMPLETE)
				continue;
			if (t->kind == STATUS) {
				t->s->over = 1;
			} else if (t->kind == RECV) {
				double at = now_ms(); /* the arrival, before any work of the client's */

				if (version_in(t->s) > version && t->s->got < 0) {
					t->s->got = at - t0;
					got++;
					/* Its next message is the next change's: asked for once this one
					 * reached everyone, so the client's work stays out of the others' delay. */
					t->s->rearm = e.success;
				} else if (e.success && !t->s->over)
					recv_next(t->s);
			}
		}
		for (i = 0; i < n; i++)
			if (ss[i].rearm) {
				ss[i].rearm = 0;
				if (!ss[i].over)
					recv_next(&ss[i]);
			}
		version++;
		for (i = 0; i < n; i++)
			if (ss[i].got >= 0)
				lat[nlat++] = ss[i].got;
		if (got < min_got)
			min_got = got;
		printf("change %zu got %zu of %zu\n", ch_i + 1, got, want);
		fflush(stdout);
	}
	pclose(to);
	printf("got_min %zu\nexpected %zu\n", nev / k ? min_got : 0, n);
	if (nlat) {
		qsort(lat, nlat, sizeof *lat, cmp_double);
		printf("min_ms %.1f\np50_ms %.1f\np99_ms %.1f\nmax_ms %.1f\n", lat[0], lat[nlat / 2],
		       lat[(size_t)((double)nlat * 0.99) < nlat ? (size_t)((double)nlat * 0.99) : nlat - 1], lat[nlat - 1]);
	}
	fflush(stdout);
	_exit(0); /* the streams die with the process: no teardown to time */
}
