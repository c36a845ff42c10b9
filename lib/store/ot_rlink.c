/* ot_rlink: one thread's connection to a Redis that may be a single server or a cluster. */
#include <stdio.h>
#include <string.h>

#include "ot_log.h"
#include "ot_rcluster.h"
#include "ot_redis.h"
#include "ot_rlink.h"
#include "ot_time.h"

redisContext *
ot_rlink_conn(struct ot_rlink *k, const char *url, const char *key)
{
	struct ot_redis_url u;
	redisContext *r;
	int single = 0;

	k->err[0] = '\0';
	if (k->r && k->r->err) {
		/* Broken (a restart, say): connected again below, which may find a cluster meanwhile. */
		OT_WARN(NULL, "Redis connection lost: %s", k->r->errstr);
		redisFree(k->r);
		k->r = NULL;
	}
	if (!k->r && !k->cl) {
		long long now = ot_now_ms();
		if (k->last_try && now - k->last_try < 200)
			return NULL;
		k->last_try = now;
		/* A cluster has db 0 alone: another db names a single server. */
		if (!ot_redis_parse_url(url, &u, k->err, sizeof k->err) && u.db)
			single = 1;
		else if (!(k->cl = ot_rcluster_new(url, 1000, &single, k->err, sizeof k->err)) && !single) {
			OT_DEBUG(NULL, "%s", k->err);
			return NULL;
		}
		if (single) { /* a single server: its connection from here on */
			k->err[0] = '\0';
			if (!(k->r = ot_redis_connect(url, 1000, k->err, sizeof k->err)))
				return NULL;
			OT_INFO(NULL, "connected to Redis");
		} else {
			OT_INFO(NULL, "connected to a Redis Cluster of %zu masters", ot_rcluster_masters(k->cl));
		}
	}
	if (k->r)
		return k->r;
	r = key ? ot_rcluster_node(k->cl, key, strlen(key)) : ot_rcluster_master(k->cl, 0);
	if (!r)
		snprintf(k->err, sizeof k->err, "a Redis Cluster master is unreachable");
	return r;
}

int
ot_rlink_retry(struct ot_rlink *k, redisContext *r, int rc, int *tries)
{
	char err[256];
	long long now;

	if (rc >= 0 || !k->cl || (*tries)++)
		return 0;
	if (!r || r->err) { /* a master down: perhaps failed over */
		now = ot_now_ms();
		if (k->refreshed && now - k->refreshed < 1000)
			return 0;
		k->refreshed = now;
	}
	if (ot_rcluster_refresh(k->cl, err, sizeof err)) {
		OT_DEBUG(NULL, "Redis Cluster: the map of slots not read again: %s", err);
		return 0;
	}
	return 1;
}

void
ot_rlink_close(struct ot_rlink *k)
{
	if (k->r)
		redisFree(k->r);
	ot_rcluster_free(k->cl);
	memset(k, 0, sizeof *k);
}

unsigned
ot_rlink_order_slot(const char *order_id)
{
	return ot_rcluster_slot(order_id, strlen(order_id));
}
