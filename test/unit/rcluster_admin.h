/* rcluster_admin: the Redis Cluster administration the cluster unit tests share (test_rcluster.c,
 * test_rpipe_cluster.c): keys on a chosen master, slots moved and put back, a master stopped and
 * resumed. Static functions for a test's one translation unit; it includes what it needs. */
#ifndef OT_RCLUSTER_ADMIN_H
#define OT_RCLUSTER_ADMIN_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

#include "ot_rcluster.h"

/* A router on url (NULL: OT_TEST_REDIS_CLUSTER_URL), or a failed test. */
static struct ot_rcluster *
cluster_or_fail(const char *url, int timeout_ms)
{
	char err[256];
	struct ot_rcluster *c = ot_rcluster_new(url ? url : getenv("OT_TEST_REDIS_CLUSTER_URL"), timeout_ms,
	                                        NULL, err, sizeof err);

	if (!c)
		fail_msg("%s", err);
	return c;
}

/* The index of the master at addr ("host:port"), or -1. */
static int
master_index(struct ot_rcluster *c, const char *addr)
{
	for (size_t i = 0; i < ot_rcluster_masters(c); i++)
		if (!strcmp(ot_rcluster_master_addr(c, i), addr))
			return (int)i;
	return -1;
}

/* The index of the master key lives on (by c's map), or -1. */
static int
master_of(struct ot_rcluster *c, const char *key)
{
	redisContext *r = ot_rcluster_node(c, key, strlen(key));

	for (size_t i = 0; r && i < ot_rcluster_masters(c); i++)
		if (ot_rcluster_master(c, i) == r)
			return (int)i;
	return -1;
}

/* A key of this run, "<prefix>{<pid>-<tag>-<n>}", that lives on master m (by c's map), in
 * key[0..keysz); fails the test when none of the first 10000 does. */
static void
key_on(struct ot_rcluster *c, int m, const char *prefix, const char *tag, char *key, size_t keysz)
{
	for (int n = 0; n < 10000; n++) {
		snprintf(key, keysz, "%s{%d-%s-%d}", prefix, (int)getpid(), tag, n);
		if (master_of(c, key) == m)
			return;
	}
	fail_msg("no key on master %d", m);
}

/* DEL key through the router: 1 when a reply came, else 0, with why printed. A test that must
 * know its key is gone asserts it. */
static int
del_key(struct ot_rcluster *c, const char *key)
{
	const char *argv[] = {"DEL", key};
	char err[256] = "";
	redisReply *rep = ot_rcluster_command_argv(c, key, strlen(key), 2, argv, NULL, err, sizeof err);
	int answered = rep != NULL;

	if (!answered)
		print_error("DEL %s: %s\n", key, err);
	freeReplyObject(rep);
	return answered;
}

/* Runs an administration command on a master's own connection: 1 when it did not fail, else 0,
 * with the error printed. */
static int
ok(redisContext *r, const char *fmt, ...)
{
	va_list ap;
	redisReply *rep;
	int good;

	va_start(ap, fmt);
	rep = redisvCommand(r, fmt, ap);
	va_end(ap);
	good = rep && rep->type != REDIS_REPLY_ERROR;
	if (!good)
		print_error("%s: %s\n", fmt, rep ? rep->str : r->errstr);
	freeReplyObject(rep);
	return good;
}

/* The cluster node id of the node behind r, in id[0..idsz), or a failed test. */
static void
node_id(redisContext *r, char *id, size_t idsz)
{
	redisReply *rep = redisCommand(r, "CLUSTER MYID");

	assert_non_null(rep);
	assert_int_equal(rep->type, REDIS_REPLY_STRING);
	snprintf(id, idsz, "%s", rep->str);
	freeReplyObject(rep);
}

/* Moves slot from master `from` to master `to` of adm, keys and all, as redis-cli --cluster
 * reshard does: IMPORTING on the target, MIGRATING on the source, MIGRATE each key, then
 * SETSLOT NODE on every master. */
