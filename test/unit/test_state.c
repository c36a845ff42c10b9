/* Unit tests of the order state machine. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "ot_state.h"

#define A OT_TR_APPLY
#define S OT_TR_STALE
#define L OT_TR_LATE
#define I OT_TR_IMPOSSIBLE

/* expected[from][to], in the order of enum ot_state:
 * PENDING CONFIRMED REJECTED PREPARING IN_TRANSIT DELIVERED CANCELLED */
static const int expected[OT_ST_COUNT][OT_ST_COUNT] = {
	/* PENDING    */ {S, A, A, I, I, I, A},
	/* CONFIRMED  */ {S, S, I, A, I, I, A},
	/* REJECTED   */ {I, I, S, I, I, I, I},
	/* PREPARING  */ {S, S, I, S, A, I, A},
	/* IN_TRANSIT */ {S, S, I, S, A, A, I},
	/* DELIVERED  */ {S, S, I, S, S, S, I},
	/* CANCELLED  */ {I, L, L, L, L, L, S},
};

static void
every_pair_is_classified_as_designed(void **state)
{
	int from, to;

	(void)state;
	for (from = 0; from < OT_ST_COUNT; from++)
		for (to = 0; to < OT_ST_COUNT; to++)
			if ((int)ot_state_check(from, to) != expected[from][to])
				fail_msg("%s -> %s: got %d, want %d", ot_state_name(from), ot_state_name(to),
				         ot_state_check(from, to), expected[from][to]);
}

static void
the_happy_path_applies(void **state)
{
	(void)state;
	assert_int_equal(ot_state_check(OT_ST_PENDING, OT_ST_CONFIRMED), A);
	assert_int_equal(ot_state_check(OT_ST_CONFIRMED, OT_ST_PREPARING), A);
	assert_int_equal(ot_state_check(OT_ST_PREPARING, OT_ST_IN_TRANSIT), A);
	assert_int_equal(ot_state_check(OT_ST_IN_TRANSIT, OT_ST_IN_TRANSIT), A);
	assert_int_equal(ot_state_check(OT_ST_IN_TRANSIT, OT_ST_DELIVERED), A);
}

static void
skipping_ahead_is_impossible(void **state)
{
	(void)state;
	assert_int_equal(ot_state_check(OT_ST_PENDING, OT_ST_DELIVERED), I);
	assert_int_equal(ot_state_check(OT_ST_PENDING, OT_ST_IN_TRANSIT), I);
	assert_int_equal(ot_state_check(OT_ST_REJECTED, OT_ST_PREPARING), I);
	assert_int_equal(ot_state_check(OT_ST_IN_TRANSIT, OT_ST_CANCELLED), I);
	assert_int_equal(ot_state_check(-1, OT_ST_CONFIRMED), I);
	assert_int_equal(ot_state_check(OT_ST_PENDING, OT_ST_COUNT), I);
}

/* A cancel can overtake the inventory's answer or the courier's updates; those are then late,
 * not wrong. */
static void
an_answer_or_update_after_a_cancel_is_late(void **state)
{
	(void)state;
	assert_int_equal(ot_state_check(OT_ST_CANCELLED, OT_ST_CONFIRMED), L);
	assert_int_equal(ot_state_check(OT_ST_CANCELLED, OT_ST_REJECTED), L);
	assert_int_equal(ot_state_check(OT_ST_CANCELLED, OT_ST_PREPARING), L);
	assert_int_equal(ot_state_check(OT_ST_CANCELLED, OT_ST_IN_TRANSIT), L);
	assert_int_equal(ot_state_check(OT_ST_CANCELLED, OT_ST_DELIVERED), L);
	assert_int_equal(ot_state_check(OT_ST_REJECTED, OT_ST_IN_TRANSIT), I);
	assert_int_equal(ot_state_check(OT_ST_PENDING, OT_ST_CANCELLED), A);
	assert_int_equal(ot_state_check(OT_ST_CONFIRMED, OT_ST_CANCELLED), A);
	assert_int_equal(ot_state_check(OT_ST_PREPARING, OT_ST_CANCELLED), A);
}

static void
names_round_trip(void **state)
{
	int st;

	(void)state;
	for (st = 0; st < OT_ST_COUNT; st++)
		assert_int_equal(ot_state_parse(ot_state_name(st)), st);
	assert_string_equal(ot_state_name(OT_ST_IN_TRANSIT), "IN_TRANSIT");
	assert_int_equal(ot_state_parse("in_transit"), -1);
	assert_int_equal(ot_state_parse("SHIPPED"), -1);
	assert_int_equal(ot_state_parse(NULL), -1);
	assert_string_equal(ot_state_name(99), "UNKNOWN");
}

static void
terminal_states(void **state)
{
	int st, n = 0;

	(void)state;
	for (st = 0; st < OT_ST_COUNT; st++)
		n += ot_state_terminal(st);
	assert_int_equal(n, 3);
	assert_true(ot_state_terminal(OT_ST_DELIVERED));
	assert_true(ot_state_terminal(OT_ST_REJECTED));
	assert_true(ot_state_terminal(OT_ST_CANCELLED));
	assert_false(ot_state_terminal(OT_ST_IN_TRANSIT));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(every_pair_is_classified_as_designed),
		cmocka_unit_test(the_happy_path_applies),
		cmocka_unit_test(skipping_ahead_is_impossible),
		cmocka_unit_test(an_answer_or_update_after_a_cancel_is_late),
		cmocka_unit_test(names_round_trip),
		cmocka_unit_test(terminal_states),
	};
	return cmocka_run_group_tests_name("state machine", tests, NULL, NULL);
}
