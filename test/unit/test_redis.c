/* Unit tests of ot_redis's scripts and pipelined writes, and of ot_rpipe. The ones that need Redis run only with
 * OT_TEST_REDIS_URL set: test/bats/ot_redis.bats runs this binary against the stack's Redis. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ot_err.h"
#include "ot_redis.h"
#include "ot_rpipe.h"

static struct ot_redis_script one = OT_REDIS_SCRIPT("return tonumber(ARGV[1]) + 1");

static redisContext *
connect_or_fail(void)
{
	char err[256];
	redisContext *r = ot_redis_connect(getenv("OT_TEST_REDIS_URL"), 2000, err, sizeof err);

	if (!r)
		fail_msg("%s", err);
	return r;
}

/* An order id of this run, so runs never share keys. */
static void
order_id(char *out, size_t outsz, int n)
{
	snprintf(out, outsz, "00000000-0000-4000-8000-%04x%08d", (unsigned)getpid() & 0xffff, n);
}

static void
status(struct ot_status *st, const char *id, const char *s, long long version)
{
	memset(st, 0, sizeof *st);
	snprintf(st->order_id, sizeof st->order_id, "%s", id);
	snprintf(st->status, sizeof st->status, "%s", s);
	st->version = version;
	snprintf(st->updated_at, sizeof st->updated_at, "2026-01-01T00:00:00Z");
}

static long long
version_of(redisContext *r, const char *id)
{
	redisReply *rep = redisCommand(r, "HGET order:{%s} version", id);
	long long v = rep && rep->type == REDIS_REPLY_STRING ? strtoll(rep->str, NULL, 10) : -1;

	freeReplyObject(rep);
	return v;
}

static void
cleanup(redisContext *r, const char *id)
{
	freeReplyObject(redisCommand(r, "DEL order:{%s} orderlog:{%s}", id, id));
}

/* A script runs by its digest, and again from its source once Redis has lost it. */
static void
evalsha_loads_the_script_again_after_a_flush(void **state)
{
	redisContext *r = connect_or_fail();
	const char *argv[] = {"0", "41"};
	redisReply *rep;

	(void)state;
	for (int i = 0; i < 2; i++) {
		freeReplyObject(redisCommand(r, "SCRIPT FLUSH"));
		rep = ot_redis_evalsha(r, &one, 2, argv, NULL);
		assert_non_null(rep);
		assert_int_equal(rep->type, REDIS_REPLY_INTEGER);
		assert_int_equal(rep->integer, 42);
		freeReplyObject(rep);
		/* Loaded now: EVALSHA alone answers. */
		rep = redisCommand(r, "EVALSHA %s 0 1", one.sha);
		assert_int_equal(rep->type, REDIS_REPLY_INTEGER);
		assert_int_equal(rep->integer, 2);
		freeReplyObject(rep);
	}
	redisFree(r);
}

/* n statuses in one pipeline: each written only if newer, in order, as one put_status each. */
static void
put_many_writes_in_order_and_reports_stale_ones(void **state)
{
	redisContext *r = connect_or_fail();
	struct ot_status sts[5];
	char a[64], b[64], err[256];
	int res[5];

	(void)state;
	order_id(a, sizeof a, 1);
	order_id(b, sizeof b, 2);
	cleanup(r, a), cleanup(r, b);
	status(&sts[0], a, "PENDING", 1);
	status(&sts[1], a, "CONFIRMED", 2);
	status(&sts[2], b, "CONFIRMED", 2);
	status(&sts[3], a, "PENDING", 1);   /* older than what the batch wrote before: stale */
	status(&sts[4], b, "CONFIRMED", 2); /* the same version again: stale */
	/* Without the script in Redis's cache: every command of the pipeline says NOSCRIPT first. */
	freeReplyObject(redisCommand(r, "SCRIPT FLUSH"));
	assert_int_equal(ot_redis_put_many(r, sts, 5, res, err, sizeof err), 0);
	assert_int_equal(res[0], 1);
	assert_int_equal(res[1], 1);
	assert_int_equal(res[2], 1);
	assert_int_equal(res[3], 0);
	assert_int_equal(res[4], 0);
	assert_int_equal(version_of(r, a), 2);
	assert_int_equal(version_of(r, b), 2);
	/* With the script loaded, the same answers. */
	status(&sts[0], a, "PREPARING", 3);
	status(&sts[1], b, "PENDING", 1);
	assert_int_equal(ot_redis_put_many(r, sts, 2, res, err, sizeof err), 0);
	assert_int_equal(res[0], 1);
	assert_int_equal(res[1], 0);
	assert_int_equal(version_of(r, a), 3);
	/* Nothing to write is no error. */
	assert_int_equal(ot_redis_put_many(r, sts, 0, res, err, sizeof err), 0);
	cleanup(r, a), cleanup(r, b);
	redisFree(r);
}

