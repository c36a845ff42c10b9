/* Unit tests of ot_rcluster: slots as the cluster spec computes them, redirections parsed, and, with
 * OT_TEST_REDIS_CLUSTER_URL set, routing, MOVED, ASK and a stopped master against a real cluster:
 * test/bats/cluster.bats runs this binary against the stack's cluster (and, with
 * OT_TEST_RCLUSTER_DEAD_MASTER=host:port, against one whose master there was killed). */
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
#include <time.h>
#include <unistd.h>

#include "ot_err.h"
#include "ot_event.h"
#include "ot_rcluster.h"
#include "rcluster_admin.h"

/* This run's keys: "test:rc:{<pid>-<tag>-<n>}". */
#define KEY_PREFIX "test:rc:"

static unsigned
slot_of(const char *key)
{
	return ot_rcluster_slot(key, strlen(key));
}

/* The examples of the cluster spec; the slots are what CLUSTER KEYSLOT answers. */
static void
slots_are_the_specs(void **state)
{
	(void)state;
	assert_int_equal(slot_of("123456789"), 0x31C3); /* the spec's CRC16 check value, below 16384 */
	assert_int_equal(slot_of("foo"), 12182);
	assert_int_equal(slot_of("bar"), 5061);
	assert_int_equal(slot_of("{user1000}.following"), 3443);
	assert_int_equal(slot_of("{user1000}.followers"), 3443);
	assert_int_equal(slot_of("foo{}{bar}"), 8363);      /* an empty tag: the whole key */
	assert_int_equal(slot_of("foo{{bar}}zap"), 4015);   /* the tag is "{bar" */
	assert_int_equal(slot_of("{bar"), 4015);
	assert_int_equal(slot_of("foo{bar}{zap}"), 5061);   /* the first tag: "bar" */
	assert_int_equal(slot_of("{}"), 15257);
	assert_int_equal(slot_of("}{"), 12793);
	assert_int_equal(slot_of("a{b"), 13340);
	assert_int_equal(ot_rcluster_slot("", 0), 0);
	/* Only len bytes count: a tag closed past them is no tag. */
	assert_int_equal(ot_rcluster_slot("a{b}", 3), slot_of("a{b"));
	/* An order's keys share a slot. */
	assert_int_equal(slot_of("order:{0b6c1f2e-0000-4000-8000-000000000001}"),
	                 slot_of("orderlog:{0b6c1f2e-0000-4000-8000-000000000001}"));
}

/* An error reply holding text, as hiredis builds one. */
static redisReply
error_reply(char *text)
{
	redisReply r;

	memset(&r, 0, sizeof r);
	r.type = REDIS_REPLY_ERROR;
	r.str = text;
	r.len = strlen(text);
	return r;
}

static void
redirections_parse(void **state)
{
	char moved[] = "MOVED 3999 127.0.0.1:6381", ask[] = "ASK 12 ::1:7000", bare[] = "MOVED 5 :7001",
	     unknown[] = "MOVED 5 ?:7001", big[] = "MOVED 16384 127.0.0.1:6381", noport[] = "ASK 1 host",
	     badport[] = "ASK 1 host:0", err[] = "ERR MOVED 1 h:1", tryagain[] = "TRYAGAIN later";
	char host[64];
	int slot = -1, port = -1;
	redisReply r, integer;

	(void)state;
	r = error_reply(moved);
	assert_int_equal(ot_rcluster_redirect(&r, &slot, host, sizeof host, &port), 1);
	assert_int_equal(slot, 3999);
	assert_string_equal(host, "127.0.0.1");
	assert_int_equal(port, 6381);
	assert_int_equal(ot_rcluster_redirect(&r, &slot, host, 9, &port), 0); /* the host does not fit */
	r = error_reply(ask);
	assert_int_equal(ot_rcluster_redirect(&r, &slot, host, sizeof host, &port), 2);
	assert_int_equal(slot, 12);
	assert_string_equal(host, "::1");
	assert_int_equal(port, 7000);
	r = error_reply(bare);
	assert_int_equal(ot_rcluster_redirect(&r, &slot, host, sizeof host, &port), 1);
	assert_string_equal(host, "");
	assert_int_equal(port, 7001);
	r = error_reply(unknown);
	assert_int_equal(ot_rcluster_redirect(&r, &slot, host, sizeof host, &port), 1);
	assert_string_equal(host, "");
	r = error_reply(big);
	assert_int_equal(ot_rcluster_redirect(&r, &slot, host, sizeof host, &port), 0);
	r = error_reply(noport);
	assert_int_equal(ot_rcluster_redirect(&r, &slot, host, sizeof host, &port), 0);
	r = error_reply(badport);
	assert_int_equal(ot_rcluster_redirect(&r, &slot, host, sizeof host, &port), 0);
	r = error_reply(err);
	assert_int_equal(ot_rcluster_redirect(&r, &slot, host, sizeof host, &port), 0);
	r = error_reply(tryagain);
	assert_int_equal(ot_rcluster_redirect(&r, &slot, host, sizeof host, &port), 0);
	memset(&integer, 0, sizeof integer);
	integer.type = REDIS_REPLY_INTEGER;
	assert_int_equal(ot_rcluster_redirect(&integer, &slot, host, sizeof host, &port), 0);
	assert_int_equal(ot_rcluster_redirect(NULL, &slot, host, sizeof host, &port), 0);
}

