#!/usr/bin/env bats
# ot_redis against the real Redis: scripts by their digest and the pipelined batch write, through
# the cmocka binary build/test/test_redis (built by make units).

setup() {
	load helpers
	common_setup
}

@test "ot_redis: scripts run by SHA-1 and load again after SCRIPT FLUSH; put_many writes a batch in order, stale ones 0, a broken connection OT_ESERVICE; the pipe answers each command once, in order, in the URL's db" {
	[ -x "$ROOT/build/test/test_redis" ] || { echo "build/test/test_redis is missing: make units" >&2; false; }
	run env OT_TEST_REDIS_URL="$OT_REDIS_URL" "$ROOT/build/test/test_redis"
	echo "$output"
	assert_success
	assert_output --partial '[  PASSED  ] 5 test(s).'
	refute_output --partial FAILED
}
