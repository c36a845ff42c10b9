#!/usr/bin/env bats
# The small HTTP server every long-running tool shares (lib/http/ot_httpd.c), on a health port:
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

@test "health port: 16 connections at once from one address, so one client cannot fill its slots and fail the liveness probe" {
	health_port
	# 100 connections from 127.0.0.2 trickling their heads: 16 get in, the rest are closed at once
	python3 "$ROOT/test/tools/slow-heads.py" 127.0.0.1 "$PORT" 100 3 127.0.0.2 > "$BATS_TEST_TMPDIR/flood" &
	flood=$!
	sleep 1
	# meanwhile the probes from elsewhere answer
	for i in 1 2 3; do
		run curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$PORT/healthz"
		assert_output 200
	done
	wait "$flood"
	echo "# $(cat "$BATS_TEST_TMPDIR/flood")" >&3
	run cat "$BATS_TEST_TMPDIR/flood"
	assert_output --partial '"failed": 0, "refused": 84, "open": 16'
	[ "$(metric_of "$PORT" ot_http_client_refused_total)" = 84 ]
}

@test "health port: a request with a body is answered at once (405, or 400 for a GET), never waited for" {
	health_port
	for args in "-p /healthz" "-p /metrics" "-m GET -p /healthz" "-m PUT -p /readyz"; do
		# shellcheck disable=SC2086
		run python3 "$ROOT/test/tools/slow-bodies.py" 127.0.0.1 "$PORT" 3 4 -s 127.0.0.3 $args
		echo "# $args: $output" >&3
		assert_output --regexp '"answered": \{"40[05]": 3\}, "answer_max_s": 0(\.[0-9])?, "open": 0'
	done
	run curl -s -w '\n%{http_code}' -X POST -d x "http://127.0.0.1:$PORT/healthz"
	assert_line --index 0 '{"error":"method not allowed"}'
	assert_line --index 1 405
}
