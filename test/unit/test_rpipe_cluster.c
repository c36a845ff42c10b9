/* Unit tests of ot_rpipe against a Redis Cluster: with OT_TEST_REDIS_CLUSTER_URL set, the pipe's
 * commands go to the master of their slot, in order per key, through a slot that moves, a slot
 * that migrates (ASK) and a master that stopped. test/bats/cluster.bats runs this binary against
 * the stack's cluster; the cluster administration is test_rcluster.c's, in rcluster_admin.h. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include "ot_event.h"
#include "ot_rcluster.h"
#include "ot_rpipe.h"
#include "rcluster_admin.h"

/* This run's keys: "test:rp:{<pid>-<tag>-<n>}". */
#define KEY_PREFIX "test:rp:"

/* A command through the pipe and what came back. */
struct piped {
	struct ot_rpipe_job j; /* first */
	int key;               /* index of its key in the test's keys; -1 none */
	int type;              /* the reply's type; 0 none */
	long long got;         /* an integer reply's value */
	char str[64];          /* a status, string or error reply's text */
	long long sent, answered; /* ms */
	int done;
};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int left;

static void
piped_done(struct ot_rpipe_job *j, redisReply *rep)
{
	struct piped *p = (struct piped *)(void *)j;

	p->type = rep ? rep->type : 0;
	p->got = rep && rep->type == REDIS_REPLY_INTEGER ? rep->integer : -1;
	snprintf(p->str, sizeof p->str, "%s", rep && rep->str ? rep->str : "");
	p->answered = ot_now_ms();
	pthread_mutex_lock(&mu);
	p->done++;
	left--;
	pthread_cond_broadcast(&cv);
	pthread_mutex_unlock(&mu);
}

/* Queues "cmd [key]" as p, with the given slot (-2: the key's); k is the key's index. */
static void
queue(struct ot_rpipe *pipe, struct piped *p, int k, int slot, const char *cmd, const char *key)
{
	memset(p, 0, sizeof *p);
	p->key = k;
	p->j.done = piped_done;
	p->j.slot = slot == -2 ? (int)ot_rcluster_slot(key, strlen(key)) : slot;
	p->j.len = key ? redisFormatCommand(&p->j.cmd, "%s %s", cmd, key) : redisFormatCommand(&p->j.cmd, "%s", cmd);
	assert_true(p->j.len > 0);
	p->sent = ot_now_ms();
	pthread_mutex_lock(&mu);
	left++;
	pthread_mutex_unlock(&mu);
	ot_rpipe_send(pipe, &p->j);
}

/* Waits until every queued command was answered; fails after 10 s rather than hang. */
static void
wait_all(void)
{
	struct timespec until;
	int rc = 0;

	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += 10;
	pthread_mutex_lock(&mu);
	while (left > 0 && rc != ETIMEDOUT)
		rc = pthread_cond_timedwait(&cv, &mu, &until);
	pthread_mutex_unlock(&mu);
	if (left > 0)
		fail_msg("%d commands still unanswered after 10 s", left);
}

static struct ot_rpipe *
pipe_or_fail(void)
{
	struct ot_rpipe *pipe = ot_rpipe_new(getenv("OT_TEST_REDIS_CLUSTER_URL"));

	assert_non_null(pipe);
	return pipe;
}

/* Without a server every command gets NULL, whatever its slot. */
static void
pipe_to_nothing_answers_null(void **state)
{
	struct ot_rpipe *pipe = ot_rpipe_new("redis://127.0.0.1:1/0");
	static struct piped p[50];

	(void)state;
	assert_non_null(pipe);
	for (int i = 0; i < 50; i++)
		queue(pipe, &p[i], 0, i % 2 ? -1 : i, "INCR", "test:rp:none");
	wait_all();
	for (int i = 0; i < 50; i++) {
		assert_int_equal(p[i].done, 1);
		assert_int_equal(p[i].type, 0);
	}
	ot_rpipe_free(pipe);
}

#define KEYS 6   /* two on each master */
#define INCRS 200

/* INCRs of keys on all three masters, interleaved, with keyless PINGs among them: each answered
 * once, each key's in the order sent; the values are on the masters the keys live on. A job with
 * a wrong slot still reaches its key (the MOVED answer names the right slot). */
