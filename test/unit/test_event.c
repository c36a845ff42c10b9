/* Unit tests of the event envelope: parse, validate, build, emit. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ot_event.h"

#define ID "0b6c8f0e-5a1f-4c2e-9d3b-1f2e3d4c5b6a"
#define OID "5d3c2b1a-0f9e-4d8c-b7a6-958473625140"
#define TP "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

static char err[512];

static int
parse(const char *s, struct ot_event *ev)
{
	err[0] = '\0';
	return ot_event_parse(ev, s, strlen(s), err, sizeof err);
}

static void
parses_a_full_envelope(void **state)
{
	struct ot_event ev;

	(void)state;
	assert_int_equal(parse("{\"id\":\"" ID "\",\"type\":\"ORDER_STATUS_UPDATED\",\"order_id\":\"" OID "\","
	                       "\"version\":4,\"ts\":\"2026-11-24T18:00:00.123Z\",\"source\":\"ot-consume\","
	                       "\"traceparent\":\"" TP "\",\"data\":{\"status\":\"IN_TRANSIT\",\"lat\":52.37}}", &ev), 0);
	assert_string_equal(ev.id, ID);
	assert_string_equal(ev.type, "ORDER_STATUS_UPDATED");
	assert_string_equal(ev.order_id, OID);
	assert_int_equal(ev.version, 4);
	assert_string_equal(ev.ts, "2026-11-24T18:00:00.123Z");
	assert_string_equal(ev.source, "ot-consume");
	assert_string_equal(ev.traceparent, TP);
	assert_string_equal(json_string_value(json_object_get(ev.data, "status")), "IN_TRANSIT");
	ot_event_clear(&ev);
}

static void
parses_a_minimal_envelope(void **state)
{
	struct ot_event ev;

	(void)state;
	assert_int_equal(parse("{\"id\":\"" ID "\",\"type\":\"X\",\"order_id\":\"" OID "\",\"ts\":\"2026-11-24T18:00:00Z\"}", &ev), 0);
	assert_int_equal(ev.version, 0);
	assert_string_equal(ev.source, "");
	assert_string_equal(ev.traceparent, "");
	assert_true(json_is_object(ev.data));
	assert_int_equal(json_object_size(ev.data), 0);
	ot_event_clear(&ev);
}

/* Each bad envelope must fail with an error that names what is wrong. */
static void
refuses_bad_envelopes(void **state)
{
	static const struct { const char *json, *says; } bad[] = {
		{"{\"type\":\"X\",\"order_id\":\"" OID "\",\"ts\":\"2026-11-24T18:00:00Z\"}", "\"id\" is missing"},
		{"{\"id\":\"\",\"type\":\"X\",\"order_id\":\"" OID "\",\"ts\":\"2026-11-24T18:00:00Z\"}", "\"id\" is empty"},
		{"{\"id\":7,\"type\":\"X\",\"order_id\":\"" OID "\",\"ts\":\"2026-11-24T18:00:00Z\"}", "\"id\" must be a string"},
		{"{\"id\":\"nope\",\"type\":\"X\",\"order_id\":\"" OID "\",\"ts\":\"2026-11-24T18:00:00Z\"}", "not a UUID"},
		{"{\"id\":\"" ID "\",\"order_id\":\"" OID "\",\"ts\":\"2026-11-24T18:00:00Z\"}", "\"type\" is missing"},
		{"{\"id\":\"" ID "\",\"type\":\"X\",\"ts\":\"2026-11-24T18:00:00Z\"}", "\"order_id\" is missing"},
		{"{\"id\":\"" ID "\",\"type\":\"X\",\"order_id\":\"o-1\",\"ts\":\"2026-11-24T18:00:00Z\"}", "\"order_id\" is not a UUID"},
		{"{\"id\":\"" ID "\",\"type\":\"X\",\"order_id\":\"" OID "\"}", "\"ts\" is missing"},
		{"{\"id\":\"" ID "\",\"type\":\"X\",\"order_id\":\"" OID "\",\"ts\":\"yesterday\"}", "RFC 3339"},
		{"{\"id\":\"" ID "\",\"type\":\"X\",\"order_id\":\"" OID "\",\"ts\":\"2026-11-24T18:00:00Z\",\"version\":-1}", "\"version\""},
		{"{\"id\":\"" ID "\",\"type\":\"X\",\"order_id\":\"" OID "\",\"ts\":\"2026-11-24T18:00:00Z\",\"version\":\"4\"}", "\"version\""},
		{"{\"id\":\"" ID "\",\"type\":\"X\",\"order_id\":\"" OID "\",\"ts\":\"2026-11-24T18:00:00Z\",\"data\":[]}", "\"data\" must be an object"},
		{"{\"id\":\"" ID "\",\"id\":\"" ID "\",\"type\":\"X\",\"order_id\":\"" OID "\",\"ts\":\"2026-11-24T18:00:00Z\"}", "not JSON"},
		{"{\"id\":", "not JSON"},
		{"[1,2]", "must be a JSON object"},
	};
	struct ot_event ev;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		if (parse(bad[i].json, &ev) != -1 || !strstr(err, bad[i].says))
			fail_msg("%s: got \"%s\", wanted an error saying %s", bad[i].json, err, bad[i].says);
		assert_null(ev.data);
	}
}