static void
new_without_a_server_or_with_a_db_fails(void **state)
{
	char err[256] = "";
	int not_cluster = -1;

	(void)state;
	assert_null(ot_rcluster_new("redis://127.0.0.1:1/0", 500, &not_cluster, err, sizeof err));
	assert_int_equal(not_cluster, 0);
	assert_non_null(strstr(err, "cannot connect"));
	assert_null(ot_rcluster_new("redis://127.0.0.1:1/2", 500, &not_cluster, err, sizeof err));
	assert_non_null(strstr(err, "db 0"));
	assert_null(ot_rcluster_new("http://x", 500, NULL, err, sizeof err));
	ot_rcluster_free(NULL);
}

/* A single Redis says it is no cluster: the caller may fall back to it. */
static void
a_single_server_is_not_a_cluster(void **state)
{
	const char *url = getenv("OT_TEST_REDIS_URL");
	char err[256] = "";
	int not_cluster = 0;

	(void)state;
	if (!url || !*url)
		fail_msg("OT_TEST_REDIS_URL is not set: the single Redis to tell from a cluster");
	assert_null(ot_rcluster_new(url, 1000, &not_cluster, err, sizeof err));
	assert_int_equal(not_cluster, 1);
	assert_non_null(strstr(err, "cluster support disabled"));
}

/* cmd key [value] through the router: the reply, or a failed test. */
static redisReply *
run(struct ot_rcluster *c, const char *cmd, const char *key, const char *value)
{
	const char *argv[] = {cmd, key, value};
	char err[256] = "";
	redisReply *rep = ot_rcluster_command_argv(c, key, strlen(key), value ? 3 : 2, argv, NULL, err, sizeof err);

	if (!rep)
		fail_msg("%s %s: %s", cmd, key, err);
	return rep;
}

static void
set_key(struct ot_rcluster *c, const char *key, const char *value)
{
	redisReply *rep = run(c, "SET", key, value);

	assert_int_equal(rep->type, REDIS_REPLY_STATUS);
	assert_string_equal(rep->str, "OK");
	freeReplyObject(rep);
}

static void
assert_value(struct ot_rcluster *c, const char *key, const char *value)
{
	redisReply *rep = run(c, "GET", key, NULL);

	if (rep->type != REDIS_REPLY_STRING)
		fail_msg("GET %s: reply type %d %s", key, rep->type, rep->type == REDIS_REPLY_ERROR ? rep->str : "");
	assert_string_equal(rep->str, value);
	freeReplyObject(rep);
}

/* Keys written through the router land on every master, where a direct read finds them; an
 * order's two keys share a node, so one script may touch both. */
