/* ot_rlink: one thread's connection to a Redis that may be a single server or a cluster. */
#ifndef OT_RLINK_H
#define OT_RLINK_H

#include <hiredis/hiredis.h>

struct ot_rcluster;

/* A connection to a Redis that may be a cluster, for one thread: the first use finds out which
 * (CLUSTER SLOTS), then holds the one server's connection or every master's. Zero it before
 * first use; ot_rlink_close frees what it holds. */
struct ot_rlink {
	redisContext *r;        /* a single server */
	struct ot_rcluster *cl; /* a cluster */
	long long last_try;     /* ms: the last attempt to connect */
	long long refreshed;    /* ms: the map last read again because a master failed */
	char err[256];          /* why the last ot_rlink_conn found no connection, when known */
};
/* The live connection for key (the one server, or the master of key's slot; key NULL: any
 * master), connecting when needed, at most five attempts a second. NULL while Redis is
 * unreachable (err may say why). Valid until the next call on the link. */
redisContext *ot_rlink_conn(struct ot_rlink *k, const char *url, const char *key);
/* After a command on r (from ot_rlink_conn; NULL: none was had) failed with rc < 0: 1 when
 * it is worth sending once more because, in a cluster, the map has been read again: the answer
 * was a redirection (MOVED: a slot moved to another master), or the slot's master did not
 * answer (a replica may have taken its slots over; then at most once a second). *tries counts,
 * so a command goes at most twice. */
int ot_rlink_retry(struct ot_rlink *k, redisContext *r, int rc, int *tries);
/* Frees the connections; the link may be used again. */
void ot_rlink_close(struct ot_rlink *k);

/* The Redis Cluster slot of an order's keys: that of its id, their hash tag. */
unsigned ot_rlink_order_slot(const char *order_id);

#endif
