/* Unit tests of ot_gcra: a burst then the rate, per client, with the wait it answers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "ot_gcra.h"

static void
burst_then_rate_per_client(void **state)
{
	struct ot_gcra *g = ot_gcra_new(2.0, 3, 64); /* one every 500 ms after three at once */

	(void)state;
	assert_non_null(g);
	for (int i = 0; i < 3; i++)
		assert_int_equal(ot_gcra_take(g, "key-a", 1000), 0);
	/* The fourth at once waits one interval; a refusal is not counted. */
	assert_int_equal(ot_gcra_take(g, "key-a", 1000), 500);
	assert_int_equal(ot_gcra_take(g, "key-a", 1200), 300);
	/* Another client has its own budget. */
	assert_int_equal(ot_gcra_take(g, "key-b", 1200), 0);
	/* One interval later one more goes, and only one. */
	assert_int_equal(ot_gcra_take(g, "key-a", 1500), 0);
	assert_true(ot_gcra_take(g, "key-a", 1500) > 0);
	/* After a long pause the whole burst is back, and no more. */
	for (int i = 0; i < 3; i++)
		assert_int_equal(ot_gcra_take(g, "key-a", 60000), 0);
	assert_true(ot_gcra_take(g, "key-a", 60000) > 0);
	ot_gcra_free(g);
}

static void
no_rate_is_no_limiter(void **state)
{
	(void)state;
	assert_null(ot_gcra_new(0, 10, 64));
	assert_null(ot_gcra_new(-1, 10, 64));
	assert_null(ot_gcra_new(1, 10, 0));
	ot_gcra_free(NULL);
}

static void
a_burst_of_one_is_the_rate_alone(void **state)
{
	struct ot_gcra *g = ot_gcra_new(0.1, 1, 8); /* one every 10 s */

	(void)state;
	assert_int_equal(ot_gcra_take(g, "x", 0), 0);
	assert_int_equal(ot_gcra_take(g, "x", 1), 9999);
	assert_int_equal(ot_gcra_take(g, "x", 10000), 0);
	ot_gcra_free(g);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(burst_then_rate_per_client),
		cmocka_unit_test(no_rate_is_no_limiter),
		cmocka_unit_test(a_burst_of_one_is_the_rate_alone),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