/* A connection that broke fails the whole batch with OT_ESERVICE. */
static void
put_many_on_a_broken_connection_is_a_service_error(void **state)
{
	redisContext *r = connect_or_fail(), *killer = connect_or_fail();
	redisReply *rep = redisCommand(r, "CLIENT ID");
	struct ot_status sts[2];
	char a[64], err[256] = "";
	int res[2];

	(void)state;
	assert_int_equal(rep->type, REDIS_REPLY_INTEGER);
	freeReplyObject(redisCommand(killer, "CLIENT KILL ID %lld", rep->integer));
	freeReplyObject(rep);
	order_id(a, sizeof a, 3);
	status(&sts[0], a, "PENDING", 1);
	status(&sts[1], a, "CONFIRMED", 2);
	assert_int_equal(ot_redis_put_many(r, sts, 2, res, err, sizeof err), OT_ESERVICE);
	assert_non_null(strstr(err, "Redis"));
	assert_int_equal(version_of(killer, a), -1);
	redisFree(r);
	redisFree(killer);
}

static void
a_script_is_named_by_the_sha1_of_its_source(void **state)
{
	(void)state;
	assert_string_equal(ot_redis_script_sha(&one), "b7be0a850e2db3a846c2a50affe4a993c4fabbcd");
	assert_string_equal(one.sha, "b7be0a850e2db3a846c2a50affe4a993c4fabbcd");
}

/* A command through the pipe and where its reply went. */
struct piped {
	struct ot_rpipe_job j; /* first */
	int n;
	long long got;         /* the INCR's answer; -1 none */
	int done;
};

static pthread_mutex_t piped_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t piped_cv = PTHREAD_COND_INITIALIZER;
static int piped_left;

static void
piped_done(struct ot_rpipe_job *j, redisReply *rep)
{
	struct piped *p = (struct piped *)(void *)j;

	p->got = rep && rep->type == REDIS_REPLY_INTEGER ? rep->integer : -1;
	pthread_mutex_lock(&piped_mu);
	p->done++;
	piped_left--;
	pthread_cond_broadcast(&piped_cv);
	pthread_mutex_unlock(&piped_mu);
}

/* Sends n INCRs of key through a pipe to url and waits for every reply. */
static void
pipe_incr(const char *url, const char *key, struct piped *p, int n)
{
	struct ot_rpipe *pipe = ot_rpipe_new(url);

	assert_non_null(pipe);
	piped_left = n;
	for (int i = 0; i < n; i++) {
		p[i].n = i;
		p[i].done = 0;
		p[i].j.done = piped_done;
		p[i].j.slot = -1; /* a single server: no slot */
		p[i].j.len = redisFormatCommand(&p[i].j.cmd, "INCR %s", key);
		assert_true(p[i].j.len > 0);
		ot_rpipe_send(pipe, &p[i].j);
	}
	pthread_mutex_lock(&piped_mu);
	while (piped_left > 0)
		pthread_cond_wait(&piped_cv, &piped_mu);
	pthread_mutex_unlock(&piped_mu);
	ot_rpipe_free(pipe);
}

static void
pipe_answers_each_command_once_in_order(void **state)
{
	static struct piped p[2000];
	char key[64];

	(void)state;
	snprintf(key, sizeof key, "test:rpipe:%d", (int)getpid());
	pipe_incr(getenv("OT_TEST_REDIS_URL"), key, p, 2000);
	for (int i = 0; i < 2000; i++) {
		assert_int_equal(p[i].done, 1);
		assert_int_equal(p[i].got, i + 1); /* sent in order, one reply each */
	}
	redisContext *r = connect_or_fail();
	freeReplyObject(redisCommand(r, "DEL %s", key));
	redisFree(r);
}

