/* Unit tests of the WebSocket handshake key and the circuit breaker. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>
#include <cmocka.h>

#include "ot_breaker.h"
#include "ot_live.h"

static void
ws_accept_matches_rfc6455(void **state)
{
	char out[29];

	(void)state;
	/* The example of RFC 6455, section 1.3. */
	ot_live_ws_accept("dGhlIHNhbXBsZSBub25jZQ==", out);
	assert_string_equal(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
	ot_live_ws_accept("x3JJHMbDL1EzLkh9GBhXDw==", out);
	assert_string_equal(out, "HSmrc0sMlYUkAGmm5OPpG2HaGWk=");
}

static void
breaker_opens_after_threshold_and_fails_fast(void **state)
{
	struct ot_breaker b;
	long opens, rejected;

	(void)state;
	ot_breaker_init(&b, "test", 3, 60000);
	for (int i = 0; i < 2; i++) {
		assert_true(ot_breaker_allow(&b));
		ot_breaker_done(&b, 0);
	}
	assert_int_equal(ot_breaker_read(&b, &opens, &rejected), OT_BREAKER_CLOSED);
	/* a success in between starts the count again */
	assert_true(ot_breaker_allow(&b));
	ot_breaker_done(&b, 1);
	for (int i = 0; i < 3; i++) {
		assert_true(ot_breaker_allow(&b));
		ot_breaker_done(&b, 0);
	}
	assert_int_equal(ot_breaker_read(&b, &opens, &rejected), OT_BREAKER_OPEN);
	assert_int_equal(opens, 1);
	assert_false(ot_breaker_allow(&b));
	assert_false(ot_breaker_allow(&b));
	ot_breaker_read(&b, &opens, &rejected);
	assert_int_equal(rejected, 2);
	ot_breaker_destroy(&b);
}

static void
breaker_half_open_lets_one_probe_through(void **state)
{
	struct timespec ts = {0, 30 * 1000000L};
	struct ot_breaker b;
	long opens, rejected;

	(void)state;
	ot_breaker_init(&b, "test", 1, 20);
	assert_true(ot_breaker_allow(&b));
	ot_breaker_done(&b, 0);
	assert_false(ot_breaker_allow(&b));
	nanosleep(&ts, NULL);
	assert_int_equal(ot_breaker_read(&b, &opens, &rejected), OT_BREAKER_HALF_OPEN);
	assert_true(ot_breaker_allow(&b));  /* the probe */
	assert_false(ot_breaker_allow(&b)); /* others wait for it */
	ot_breaker_done(&b, 0);             /* it failed: open again */
	assert_int_equal(ot_breaker_read(&b, &opens, &rejected), OT_BREAKER_OPEN);
	nanosleep(&ts, NULL);
	assert_true(ot_breaker_allow(&b));
	ot_breaker_done(&b, 1);             /* it worked: closed */
	assert_int_equal(ot_breaker_read(&b, &opens, &rejected), OT_BREAKER_CLOSED);
	assert_true(ot_breaker_allow(&b));
	ot_breaker_done(&b, 1);
	assert_int_equal(opens, 2);
	ot_breaker_destroy(&b);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(ws_accept_matches_rfc6455),
		cmocka_unit_test(breaker_opens_after_threshold_and_fails_fast),
		cmocka_unit_test(breaker_half_open_lets_one_probe_through),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