static void
keys_land_on_every_master(void **state)
{
	struct ot_rcluster *c = cluster_or_fail(NULL, 1000);
	char key[3][96], id[64], hkey[96], zkey[96], err[256];
	const char *argv[] = {"EVAL", "redis.call('HSET', KEYS[1], 'v', 1) redis.call('ZADD', KEYS[2], 1, 'a') "
	                      "return redis.call('ZCARD', KEYS[2])", "2", hkey, zkey};
	redisReply *rep;

	(void)state;
	assert_int_equal(ot_rcluster_masters(c), 3);
	assert_null(ot_rcluster_master(c, 3));
	assert_null(ot_rcluster_master_addr(c, 3));
	for (int m = 0; m < 3; m++) {
		key_on(c, m, KEY_PREFIX, "land", key[m], sizeof key[m]);
		set_key(c, key[m], key[m]);
	}
	for (int m = 0; m < 3; m++) {
		assert_value(c, key[m], key[m]);
		rep = redisCommand(ot_rcluster_master(c, (size_t)m), "GET %s", key[m]);
		assert_non_null(rep);
		assert_int_equal(rep->type, REDIS_REPLY_STRING);
		assert_string_equal(rep->str, key[m]);
		freeReplyObject(rep);
		assert_true(del_key(c, key[m]));
	}
	snprintf(id, sizeof id, "00000000-0000-4000-8000-%012d", (int)getpid());
	snprintf(hkey, sizeof hkey, "order:{%s}", id);
	snprintf(zkey, sizeof zkey, "orderlog:{%s}", id);
	rep = ot_rcluster_command_argv(c, hkey, strlen(hkey), 5, argv, NULL, err, sizeof err);
	assert_non_null(rep);
	if (rep->type != REDIS_REPLY_INTEGER)
		fail_msg("EVAL over order:{id} and orderlog:{id}: %s", rep->type == REDIS_REPLY_ERROR ? rep->str : "?");
	assert_int_equal(rep->integer, 1);
	freeReplyObject(rep);
	assert_true(del_key(c, hkey));
	assert_true(del_key(c, zkey));
	ot_rcluster_free(c);
}

/* Every master is reached as the URL's user: the credentials go to each node. */
static char acl_user[64];

static int
drop_acl_user(void **state)
{
	struct ot_rcluster *c;

	(void)state;
	if (!acl_user[0])
		return 0;
	c = cluster_or_fail(NULL, 1000);
	for (size_t i = 0; i < ot_rcluster_masters(c); i++)
		freeReplyObject(redisCommand(ot_rcluster_master(c, i), "ACL DELUSER %s", acl_user));
	ot_rcluster_free(c);
	acl_user[0] = '\0';
	return 0;
}

static void
every_master_gets_the_urls_credentials(void **state)
{
	struct ot_rcluster *c = cluster_or_fail(NULL, 1000), *as_user;
	const char *seed = getenv("OT_TEST_REDIS_CLUSTER_URL");
	char url[512], key[96];
	redisReply *rep;

	(void)state;
	snprintf(acl_user, sizeof acl_user, "ot-test-%d", (int)getpid());
	for (size_t i = 0; i < ot_rcluster_masters(c); i++) {
		rep = redisCommand(ot_rcluster_master(c, i), "ACL SETUSER %s on >p@ss:w/rd ~* &* +@all", acl_user);
		assert_non_null(rep);
		assert_int_equal(rep->type, REDIS_REPLY_STATUS);
		freeReplyObject(rep);
	}
	assert_true(!strncmp(seed, "redis://", 8) && !strchr(seed + 8, '@'));
	snprintf(url, sizeof url, "redis://%s:p%%40ss%%3Aw%%2Frd@%s", acl_user, seed + 8);
	as_user = cluster_or_fail(url, 1000);
	assert_int_equal(ot_rcluster_masters(as_user), 3);
	for (int m = 0; m < 3; m++) {
		rep = redisCommand(ot_rcluster_master(as_user, (size_t)m), "ACL WHOAMI");
		assert_non_null(rep);
		assert_string_equal(rep->str, acl_user);
		freeReplyObject(rep);
		key_on(as_user, m, KEY_PREFIX, "acl", key, sizeof key);
		set_key(as_user, key, "x");
		assert_value(as_user, key, "x");
		assert_true(del_key(as_user, key));
	}
	ot_rcluster_free(as_user);
	ot_rcluster_free(c);
}

/* A slot moved to another master: the client's next command there gets MOVED, follows it and
 * learns the new owner; moved back, the same again. */
