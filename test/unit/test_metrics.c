/* Unit tests of the metrics registry: series by labels, histograms, escaping, the text format. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "ot_metrics.h"

static char *
render(void)
{
	char *buf = NULL;
	size_t len = 0;

	assert_int_equal(ot_metrics_render(&buf, &len), 0);
	assert_non_null(buf);
	assert_int_equal(strlen(buf), len);
	return buf;
}

static int
reset(void **state)
{
	(void)state;
	ot_metrics_reset();
	return 0;
}

static void
counters_keep_one_series_per_label_values(void **state)
{
	struct ot_metric *m = ot_metric_new(OT_COUNTER, "t_records_total", "Records.", "tool,result", NULL, 0);
	char *out;

	(void)state;
	ot_metric_add(m, 1, "a", "applied");
	ot_metric_add(m, 2, "a", "applied");
	ot_metric_add(m, 1, "a", "bad");
	assert_true(ot_metric_get(m, "a", "applied") == 3);
	out = render();
	assert_string_equal(out, "# HELP t_records_total Records.\n# TYPE t_records_total counter\n"
	                         "t_records_total{tool=\"a\",result=\"applied\"} 3\n"
	                         "t_records_total{tool=\"a\",result=\"bad\"} 1\n");
	free(out);
}

static void
a_family_without_labels_shows_zero_from_the_start(void **state)
{
	char *out;

	(void)state;
	ot_metric_new(OT_GAUGE, "t_up", "Up.", NULL, NULL, 0);
	out = render();
	assert_non_null(strstr(out, "# TYPE t_up gauge\nt_up 0\n"));
	free(out);
}

static void
registering_again_returns_the_family_and_another_type_is_refused(void **state)
{
	struct ot_metric *a = ot_metric_new(OT_COUNTER, "t_x_total", "X.", "k", NULL, 0);

	(void)state;
	assert_ptr_equal(ot_metric_new(OT_COUNTER, "t_x_total", "X.", "k", NULL, 0), a);
	assert_null(ot_metric_new(OT_GAUGE, "t_x_total", "X.", "k", NULL, 0));
	ot_metric_add(NULL, 1, "ignored"); /* a NULL family is a no-op */
}

static void
histograms_render_cumulative_buckets_sum_and_count(void **state)
{
	static const double b[] = {0.1, 1};
	struct ot_metric *h = ot_metric_new(OT_HISTOGRAM, "t_seconds", "Time.", "topic", b, 2);
	char *out;

	(void)state;
	ot_metric_observe(h, 0.05, "x");
	ot_metric_observe(h, 0.5, "x");
	ot_metric_observe(h, 5, "x");
	out = render();
	assert_string_equal(out, "# HELP t_seconds Time.\n# TYPE t_seconds histogram\n"
	                         "t_seconds_bucket{topic=\"x\",le=\"0.1\"} 1\n"
	                         "t_seconds_bucket{topic=\"x\",le=\"1\"} 2\n"
	                         "t_seconds_bucket{topic=\"x\",le=\"+Inf\"} 3\n"
	                         "t_seconds_sum{topic=\"x\"} 5.55\n"
	                         "t_seconds_count{topic=\"x\"} 3\n");
	free(out);
}

static void
label_values_are_escaped(void **state)
{
	struct ot_metric *g = ot_metric_new(OT_GAUGE, "t_g", "G.", "v", NULL, 0);
	char *out;

	(void)state;
	ot_metric_set(g, 2, "a\"b\\c\nd");
	out = render();
	assert_non_null(strstr(out, "t_g{v=\"a\\\"b\\\\c\\nd\"} 2\n"));
	free(out);
}

static void
clear_drops_every_series(void **state)
{
	struct ot_metric *g = ot_metric_new(OT_GAUGE, "t_lag", "Lag.", "partition", NULL, 0);
	char *out;

	(void)state;
	ot_metric_set(g, 5, "0");
	ot_metric_clear(g);
	ot_metric_set(g, 1, "1");
	out = render();
	assert_null(strstr(out, "partition=\"0\""));
	assert_non_null(strstr(out, "t_lag{partition=\"1\"} 1\n"));
	free(out);
}