static void
every_master_answers_in_order_per_key(void **state)
{
	struct ot_rcluster *adm = cluster_or_fail(NULL, 1000);
	struct ot_rpipe *pipe = pipe_or_fail();
	static struct piped p[KEYS * INCRS + INCRS / 10], wrong;
	char key[KEYS][96];
	int n = 0, seen[KEYS] = {0};
	redisReply *rep;

	(void)state;
	assert_int_equal(ot_rcluster_masters(adm), 3);
	for (int k = 0; k < KEYS; k++)
		key_on(adm, k % 3, KEY_PREFIX, k < 3 ? "a" : "b", key[k], sizeof key[k]);
	for (int i = 0; i < INCRS; i++) {
		for (int k = 0; k < KEYS; k++) {
			queue(pipe, &p[n++], k, -2, "INCR", key[k]);
		}
		if (i % 10 == 0)
			queue(pipe, &p[n++], -1, -1, "PING", NULL);
	}
	wait_all();
	for (int i = 0, k; i < n; i++) {
		assert_int_equal(p[i].done, 1);
		if (p[i].key < 0) {
			assert_string_equal(p[i].str, "PONG");
			continue;
		}
		k = p[i].key;
		if (p[i].type != REDIS_REPLY_INTEGER)
			fail_msg("INCR %s: reply type %d %s", key[k], p[i].type, p[i].str);
		assert_int_equal(p[i].got, ++seen[k]);
	}
	for (int k = 0; k < KEYS; k++) {
		assert_int_equal(seen[k], INCRS);
		rep = redisCommand(ot_rcluster_master(adm, (size_t)(k % 3)), "GET %s", key[k]);
		assert_non_null(rep);
		assert_int_equal(rep->type, REDIS_REPLY_STRING);
		assert_int_equal(atoi(rep->str), INCRS);
		freeReplyObject(rep);
	}
	/* key 0 with the slot of a key on another master. */
	queue(pipe, &wrong, 0, (int)ot_rcluster_slot(key[1], strlen(key[1])), "INCR", key[0]);
	wait_all();
	if (wrong.type != REDIS_REPLY_INTEGER)
		fail_msg("INCR with a wrong slot: reply type %d %s", wrong.type, wrong.str);
	assert_int_equal(wrong.got, INCRS + 1);
	for (int k = 0; k < KEYS; k++)
		del_key(adm, key[k]);
	ot_rpipe_free(pipe);
	ot_rcluster_free(adm);
}

/* A slot moves to another master while its commands flow, and back: each command is answered
 * once, in order, none sees the MOVED (or ASK) answers on the way. */
static void
a_slot_moved_midway_still_answers(void **state)
{
	struct ot_rcluster *adm = cluster_or_fail(NULL, 1000);
	struct ot_rpipe *pipe = pipe_or_fail();
	static struct piped p[300];
	char key[96];

	(void)state;
	key_on(adm, 1, KEY_PREFIX, "moved", key, sizeof key);
	slot_moves(adm, key, 1);
	snprintf(moving_key, sizeof moving_key, "%s", key);
	for (int i = 0; i < 100; i++)
		queue(pipe, &p[i], 0, -2, "INCR", key);
	move_slot(adm, moving, 1, 2);
	for (int i = 100; i < 200; i++)
		queue(pipe, &p[i], 0, -2, "INCR", key);
	move_slot(adm, moving, 2, 1);
	for (int i = 200; i < 300; i++)
		queue(pipe, &p[i], 0, -2, "INCR", key);
	wait_all();
	moving = UINT_MAX;
	for (int i = 0; i < 300; i++) {
		assert_int_equal(p[i].done, 1);
		if (p[i].type != REDIS_REPLY_INTEGER)
			fail_msg("INCR %d of %s: reply type %d %s", i, key, p[i].type, p[i].str);
		assert_int_equal(p[i].got, i + 1);
	}
	del_key(adm, key);
	ot_rpipe_free(pipe);
	ot_rcluster_free(adm);
}

/* While a slot migrates, a key not on the source any more is answered ASK: the pipe sends the
 * command on to the target, and its caller sees the target's reply. */
static void
a_migrating_slot_is_followed_by_ask(void **state)
{
	struct ot_rcluster *adm = cluster_or_fail(NULL, 1000);
	struct ot_rpipe *pipe = pipe_or_fail();
	static struct piped p[50], warm;
	redisContext *src, *dst;
	char key[96], from_id[64], to_id[64], host[64];
	int slot, port;
	redisReply *rep;

	(void)state;
	key_on(adm, 0, KEY_PREFIX, "ask", key, sizeof key);
	slot_moves(adm, key, 0);
	snprintf(moving_key, sizeof moving_key, "%s", key);
	queue(pipe, &warm, -1, -1, "PING", NULL); /* the pipe has its map before the migration */
	wait_all();
	src = ot_rcluster_master(adm, 0);
	dst = ot_rcluster_master(adm, 1);
	node_id(src, from_id, sizeof from_id);
	node_id(dst, to_id, sizeof to_id);
	assert_true(ok(dst, "CLUSTER SETSLOT %u IMPORTING %s", moving, from_id));
	assert_true(ok(src, "CLUSTER SETSLOT %u MIGRATING %s", moving, to_id));
	for (int i = 0; i < 50; i++)
		queue(pipe, &p[i], 0, -2, "INCR", key);
	wait_all();
	for (int i = 0; i < 50; i++) {
		assert_int_equal(p[i].done, 1);
		if (p[i].type != REDIS_REPLY_INTEGER)
			fail_msg("INCR %d of %s: reply type %d %s", i, key, p[i].type, p[i].str);
		assert_int_equal(p[i].got, i + 1);
	}
	/* On the target, not the source. */
	assert_true(ok(dst, "ASKING"));
	rep = redisCommand(dst, "GET %s", key);
	assert_int_equal(rep->type, REDIS_REPLY_STRING);
	assert_string_equal(rep->str, "50");
	freeReplyObject(rep);
	rep = redisCommand(src, "GET %s", key); /* not here: the source sends us on */
	assert_int_equal(ot_rcluster_redirect(rep, &slot, host, sizeof host, &port), 2);
	assert_int_equal(slot, (int)moving);
	freeReplyObject(rep);
	assert_true(ok(dst, "ASKING"));
	assert_true(ok(dst, "DEL %s", key));
	assert_true(ok(src, "CLUSTER SETSLOT %u STABLE", moving));
	assert_true(ok(dst, "CLUSTER SETSLOT %u STABLE", moving));
	moving = UINT_MAX;
	ot_rpipe_free(pipe);
	ot_rcluster_free(adm);
}

