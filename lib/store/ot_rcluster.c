/* ot_rcluster: a small synchronous Redis Cluster client over hiredis: key to slot, slot to master. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ot_err.h"
#include "ot_event.h"
#include "ot_log.h"
#include "ot_rcluster.h"
#include "ot_redis.h"

/* A node we talk to: a master of the map, or one an ASK named. */
struct rc_node {
	char host[256];
	int port;
	char addr[272];        /* "host:port", as Redis writes it in MOVED */
	redisContext *r;       /* NULL until connected, and after it broke */
	long long last_try;    /* ms of the last attempt to connect */
	char err[512];         /* why it has no connection ("" while it has one) */
};

struct ot_rcluster {
	char *url;             /* as given: where the first map came from, and the last resort */
	struct ot_redis_url u; /* its scheme, user, password and CA file go to every node */
	int timeout_ms;
	struct rc_node *nodes; /* the masters, in the order of their first slot, then ASK targets */
	size_t n, nmasters, cap;
	int16_t slot[OT_RCLUSTER_SLOTS]; /* index in nodes; -1: no master */
	char err[600];         /* why the last node asked had no connection */
};

/* CRC16-CCITT (XMODEM): polynomial 0x1021, initial value 0, as the cluster spec names it. */
static unsigned
crc16(const char *buf, size_t len)
{
	unsigned crc = 0;

	for (size_t i = 0; i < len; i++) {
		crc ^= (unsigned)(unsigned char)buf[i] << 8;
		for (int b = 0; b < 8; b++)
			crc = crc & 0x8000 ? (crc << 1) ^ 0x1021 : crc << 1;
	}
	return crc & 0xffff;
}

unsigned
ot_rcluster_slot(const char *key, size_t len)
{
	const char *open = memchr(key, '{', len), *close;

	if (open) {
		close = memchr(open + 1, '}', len - (size_t)(open + 1 - key));
		if (close && close > open + 1)
			return crc16(open + 1, (size_t)(close - open - 1)) % OT_RCLUSTER_SLOTS;
	}
	return crc16(key, len) % OT_RCLUSTER_SLOTS;
}

/* Appends s percent-encoded (all but RFC 3986's unreserved characters) at out[*n]. */
static void
pct_encode(char *out, size_t outsz, size_t *n, const char *s)
{
	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;
		int plain = (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
		            ch == '-' || ch == '.' || ch == '_' || ch == '~';

		if (*n < outsz)
			*n += (size_t)snprintf(out + *n, outsz - *n, plain ? "%c" : "%%%02X", ch);
	}
}

/* The URL of a node: the seed's scheme, credentials and CA file, the node's address, db 0. */
static int
node_url(const struct ot_rcluster *c, const struct rc_node *nd, char *out, size_t outsz)
{
	size_t n = (size_t)snprintf(out, outsz, "%s://", c->u.tls ? "rediss" : "redis");

	if (c->u.user[0] || c->u.password[0]) {
		pct_encode(out, outsz, &n, c->u.user);
		if (n < outsz)
			n += (size_t)snprintf(out + n, outsz - n, ":");
		pct_encode(out, outsz, &n, c->u.password);
		if (n < outsz)
			n += (size_t)snprintf(out + n, outsz - n, "@");
	}
	if (n < outsz)
		n += (size_t)snprintf(out + n, outsz - n, strchr(nd->host, ':') ? "[%s]:%d/0" : "%s:%d/0",
		                      nd->host, nd->port);
	if (n < outsz && c->u.cacert[0])
		n += (size_t)snprintf(out + n, outsz - n, "?cacert=%s", c->u.cacert);
	return n < outsz ? 0 : -1;
}

/* Closes nd's connection, if any. */
static void
node_drop(struct rc_node *nd)
{
	redisFree(nd->r);
	nd->r = NULL;
}