static void
move_slot(struct ot_rcluster *adm, unsigned slot, int from, int to)
{
	redisContext *src = ot_rcluster_master(adm, (size_t)from), *dst = ot_rcluster_master(adm, (size_t)to);
	char from_id[64], to_id[64], host[256];
	const char *addr = ot_rcluster_master_addr(adm, (size_t)to), *colon = strrchr(addr, ':');
	redisReply *keys;

	assert_non_null(src);
	assert_non_null(dst);
	node_id(src, from_id, sizeof from_id);
	node_id(dst, to_id, sizeof to_id);
	snprintf(host, sizeof host, "%.*s", (int)(colon - addr), addr);
	assert_true(ok(dst, "CLUSTER SETSLOT %u IMPORTING %s", slot, from_id));
	assert_true(ok(src, "CLUSTER SETSLOT %u MIGRATING %s", slot, to_id));
	for (;;) {
		keys = redisCommand(src, "CLUSTER GETKEYSINSLOT %u 100", slot);
		assert_non_null(keys);
		assert_int_equal(keys->type, REDIS_REPLY_ARRAY);
		if (keys->elements == 0)
			break;
		for (size_t i = 0; i < keys->elements; i++)
			assert_true(ok(src, "MIGRATE %s %s %b 0 5000", host, colon + 1, keys->element[i]->str,
			               keys->element[i]->len));
		freeReplyObject(keys);
	}
	freeReplyObject(keys);
	assert_true(ok(dst, "CLUSTER SETSLOT %u NODE %s", slot, to_id));
	assert_true(ok(src, "CLUSTER SETSLOT %u NODE %s", slot, to_id));
	for (size_t i = 0; i < ot_rcluster_masters(adm); i++)
		if ((int)i != from && (int)i != to)
			assert_true(ok(ot_rcluster_master(adm, i), "CLUSTER SETSLOT %u NODE %s", slot, to_id));
}

/* The slot a test moves (UINT_MAX: none), its owner before, and the test's key in it ("": none
 * to delete), so that a test that fails midway leaves no slot half moved and no such key behind.
 * A test sets them with slot_moves (and moving_key) before it moves the slot, and sets moving to
 * UINT_MAX once the slot is back; settle_slot is its teardown. */
static unsigned moving = UINT_MAX;
static char moving_owner[300], moving_key[96];

/* Notes that the slot of key is about to leave master `from` of adm. */
static void
slot_moves(struct ot_rcluster *adm, const char *key, int from)
{
	moving = ot_rcluster_slot(key, strlen(key));
	snprintf(moving_owner, sizeof moving_owner, "%s", ot_rcluster_master_addr(adm, (size_t)from));
}

/* Teardown: ends any migration of the slot that moved, deletes moving_key wherever it is, and
 * moves the slot back to its owner if another master has it. */
static int
settle_slot(void **state)
{
	struct ot_rcluster *adm;
	int owner;

	(void)state;
	if (moving == UINT_MAX)
		return 0;
	adm = cluster_or_fail(NULL, 1000);
	for (size_t i = 0; i < ot_rcluster_masters(adm); i++) {
		if (moving_key[0]) {
			/* Where it was imported (ASKING), or on its owner; elsewhere a MOVED answer. */
			freeReplyObject(redisCommand(ot_rcluster_master(adm, i), "ASKING"));
			freeReplyObject(redisCommand(ot_rcluster_master(adm, i), "DEL %s", moving_key));
		}
		freeReplyObject(redisCommand(ot_rcluster_master(adm, i), "CLUSTER SETSLOT %u STABLE", moving));
	}
	owner = master_index(adm, moving_owner);
	for (size_t i = 0; owner >= 0 && i < ot_rcluster_masters(adm); i++)
		if ((int)i != owner && ot_rcluster_node_of_slot(adm, moving) == ot_rcluster_master(adm, i))
			move_slot(adm, moving, (int)i, owner);
	ot_rcluster_free(adm);
	moving = UINT_MAX;
	return 0;
}

/* The master a test stopped with SIGSTOP (0: none); resume_stopped, its teardown and its way to
 * let the master run again, sends SIGCONT. */
static pid_t stopped;

static int
resume_stopped(void **state)
{
	(void)state;
	if (stopped > 0)
		kill(stopped, SIGCONT);
	stopped = 0;
	return 0;
}

/* The process id of the Redis behind r (INFO server), or 0. */
static pid_t
pid_of(redisContext *r)
{
	redisReply *rep = redisCommand(r, "INFO server");
	const char *p = rep && rep->type == REDIS_REPLY_STRING ? strstr(rep->str, "process_id:") : NULL;
	pid_t pid = p ? (pid_t)atol(p + 11) : 0;

	freeReplyObject(rep);
	return pid;
}

#endif
