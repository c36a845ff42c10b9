/* Unit tests of trace context: ids, parents, the current span, events, and an exporter whose
 * collector is down. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <unistd.h>

#include "ot_event.h"
#include "ot_log.h"
#include "ot_trace.h"

#define TID "4bf92f3577b34da6a3ce929d0e0e4736"
#define PID "00f067aa0ba902b7"
#define TP "00-" TID "-" PID "-01"

static int
is_lower_hex(const char *s, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (!strchr("0123456789abcdef", s[i]) || !s[i])
			return 0;
	return strlen(s) == n;
}

static void
a_traceparent_is_continued(void **state)
{
	struct ot_span s;
	char tp[56];

	(void)state;
	ot_span_begin(&s, "x", OT_SPAN_SERVER, TP);
	assert_string_equal(s.trace_id, TID);
	assert_string_equal(s.parent_id, PID);
	assert_true(is_lower_hex(s.id, 16));
	assert_string_not_equal(s.id, PID);
	assert_false(s.exported); /* no OT_TRACE_URL: ids only */
	ot_span_traceparent(&s, tp);
	assert_true(ot_traceparent_valid(tp));
	assert_memory_equal(tp + 3, TID, 32);
	assert_memory_equal(tp + 36, s.id, 16);
	ot_span_end(&s);
	assert_null(ot_span_current());
}

static void
upper_case_is_lowered_and_invalid_parents_start_a_trace(void **state)
{
	static const char *const bad[] = {
		"garbage", "", "ff-" TID "-" PID "-01", "00-" TID "-0000000000000000-01",
		"00-00000000000000000000000000000000-" PID "-01", "00-" TID "-" PID,
	};
	struct ot_span s;
	size_t i;

	(void)state;
	ot_span_begin(&s, "x", OT_SPAN_SERVER, "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01");
	assert_string_equal(s.trace_id, TID);
	assert_string_equal(s.parent_id, PID);
	ot_span_end(&s);
	for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		ot_span_begin(&s, "x", OT_SPAN_SERVER, bad[i]);
		assert_true(is_lower_hex(s.trace_id, 32));
		assert_string_not_equal(s.trace_id, TID);
		assert_string_equal(s.parent_id, "");
		ot_span_end(&s);
	}
	ot_span_begin(&s, "x", OT_SPAN_SERVER, NULL);
	assert_true(is_lower_hex(s.trace_id, 32));
	assert_string_equal(s.parent_id, "");
	ot_span_end(&s);
}

static void
spans_nest_on_the_current_one(void **state)
{
	struct ot_span a, b, c, d;

	(void)state;
	ot_span_begin(&a, "a", OT_SPAN_CONSUMER, TP);
	assert_ptr_equal(ot_span_current(), &a);
	ot_span_begin(&b, "b", OT_SPAN_PRODUCER, NULL);
	assert_string_equal(b.trace_id, TID);
	assert_string_equal(b.parent_id, a.id);
	assert_ptr_equal(ot_span_current(), &b);
	/* detached: a child, but not current */
	ot_span_begin_detached(&c, "c", OT_SPAN_PRODUCER, NULL);
	assert_string_equal(c.parent_id, b.id);
	assert_ptr_equal(ot_span_current(), &b);
	ot_span_end(&b);
	assert_ptr_equal(ot_span_current(), &a);
	/* entered and left again, as an HTTP request served a piece at a time */
	ot_span_enter(&c);
	assert_ptr_equal(ot_span_current(), &c);
	ot_span_leave(&c);
	assert_ptr_equal(ot_span_current(), &a);
	ot_span_end(&c);
	ot_span_end(&a);
	assert_null(ot_span_current());
	/* a span never begun is never current */
	memset(&d, 0, sizeof d);
	ot_span_enter(&d);
	assert_null(ot_span_current());
}