/* nd's connection: the one it has if healthy, else a new one (one attempt per 200 ms). */
static redisContext *
node_live(struct ot_rcluster *c, struct rc_node *nd)
{
	char url[1600];
	long long now;

	if (nd->r && !nd->r->err)
		return nd->r;
	if (nd->r) {
		snprintf(nd->err, sizeof nd->err, "Redis Cluster node %s: connection lost: %s", nd->addr,
		         nd->r->errstr);
		OT_WARN(NULL, "%s", nd->err);
		node_drop(nd);
	}
	now = ot_now_ms();
	if (nd->last_try && now - nd->last_try < 200) {
		snprintf(c->err, sizeof c->err, "%s (next attempt in %lld ms)", nd->err, 200 - (now - nd->last_try));
		return NULL;
	}
	nd->last_try = now;
	if (node_url(c, nd, url, sizeof url))
		snprintf(nd->err, sizeof nd->err, "Redis Cluster node %s: URL too long", nd->addr);
	else if ((nd->r = ot_redis_connect(url, c->timeout_ms, nd->err, sizeof nd->err)))
		nd->err[0] = '\0';
	if (nd->r)
		OT_DEBUG(NULL, "connected to Redis Cluster node %s", nd->addr);
	else
		OT_DEBUG(NULL, "%s", nd->err);
	snprintf(c->err, sizeof c->err, "%s", nd->err);
	return nd->r;
}

static void
node_set(struct rc_node *nd, const char *host, int port)
{
	memset(nd, 0, sizeof *nd);
	snprintf(nd->host, sizeof nd->host, "%s", host);
	nd->port = port;
	snprintf(nd->addr, sizeof nd->addr, "%s:%d", host, port);
}

/* The index of the node at host:port, added (not as a master) if new; -1 out of memory. */
static int
node_find_or_add(struct ot_rcluster *c, const char *host, int port)
{
	struct rc_node *grown;

	for (size_t i = 0; i < c->n; i++)
		if (c->nodes[i].port == port && !strcmp(c->nodes[i].host, host))
			return (int)i;
	if (c->n >= INT16_MAX)
		return -1;
	if (c->n == c->cap) {
		grown = realloc(c->nodes, (c->cap ? c->cap * 2 : 4) * sizeof *grown);
		if (!grown)
			return -1;
		c->nodes = grown;
		c->cap = c->cap ? c->cap * 2 : 4;
	}
	node_set(&c->nodes[c->n], host, port);
	return (int)c->n++;
}

struct range {
	unsigned start, end;
	const char *host;
	int port;
};

static int
range_cmp(const void *a, const void *b)
{
	const struct range *x = a, *y = b;

	return (x->start > y->start) - (x->start < y->start);
}

/* Replaces the map with a CLUSTER SLOTS reply got from a node at from_host (the host of a
 * master the cluster announces without one: NULL, "" or "?"). Connections to masters that stay
 * move to the new map. Returns 0, or -1 with errstr (the old map stays). */
