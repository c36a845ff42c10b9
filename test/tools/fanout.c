/* fanout: many concurrent subscribers on one epoll thread, for scripts/bench-sse. Opens N
 * Server-Sent Event streams to ot-serve (or N SUBSCRIBE connections to Redis, the reference),
 * then for each change writes one line to a command's stdin (ot-consume applying an event) and
 * measures, per subscriber, the delay from that write to the change's arrival.
 *
 *   fanout sse   -p PORT -n N -i IDS [-l LAST_ID] [-s SOURCES] [-P PID] [-F] -x CMD -e EVENTS [-k K]
 *   fanout redis -p PORT -n N -i IDS [-s SOURCES] [-P PID] -x CMD -e EVENTS [-k K]
 *
 * IDS is a file of order ids, the streams spread over them in turn; EVENTS a file of lines,
 * -k K of them (1) per change, written to CMD's stdin at once. -b US: while a change is on
 * its way, reads are batched every US microseconds (1000; 0 reads at each wake-up). -s spreads the
 * connections over 127.0.0.1 .. 127.0.0.SOURCES. -P prints that process's RSS before the
 * streams open and once they are all open. -F (sse): afterwards, checks that one more stream
 * is refused (the status and Retry-After), closes a stream and times how long until a new
 * one is accepted. Figures go to stdout as "key value" lines. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define INFLIGHT 256        /* connections opening at once */
#define WAIT_MS 10000       /* how long a change may take to reach everyone */
#define OPEN_MS 60000       /* how long opening every stream may take */

struct conn {
	int fd;
	int ready;          /* subscribed: the stream's first bytes (or SUBSCRIBE's reply) arrived */
	int failed;         /* refused or closed */
	int status;         /* HTTP status, once read */
	double got;         /* ms after the change's write, < 0 until it arrived */
	char tail[32];      /* the last bytes read, so a marker split across reads is still found */
	size_t tlen;
};

static int redis_mode, port = 0, nsrc = 1, epfd;
static long long lastid = -1;
static size_t per_change = 1;
static unsigned batch_us = 1000;
static const char *ready_mark, *change_mark;
static char **ids;
static size_t nids;

static double
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void
die(const char *msg)
{
	fprintf(stderr, "fanout: %s: %s\n", msg, strerror(errno));
	exit(1);
}

static long
rss_kb(int pid)
{
	char path[64], line[256];
	long kb = -1;
	FILE *f;

	snprintf(path, sizeof path, "/proc/%d/status", pid);
	if (!(f = fopen(path, "r")))
		return -1;
	while (fgets(line, sizeof line, f))
		if (!strncmp(line, "VmRSS:", 6))
			kb = strtol(line + 6, NULL, 10);
	fclose(f);
	return kb;
}

static char **
read_lines(const char *path, size_t *n)
{
	FILE *f = fopen(path, "r");
	char **v = NULL, *line = NULL;
	size_t cap = 0, lc = 0;
	ssize_t len;

	if (!f)
		die(path);
	*n = 0;
	while ((len = getline(&line, &lc, f)) > 0) {
		while (len && (line[len - 1] == '\n' || line[len - 1] == '\r'))
			line[--len] = '\0';
		if (!len)
			continue;
		if (*n == cap && !(v = realloc(v, (cap = cap ? cap * 2 : 16) * sizeof *v)))
			die("out of memory");
		v[(*n)++] = strdup(line);
	}
	free(line);
	fclose(f);
	return v;
}

