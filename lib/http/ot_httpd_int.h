/* ot_httpd_int: what the server (ot_httpd_server.c) and its connection limits and deadlines
 * (ot_httpd_conn.c) share: the limits, the server's state, and the calls between them. */
#ifndef OT_HTTPD_INT_H
#define OT_HTTPD_INT_H

#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>

#include "ot_httpd.h"
#include "ot_proxy.h"

#define MAX_DISCARD (1024 * 1024) /* a chunked body past this is not even read: the connection closes */
#define READY_MAX_AGE_MS 1000     /* /readyz answers from a check at most this old */
#define DRAIN_MS 5000             /* how long a stop waits for requests in flight */
/* A connection's memory in MHD: the request line and headers, then the answer's headers. MHD
 * zeroes all of it and keeps it as long as the connection, so it is most of what a live stream
 * costs. A head over HEAD_MAX is answered 431 here, while there is still room for the answer:
 * left to MHD, a head just under HEADER_LIMIT got no answer at all. */
#define HEADER_LIMIT (7 * 1024)
#define HEAD_MAX (5 * 1024 + 512)
#define IDLE_S 30                 /* a connection silent this long is closed */
#define REQUEST_MS 10000          /* each request's head and body must arrive within this ... */
#define BODY_RATE 1024            /* ... and its body at this many bytes a second at least, ... */
#define BODY_GRACE_MS 1000        /* ... counted from this long after its head */
#define SWEEP_MS 250              /* how often connections are checked against those */
#define MAX_CONNECTIONS 1024     /* unless the tool asks for more */
#define CLIENT_BUCKETS 1024       /* of the per-client counts */
#define LOG_EVERY_MS 10000        /* one warning this often for messages MHD repeats per connection */

struct ot_httpd {
	struct MHD_Daemon *d;
	struct ot_httpd_opts o;
	atomic_int inflight; /* requests begun and not completed */
	atomic_int parked;   /* requests between ot_httpd_suspend and ot_httpd_resume */
	pthread_mutex_t ready_mu; /* one readiness check at a time; guards the three below */
	long long ready_at;  /* ms, monotonic, of the last check; 0: none yet */
	int ready;           /* what it found: 1 ready */
	char ready_why[256];
	pthread_mutex_t tcp_mu; /* guards tcps, each one's state below, and clients */
	struct tcp *tcps;    /* the open connections waiting for a request's head or body */
	pthread_t sweeper;   /* closes connections past their deadline */
	int sweeping;        /* the sweeper runs: join it */
	atomic_int stop_sweep;
	struct client {      /* connections (requests, behind a trusted proxy) open per client */
		char addr[OT_ADDR_MAX];
		int n;
		struct client *next;
	} *clients[CLIENT_BUCKETS];
};

/* What con waits for now: a request (WAIT_REQUEST, from now), the rest of its request's body
 * (WAIT_BODY, its head in), or nothing the sweep checks (WAIT_NONE: handled, upgraded). */
enum wait { WAIT_NONE, WAIT_REQUEST, WAIT_BODY };

/* ot_httpd_conn.c. The connection limit metrics, made once per start (after ot_httpd_server.c's). */
void httpd_conn_metrics(void);
/* Counts a connection or request refused past the per-client cap. */
void httpd_count_refused(void);
/* Adds d to addr's count and returns the new count; -1 when out of memory. tcp_mu held. */
int httpd_client_add(struct ot_httpd *s, const char *addr, int d);
/* What con waits for from now, against the request deadline. */
void httpd_waits(struct ot_httpd *s, struct MHD_Connection *con, enum wait w);
/* n more bytes of con's request body came. */
void httpd_body_got(struct ot_httpd *s, struct MHD_Connection *con, size_t n);
/* MHD_OPTION_NOTIFY_CONNECTION, with s as its argument. */
void httpd_notify(void *cls, struct MHD_Connection *con, void **socket_context,
                  enum MHD_ConnectionNotificationCode toe);
/* The sweeper thread of s: closes connections whose request is too slow. */
void *httpd_sweep(void *arg);
/* rq->client, from con's peer or its trusted proxy's headers; 1 when it is a proxy's. */
int httpd_client_of(struct ot_httpd *s, struct MHD_Connection *con, struct ot_httpd_req *rq);

#endif