static int
apply_slots(struct ot_rcluster *c, const redisReply *rep, const char *from_host, char *errstr, size_t errsz)
{
	struct range *rg = NULL;
	struct rc_node *nodes = NULL;
	size_t nrg = 0, n = 0, i, j;
	int rc = -1;

	if (rep->type != REDIS_REPLY_ARRAY || rep->elements == 0) {
		ot_err(OT_ESERVICE, errstr, errsz, "CLUSTER SLOTS: no slot is served");
		goto out;
	}
	if (!(rg = calloc(rep->elements, sizeof *rg)) || !(nodes = calloc(rep->elements, sizeof *nodes))) {
		ot_err(OT_EINTERNAL, errstr, errsz, "out of memory");
		goto out;
	}
	for (i = 0; i < rep->elements; i++) {
		const redisReply *e = rep->element[i], *m;

		if (e->type != REDIS_REPLY_ARRAY || e->elements < 3 || e->element[0]->type != REDIS_REPLY_INTEGER ||
		    e->element[1]->type != REDIS_REPLY_INTEGER || (m = e->element[2])->type != REDIS_REPLY_ARRAY ||
		    m->elements < 2 || m->element[1]->type != REDIS_REPLY_INTEGER ||
		    (m->element[0]->type != REDIS_REPLY_STRING && m->element[0]->type != REDIS_REPLY_NIL) ||
		    e->element[0]->integer < 0 || e->element[0]->integer > e->element[1]->integer ||
		    e->element[1]->integer >= OT_RCLUSTER_SLOTS || m->element[1]->integer < 1 ||
		    m->element[1]->integer > 65535) {
			ot_err(OT_ESERVICE, errstr, errsz, "CLUSTER SLOTS: an entry that does not parse");
			goto out;
		}
		rg[nrg].start = (unsigned)e->element[0]->integer;
		rg[nrg].end = (unsigned)e->element[1]->integer;
		rg[nrg].port = (int)m->element[1]->integer;
		rg[nrg].host = m->element[0]->type == REDIS_REPLY_STRING && m->element[0]->str[0] &&
		               strcmp(m->element[0]->str, "?") ? m->element[0]->str : from_host;
		if (!rg[nrg].host[0] || strlen(rg[nrg].host) >= sizeof nodes->host) {
			ot_err(OT_ESERVICE, errstr, errsz, "CLUSTER SLOTS: a master at port %d without a usable "
			       "address", rg[nrg].port);
			goto out;
		}
		nrg++;
	}
	qsort(rg, nrg, sizeof *rg, range_cmp);
	for (i = 0; i < nrg; i++) {
		for (j = 0; j < n && (nodes[j].port != rg[i].port || strcmp(nodes[j].host, rg[i].host)); j++)
			;
		if (j == n)
			node_set(&nodes[n++], rg[i].host, rg[i].port);
	}
	/* Nothing fails from here on. */
	for (i = 0; i < c->n; i++) {
		for (j = 0; j < n && (nodes[j].port != c->nodes[i].port || strcmp(nodes[j].host, c->nodes[i].host)); j++)
			;
		if (j < n) {
			nodes[j].r = c->nodes[i].r;
			nodes[j].last_try = c->nodes[i].last_try;
			memcpy(nodes[j].err, c->nodes[i].err, sizeof nodes[j].err);
		} else {
			redisFree(c->nodes[i].r);
		}
	}
	for (i = 0; i < OT_RCLUSTER_SLOTS; i++)
		c->slot[i] = -1;
	for (i = 0; i < nrg; i++) {
		for (j = 0; nodes[j].port != rg[i].port || strcmp(nodes[j].host, rg[i].host); j++)
			;
		for (unsigned s = rg[i].start; s <= rg[i].end; s++)
			c->slot[s] = (int16_t)j;
	}
	free(c->nodes);
	c->nodes = nodes;
	c->n = c->nmasters = c->cap = n;
	nodes = NULL;
	OT_DEBUG(NULL, "Redis Cluster map: %zu masters, %zu slot ranges", n, nrg);
	rc = 0;
out:
	free(rg);
	free(nodes);
	return rc;
}

/* 1 when rep, the answer to CLUSTER SLOTS, says the server is to be used as a single one: its
 * cluster support is disabled, or it refuses the command (an ACL without +cluster|slots, a
 * renamed command), as a single server may. Other errors (LOADING, BUSY, MASTERDOWN) are a
 * node not ready: no answer yet, asked again later. */
static int
cluster_disabled(const redisReply *rep)
{
	return rep && rep->type == REDIS_REPLY_ERROR && rep->str &&
	       (strstr(rep->str, "cluster support disabled") || !strncmp(rep->str, "NOPERM", 6) ||
	        strstr(rep->str, "unknown command") || strstr(rep->str, "unknown subcommand"));
}

/* Asks r for CLUSTER SLOTS and applies the answer. Returns 0, or -1 with errstr (and
 * *not_cluster set when the server has no cluster support). */