/* Starts a connection for subscriber i; -1 when the socket cannot even start. */
static int
open_conn(struct conn *c, size_t i)
{
	struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	struct epoll_event ev = {.events = EPOLLIN};
	char req[512];
	int one = 1, n;
	const char *id = ids[i % nids];

	memset(c, 0, sizeof *c);
	c->got = -1;
	to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if ((c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0)
		return -1;
	if (nsrc > 1) {
		struct sockaddr_in from = {.sin_family = AF_INET};
		from.sin_addr.s_addr = htonl(INADDR_LOOPBACK + (uint32_t)(i % (size_t)nsrc));
		setsockopt(c->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
		if (bind(c->fd, (struct sockaddr *)&from, sizeof from))
			goto fail;
	}
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	/* A blocking connect on loopback is quick; the request fits in the socket buffer. */
	if (connect(c->fd, (struct sockaddr *)&to, sizeof to))
		goto fail;
	if (redis_mode)
		n = snprintf(req, sizeof req, "SUBSCRIBE order:{%s}\r\n", id);
	else if (lastid >= 0)
		n = snprintf(req, sizeof req, "GET /orders/%s/events HTTP/1.1\r\nHost: bench\r\n"
		             "Accept: text/event-stream\r\nLast-Event-ID: %lld\r\n\r\n", id, lastid);
	else
		n = snprintf(req, sizeof req, "GET /orders/%s/events HTTP/1.1\r\nHost: bench\r\n"
		             "Accept: text/event-stream\r\n\r\n", id);
	if (write(c->fd, req, (size_t)n) != n)
		goto fail;
	fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK);
	ev.data.ptr = c;
	if (epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &ev))
		goto fail;
	return 0;
fail:
	close(c->fd);
	c->fd = -1;
	c->failed = 1;
	return -1;
}

/* Looks for mark in what c read before plus buf[0, n), then keeps the last bytes as c's tail. */
static int
seen(struct conn *c, const char *buf, size_t n, const char *mark)
{
	char joined[32 + 4096];
	size_t ml = strlen(mark), keep = ml - 1, jl;
	int hit;

	if (n > 4096) { /* only the head and the end of a big read matter here */
		if (memmem(buf, n, mark, ml))
			hit = 1;
		else
			hit = 0;
		jl = 0;
	} else {
		memcpy(joined, c->tail, c->tlen);
		memcpy(joined + c->tlen, buf, n);
		jl = c->tlen + n;
		hit = memmem(joined, jl, mark, ml) != NULL;
	}
	if (n >= keep) {
		memcpy(c->tail, buf + n - keep, keep);
		c->tlen = keep;
	} else if (jl >= keep) {
		memcpy(c->tail, joined + jl - keep, keep);
		c->tlen = keep;
	} else {
		memcpy(c->tail, joined, jl);
		c->tlen = jl;
	}
	return hit;
}

/* Reads what c has; t0 >= 0 while a change is on its way. Returns 1 when c became ready or
 * got the change, 0 otherwise, -1 when it closed. */
static int
on_readable(struct conn *c, double t0)
{
	char buf[65536];
	ssize_t n;
	int r = 0;

	while ((n = read(c->fd, buf, sizeof buf)) > 0) {
		double t = now_ms();
		if (!redis_mode && !c->status && n > 12 && !strncmp(buf, "HTTP/1.", 7)) {
			c->status = atoi(buf + 9);
			if (c->status != 200) {
				c->failed = 1;
				return -1;
			}
		}
		if (!c->ready) {
			if (seen(c, buf, (size_t)n, ready_mark)) {
				c->ready = 1;
				c->tlen = 0;
				r = 1;
			}
			continue;
		}
		if (t0 >= 0 && c->got < 0 && seen(c, buf, (size_t)n, change_mark)) {
			c->got = t - t0;
			r = 1;
		} else if (t0 < 0) {
			c->tlen = 0;
		}
	}
	if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
		epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
		close(c->fd);
		c->fd = -1;
		c->failed = 1;
		return -1;
	}
	return r;
}

static int
cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/* One request for a new stream at the limit: its status and whether it said Retry-After.
 * Returns the status, 0 when nothing came back within 5 s (silence). */