/* A URL naming a db is a single server's (a cluster has db 0 alone): the pipe's commands run
 * in that db. */
static void
pipe_runs_in_the_urls_db(void **state)
{
	static struct piped p[10];
	const char *url = getenv("OT_TEST_REDIS_URL");
	char key[64], in_db[512];
	size_t n = strlen(url);
	redisContext *r = connect_or_fail();
	redisReply *rep;

	(void)state;
	if (n < 2 || strcmp(url + n - 2, "/0"))
		fail_msg("OT_TEST_REDIS_URL does not end in /0: %s", url);
	snprintf(in_db, sizeof in_db, "%.*s/3", (int)(n - 2), url);
	snprintf(key, sizeof key, "test:rpipe:db:%d", (int)getpid());
	pipe_incr(in_db, key, p, 10);
	for (int i = 0; i < 10; i++)
		assert_int_equal(p[i].got, i + 1);
	rep = redisCommand(r, "EXISTS %s", key);
	assert_int_equal(rep->integer, 0);
	freeReplyObject(rep);
	freeReplyObject(redisCommand(r, "SELECT 3"));
	rep = redisCommand(r, "GET %s", key);
	assert_int_equal(rep->type, REDIS_REPLY_STRING);
	assert_string_equal(rep->str, "10");
	freeReplyObject(rep);
	freeReplyObject(redisCommand(r, "DEL %s", key));
	redisFree(r);
}

static void
pipe_without_redis_answers_null(void **state)
{
	static struct piped p[100];

	(void)state;
	pipe_incr("redis://127.0.0.1:1/0", "test:rpipe:none", p, 100);
	for (int i = 0; i < 100; i++) {
		assert_int_equal(p[i].done, 1);
		assert_int_equal(p[i].got, -1);
	}
}

/* The order id back from a key or channel: only order:{ID}, braces and all. */
static void
order_keys_name_their_order(void **state)
{
	char id[64];

	(void)state;
	assert_int_equal(ot_redis_order_of("order:{6f1c2e3d-0000-4000-8000-000000000001}", id), 1);
	assert_string_equal(id, "6f1c2e3d-0000-4000-8000-000000000001");
	assert_int_equal(ot_redis_order_of("order:{x}", id), 1);
	assert_string_equal(id, "x");
	assert_int_equal(ot_redis_order_of("order:6f1c2e3d", id), 0);       /* before hash tags */
	assert_int_equal(ot_redis_order_of("orderlog:{x}", id), 0);
	assert_int_equal(ot_redis_order_of("order:{}", id), 0);
	assert_int_equal(ot_redis_order_of("order:{x}y", id), 0);
	assert_int_equal(ot_redis_order_of("order:{x}}", id), 0);
	assert_int_equal(ot_redis_order_of("order:{x", id), 0);
	assert_int_equal(ot_redis_order_of("lock:order:{x}", id), 0);
	/* 63 characters fit with the NUL; 64 do not. */
	assert_int_equal(ot_redis_order_of("order:{123456789012345678901234567890123456789012345678901234567890123}", id), 1);
	assert_int_equal(ot_redis_order_of("order:{1234567890123456789012345678901234567890123456789012345678901234}", id), 0);
}

int
main(void)
{
	const struct CMUnitTest with_redis[] = {
		cmocka_unit_test(evalsha_loads_the_script_again_after_a_flush),
		cmocka_unit_test(put_many_writes_in_order_and_reports_stale_ones),
		cmocka_unit_test(put_many_on_a_broken_connection_is_a_service_error),
		cmocka_unit_test(pipe_answers_each_command_once_in_order),
		cmocka_unit_test(pipe_runs_in_the_urls_db),
	};
	const struct CMUnitTest without[] = {
		cmocka_unit_test(a_script_is_named_by_the_sha1_of_its_source),
		cmocka_unit_test(pipe_without_redis_answers_null),
		cmocka_unit_test(order_keys_name_their_order),
	};

	if (!getenv("OT_TEST_REDIS_URL") || !*getenv("OT_TEST_REDIS_URL"))
		return cmocka_run_group_tests(without, NULL, NULL);
	return cmocka_run_group_tests(without, NULL, NULL) | cmocka_run_group_tests(with_redis, NULL, NULL);
}
