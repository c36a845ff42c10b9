/* Unit tests of ot_pool: every job runs once, in order on one thread, the queued ones at free. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdatomic.h>

#include "ot_pool.h"

struct job {
	struct ot_pool_job j; /* first */
	int n;
};

static atomic_int ran;
static int order[1000], norder;

static void
count(struct ot_pool_job *j)
{
	(void)j;
	atomic_fetch_add(&ran, 1);
}

static void
record(struct ot_pool_job *j)
{
	order[norder++] = ((struct job *)(void *)j)->n; /* one thread: no race */
}

static void
every_job_runs_once_and_free_runs_what_is_queued(void **state)
{
	static struct job jobs[1000];
	struct ot_pool *p = ot_pool_new(4);

	(void)state;
	assert_non_null(p);
	atomic_store(&ran, 0);
	for (int i = 0; i < 1000; i++) {
		jobs[i].j.fn = count;
		ot_pool_run(p, &jobs[i].j);
	}
	ot_pool_free(p);
	assert_int_equal(atomic_load(&ran), 1000);
}

static void
one_thread_runs_jobs_in_the_order_queued(void **state)
{
	static struct job jobs[1000];
	struct ot_pool *p = ot_pool_new(1);

	(void)state;
	assert_non_null(p);
	norder = 0;
	for (int i = 0; i < 1000; i++) {
		jobs[i].n = i;
		jobs[i].j.fn = record;
		ot_pool_run(p, &jobs[i].j);
	}
	ot_pool_free(p);
	assert_int_equal(norder, 1000);
	for (int i = 0; i < 1000; i++)
		assert_int_equal(order[i], i);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(every_job_runs_once_and_free_runs_what_is_queued),
		cmocka_unit_test(one_thread_runs_jobs_in_the_order_queued),
	};

	ot_pool_free(NULL);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
