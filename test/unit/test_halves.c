/* Unit tests of ot_halves: every item once, the sum of what fn returned, the second half on the
 * helper's thread when there are enough, all on the caller's when not or without a helper. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "ot_halves.h"

#define N 5000

struct item {
	int seen;
	pthread_t by;
};

static long
visit(void *p, void *arg)
{
	struct item *it = p;

	(void)arg;
	it->seen++;
	it->by = pthread_self();
	return 2;
}

static void
run_over(struct ot_halves *h, size_t min, int split)
{
	static struct item items[N];
	static void *v[N];
	pthread_t me = pthread_self();

	for (size_t i = 0; i < N; i++) {
		items[i] = (struct item){0};
		v[i] = &items[i];
	}
	assert_int_equal(ot_halves_run(h, v, N, min, visit, NULL), 2 * N);
	for (size_t i = 0; i < N; i++) {
		assert_int_equal(items[i].seen, 1);
		if (i < N / 2 || !split)
			assert_true(pthread_equal(items[i].by, me));
		else
			assert_false(pthread_equal(items[i].by, me));
	}
}

static void
halves_split_past_min(void **state)
{
	struct ot_halves *h = ot_halves_start();

	(void)state;
	assert_non_null(h);
	run_over(h, 1024, 1);
	run_over(h, 1024, 1); /* again: the helper is ready for the next */
	run_over(h, N + 1, 0); /* under min: all here */
	ot_halves_stop(h);
}

static void
without_helper_the_caller_does_all(void **state)
{
	(void)state;
	run_over(NULL, 1, 0);
	assert_int_equal(ot_halves_run(NULL, NULL, 0, 1, visit, NULL), 0);
	ot_halves_stop(NULL);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(halves_split_past_min),
		cmocka_unit_test(without_helper_the_caller_does_all),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
