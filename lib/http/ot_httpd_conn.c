/* ot_httpd_conn: the limits on each connection: per-client caps, and deadlines for a request's
 * head and body that a client sending a byte at a time still meets. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>

#include "ot_httpd.h"
#include "ot_httpd_int.h"
#include "ot_log.h"
#include "ot_metrics.h"
#include "ot_text.h"
#include "ot_time.h"

/* One TCP connection, from MHD's connection notifications, so a request that trickles in a
 * byte at a time (each byte resets MHD's idle timer) still meets a deadline. */
struct tcp {
	MHD_socket fd;
	long long since;      /* ms, monotonic: waiting for a request since (its head, then its
	                       * body); 0 while a request is handled, after an upgrade, or once closed */
	long long body_at;    /* ms, monotonic: its head came then, and its body is awaited; 0 before */
	size_t got;           /* bytes of that body received */
	int listed;           /* on tcps: only connections waiting for a request are, so the sweep
	                       * does not walk every live stream four times a second */
	int counted;          /* on the per-client counts, as a connection of peer */
	int trusted;          /* peer is a trusted proxy: each request's client is in its headers */
	char peer[OT_ADDR_MAX];
	struct tcp *prev, *next;
};

/* Puts t on the list or takes it off. tcp_mu held. */
static void
tcp_list(struct ot_httpd *s, struct tcp *t, int on)
{
	if (t->listed == on)
		return;
	if (on) {
		t->prev = NULL;
		if ((t->next = s->tcps))
			t->next->prev = t;
		s->tcps = t;
	} else {
		if (t->prev)
			t->prev->next = t->next;
		else
			s->tcps = t->next;
		if (t->next)
			t->next->prev = t->prev;
	}
	t->listed = on;
}

static struct ot_metric *m_slow, *m_slow_bodies, *m_refused;

void
httpd_conn_metrics(void)
{
	m_slow = ot_metric_new(OT_COUNTER, "ot_http_slow_heads_total",
	                       "Connections closed for not sending a request head within the request deadline.",
	                       NULL, NULL, 0);
	m_slow_bodies = ot_metric_new(OT_COUNTER, "ot_http_slow_bodies_total",
	                              "Connections closed for a request body past the request deadline or below "
	                              "1 KiB a second.", NULL, NULL, 0);
	m_refused = ot_metric_new(OT_COUNTER, "ot_http_client_refused_total",
	                          "Connections (requests, behind a trusted proxy) refused past the per-client cap.",
	                          NULL, NULL, 0);
}

void
httpd_count_refused(void)
{
	ot_metric_add(m_refused, 1);
}

/* Adds d to addr's count and returns the new count; -1 when out of memory. tcp_mu held. */
int
httpd_client_add(struct ot_httpd *s, const char *addr, int d)
{
	struct client **b = &s->clients[ot_hash32(addr) % CLIENT_BUCKETS], **c, *gone;

	for (c = b; *c; c = &(*c)->next) {
		if (strcmp((*c)->addr, addr))
			continue;
		if (((*c)->n += d) > 0)
			return (*c)->n;
		gone = *c;
		*c = gone->next;
		free(gone);
		return 0;
	}
	if (d <= 0)
		return 0;
	if (!(*c = calloc(1, sizeof **c)))
		return -1;
	snprintf((*c)->addr, sizeof (*c)->addr, "%s", addr);
	return (*c)->n = d;
}

/* The address of con's peer as text, an IPv4-mapped IPv6 one as IPv4; "unknown" if none. */
static void
peer_of(struct MHD_Connection *con, char *out, size_t outsz)
{
	const union MHD_ConnectionInfo *ci = MHD_get_connection_info(con, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
	const struct sockaddr *sa = ci ? ci->client_addr : NULL;
	char buf[OT_ADDR_MAX] = "";

	snprintf(out, outsz, "unknown");
	if (sa && sa->sa_family == AF_INET)
		inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, buf, sizeof buf);
	else if (sa && sa->sa_family == AF_INET6)
		inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, buf, sizeof buf);
	if (buf[0])
		ot_addr_canon(buf, strlen(buf), out, outsz);
}

static struct tcp *
tcp_of(struct MHD_Connection *con)
{
	const union MHD_ConnectionInfo *ci = MHD_get_connection_info(con, MHD_CONNECTION_INFO_SOCKET_CONTEXT);

	return ci ? ci->socket_context : NULL;
}


void
httpd_waits(struct ot_httpd *s, struct MHD_Connection *con, enum wait w)
{
	struct tcp *t = tcp_of(con);

	if (!t)
		return;
	pthread_mutex_lock(&s->tcp_mu);
	if (w == WAIT_REQUEST)
		t->since = ot_now_ms();
	else if (w == WAIT_NONE)
		t->since = 0;
	t->body_at = w == WAIT_BODY ? ot_now_ms() : 0;
	t->got = 0;
	tcp_list(s, t, w != WAIT_NONE && t->since);
	pthread_mutex_unlock(&s->tcp_mu);
}

/* n more bytes of con's request body came. */
void
httpd_body_got(struct ot_httpd *s, struct MHD_Connection *con, size_t n)
{
	struct tcp *t = tcp_of(con);

	if (!t)
		return;
	pthread_mutex_lock(&s->tcp_mu);
	t->got += n;
	pthread_mutex_unlock(&s->tcp_mu);
}