/* A master that stopped answering (SIGSTOP): its commands get NULL within about its 1 s timeout,
 * the others' are answered; once it runs again, so are its. */
static void
a_stopped_master_fails_only_its_commands(void **state)
{
	struct ot_rcluster *adm = cluster_or_fail(NULL, 1000);
	struct ot_rpipe *pipe = pipe_or_fail();
	static struct piped p[90], warm[3], after;
	char key[3][96];
	long long worst[3] = {0};
	int seen[3] = {0};

	(void)state;
	if (strncmp(ot_rcluster_master_addr(adm, 2), "127.0.0.1:", 10))
		fail_msg("stopping a master needs a cluster on this machine, not %s", ot_rcluster_master_addr(adm, 2));
	for (int m = 0; m < 3; m++) {
		key_on(adm, m, KEY_PREFIX, "stopped", key[m], sizeof key[m]);
		queue(pipe, &warm[m], m, -2, "INCR", key[m]); /* the pipe is connected to each master */
	}
	wait_all();
	assert_true((stopped = pid_of(ot_rcluster_master(adm, 2))) > 1);
	assert_int_equal(kill(stopped, SIGSTOP), 0);
	for (int i = 0; i < 90; i++) {
		queue(pipe, &p[i], i % 3, -2, "INCR", key[i % 3]);
		if (i % 10 == 9)
			usleep(50 * 1000); /* spread over half a second: several batches */
	}
	wait_all();
	for (int i = 0, m; i < 90; i++) {
		m = p[i].key;
		assert_int_equal(p[i].done, 1);
		if (p[i].answered - p[i].sent > worst[m])
			worst[m] = p[i].answered - p[i].sent;
		if (m == 2) {
			assert_int_equal(p[i].type, 0);
			continue;
		}
		if (p[i].type != REDIS_REPLY_INTEGER)
			fail_msg("INCR %s: reply type %d %s", key[m], p[i].type, p[i].str);
		assert_int_equal(p[i].got, 1 + ++seen[m]);
	}
	print_message("with master 2 stopped, the slowest answer: master 0 %lld ms, 1 %lld ms, 2 (NULL) %lld ms\n",
	              worst[0], worst[1], worst[2]);
	/* Each batch with a command for the stopped master waits its timeout, and those queued
	 * meanwhile wait for that batch: about 1 s, 2 s at worst. */
	for (int m = 0; m < 3; m++)
		assert_true(worst[m] <= 2500);
	resume_stopped(state);
	usleep(250 * 1000); /* past the 200 ms between two attempts to connect */
	queue(pipe, &after, 2, -2, "INCR", key[2]);
	wait_all();
	if (after.type != REDIS_REPLY_INTEGER)
		fail_msg("INCR %s after SIGCONT: reply type %d %s", key[2], after.type, after.str);
	for (int m = 0; m < 3; m++)
		del_key(adm, key[m]);
	ot_rpipe_free(pipe);
	ot_rcluster_free(adm);
}

int
main(void)
{
	const struct CMUnitTest without[] = {
		cmocka_unit_test(pipe_to_nothing_answers_null),
	};
	const struct CMUnitTest with_cluster[] = {
		cmocka_unit_test(every_master_answers_in_order_per_key),
		cmocka_unit_test_teardown(a_slot_moved_midway_still_answers, settle_slot),
		cmocka_unit_test_teardown(a_migrating_slot_is_followed_by_ask, settle_slot),
		cmocka_unit_test_teardown(a_stopped_master_fails_only_its_commands, resume_stopped),
	};
	const char *url = getenv("OT_TEST_REDIS_CLUSTER_URL");

	if (!url || !*url)
		return cmocka_run_group_tests(without, NULL, NULL);
	return cmocka_run_group_tests(without, NULL, NULL) | cmocka_run_group_tests(with_cluster, NULL, NULL);
}