static void
an_event_names_the_current_span_else_its_cause(void **state)
{
	struct ot_event ev;
	struct ot_span s;
	char tp[56];

	(void)state;
	ot_event_init(&ev, OT_EV_ORDER_STATUS_UPDATED, "0b6c0000-0000-4000-8000-000000000001", 1, "t", NULL, TP);
	assert_string_equal(ev.traceparent, TP); /* no span: the cause's context as it came */
	ot_event_clear(&ev);
	ot_span_begin(&s, "handle", OT_SPAN_CONSUMER, TP);
	ot_event_init(&ev, OT_EV_ORDER_STATUS_UPDATED, "0b6c0000-0000-4000-8000-000000000001", 1, "t", NULL, TP);
	ot_span_traceparent(&s, tp);
	assert_string_equal(ev.traceparent, tp);
	ot_event_clear(&ev);
	ot_span_end(&s);
	ot_event_init(&ev, OT_EV_ORDER_STATUS_UPDATED, "0b6c0000-0000-4000-8000-000000000001", 1, "t", NULL, NULL);
	assert_true(ot_traceparent_valid(ev.traceparent));
	ot_event_clear(&ev);
}

static void
a_url_must_be_http(void **state)
{
	char err[256];

	(void)state;
	assert_int_equal(ot_trace_start("t", "ftp://x/spans", err, sizeof err), -1);
	assert_non_null(strstr(err, "expected an http:// or https:// URL"));
	/* a password in it is never shown */
	assert_int_equal(ot_trace_start("t", "ftp://user:s3cret@collector:9411/spans", err, sizeof err), -1);
	assert_null(strstr(err, "s3cret"));
	assert_non_null(strstr(err, "ftp://user:***@collector:9411/spans"));
	assert_int_equal(ot_trace_start("t", "", err, sizeof err), 0);
	assert_false(ot_trace_enabled());
	ot_trace_stop(100); /* never started: nothing to do */
}

static void
a_collector_that_is_down_costs_dropped_spans_not_time(void **state)
{
	struct sockaddr_in sa = {0};
	socklen_t len = sizeof sa;
	struct ot_span s;
	char url[64], err[256];
	long long t0;
	int fd, i;

	(void)state;
	/* A port bound and closed again: nothing listens there. */
	fd = socket(AF_INET, SOCK_STREAM, 0);
	sa.sin_family = AF_INET;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
	close(fd);
	snprintf(url, sizeof url, "http://127.0.0.1:%d/api/v2/spans", ntohs(sa.sin_port));
	assert_int_equal(ot_trace_start("t", url, err, sizeof err), 0);
	assert_true(ot_trace_enabled());
	t0 = ot_now_ms();
	for (i = 0; i < 20000; i++) { /* more than the queue holds */
		ot_span_begin(&s, "x", OT_SPAN_INTERNAL, NULL);
		assert_true(s.exported);
		ot_span_tag(&s, "k", "v");
		ot_span_end(&s);
	}
	assert_true(ot_now_ms() - t0 < 5000);
	ot_trace_stop(1000);
	assert_true(ot_now_ms() - t0 < 8000);
	assert_false(ot_trace_enabled());
	assert_int_equal(ot_trace_dropped(), 20000);
	assert_int_equal(ot_trace_sent(), 0);
	/* stopped: spans are ids again */
	ot_span_begin(&s, "x", OT_SPAN_INTERNAL, NULL);
	assert_false(s.exported);
	ot_span_end(&s);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(a_traceparent_is_continued),
		cmocka_unit_test(upper_case_is_lowered_and_invalid_parents_start_a_trace),
		cmocka_unit_test(spans_nest_on_the_current_one),
		cmocka_unit_test(an_event_names_the_current_span_else_its_cause),
		cmocka_unit_test(a_url_must_be_http),
		cmocka_unit_test(a_collector_that_is_down_costs_dropped_spans_not_time),
	};
	ot_log_init("test_trace", "error"); /* the exporter's warnings are expected here */
	return cmocka_run_group_tests(tests, NULL, NULL);
}
