/* Unit tests of the dead-letter replay's guards: the ot-replay-count header and the topics a
 * record may be sent back to. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "ot_replay.h"

static void
replay_counts_are_plain_non_negative_numbers(void **state)
{
	static const struct { const char *s; int n; } good[] = {
		{"0", 0}, {"1", 1}, {"3", 3}, {"007", 7}, {"1000000", OT_REPLAY_COUNT_MAX},
	};
	static const char *bad[] = {
		"", "-1", "-5", "+1", " 1", "1 ", "1.0", "1e3", "abc", "3abc", "0x3", "1000001",
		"99999999999999999999999", "-0",
	};
	size_t i;
	int n;

	(void)state;
	for (i = 0; i < sizeof good / sizeof good[0]; i++) {
		n = -1;
		assert_int_equal(ot_replay_count_parse(good[i].s, &n), 0);
		assert_int_equal(n, good[i].n);
	}
	for (i = 0; i < sizeof bad / sizeof bad[0]; i++)
		if (ot_replay_count_parse(bad[i], &n) != -1)
			fail_msg("ot-replay-count \"%s\" was accepted", bad[i]);
	assert_int_equal(ot_replay_count_parse(NULL, &n), -1);
}

static void
internal_and_illegal_topics_are_refused(void **state)
{
	static const char *good[] = {"orders.events", "delivery.updates", "a", "my_topic-2.x", "_schemas"};
	static const char *bad[] = {
		"__consumer_offsets", "__transaction_state", "__cluster_metadata", "__x", "", ".", "..",
		"orders events", "orders/events", "ørders", "a\nb",
	};
	char err[300], big[251];
	size_t i;

	(void)state;
	for (i = 0; i < sizeof good / sizeof good[0]; i++)
		assert_int_equal(ot_replay_target_check(good[i], err, sizeof err), 0);
	for (i = 0; i < sizeof bad / sizeof bad[0]; i++)
		if (ot_replay_target_check(bad[i], err, sizeof err) != -1)
			fail_msg("topic \"%s\" was accepted", bad[i]);
	assert_int_equal(ot_replay_target_check("__consumer_offsets", err, sizeof err), -1);
	assert_non_null(strstr(err, "internal"));
	assert_int_equal(ot_replay_target_check(NULL, err, sizeof err), -1);
	memset(big, 'a', 249);
	big[249] = '\0';
	assert_int_equal(ot_replay_target_check(big, err, sizeof err), 0);
	big[249] = 'a';
	big[250] = '\0';
	assert_int_equal(ot_replay_target_check(big, err, sizeof err), -1);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(replay_counts_are_plain_non_negative_numbers),
		cmocka_unit_test(internal_and_illegal_topics_are_refused),
	};
	return cmocka_run_group_tests_name("replay", tests, NULL, NULL);
}
