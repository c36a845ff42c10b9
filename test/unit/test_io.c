/* ot_io: stdin input without a broker; with OT_TEST_KAFKA_BROKERS set (test/bats/ot-relay.bats),
 * ot_in_stop_at_end against a real broker: records written after it looked are not read. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "ot_config.h"
#include "ot_io.h"
#include "ot_topics.h"

static char err[512];

/* From a file there are no partitions: stop_at_end does nothing, and every line is read. */
static void
stop_at_end_on_a_file_does_nothing(void **state)
{
	char path[] = "/tmp/test_io.XXXXXX";
	struct ot_config cfg;
	struct ot_in *in;
	struct ot_msg m;
	int fd = mkstemp(path), rc, n = 0;

	(void)state;
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "a\nb\n", 4), 4);
	close(fd);
	ot_config_init(&cfg, "test");
	in = ot_in_open(path, &cfg, &rc, err, sizeof err);
	assert_non_null(in);
	assert_int_equal(ot_in_stop_at_end(in, err, sizeof err), 0);
	while (ot_in_next(in, &m, 1000, err, sizeof err) == 1)
		n++;
	assert_int_equal(n, 2);
	ot_in_free(in);
	ot_config_free(&cfg);
	unlink(path);
}

static void
send_n(struct ot_out *o, const char *topic, int from, int n)
{
	char v[32];
	int i;

	for (i = from; i < from + n; i++) {
		snprintf(v, sizeof v, "r%d", i);
		assert_int_equal(ot_out_send(o, topic, "k", v, strlen(v), NULL, 0, err, sizeof err), 0);
	}
	assert_int_equal(ot_out_flush(o, 10000, err, sizeof err), 0);
}

/* Three records, then stop_at_end, then two more: a run to the end reads the three only, in order. */
static void
stop_at_end_reads_only_what_was_there(void **state)
{
	const char *brokers = getenv("OT_TEST_KAFKA_BROKERS");
	char topic[64], spec[80], group[80];
	struct ot_topic_spec want = {topic, 2, -1, NULL, 0};
	struct ot_config cfg;
	struct ot_out *o;
	struct ot_in *in;
	struct ot_msg m;
	int rc, n = 0;

	(void)state;
	snprintf(topic, sizeof topic, "stop-at-end.%ld", (long)getpid());
	snprintf(spec, sizeof spec, "kafka:%s", topic);
	snprintf(group, sizeof group, "g-%s", topic);
	ot_config_init(&cfg, "test");
	cfg.brokers = strdup(brokers);
	cfg.group = strdup(group);
	cfg.offset = strdup("beginning");
	cfg.exit_at_end = 1;
	assert_int_equal(ot_topics_ensure(&cfg, &want, 1, NULL, err, sizeof err), 0);
	o = ot_out_open("kafka", &cfg, &rc, err, sizeof err);
	assert_non_null(o);
	send_n(o, topic, 0, 3);
	in = ot_in_open(spec, &cfg, &rc, err, sizeof err);
	assert_non_null(in);
	if (ot_in_stop_at_end(in, err, sizeof err))
		fail_msg("%s", err);
	send_n(o, topic, 3, 2);
	while ((rc = ot_in_next(in, &m, 1000, err, sizeof err)) >= 0) {
		if (rc == 0)
			continue;
		if (m.len != 2 || m.value[0] != 'r' || m.value[1] < '0' || m.value[1] > '2')
			fail_msg("read %.*s, written after stop_at_end looked", (int)m.len, m.value);
		n++;
	}
	assert_int_equal(n, 3);
	ot_in_free(in);
	ot_out_free(o);
	ot_config_free(&cfg);
}

int
main(void)
{
	const struct CMUnitTest pure[] = {
		cmocka_unit_test(stop_at_end_on_a_file_does_nothing),
	};
	const struct CMUnitTest kafka[] = {
		cmocka_unit_test(stop_at_end_reads_only_what_was_there),
	};
	int rc = cmocka_run_group_tests(pure, NULL, NULL);

	if (getenv("OT_TEST_KAFKA_BROKERS"))
		rc |= cmocka_run_group_tests(kafka, NULL, NULL);
	return rc;
}