static int
slots_from(struct ot_rcluster *c, redisContext *r, const char *host, int *not_cluster, char *errstr,
           size_t errsz)
{
	redisReply *rep = redisCommand(r, "CLUSTER SLOTS");
	int rc = -1;

	if (!rep)
		ot_err(OT_ESERVICE, errstr, errsz, "CLUSTER SLOTS: %s", r->errstr);
	else if (rep->type == REDIS_REPLY_ERROR)
		ot_err(OT_ESERVICE, errstr, errsz, "CLUSTER SLOTS: %s", rep->str);
	else
		rc = apply_slots(c, rep, host, errstr, errsz);
	if (not_cluster && cluster_disabled(rep))
		*not_cluster = 1;
	freeReplyObject(rep);
	return rc;
}

int
ot_rcluster_refresh(struct ot_rcluster *c, char *errstr, size_t errsz)
{
	redisContext *r;
	char host[256];
	size_t i;
	int pass, rc = OT_ESERVICE;

	/* Masters with a healthy connection first, then those without one (one that breaks here is
	 * not tried again), then the URL we started from. */
	for (pass = 0; pass < 2; pass++) {
		for (i = 0; i < c->nmasters; i++) {
			if (pass == 0 ? !c->nodes[i].r || c->nodes[i].r->err : c->nodes[i].r != NULL)
				continue;
			if (!(r = node_live(c, &c->nodes[i])))
				continue;
			snprintf(host, sizeof host, "%s", c->nodes[i].host); /* apply_slots frees the old nodes */
			if (!slots_from(c, r, host, NULL, errstr, errsz))
				return 0;
		}
	}
	if (!(r = ot_redis_connect(c->url, c->timeout_ms, errstr, errsz)))
		return OT_ESERVICE;
	if (!slots_from(c, r, c->u.host, NULL, errstr, errsz))
		rc = 0;
	redisFree(r);
	return rc;
}

struct ot_rcluster *
ot_rcluster_new(const char *url, int timeout_ms, int *not_cluster, char *errstr, size_t errsz)
{
	struct ot_rcluster *c = NULL;
	redisContext *r = NULL;
	int failed = 1;

	if (not_cluster)
		*not_cluster = 0;
	if (!(c = calloc(1, sizeof *c)) || !(c->url = strdup(url ? url : ""))) {
		ot_err(OT_EINTERNAL, errstr, errsz, "out of memory");
		goto out;
	}
	c->timeout_ms = timeout_ms;
	if (ot_redis_parse_url(url, &c->u, errstr, errsz))
		goto out;
	if (c->u.db) {
		ot_err(OT_ECONFIG, errstr, errsz, "a Redis Cluster has only db 0 (the URL names db %d)", c->u.db);
		goto out;
	}
	if (!(r = ot_redis_connect(url, timeout_ms, errstr, errsz)))
		goto out;
	failed = slots_from(c, r, c->u.host, not_cluster, errstr, errsz);
out:
	redisFree(r);
	if (failed) {
		ot_rcluster_free(c);
		return NULL;
	}
	return c;
}

void
ot_rcluster_free(struct ot_rcluster *c)
{
	if (!c)
		return;
	for (size_t i = 0; i < c->n; i++)
		redisFree(c->nodes[i].r);
	free(c->nodes);
	free(c->url);
	free(c);
}

redisContext *
ot_rcluster_node_of_slot(struct ot_rcluster *c, unsigned slot)
{
	if (slot >= OT_RCLUSTER_SLOTS || c->slot[slot] < 0)
		return NULL;
	return node_live(c, &c->nodes[c->slot[slot]]);
}

redisContext *
ot_rcluster_node(struct ot_rcluster *c, const char *key, size_t len)
{
	return ot_rcluster_node_of_slot(c, ot_rcluster_slot(key, len));
}