/* A traceparent that is not one never refuses the record: it is dropped, and a new trace starts. */
static void
drops_a_bad_traceparent(void **state)
{
	static const char *const bad[] = {"\"00-x\"", "7", "\"" TP "-and-more\"", "{}",
	                                  "\"ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\""};
	struct ot_event ev;
	char json[512];
	size_t i;

	(void)state;
	for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		snprintf(json, sizeof json, "{\"id\":\"" ID "\",\"type\":\"X\",\"order_id\":\"" OID "\","
		         "\"ts\":\"2026-11-24T18:00:00Z\",\"traceparent\":%s}", bad[i]);
		if (parse(json, &ev) != 0)
			fail_msg("%s: refused: %s", json, err);
		assert_string_equal(ev.traceparent, "");
		ot_event_clear(&ev);
	}
}

static void
round_trips(void **state)
{
	struct ot_event a, b;
	char *s;

	(void)state;
	ot_event_init(&a, OT_EV_DELIVERY_UPDATED, OID, 7, "test", json_pack("{s:s, s:f}", "status", "IN_TRANSIT", "lat", 52.5), NULL);
	s = ot_event_dump(&a);
	assert_non_null(s);
	assert_int_equal(parse(s, &b), 0);
	assert_string_equal(a.id, b.id);
	assert_string_equal(b.type, "DELIVERY_UPDATED");
	assert_int_equal(b.kind, OT_EV_DELIVERY_UPDATED);
	assert_string_equal(a.type, b.type);
	assert_string_equal(a.order_id, b.order_id);
	assert_int_equal(a.version, b.version);
	assert_string_equal(a.ts, b.ts);
	assert_string_equal(a.source, b.source);
	assert_string_equal(a.traceparent, b.traceparent);
	assert_true(json_equal(a.data, b.data));
	/* the fields come out in the envelope's order */
	assert_ptr_equal(strstr(s, "{\"id\":"), s);
	free(s);
	ot_event_clear(&a);
	ot_event_clear(&b);
}

static void
uuids_are_valid_v4_and_distinct(void **state)
{
	char a[OT_UUID_LEN], b[OT_UUID_LEN];
	int i;

	(void)state;
	for (i = 0; i < 1000; i++) {
		ot_uuid(a);
		ot_uuid(b);
		assert_true(ot_uuid_valid(a));
		assert_int_equal(a[14], '4');
		assert_non_null(strchr("89ab", a[19]));
		assert_string_not_equal(a, b);
	}
	assert_false(ot_uuid_valid("0b6c8f0e-5a1f-4c2e-9d3b-1f2e3d4c5b6"));
	assert_false(ot_uuid_valid("0b6c8f0e-5a1f-4c2e-9d3b-1f2e3d4c5b6g"));
	assert_false(ot_uuid_valid("0b6c8f0e05a1f-4c2e-9d3b-1f2e3d4c5b6a"));
}