/* MHD_OPTION_NOTIFY_CONNECTION: each connection on the list from its start to its close. MHD
 * closes the socket only after CLOSED, so a socket on the list is still this connection's. */
void
httpd_notify(void *cls, struct MHD_Connection *con, void **socket_context, enum MHD_ConnectionNotificationCode toe)
{
	struct ot_httpd *s = cls;
	const union MHD_ConnectionInfo *ci;
	struct tcp *t = *socket_context;
	int n = 0;

	if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
		ci = MHD_get_connection_info(con, MHD_CONNECTION_INFO_CONNECTION_FD);
		if (!ci || !(t = calloc(1, sizeof *t)))
			return; /* not watched: MHD's idle timeout still applies */
		t->fd = ci->connect_fd;
		peer_of(con, t->peer, sizeof t->peer);
		t->trusted = ot_proxies_has(s->o.trusted, t->peer);
		t->since = ot_now_ms();
		pthread_mutex_lock(&s->tcp_mu);
		/* A trusted proxy carries many clients: they are counted by request instead. */
		if (s->o.max_per_client && !t->trusted && (n = httpd_client_add(s, t->peer, 1)) > 0)
			t->counted = 1;
		if (n > s->o.max_per_client) { /* refused: MHD sees it end and closes it */
			shutdown(t->fd, SHUT_RDWR);
			t->since = 0;
		} else {
			tcp_list(s, t, 1);
		}
		pthread_mutex_unlock(&s->tcp_mu);
		if (n > s->o.max_per_client)
			ot_metric_add(m_refused, 1);
		*socket_context = t;
		return;
	}
	if (!t)
		return;
	pthread_mutex_lock(&s->tcp_mu);
	tcp_list(s, t, 0);
	if (t->counted)
		httpd_client_add(s, t->peer, -1);
	pthread_mutex_unlock(&s->tcp_mu);
	free(t);
	*socket_context = NULL;
}

/* 1 when t, waiting for a request, is too slow: past the deadline, or its body below BODY_RATE. */
static int
too_slow(const struct ot_httpd *s, const struct tcp *t, long long now)
{
	long long late = now - t->body_at - BODY_GRACE_MS;

	if (now - t->since > s->o.request_ms)
		return 1;
	return t->body_at && late > 0 && (long long)t->got * 1000 < (long long)BODY_RATE * late;
}

/* Shuts down every connection whose request is too slow; MHD then sees it end and closes it. */
void *
httpd_sweep(void *arg)
{
	struct ot_httpd *s = arg;
	struct timespec tick = {0, SWEEP_MS * 1000000L};
	struct tcp *t, *next;
	long long now;
	long heads, bodies;

	while (!atomic_load(&s->stop_sweep)) {
		nanosleep(&tick, NULL);
		now = ot_now_ms();
		heads = bodies = 0;
		pthread_mutex_lock(&s->tcp_mu);
		for (t = s->tcps; t; t = next) {
			next = t->next;
			if (t->since && too_slow(s, t, now)) {
				shutdown(t->fd, SHUT_RDWR);
				*(t->body_at ? &bodies : &heads) += 1;
				t->since = t->body_at = 0;
				tcp_list(s, t, 0);
			}
		}
		pthread_mutex_unlock(&s->tcp_mu);
		if (heads)
			ot_metric_add(m_slow, (double)heads);
		if (bodies)
			ot_metric_add(m_slow_bodies, (double)bodies);
		if (heads || bodies)
			OT_DEBUG(NULL, "closed %ld connections whose request head and %ld whose body came too slowly",
			         heads, bodies);
	}
	return NULL;
}

/* The values of every header called name, joined with ", ", into j. */
struct joined {
	const char *name;
	char buf[HEAD_MAX + 1];
	size_t len;
};

static enum MHD_Result
join_values(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
	struct joined *j = cls;
	int n;

	(void)kind;
	if (!value || strcasecmp(key, j->name))
		return MHD_YES;
	n = snprintf(j->buf + j->len, sizeof j->buf - j->len, "%s%s", j->len ? ", " : "", value);
	if (n > 0)
		j->len = j->len + (size_t)n < sizeof j->buf ? j->len + (size_t)n : sizeof j->buf - 1;
	return MHD_YES;
}

/* rq->client: con's peer, or behind a trusted proxy the client its forwarding headers name.
 * Returns 1 when the client is a proxy's, to be counted per request. */
int
httpd_client_of(struct ot_httpd *s, struct MHD_Connection *con, struct ot_httpd_req *rq)
{
	struct tcp *t = tcp_of(con);
	struct joined xff, fwd; /* no larger than the head they come from */
	char peer[OT_ADDR_MAX];

	if (t)
		snprintf(peer, sizeof peer, "%s", t->peer);
	else
		peer_of(con, peer, sizeof peer);
	snprintf(rq->client, sizeof rq->client, "%s", peer);
	if (!(t ? t->trusted : ot_proxies_has(s->o.trusted, peer)))
		return 0;
	xff.name = "X-Forwarded-For";
	fwd.name = "Forwarded";
	xff.len = fwd.len = 0;
	MHD_get_connection_values(con, MHD_HEADER_KIND, join_values, &xff);
	MHD_get_connection_values(con, MHD_HEADER_KIND, join_values, &fwd);
	ot_proxy_client(s->o.trusted, peer, xff.len ? xff.buf : NULL, fwd.len ? fwd.buf : NULL, rq->client,
	                sizeof rq->client);
	return 1;
}