static int
probe(size_t i, int *retry_after)
{
	struct conn c;
	char buf[4096];
	size_t got = 0;
	double until = now_ms() + 5000;
	int st = 0;

	*retry_after = 0;
	if (open_conn(&c, i))
		return -1;
	epoll_ctl(epfd, EPOLL_CTL_DEL, c.fd, NULL);
	fcntl(c.fd, F_SETFL, fcntl(c.fd, F_GETFL) & ~O_NONBLOCK);
	struct timeval tv = {0, 200000};
	setsockopt(c.fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	while (got < sizeof buf - 1 && now_ms() < until) {
		ssize_t n = read(c.fd, buf + got, sizeof buf - 1 - got);
		if (n <= 0) {
			if (n < 0 && (errno == EAGAIN || errno == EINTR))
				continue;
			break;
		}
		got += (size_t)n;
		buf[got] = '\0';
		if (strstr(buf, "\r\n\r\n"))
			break;
	}
	buf[got] = '\0';
	if (got > 12 && !strncmp(buf, "HTTP/1.", 7))
		st = atoi(buf + 9);
	*retry_after = strcasestr(buf, "\r\nRetry-After:") != NULL;
	close(c.fd);
	return st;
}

int
main(int argc, char **argv)
{
	const char *idfile = NULL, *evfile = NULL, *cmd = NULL;
	struct epoll_event evs[1024];
	struct rlimit rl;
	struct conn *cs;
	char **events;
	size_t nev, n = 0, i, ready = 0, next = 0, opening = 0, free_check = 0;
	double *lat, t0, deadline;
	int pid = 0, c;
	FILE *to;

	if (argc < 2 || (strcmp(argv[1], "sse") && strcmp(argv[1], "redis"))) {
		fprintf(stderr, "usage: fanout sse|redis -p PORT -n N -i IDS -x CMD -e EVENTS "
		        "[-k K] [-b US] [-l LAST_ID] [-s SOURCES] [-P PID] [-F]\n");
		return 64;
	}
	redis_mode = !strcmp(argv[1], "redis");
	optind = 2;
	while ((c = getopt(argc, argv, "p:n:i:l:s:P:Fx:e:k:b:")) != -1) {
		switch (c) {
		case 'p': port = atoi(optarg); break;
		case 'n': n = strtoul(optarg, NULL, 10); break;
		case 'i': idfile = optarg; break;
		case 'l': lastid = atoll(optarg); break;
		case 's': nsrc = atoi(optarg) > 0 ? atoi(optarg) : 1; break;
		case 'P': pid = atoi(optarg); break;
		case 'F': free_check = 1; break;
		case 'x': cmd = optarg; break;
		case 'e': evfile = optarg; break;
		case 'b': batch_us = (unsigned)strtoul(optarg, NULL, 10); break;
		case 'k': per_change = strtoul(optarg, NULL, 10) ? strtoul(optarg, NULL, 10) : 1; break;
		default: return 64;
		}
	}
	if (!port || !n || !idfile || !cmd || !evfile) {
		fprintf(stderr, "fanout: -p, -n, -i, -x and -e are needed\n");
		return 64;
	}
	signal(SIGPIPE, SIG_IGN);
	if (!getrlimit(RLIMIT_NOFILE, &rl) && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	ready_mark = redis_mode ? "subscribe\r\n" : "retry: ";
	change_mark = redis_mode ? "message\r\n" : "event: status";
	ids = read_lines(idfile, &nids);
	events = read_lines(evfile, &nev);
	if (!nids || !nev) {
		fprintf(stderr, "fanout: no ids or no events\n");
		return 64;
	}
	if (!(to = popen(cmd, "w")))
		die(cmd);
	if ((epfd = epoll_create1(EPOLL_CLOEXEC)) < 0)
		die("epoll");
	if (!(cs = calloc(n, sizeof *cs)) || !(lat = calloc(n * nev, sizeof *lat)))
		die("out of memory");
	if (pid)
		printf("rss_before_kb %ld\n", rss_kb(pid));

	/* Open every stream, INFLIGHT at a time. */
	t0 = now_ms();
	deadline = t0 + OPEN_MS;
	size_t failed = 0;
	while (ready + failed < n && now_ms() < deadline) {
		while (next < n && opening < INFLIGHT) {
			if (open_conn(&cs[next], next))
				failed++;
			else
				opening++;
			next++;
		}
		int k = epoll_wait(epfd, evs, 1024, 100);
		for (int e = 0; e < k; e++) {
			struct conn *x = evs[e].data.ptr;
			int was = x->ready, r = on_readable(x, -1);
			if (r < 0 && !was) {
				failed++;
				opening--;
			} else if (r > 0 && !was && x->ready) {
				ready++;
				opening--;
			}
		}
	}
	printf("open_ms %.0f\nopened %zu\nrefused %zu\n", now_ms() - t0, ready, failed);
	fflush(stdout);
	if (pid) {
		usleep(500000); /* let the server settle what it allocated */
		printf("rss_after_kb %ld\n", rss_kb(pid));
	}

	/* The changes, one at a time. */
	size_t nlat = 0, min_got = n;
	for (size_t ch = 0; ch < nev / per_change; ch++) {
		size_t got = 0, want = 0;
		usleep(300000);
		for (i = 0; i < n; i++) {
			cs[i].got = -1;
			cs[i].tlen = 0;
			want += cs[i].fd >= 0 && cs[i].ready;
		}
		t0 = now_ms();
		for (size_t k = 0; k < per_change; k++)
			fprintf(to, "%s\n", events[ch * per_change + k]);
		fflush(to);
		deadline = t0 + WAIT_MS;
		while (got < want && now_ms() < deadline) {
			int k = epoll_wait(epfd, evs, 1024, 50);
			for (int e = 0; e < k; e++) {
				struct conn *x = evs[e].data.ptr;
				if (on_readable(x, t0) > 0 && x->got >= 0)
					got++;
			}
			/* Ten thousand clients elsewhere cost the server's machine nothing; here they
			 * share its cores. Woken for each arrival, this one process would take the
			 * CPU from the sender once per send: it reads in batches instead, every
			 * BATCH_US, which bounds what it adds to a delay. */
			if (k > 0 && k < 1024 && batch_us)
				usleep(batch_us);
		}
		for (i = 0; i < n; i++)
			if (cs[i].got >= 0)
				lat[nlat++] = cs[i].got;
		if (got < min_got)
			min_got = got;
		printf("change %zu got %zu of %zu\n", ch + 1, got, want);
		fflush(stdout);
	}
	printf("got_min %zu\nexpected %zu\n", nev / per_change ? min_got : 0, n);
	if (nlat) {
		qsort(lat, nlat, sizeof *lat, cmp_double);
		printf("min_ms %.1f\np50_ms %.1f\np99_ms %.1f\nmax_ms %.1f\n", lat[0], lat[nlat / 2],
		       lat[(size_t)((double)nlat * 0.99) < nlat ? (size_t)((double)nlat * 0.99) : nlat - 1],
		       lat[nlat - 1]);
	}

	if (free_check && !redis_mode) {
		int ra, st = probe(0, &ra);
		printf("full_status %d\nfull_retry_after %d\n", st, ra);
		/* One client goes: its slot must be free for the next at once. */
		for (i = 0; i < n && cs[i].fd < 0; i++)
			;
		if (i < n) {
			int tries = 0;
			epoll_ctl(epfd, EPOLL_CTL_DEL, cs[i].fd, NULL);
			close(cs[i].fd);
			cs[i].fd = -1;
			t0 = now_ms();
			while ((st = probe(i, &ra)) != 200 && now_ms() - t0 < 30000) {
				tries++;
				usleep(10000);
			}
			printf("slot_free_ms %.0f\nslot_free_status %d\nslot_free_tries %d\n", now_ms() - t0, st,
			       tries + 1);
		}
	}
	fflush(stdout);
	for (i = 0; i < n; i++)
		if (cs[i].fd >= 0)
			close(cs[i].fd);
	pclose(to);
	return 0;
}