/* An order id in any letter case is one order: its canonical form is lower case. */
static void
order_ids_are_lower_cased(void **state)
{
	char a[] = "5D3C2B1A-0F9E-4d8C-B7A6-958473625140", b[] = "5d3c2b1a-0f9e-4d8c-b7a6-95847362514G";
	struct ot_event ev;

	(void)state;
	assert_int_equal(ot_id_canon(a), 0);
	assert_string_equal(a, OID);
	assert_int_equal(ot_id_canon(a), 0);
	assert_string_equal(a, OID);
	assert_int_equal(ot_id_canon(b), -1);
	assert_string_equal(b, "5d3c2b1a-0f9e-4d8c-b7a6-95847362514G");
	assert_int_equal(parse("{\"id\":\"" ID "\",\"type\":\"X\",\"order_id\":"
	                       "\"5D3C2B1A-0F9E-4D8C-B7A6-958473625140\",\"ts\":\"2026-11-24T18:00:00Z\"}", &ev), 0);
	assert_string_equal(ev.order_id, OID);
	ot_event_clear(&ev);
	ot_event_init(&ev, OT_EV_ORDER_CREATED, "5D3C2B1A-0F9E-4D8C-B7A6-958473625140", 1, "test", NULL, NULL);
	assert_string_equal(ev.order_id, OID);
	ot_event_clear(&ev);
}

static void
timestamps_have_milliseconds(void **state)
{
	char ts[OT_TS_LEN];

	(void)state;
	ot_now_rfc3339(ts);
	assert_int_equal(strlen(ts), 24);
	assert_int_equal(ts[19], '.');
	assert_int_equal(ts[23], 'Z');
	assert_true(ot_rfc3339_valid(ts));
}

static void
rfc3339_validation(void **state)
{
	(void)state;
	assert_true(ot_rfc3339_valid("2026-11-24T18:00:00Z"));
	assert_true(ot_rfc3339_valid("2026-11-24T18:00:00.5+01:00"));
	assert_true(ot_rfc3339_valid("2026-11-24T18:00:00.123456-05:30"));
	assert_false(ot_rfc3339_valid("2026-13-24T18:00:00Z"));
	assert_false(ot_rfc3339_valid("2026-11-24 18:00:00Z"));
	assert_false(ot_rfc3339_valid("2026-11-24T18:00:00"));
	assert_false(ot_rfc3339_valid("2026-11-24T18:00:00.Z"));
	assert_false(ot_rfc3339_valid("2026-11-24T18:00:00Zjunk"));
	assert_false(ot_rfc3339_valid(""));
}

static void
traceparent_continues_a_trace(void **state)
{
	char a[OT_TRACEPARENT_LEN], b[OT_TRACEPARENT_LEN];

	(void)state;
	ot_traceparent_new(a, NULL);
	assert_true(ot_traceparent_valid(a));
	ot_traceparent_new(b, a);
	assert_true(ot_traceparent_valid(b));
	assert_memory_equal(a, b, 35);               /* same version and trace id */
	assert_memory_not_equal(a + 36, b + 36, 16); /* a new span */
	ot_traceparent_new(b, "garbage");
	assert_true(ot_traceparent_valid(b));
	assert_false(ot_traceparent_valid("00-00000000000000000000000000000000-00f067aa0ba902b7-01"));
	assert_false(ot_traceparent_valid("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7"));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(parses_a_full_envelope),
		cmocka_unit_test(parses_a_minimal_envelope),
		cmocka_unit_test(refuses_bad_envelopes),
		cmocka_unit_test(drops_a_bad_traceparent),
		cmocka_unit_test(round_trips),
		cmocka_unit_test(uuids_are_valid_v4_and_distinct),
		cmocka_unit_test(order_ids_are_lower_cased),
		cmocka_unit_test(timestamps_have_milliseconds),
		cmocka_unit_test(rfc3339_validation),
		cmocka_unit_test(traceparent_continues_a_trace),
	};
	return cmocka_run_group_tests_name("envelope", tests, NULL, NULL);
}