static void
moved_is_followed(void **state)
{
	struct ot_rcluster *c = cluster_or_fail(NULL, 1000), *adm = cluster_or_fail(NULL, 1000);
	char key[96];
	int from, to;

	(void)state;
	from = 1;
	to = 2;
	key_on(c, from, KEY_PREFIX, "moved", key, sizeof key);
	set_key(c, key, "before");
	slot_moves(adm, key, from);
	move_slot(adm, moving, from, to);
	/* c still maps the slot to `from`. */
	assert_ptr_equal(ot_rcluster_node(c, key, strlen(key)), ot_rcluster_master(c, (size_t)from));
	assert_value(c, key, "before");
	assert_int_equal(master_of(c, key), master_index(c, ot_rcluster_master_addr(adm, (size_t)to)));
	set_key(c, key, "after");
	move_slot(adm, moving, to, from);
	assert_value(c, key, "after");
	assert_int_equal(master_of(c, key), master_index(c, moving_owner));
	moving = UINT_MAX;
	assert_true(del_key(c, key));
	ot_rcluster_free(adm);
	ot_rcluster_free(c);
}

/* While a slot migrates, a key already on the target is reached through ASK, and the client's
 * map still names the source. */
static void
ask_is_followed(void **state)
{
	struct ot_rcluster *c = cluster_or_fail(NULL, 1000), *adm = cluster_or_fail(NULL, 1000);
	redisContext *src, *dst;
	char key[96], from_id[64], to_id[64], host[64];
	int from = 0, to = 1, slot, port;
	redisReply *rep;

	(void)state;
	key_on(c, from, KEY_PREFIX, "ask", key, sizeof key);
	slot_moves(adm, key, from);
	src = ot_rcluster_master(adm, (size_t)from);
	dst = ot_rcluster_master(adm, (size_t)to);
	node_id(src, from_id, sizeof from_id);
	node_id(dst, to_id, sizeof to_id);
	assert_true(ok(dst, "CLUSTER SETSLOT %u IMPORTING %s", moving, from_id));
	assert_true(ok(src, "CLUSTER SETSLOT %u MIGRATING %s", moving, to_id));
	/* Not on the source: it sends the client on to the target, for a write and a read. */
	set_key(c, key, "asked");
	assert_value(c, key, "asked");
	rep = redisCommand(src, "GET %s", key);
	assert_int_equal(ot_rcluster_redirect(rep, &slot, host, sizeof host, &port), 2);
	assert_int_equal(slot, (int)moving);
	freeReplyObject(rep);
	assert_true(ok(dst, "ASKING"));
	rep = redisCommand(dst, "GET %s", key);
	assert_int_equal(rep->type, REDIS_REPLY_STRING);
	assert_string_equal(rep->str, "asked");
	freeReplyObject(rep);
	/* The map is unchanged: an ASK is for one command. */
	assert_int_equal(master_of(c, key), from);
	assert_true(ok(dst, "ASKING"));
	assert_true(ok(dst, "DEL %s", key));
	assert_true(ok(src, "CLUSTER SETSLOT %u STABLE", moving));
	assert_true(ok(dst, "CLUSTER SETSLOT %u STABLE", moving));
	moving = UINT_MAX;
	ot_rcluster_free(adm);
	ot_rcluster_free(c);
}

/* A connection Redis closed is replaced, and the command still answers. */
static void
a_closed_connection_is_replaced(void **state)
{
	struct ot_rcluster *c = cluster_or_fail(NULL, 1000), *adm = cluster_or_fail(NULL, 1000);
	redisReply *id;
	char key[96];

	(void)state;
	key_on(c, 2, KEY_PREFIX, "closed", key, sizeof key);
	set_key(c, key, "v");
	usleep(250 * 1000); /* a connection younger than 200 ms is not replaced at once */
	id = redisCommand(ot_rcluster_master(c, 2), "CLIENT ID");
	assert_non_null(id);
	assert_true(ok(ot_rcluster_master(adm, 2), "CLIENT KILL ID %lld", id->integer));
	freeReplyObject(id);
	assert_value(c, key, "v");
	assert_true(del_key(c, key));
	ot_rcluster_free(adm);
	ot_rcluster_free(c);
}

/* A master that stopped answering (SIGSTOP) gives NULL within the timeout, not a hang; the others
 * still answer, and it answers again once it runs. */
