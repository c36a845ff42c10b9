/* Unit tests of ot_time's backoff: doubling from the first wait to the cap, jittered within
 * [half, all] of it, and nothing negative. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "ot_time.h"

static void
backoff_doubles_to_the_cap_within_its_jitter(void **state)
{
	static const long want[] = { 100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000 };
	long lo[9], hi[9];

	(void)state;
	for (int a = 0; a < 9; a++) {
		lo[a] = 1L << 30;
		hi[a] = 0;
		for (int i = 0; i < 2000; i++) {
			long ms = ot_backoff_ms(a, 100, 5000);
			lo[a] = ms < lo[a] ? ms : lo[a];
			hi[a] = ms > hi[a] ? ms : hi[a];
		}
		assert_true(lo[a] >= want[a] / 2);
		assert_true(hi[a] <= want[a]);
		assert_true(hi[a] > lo[a]); /* jittered, not fixed */
	}
	/* A huge attempt number neither overflows nor passes the cap. */
	assert_true(ot_backoff_ms(1000, 100, 5000) <= 5000);
	assert_true(ot_backoff_ms(1000, 100, 5000) >= 2500);
}

static void
backoff_of_nothing_is_nothing(void **state)
{
	(void)state;
	assert_int_equal(ot_backoff_ms(0, 0, 5000), 0);
	assert_int_equal(ot_backoff_ms(3, -5, 5000), 0);
	assert_int_equal(ot_backoff_ms(0, 1, 5000), 1);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(backoff_doubles_to_the_cap_within_its_jitter),
		cmocka_unit_test(backoff_of_nothing_is_nothing),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
