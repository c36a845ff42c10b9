/* Unit tests of configuration (flags, then OT_* variables, then defaults), Redis URLs and
 * exit statuses. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ot_config.h"
#include "ot_err.h"
#include "ot_redis.h"
#include "ot_outcome.h"
#include "ot_tool.h"

static char err[512];

static int
clear_env(void **state)
{
	(void)state;
	unsetenv("OT_KAFKA_BROKERS"); unsetenv("OT_ORDERS_DB"); unsetenv("OT_INVENTORY_DB");
	unsetenv("OT_REDIS_URL"); unsetenv("OT_LOG_LEVEL"); unsetenv("OT_HTTP_ADDR");
	unsetenv("OT_KAFKA_GROUP"); unsetenv("OT_KAFKA_OFFSET"); unsetenv("OT_RETRY_ATTEMPTS");
	unsetenv("OT_KAFKA_CONFIG");
	return 0;
}

static void
defaults_apply_when_nothing_is_set(void **state)
{
	struct ot_config c;

	(void)state;
	ot_config_init(&c, "ot-test");
	assert_int_equal(ot_config_finish(&c, ":8080", err, sizeof err), 0);
	assert_string_equal(c.brokers, "localhost:9092");
	assert_string_equal(c.orders_db, "dbname=ot_orders");
	assert_string_equal(c.inventory_db, "dbname=ot_inventory");
	assert_string_equal(c.redis_url, "redis://127.0.0.1:6379/0");
	assert_string_equal(c.log_level, "info");
	assert_string_equal(c.http_addr, ":8080");
	assert_string_equal(c.group, "ot-test");
	assert_string_equal(c.offset, "stored");
	ot_config_free(&c);
}

static void
environment_beats_defaults(void **state)
{
	struct ot_config c;

	(void)state;
	setenv("OT_KAFKA_BROKERS", "k1:9092,k2:9092", 1);
	setenv("OT_ORDERS_DB", "host=db1 dbname=o", 1);
	setenv("OT_INVENTORY_DB", "host=db2 dbname=i", 1);
	setenv("OT_REDIS_URL", "redis://r:1/2", 1);
	setenv("OT_LOG_LEVEL", "warn", 1);
	setenv("OT_HTTP_ADDR", "127.0.0.1:9999", 1);
	ot_config_init(&c, "ot-test");
	assert_int_equal(ot_config_finish(&c, ":8080", err, sizeof err), 0);
	assert_string_equal(c.brokers, "k1:9092,k2:9092");
	assert_string_equal(c.orders_db, "host=db1 dbname=o");
	assert_string_equal(c.inventory_db, "host=db2 dbname=i");
	assert_string_equal(c.redis_url, "redis://r:1/2");
	assert_string_equal(c.log_level, "warn");
	assert_string_equal(c.http_addr, "127.0.0.1:9999");
	ot_config_free(&c);
}

static void
flags_beat_environment(void **state)
{
	struct ot_config c;

	(void)state;
	setenv("OT_KAFKA_BROKERS", "env:9092", 1);
	setenv("OT_ORDERS_DB", "dbname=env", 1);
	setenv("OT_REDIS_URL", "redis://env:1/0", 1);
	setenv("OT_LOG_LEVEL", "error", 1);
	ot_config_init(&c, "ot-test");
	assert_int_equal(ot_config_opt(&c, 'b', "flag:9092", err, sizeof err), 1);
	assert_int_equal(ot_config_opt(&c, OT_OPT_ORDERS_DB, "dbname=flag", err, sizeof err), 1);
	assert_int_equal(ot_config_opt(&c, OT_OPT_REDIS, "redis://flag:2/0", err, sizeof err), 1);
	assert_int_equal(ot_config_opt(&c, OT_OPT_LOG_LEVEL, "debug", err, sizeof err), 1);
	assert_int_equal(ot_config_opt(&c, OT_OPT_HTTP_ADDR, ":1234", err, sizeof err), 1);
	assert_int_equal(ot_config_opt(&c, 'G', "my-group", err, sizeof err), 1);
	assert_int_equal(ot_config_finish(&c, ":8080", err, sizeof err), 0);
	assert_string_equal(c.brokers, "flag:9092");
	assert_string_equal(c.orders_db, "dbname=flag");
	assert_string_equal(c.redis_url, "redis://flag:2/0");
	assert_string_equal(c.log_level, "debug");
	assert_string_equal(c.http_addr, ":1234");
	assert_string_equal(c.group, "my-group");
	ot_config_free(&c);
}

static void
offsets_are_validated(void **state)
{
	static const char *good[] = {"beginning", "end", "stored", "42", "-3", "s@1700000000000"};
	static const char *bad[] = {"yesterday", "", "12abc", "-0", "s@abc", "-x"};
	struct ot_config c;
	size_t i;

	(void)state;
	ot_config_init(&c, "ot-test");
	for (i = 0; i < sizeof good / sizeof good[0]; i++)
		assert_int_equal(ot_config_opt(&c, 'o', good[i], err, sizeof err), 1);
	assert_string_equal(c.offset, "s@1700000000000");
	for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		err[0] = '\0';
		assert_int_equal(ot_config_opt(&c, 'o', bad[i], err, sizeof err), -1);
		assert_non_null(strstr(err, "-o"));
	}
	ot_config_free(&c);
}

static void
offset_parse_reads_each_form(void **state)
{
	static const struct { const char *s; enum ot_offset_kind kind; long long value; } good[] = {
		{"stored", OT_OFFSET_STORED, 0}, {"beginning", OT_OFFSET_BEGINNING, 0},
		{"end", OT_OFFSET_END, 0}, {"0", OT_OFFSET_ABS, 0}, {"42", OT_OFFSET_ABS, 42},
		{"9223372036854775807", OT_OFFSET_ABS, 9223372036854775807LL},
		{"-1", OT_OFFSET_TAIL, 1}, {"-250", OT_OFFSET_TAIL, 250},
		{"-9223372036854773807", OT_OFFSET_TAIL, OT_OFFSET_TAIL_MAX},
		{"s@0", OT_OFFSET_TIME, 0}, {"s@1700000000000", OT_OFFSET_TIME, 1700000000000LL},
	};
	static const char *bad[] = {
		"", "yesterday", "Beginning", "stored ", "12abc", " 5", "+5", "5 ", "0x10", "1e3",
		"-", "-0", "--1", "- 1", "-abc", "-9223372036854773808", "9223372036854775808",
		"99999999999999999999", "s@", "s@abc", "s@-1", "s@+1", "s@ 1", "s@1.5", "s@1x", "S@1",
		"@1", "e@1",
	};
	struct ot_offset o;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof good / sizeof good[0]; i++) {
		assert_int_equal(ot_offset_parse(good[i].s, &o), 0);
		assert_int_equal(o.kind, good[i].kind);
		assert_true(o.value == good[i].value);
	}
	for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		o.kind = OT_OFFSET_TIME;
		o.value = 7;
		if (ot_offset_parse(bad[i], &o) != -1)
			fail_msg("\"%s\" was accepted", bad[i]);
		assert_int_equal(o.kind, OT_OFFSET_STORED);
		assert_true(o.value == 0);
	}
	assert_int_equal(ot_offset_parse(NULL, &o), -1);
}

static void
a_bad_offset_in_the_environment_is_refused(void **state)
{
	struct ot_config c;

	(void)state;
	setenv("OT_KAFKA_OFFSET", "-x", 1);
	ot_config_init(&c, "ot-test");
	assert_int_equal(ot_config_finish(&c, NULL, err, sizeof err), -1);
	assert_non_null(strstr(err, "OT_KAFKA_OFFSET=-x"));
	ot_config_free(&c);
	setenv("OT_KAFKA_OFFSET", "-5", 1);
	ot_config_init(&c, "ot-test");
	assert_int_equal(ot_config_finish(&c, NULL, err, sizeof err), 0);
	assert_string_equal(c.offset, "-5");
	ot_config_free(&c);
}

static void
counts_and_properties_are_validated(void **state)
{
	struct ot_config c;

	(void)state;
	ot_config_init(&c, "ot-test");
	assert_int_equal(ot_config_opt(&c, 'c', "10", err, sizeof err), 1);
	assert_int_equal(c.count, 10);
	assert_int_equal(ot_config_opt(&c, 'c', "-1", err, sizeof err), -1);
	assert_int_equal(ot_config_opt(&c, 'c', "ten", err, sizeof err), -1);
	assert_int_equal(ot_config_opt(&c, 'X', "linger.ms=5", err, sizeof err), 1);
	assert_int_equal(c.nprops, 1);
	assert_string_equal(c.props[0], "linger.ms=5");
	assert_int_equal(ot_config_opt(&c, 'X', "linger.ms", err, sizeof err), -1);
	assert_int_equal(ot_config_opt(&c, 'X', "=5", err, sizeof err), -1);
	assert_int_equal(ot_config_opt(&c, 'e', NULL, err, sizeof err), 1);
	assert_int_equal(c.exit_at_end, 1);
	assert_int_equal(ot_config_opt(&c, 'z', "x", err, sizeof err), 0);
	ot_config_free(&c);
}

/* Writes text to a new file under /tmp; returns its name in path. */
static void
write_file(char *path, size_t size, const char *text)
{
	FILE *f;
	int fd;

	snprintf(path, size, "/tmp/ot-test-kafka-XXXXXX");
	fd = mkstemp(path);
	assert_true(fd >= 0);
	f = fdopen(fd, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

static void
a_kafka_config_file_comes_before_x(void **state)
{
	char path[64];
	struct ot_config c;

	(void)state;
	write_file(path, sizeof path,
	           "# SASL for the production cluster\n"
	           "\n"
	           "security.protocol=SASL_SSL\n"
	           "  sasl.mechanism = SCRAM-SHA-512  \r\n"
	           "\tsasl.password=p=w#d \n"
	           "   # indented comment\n"
	           "linger.ms=50\n");
	ot_config_init(&c, "ot-test");
	assert_int_equal(ot_config_opt(&c, 'X', "linger.ms=5", err, sizeof err), 1);
	assert_int_equal(ot_config_opt(&c, 'F', path, err, sizeof err), 1);
	assert_int_equal(ot_config_finish(&c, NULL, err, sizeof err), 0);
	assert_int_equal(c.nprops, 5);
	assert_string_equal(c.props[0], "security.protocol=SASL_SSL");
	assert_string_equal(c.props[1], "sasl.mechanism=SCRAM-SHA-512");
	assert_string_equal(c.props[2], "sasl.password=p=w#d");
	assert_string_equal(c.props[3], "linger.ms=50");
	assert_string_equal(c.props[4], "linger.ms=5"); /* -X last: it wins */
	ot_config_free(&c);
	/* From the environment when -F is not given. */
	setenv("OT_KAFKA_CONFIG", path, 1);
	ot_config_init(&c, "ot-test");
	assert_int_equal(ot_config_finish(&c, NULL, err, sizeof err), 0);
	assert_int_equal(c.nprops, 4);
	assert_string_equal(c.kafka_config, path);
	ot_config_free(&c);
	unlink(path);
}

static void
a_bad_kafka_config_file_is_refused_without_its_secrets(void **state)
{
	char path[64];
	struct ot_config c;

	(void)state;
	write_file(path, sizeof path, "sasl.username=svc\nsasl.password hunter2\n");
	ot_config_init(&c, "ot-test");
	assert_int_equal(ot_config_opt(&c, 'F', path, err, sizeof err), 1);
	assert_int_equal(ot_config_finish(&c, NULL, err, sizeof err), -1);
	assert_non_null(strstr(err, ":2: expected property=value"));
	assert_null(strstr(err, "hunter2"));
	assert_int_equal(c.nprops, 0);
	ot_config_free(&c);
	unlink(path);
	write_file(path, sizeof path, " = x\n");
	ot_config_init(&c, "ot-test");
	assert_int_equal(ot_config_opt(&c, 'F', path, err, sizeof err), 1);
	assert_int_equal(ot_config_finish(&c, NULL, err, sizeof err), -1);
	ot_config_free(&c);
	unlink(path);
	ot_config_init(&c, "ot-test");
	assert_int_equal(ot_config_opt(&c, 'F', "/nonexistent/kafka.properties", err, sizeof err), 1);
	assert_int_equal(ot_config_finish(&c, NULL, err, sizeof err), -1);
	assert_non_null(strstr(err, "/nonexistent/kafka.properties"));
	ot_config_free(&c);
}

static void
a_bad_log_level_is_refused(void **state)
{
	struct ot_config c;

	(void)state;
	setenv("OT_LOG_LEVEL", "loud", 1);
	ot_config_init(&c, "ot-test");
	assert_int_equal(ot_config_finish(&c, NULL, err, sizeof err), -1);
	assert_non_null(strstr(err, "loud"));
	ot_config_free(&c);
	ot_config_free(NULL);
}

static void
attempts_come_from_flag_then_environment(void **state)
{
	struct ot_config c;

	(void)state;
	ot_config_init(&c, "ot-test");
	assert_int_equal(ot_config_finish(&c, NULL, err, sizeof err), 0);
	assert_int_equal(c.attempts, 8);
	ot_config_free(&c);
	setenv("OT_RETRY_ATTEMPTS", "3", 1);
	ot_config_init(&c, "ot-test");
	assert_int_equal(ot_config_finish(&c, NULL, err, sizeof err), 0);
	assert_int_equal(c.attempts, 3);
	ot_config_free(&c);
	ot_config_init(&c, "ot-test");
	assert_int_equal(ot_config_opt(&c, OT_OPT_ATTEMPTS, "5", err, sizeof err), 1);
	assert_int_equal(ot_config_finish(&c, NULL, err, sizeof err), 0);
	assert_int_equal(c.attempts, 5);
	assert_int_equal(ot_config_opt(&c, OT_OPT_ATTEMPTS, "0", err, sizeof err), -1);
	ot_config_free(&c);
	setenv("OT_RETRY_ATTEMPTS", "many", 1);
	ot_config_init(&c, "ot-test");
	assert_int_equal(ot_config_finish(&c, NULL, err, sizeof err), -1);
	ot_config_free(&c);
	unsetenv("OT_RETRY_ATTEMPTS");
}

static void
redis_urls(void **state)
{
	struct ot_redis_url u;

	(void)state;
	assert_int_equal(ot_redis_parse_url("redis://cache", &u, err, sizeof err), 0);
	assert_string_equal(u.host, "cache");
	assert_int_equal(u.port, 6379);
	assert_int_equal(u.db, 0);
	assert_int_equal(ot_redis_parse_url("redis://cache:1234/2", &u, err, sizeof err), 0);
	assert_string_equal(u.host, "cache");
	assert_int_equal(u.port, 1234);
	assert_int_equal(u.db, 2);
	assert_int_equal(ot_redis_parse_url("redis://:s3cret@h:1/0", &u, err, sizeof err), 0);
	assert_string_equal(u.password, "s3cret");
	assert_string_equal(u.host, "h");
	assert_int_equal(ot_redis_parse_url("unix:///tmp/r.sock", &u, err, sizeof err), 0);
	assert_string_equal(u.path, "/tmp/r.sock");
	assert_int_equal(ot_redis_parse_url("unix:///tmp/r.sock?db=3", &u, err, sizeof err), 0);
	assert_string_equal(u.path, "/tmp/r.sock");
	assert_int_equal(u.db, 3);
	assert_int_equal(ot_redis_parse_url("http://x", &u, err, sizeof err), -1);
	assert_int_equal(ot_redis_parse_url("redis://", &u, err, sizeof err), -1);
	assert_int_equal(ot_redis_parse_url("redis://h:0", &u, err, sizeof err), -1);
	assert_int_equal(ot_redis_parse_url("redis://h:99999", &u, err, sizeof err), -1);
	assert_int_equal(ot_redis_parse_url("redis://h/x", &u, err, sizeof err), -1);
	assert_int_equal(ot_redis_parse_url("", &u, err, sizeof err), -1);
	/* a db number past an int used to wrap to db 0 */
	assert_int_equal(ot_redis_parse_url("redis://h/4294967296", &u, err, sizeof err), -1);
	assert_int_equal(ot_redis_parse_url("redis://h/-1", &u, err, sizeof err), -1);
	assert_int_equal(ot_redis_parse_url("unix:///tmp/r.sock?db=4294967297", &u, err, sizeof err), -1);
	assert_int_equal(ot_redis_parse_url("unix:///tmp/r.sock?db=", &u, err, sizeof err), -1);
	assert_int_equal(ot_redis_parse_url("unix:///tmp/r.sock?x=1", &u, err, sizeof err), -1);
	/* IPv6 */
	assert_int_equal(ot_redis_parse_url("redis://[::1]:6380/1", &u, err, sizeof err), 0);
	assert_string_equal(u.host, "::1");
	assert_int_equal(u.port, 6380);
	assert_int_equal(u.db, 1);
	assert_int_equal(ot_redis_parse_url("redis://:pw@[fe80::1]", &u, err, sizeof err), 0);
	assert_string_equal(u.host, "fe80::1");
	assert_int_equal(u.port, 6379);
	assert_int_equal(ot_redis_parse_url("redis://[::1", &u, err, sizeof err), -1);
	assert_int_equal(ot_redis_parse_url("redis://[]:1", &u, err, sizeof err), -1);
	assert_int_equal(ot_redis_parse_url("redis://[::1]x", &u, err, sizeof err), -1);
}

static void
redis_urls_with_acl_users_and_tls(void **state)
{
	struct ot_redis_url u;

	(void)state;
	assert_int_equal(ot_redis_parse_url("redis://app:s3cret@h:1/2", &u, err, sizeof err), 0);
	assert_string_equal(u.user, "app");
	assert_string_equal(u.password, "s3cret");
	assert_string_equal(u.host, "h");
	assert_int_equal(u.port, 1);
	assert_int_equal(u.db, 2);
	assert_int_equal(u.tls, 0);
	/* No ":": a password alone, as redis-cli reads it. */
	assert_int_equal(ot_redis_parse_url("redis://s3cret@h", &u, err, sizeof err), 0);
	assert_string_equal(u.user, "");
	assert_string_equal(u.password, "s3cret");
	/* Percent-encoded user and password; the last @ ends them. */
	assert_int_equal(ot_redis_parse_url("redis://a%40b:p%3Aw@rd@h:7/1", &u, err, sizeof err), 0);
	assert_string_equal(u.user, "a@b");
	assert_string_equal(u.password, "p:w@rd");
	assert_string_equal(u.host, "h");
	assert_int_equal(u.port, 7);
	assert_int_equal(ot_redis_parse_url("rediss://app:pw@cache.example:6380/3", &u, err, sizeof err), 0);
	assert_int_equal(u.tls, 1);
	assert_string_equal(u.host, "cache.example");
	assert_int_equal(u.port, 6380);
	assert_int_equal(u.db, 3);
	assert_string_equal(u.cacert, "");
	assert_int_equal(ot_redis_parse_url("rediss://h/0?cacert=/etc/redis/ca.pem", &u, err, sizeof err), 0);
	assert_string_equal(u.cacert, "/etc/redis/ca.pem");
	assert_int_equal(u.db, 0);
	assert_int_equal(ot_redis_parse_url("rediss://h?cacert=/ca.pem", &u, err, sizeof err), 0);
	assert_string_equal(u.host, "h");
	assert_string_equal(u.cacert, "/ca.pem");
	/* Refused, and the message never shows the password. */
	assert_int_equal(ot_redis_parse_url("redis://u:hunter2@h:0/1", &u, err, sizeof err), -1);
	assert_null(strstr(err, "hunter2"));
	assert_non_null(strstr(err, "***@h:0/1"));
	assert_int_equal(ot_redis_parse_url("redis://u:hun%zzter2@h", &u, err, sizeof err), -1);
	assert_null(strstr(err, "hunter2"));
	assert_int_equal(ot_redis_parse_url("redis://u:pw%4@h", &u, err, sizeof err), -1);
	assert_int_equal(ot_redis_parse_url("redis://h/0?cacert=/ca.pem", &u, err, sizeof err), -1);
	assert_int_equal(ot_redis_parse_url("rediss://h/0?verify=no", &u, err, sizeof err), -1);
	assert_int_equal(ot_redis_parse_url("rediss://h/0?cacert=", &u, err, sizeof err), -1);
	assert_int_equal(ot_redis_parse_url("redis://h:12x/0", &u, err, sizeof err), -1);
	assert_int_equal(ot_redis_parse_url("redis://h/1x", &u, err, sizeof err), -1);
	assert_int_equal(ot_redis_parse_url("redis://u:pw@", &u, err, sizeof err), -1);
	assert_int_equal(ot_redis_parse_url("rediss://", &u, err, sizeof err), -1);
}

static void
a_redis_url_is_checked_at_start(void **state)
{
	struct ot_config c;

	(void)state;
	setenv("OT_REDIS_URL", "redis://u:hunter2@h:0/0", 1);
	ot_config_init(&c, "ot-test");
	assert_int_equal(ot_tool_finish(&c, NULL, err, sizeof err), -1);
	assert_null(strstr(err, "hunter2"));
	ot_config_free(&c);
	setenv("OT_REDIS_URL", "rediss://h:6380/0", 1);
	ot_config_init(&c, "ot-test");
	assert_int_equal(ot_tool_finish(&c, NULL, err, sizeof err), ot_redis_tls_available() ? 0 : -1);
	if (!ot_redis_tls_available())
		assert_non_null(strstr(err, "no TLS"));
	ot_config_free(&c);
	unsetenv("OT_REDIS_URL");
}

static void
exit_statuses_follow_sysexits(void **state)
{
	(void)state;
	assert_int_equal(ot_exit_status(OT_OK), 0);
	assert_int_equal(ot_exit_status(OT_STALE), 0);
	assert_int_equal(ot_exit_status(OT_ENOTFOUND), 65);
	assert_int_equal(ot_exit_status(OT_ERACE), 75);
	assert_int_equal(ot_exit_status(OT_EINPUT), 65);
	assert_int_equal(ot_exit_status(OT_ESERVICE), 69);
	assert_int_equal(ot_exit_status(OT_EINTERNAL), 70);
	assert_int_equal(ot_exit_status(OT_EOUTPUT), 74);
	assert_int_equal(ot_exit_status(OT_ECONFIG), 78);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup(defaults_apply_when_nothing_is_set, clear_env),
		cmocka_unit_test_setup(environment_beats_defaults, clear_env),
		cmocka_unit_test_setup(flags_beat_environment, clear_env),
		cmocka_unit_test_setup(offsets_are_validated, clear_env),
		cmocka_unit_test(offset_parse_reads_each_form),
		cmocka_unit_test_setup(a_bad_offset_in_the_environment_is_refused, clear_env),
		cmocka_unit_test_setup(counts_and_properties_are_validated, clear_env),
		cmocka_unit_test_setup(a_kafka_config_file_comes_before_x, clear_env),
		cmocka_unit_test_setup(a_bad_kafka_config_file_is_refused_without_its_secrets, clear_env),
		cmocka_unit_test_setup(a_bad_log_level_is_refused, clear_env),
		cmocka_unit_test_setup(attempts_come_from_flag_then_environment, clear_env),
		cmocka_unit_test(redis_urls),
		cmocka_unit_test(redis_urls_with_acl_users_and_tls),
		cmocka_unit_test_setup(a_redis_url_is_checked_at_start, clear_env),
		cmocka_unit_test(exit_statuses_follow_sysexits),
	};
	return cmocka_run_group_tests_name("configuration", tests, NULL, NULL);
}
