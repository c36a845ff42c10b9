#!/usr/bin/env bats
# The small HTTP server every long-running tool shares (lib/ot_httpd.c), on a health port:
# what ot-serve's API gets from it, its /healthz, /readyz and /metrics get too.
bats_require_minimum_version 1.5.0

setup() {
	load helpers
	common_setup
	PORT=$(free_port)
}

teardown() {
	[ -n "${BATS_TEST_COMPLETED:-}" ] || [ ! -s "$BATS_TEST_TMPDIR/tool.log" ] ||
		tail -20 "$BATS_TEST_TMPDIR/tool.log" | sed 's/^/# tool: /' >&3
	stop_bg
}

# A long-running tool with a health port on $PORT: the inventory outbox's relay (to /dev/null).
health_port() {
	start_bg "$BATS_TEST_TMPDIR/tool.log" sh -c "exec ot-relay --db inventory --http-addr 127.0.0.1:$PORT $* >/dev/null"
	wait_health "$PORT"
}

@test "health port: a tool starts without a warning from libmicrohttpd (no thread pool of one)" {
	health_port
	run curl -s "http://127.0.0.1:$PORT/metrics"
	assert_success
	run grep -c '"level":"warn"' "$BATS_TEST_TMPDIR/tool.log"
	assert_output 0
	run ! grep -q 'thread pool' "$BATS_TEST_TMPDIR/tool.log"
}
