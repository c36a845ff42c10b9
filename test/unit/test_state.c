/* Unit tests of the order state machine. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "ot_state.h"
#include "ot_status.h"

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

static void
a_published_status_parses_back(void **state)
{
	struct ot_status st, back;
	json_t *o;
	char *js;

	(void)state;
	memset(&st, 0, sizeof st);
	strcpy(st.order_id, "0b6c8f0e-5a1f-4c2e-9d3b-1f2e3d4c5b6a");
	strcpy(st.status, "IN_TRANSIT");
	st.version = 4;
	st.has_pos = 1;
	st.lat = 52.37;
	st.lon = 4.89;
	strcpy(st.eta, "2026-12-05T12:41:00Z");
	strcpy(st.updated_at, "2026-12-05T12:30:00.000Z");
	o = ot_status_to_json(&st);
	js = json_dumps(o, JSON_COMPACT);
	assert_int_equal(ot_status_parse(st.order_id, js, &back), 1);
	assert_string_equal(back.order_id, st.order_id);
	assert_string_equal(back.status, "IN_TRANSIT");
	assert_int_equal(back.version, 4);
	assert_int_equal(back.has_pos, 1);
	assert_true(back.lat == 52.37 && back.lon == 4.89);
	assert_string_equal(back.eta, st.eta);
	assert_string_equal(back.updated_at, st.updated_at);
	free(js);
	json_decref(o);
	assert_int_equal(ot_status_parse(st.order_id, "{\"status\":\"PENDING\"}", &back), 0);
	assert_int_equal(ot_status_parse(st.order_id, "not json", &back), 0);
}

/* A payment with status s, or none for "". */
static struct ot_payment
pay(const char *s)
{
	struct ot_payment p;

	memset(&p, 0, sizeof p);
	strcpy(p.status, s);
	return p;
}

static void
a_payment_only_moves_forward(void **state)
{
	static const char *const all[] = {"", "AUTHORIZED", "DECLINED", "CAPTURED", "VOIDED", "REFUNDED"};
	/* may[next][cur]: whether next replaces cur, in the order of all[] */
	static const int may[6][6] = {
		/* none       */ {0, 0, 0, 0, 0, 0},
		/* AUTHORIZED */ {1, 0, 0, 0, 0, 0},
		/* DECLINED   */ {1, 0, 0, 0, 0, 0},
		/* CAPTURED   */ {1, 1, 0, 0, 0, 0},
		/* VOIDED     */ {1, 1, 0, 0, 0, 0},
		/* REFUNDED   */ {1, 1, 0, 1, 1, 0},
	};

	(void)state;
	for (int n = 0; n < 6; n++)
		for (int c = 0; c < 6; c++) {
			struct ot_payment next = pay(all[n]), cur = pay(all[c]);
			if (ot_payment_supersedes(&next, &cur) != may[n][c])
				fail_msg("%s over %s: got %d", all[n], all[c], !may[n][c]);
		}
}

static void
a_payment_travels_with_its_status(void **state)
{
	struct ot_status st, back;
	struct ot_event ev;
	char *js;
	json_t *o;

	(void)state;
	memset(&st, 0, sizeof st);
	strcpy(st.order_id, "0b6c8f0e-5a1f-4c2e-9d3b-1f2e3d4c5b6a");
	strcpy(st.status, "REJECTED");
	st.version = 2;
	st.pay = pay("DECLINED");
	st.pay.amount = 900;
	strcpy(st.pay.currency, "usd");
	strcpy(st.pay.decline_code, "insufficient_funds");
	o = ot_status_to_json(&st);
	js = json_dumps(o, JSON_COMPACT);
	assert_non_null(strstr(js, "\"payment\":{\"status\":\"DECLINED\",\"amount\":900,\"currency\":\"usd\","
	                       "\"decline_code\":\"insufficient_funds\"}"));
	assert_int_equal(ot_status_parse(st.order_id, js, &back), 1);
	assert_memory_equal(&back.pay, &st.pay, sizeof st.pay);
	free(js);
	json_decref(o);
	/* no payment, no field */
	st.pay = pay("");
	o = ot_status_to_json(&st);
	assert_null(json_object_get(o, "payment"));
	json_decref(o);
	/* a declined event without a decline_code names its code */
	memset(&ev, 0, sizeof ev);
	ev.kind = OT_EV_PAYMENT_DECLINED;
	ev.data = json_pack("{s:I, s:s, s:s}", "amount", (json_int_t)900, "currency", "usd", "code", "card_declined");
	assert_int_equal(ot_payment_from_event(&ev, &back.pay), 1);
	assert_string_equal(back.pay.status, "DECLINED");
	assert_string_equal(back.pay.decline_code, "card_declined");
	assert_int_equal(back.pay.amount, 900);
	json_decref(ev.data);
	ev.kind = OT_EV_DELIVERY_UPDATED;
	ev.data = NULL;
	assert_int_equal(ot_payment_from_event(&ev, &back.pay), 0);
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
		cmocka_unit_test(a_published_status_parses_back),
		cmocka_unit_test(a_payment_only_moves_forward),
		cmocka_unit_test(a_payment_travels_with_its_status),
	};
	return cmocka_run_group_tests_name("state machine", tests, NULL, NULL);
}