static int
keep_odd(const char *const *values, void *arg)
{
	(void)arg;
	return strcmp(values[0], "1") == 0 || strcmp(values[0], "3") == 0;
}

static void
retain_keeps_only_the_series_kept(void **state)
{
	struct ot_metric *g = ot_metric_new(OT_GAUGE, "t_r", "R.", "partition", NULL, 0);
	char *out;

	(void)state;
	for (int i = 0; i < 4; i++)
		ot_metric_set(g, i, (const char *[]){"0", "1", "2", "3"}[i]);
	ot_metric_retain(g, keep_odd, NULL);
	ot_metric_set(g, 9, "4"); /* the list's tail still right after a removal at its end */
	out = render();
	assert_string_equal(out, "# HELP t_r R.\n# TYPE t_r gauge\nt_r{partition=\"1\"} 1\n"
	                         "t_r{partition=\"3\"} 3\nt_r{partition=\"4\"} 9\n");
	free(out);
}

static int seen;

static void
collect(void *arg)
{
	ot_metric_set(arg, ++seen);
}

static void
collectors_run_before_each_render_until_removed(void **state)
{
	struct ot_metric *g = ot_metric_new(OT_GAUGE, "t_c", "C.", NULL, NULL, 0);
	char *out;

	(void)state;
	seen = 0;
	assert_int_equal(ot_metrics_collector(collect, g), 0);
	free(render());
	out = render();
	assert_non_null(strstr(out, "t_c 2\n"));
	free(out);
	ot_metrics_collector_remove(collect, g);
	out = render();
	assert_non_null(strstr(out, "t_c 2\n"));
	free(out);
}

static void
process_metrics_are_there(void **state)
{
	char *out;

	(void)state;
	ot_metrics_process("ot-test", "9.9");
	out = render();
	assert_non_null(strstr(out, "ot_build_info{tool=\"ot-test\",version=\"9.9\"} 1\n"));
	assert_non_null(strstr(out, "\nprocess_start_time_seconds 1"));
	assert_non_null(strstr(out, "\nprocess_resident_memory_bytes "));
	assert_null(strstr(out, "\nprocess_resident_memory_bytes 0\n"));
	assert_null(strstr(out, "\nprocess_open_fds 0\n"));
	free(out);
}

static void *
bump(void *arg)
{
	for (int i = 0; i < 10000; i++)
		ot_metric_add(arg, 1, i % 2 ? "odd" : "even");
	return NULL;
}

static void
counting_from_many_threads_loses_nothing(void **state)
{
	struct ot_metric *m = ot_metric_new(OT_COUNTER, "t_n_total", "N.", "k", NULL, 0);
	pthread_t t[4];

	(void)state;
	for (int i = 0; i < 4; i++)
		assert_int_equal(pthread_create(&t[i], NULL, bump, m), 0);
	for (int i = 0; i < 4; i++)
		pthread_join(t[i], NULL);
	assert_true(ot_metric_get(m, "odd") == 20000);
	assert_true(ot_metric_get(m, "even") == 20000);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup(counters_keep_one_series_per_label_values, reset),
		cmocka_unit_test_setup(a_family_without_labels_shows_zero_from_the_start, reset),
		cmocka_unit_test_setup(registering_again_returns_the_family_and_another_type_is_refused, reset),
		cmocka_unit_test_setup(histograms_render_cumulative_buckets_sum_and_count, reset),
		cmocka_unit_test_setup(label_values_are_escaped, reset),
		cmocka_unit_test_setup(clear_drops_every_series, reset),
		cmocka_unit_test_setup(retain_keeps_only_the_series_kept, reset),
		cmocka_unit_test_setup(collectors_run_before_each_render_until_removed, reset),
		cmocka_unit_test_setup(process_metrics_are_there, reset),
		cmocka_unit_test_setup(counting_from_many_threads_loses_nothing, reset),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