int
ot_rcluster_redirect(const redisReply *rep, int *slot, char *host, size_t hostsz, int *port)
{
	const char *p, *addr, *colon;
	char *end;
	long s, pt;
	int kind;

	if (!rep || rep->type != REDIS_REPLY_ERROR)
		return 0;
	if (!strncmp(rep->str, "MOVED ", 6))
		kind = 1, p = rep->str + 6;
	else if (!strncmp(rep->str, "ASK ", 4))
		kind = 2, p = rep->str + 4;
	else
		return 0;
	s = strtol(p, &end, 10);
	if (end == p || *end != ' ' || s < 0 || s >= OT_RCLUSTER_SLOTS)
		return 0;
	addr = end + 1;
	if (!(colon = strrchr(addr, ':')))
		return 0;
	pt = strtol(colon + 1, &end, 10);
	if (end == colon + 1 || *end || pt < 1 || pt > 65535 || (size_t)(colon - addr) >= hostsz)
		return 0;
	snprintf(host, hostsz, "%.*s", (int)(colon - addr), addr);
	if (!strcmp(host, "?")) /* an unknown endpoint: the host asked */
		host[0] = '\0';
	*slot = (int)s;
	*port = (int)pt;
	return kind;
}

redisReply *
ot_rcluster_command_argv(struct ot_rcluster *c, const char *key, size_t keylen, int argc, const char **argv,
                         const size_t *argvlen, char *errstr, size_t errsz)
{
	unsigned slot = ot_rcluster_slot(key, keylen);
	redisReply *rep = NULL;
	redisContext *r;
	char host[256];
	int at, ask = -1, hops = 0, refreshed = 0, kind, rslot, port;

	for (;;) {
		at = ask >= 0 ? ask : c->slot[slot];
		r = at >= 0 ? node_live(c, &c->nodes[at]) : NULL;
		if (r && ask >= 0)
			freeReplyObject(redisCommand(r, "ASKING"));
		if (r && !r->err)
			rep = redisCommandArgv(r, argc, argv, argvlen);
		if (!rep) {
			if (at < 0)
				ot_err(OT_ESERVICE, errstr, errsz, "Redis Cluster: slot %u has no master", slot);
			else if (r)
				ot_err(OT_ESERVICE, errstr, errsz, "Redis Cluster node %s: %s", c->nodes[at].addr,
				       r->errstr);
			else
				ot_err(OT_ESERVICE, errstr, errsz, "%s", c->err);
			if (refreshed)
				goto out;
			/* Once: the slot may have a new master (a failover), or the connection was just stale. */
			if (r)
				node_drop(&c->nodes[at]);
			refreshed = 1;
			ask = -1;
			ot_rcluster_refresh(c, NULL, 0);
			continue;
		}
		if (!(kind = ot_rcluster_redirect(rep, &rslot, host, sizeof host, &port)))
			goto out;
		if (++hops > OT_RCLUSTER_MAX_REDIRECTS) {
			ot_err(OT_ESERVICE, errstr, errsz, "Redis Cluster: more than %d redirections for slot %u (%s)",
			       OT_RCLUSTER_MAX_REDIRECTS, slot, rep->str);
			goto out;
		}
		if (!host[0])
			snprintf(host, sizeof host, "%s", c->nodes[at].host);
		freeReplyObject(rep);
		rep = NULL;
		if ((at = node_find_or_add(c, host, port)) < 0) {
			ot_err(OT_EINTERNAL, errstr, errsz, "out of memory");
			goto out;
		}
		if (kind == 2) {
			ask = at;
			continue;
		}
		ask = -1;
		c->slot[rslot] = (int16_t)at;
		ot_rcluster_refresh(c, NULL, 0);
	}
out:
	return rep;
}

size_t
ot_rcluster_masters(struct ot_rcluster *c)
{
	return c->nmasters;
}

redisContext *
ot_rcluster_master(struct ot_rcluster *c, size_t i)
{
	return i < c->nmasters ? node_live(c, &c->nodes[i]) : NULL;
}

const char *
ot_rcluster_master_addr(struct ot_rcluster *c, size_t i)
{
	return i < c->nmasters ? c->nodes[i].addr : NULL;
}
