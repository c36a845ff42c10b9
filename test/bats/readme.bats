#!/usr/bin/env bats
# README.md, tried for real: each ```sh block marked <!-- readme-test: NAME --> is taken from the
# README as written and run with bash -e against the stack, in a scratch directory where bin/
# and scripts/ lead to the checkout's (the README runs them from the checkout). The one change:
# the listen addresses a block names are moved to free ports, so a run clashes with no other.
# On its own: eval "$(scripts/ot-stack env)"; bats test/bats/readme.bats
bats_require_minimum_version 1.5.0

setup() {
	load helpers
	common_setup
	# scripts/ot-stack env names the stack these variables point at.
	: "${OT_STACK_DIR:?}" "${OT_STACK_PORT_BASE:=15400}"
	export OT_STACK_PORT_BASE
	cd "$BATS_TEST_TMPDIR"
	ln -s "$ROOT/bin" bin
	ln -s "$ROOT/scripts" scripts
	# The README's SKU, loaded fresh: each block's order needs one or two.
	stock SKU-1 100
}

teardown() {
	stop_bg
	show_logs 10
}

# The shell block of README.md marked <!-- readme-test: NAME -->, as written there.
block() {
	doc_block "$ROOT/README.md" readme-test "$1"
}

# Runs a README block with bash -e, at most SECONDS (default 120), stdout and stderr apart:
# step NAME [SECONDS]. A block's own listen address 127.0.0.1:8090 goes to $HTTP_PORT.
step() {
	local code
	code=$(block "$1") || return 1
	code=${code//127.0.0.1:8090/127.0.0.1:${HTTP_PORT:-8090}}
	# A block that fails half way must not leave what it started in the background (the
	# pipeline, an ot-serve) running, holding the output open: stop its jobs on the way out.
	code="trap 'exit 143' TERM; trap 'set +e; j=\$(jobs -p); [ -z \"\$j\" ] || kill \$j 2>/dev/null; wait' EXIT
$code"
	run --separate-stderr timeout "${2:-120}" bash -e -c "$code"
}

order_of() { sed 's/.*"order_id":"\([^"]*\)".*/\1/' "$1"; }

@test "readme: over plain pipes, the order goes to DELIVERED and ot-cache get shows it" {
	drain_outboxes
	step pipes
	assert_success
	[ "$(wc -l < placed.jsonl)" = 1 ]
	id=$(order_of placed.jsonl)
	assert_equal "$(status_of "$id")" DELIVERED
	assert_equal "$(version_of "$id")" 7
	assert_output --regexp "^\{\"order_id\":\"$id\",\"status\":\"DELIVERED\",\"version\":7[,}]"
	run sql_inventory "SELECT sum(qty) FROM reservations WHERE order_id = '$id'"
	assert_output 2
}

@test "readme: over Kafka, scripts/pipeline takes the order to DELIVERED and stops cleanly" {
	# scripts/pipeline's listeners: ot-serve on OT_HTTP_ADDR, the others on fixed ports of
	# OT_PIPELINE_HOST, here a loopback address of this run's own.
	export OT_HTTP_ADDR="127.0.0.1:$(free_port)"
	export OT_PIPELINE_HOST="127.$((RANDOM % 200 + 20)).$((RANDOM % 250 + 1)).$((RANDOM % 250 + 1))"
	step kafka 180
	assert_success
	id=$(order_of placed.jsonl)
	assert_equal "$(status_of "$id")" DELIVERED
	assert_equal "$(version_of "$id")" 7
	# The order's records on orders.events: created, then at least CONFIRMED.
	assert_output --regexp '^[0-9]+$'
	[ "$output" -ge 2 ]
	assert_equal "$(rcli HGET "order:{$id}" status)" DELIVERED
	# Every service drained and exited: nothing of the pipeline is left.
	run pgrep -f "ot-reserve -i kafka:orders.events -G ot-reserve --http-addr $OT_PIPELINE_HOST:8081"
	assert_failure
}

@test "readme: the HTTP API, one curl per route: placed, read, streamed, cancelled with a reason" {
	HTTP_PORT=$(free_port)
	step http
	assert_success
	id=$(order_of order.json)
	assert_equal "$(status_of "$id")" CANCELLED
	assert_equal "$(sql_orders "SELECT reason FROM orders WHERE id = '$id'")" 'changed my mind'
	# What the block prints: the order read back, its two streams, probes, metrics, the page.
	assert_output --partial 'X-Cache: '
	assert_output --partial "\"order_id\":\"$id\",\"status\":\"CANCELLED\",\"version\":2"
	assert_output --partial '{"status":"ok","cache":"ok","db":"ok"}'
	assert_output --partial '{"status":"ready"'
	assert_output --partial 'ot_http_requests_total{route="order_cancel",code="200"} 1'
	assert_output --partial 'HTTP/1.1 101 Switching Protocols'
	assert_output --partial '200 text/html'
	run grep -c '^event: status$' events.txt
	assert_output 2
	run grep -c "\"status\":\"CANCELLED\",\"version\":2" ws.txt
	assert_output 1
	# Its ot-serve is gone.
	run curl -s "http://127.0.0.1:$HTTP_PORT/healthz"
	assert_failure
}