static void
a_stopped_master_gives_null(void **state)
{
	struct ot_rcluster *c = cluster_or_fail(NULL, 300);
	const char *argv[] = {"GET", NULL};
	char key[96], other[96], err[256] = "";
	long long t0, took;
	redisReply *rep;

	(void)state;
	if (strncmp(ot_rcluster_master_addr(c, 2), "127.0.0.1:", 10))
		fail_msg("stopping a master needs a cluster on this machine, not %s", ot_rcluster_master_addr(c, 2));
	key_on(c, 2, KEY_PREFIX, "stopped", key, sizeof key);
	key_on(c, 0, KEY_PREFIX, "running", other, sizeof other);
	set_key(c, key, "v");
	argv[1] = key;
	assert_true((stopped = pid_of(ot_rcluster_master(c, 2))) > 1);
	assert_int_equal(kill(stopped, SIGSTOP), 0);
	t0 = ot_now_ms();
	rep = ot_rcluster_command_argv(c, key, strlen(key), 2, argv, NULL, err, sizeof err);
	took = ot_now_ms() - t0;
	print_message("a command to the stopped master gave %s after %lld ms: %s\n", rep ? "a reply" : "NULL",
	              took, err);
	assert_null(rep);
	assert_true(took < 2000);
	assert_non_null(strstr(err, ot_rcluster_master_addr(c, 2)));
	set_key(c, other, "still");
	assert_value(c, other, "still");
	resume_stopped(state);
	usleep(250 * 1000); /* past the 200 ms between two attempts to connect */
	assert_value(c, key, "v");
	assert_true(del_key(c, key));
	assert_true(del_key(c, other));
	ot_rcluster_free(c);
}

/* With OT_TEST_RCLUSTER_DEAD_MASTER=host:port, that master was killed (test/bats/cluster.bats):
 * the map still names it, and the router answers NULL for its keys, at once. */
static void
a_killed_master_gives_null(void **state)
{
	struct ot_rcluster *c = cluster_or_fail(NULL, 1000);
	const char *dead = getenv("OT_TEST_RCLUSTER_DEAD_MASTER"), *argv[] = {"SET", NULL, "v"};
	char key[96], other[96], err[256] = "";
	int m = master_index(c, dead);
	long long t0, took;
	redisReply *rep;

	(void)state;
	if (m < 0)
		fail_msg("%s is not a master of the map", dead);
	key_on(c, (m + 1) % 3, KEY_PREFIX, "alive", other, sizeof other);
	/* The master's keys by slot: key_on needs its connection, which is gone. */
	for (int n = 0;; n++) {
		snprintf(key, sizeof key, KEY_PREFIX "{%d-dead-%d}", (int)getpid(), n);
		if (ot_rcluster_node(c, key, strlen(key)) == NULL)
			break;
		assert_true(n < 1000);
	}
	argv[1] = key;
	t0 = ot_now_ms();
	rep = ot_rcluster_command_argv(c, key, strlen(key), 3, argv, NULL, err, sizeof err);
	took = ot_now_ms() - t0;
	print_message("a command to the killed master gave %s after %lld ms: %s\n", rep ? "a reply" : "NULL",
	              took, err);
	assert_null(rep);
	assert_true(took < 1000);
	assert_non_null(strstr(err, strrchr(dead, ':') + 1));
	assert_null(ot_rcluster_master(c, (size_t)m));
	set_key(c, other, "v");
	assert_true(del_key(c, other));
	ot_rcluster_free(c);
}

int
main(void)
{
	const struct CMUnitTest without[] = {
		cmocka_unit_test(slots_are_the_specs),
		cmocka_unit_test(redirections_parse),
		cmocka_unit_test(new_without_a_server_or_with_a_db_fails),
	};
	const struct CMUnitTest with_cluster[] = {
		cmocka_unit_test(a_single_server_is_not_a_cluster),
		cmocka_unit_test(keys_land_on_every_master),
		cmocka_unit_test_teardown(every_master_gets_the_urls_credentials, drop_acl_user),
		cmocka_unit_test_teardown(moved_is_followed, settle_slot),
		cmocka_unit_test_teardown(ask_is_followed, settle_slot),
		cmocka_unit_test(a_closed_connection_is_replaced),
		cmocka_unit_test_teardown(a_stopped_master_gives_null, resume_stopped),
	};
	const struct CMUnitTest with_a_dead_master[] = {
		cmocka_unit_test(a_killed_master_gives_null),
	};
	const char *url = getenv("OT_TEST_REDIS_CLUSTER_URL");

	if (!url || !*url)
		return cmocka_run_group_tests(without, NULL, NULL);
	if (getenv("OT_TEST_RCLUSTER_DEAD_MASTER"))
		return cmocka_run_group_tests(with_a_dead_master, NULL, NULL);
	return cmocka_run_group_tests(without, NULL, NULL) | cmocka_run_group_tests(with_cluster, NULL, NULL);
}
