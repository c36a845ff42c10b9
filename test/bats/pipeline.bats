#!/usr/bin/env bats
# An order's whole life through all the tools: over plain pipes, and over the real Kafka broker.
bats_require_minimum_version 1.5.0

setup() {
	load helpers
	common_setup
	SKU="P-$RUNID"
	stock "$SKU" 100
}

teardown() {
	stop_bg
}

place_n() { # N: places N orders, writes them to $BATS_TEST_TMPDIR/placed
	for i in $(seq 1 "$1"); do request "c-$RUNID-$i" "[{\"sku\":\"$SKU\",\"qty\":2}]"; done |
		ot-place > "$BATS_TEST_TMPDIR/placed" 2>/dev/null
	[ "$(wc -l < "$BATS_TEST_TMPDIR/placed")" = "$1" ]
}

count_status() { sql_orders "SELECT count(*) FROM orders WHERE customer_id LIKE 'c-$RUNID-%' AND status = '$1'"; }

@test "pipeline: over pipes, orders go PENDING -> CONFIRMED -> PREPARING -> IN_TRANSIT -> DELIVERED" {
	drain_outboxes
	place_n 3
	ot-relay --once 2>/dev/null | ot-reserve 2>/dev/null
	[ "$(sql_inventory "SELECT available, reserved FROM stock WHERE sku = '$SKU'")" = "94|6" ]
	ot-relay --db inventory --once 2>/dev/null | ot-consume 2>/dev/null
	[ "$(count_status CONFIRMED)" = 3 ]
	ot-courier -n 3 < "$BATS_TEST_TMPDIR/placed" | ot-consume 2>/dev/null
	[ "$(count_status DELIVERED)" = 3 ]
	for id in $(sed -n 's/.*"order_id":"\([^"]*\)".*/\1/p' "$BATS_TEST_TMPDIR/placed"); do
		[ "$(version_of "$id")" = 7 ]
		[ "$(rcli HGET "order:{$id}" status)" = DELIVERED ]
		[ "$(rcli HGET "order:{$id}" version)" = 7 ]
		[ -n "$(rcli HGET "order:{$id}" lat)" ]
	done
	# every status change is in the outbox for orders.events
	[ "$(ot-relay --once 2>/dev/null | grep -c '"type":"ORDER_STATUS_UPDATED"')" = 18 ]
}

@test "pipeline: over Kafka, the services take orders to DELIVERED and Redis agrees" {
	start_bg "$BATS_TEST_TMPDIR/relay-orders.log" ot-relay --db orders -O kafka
	start_bg "$BATS_TEST_TMPDIR/relay-inventory.log" ot-relay --db inventory -O kafka
	start_bg "$BATS_TEST_TMPDIR/reserve.log" ot-reserve -i kafka:orders.events -G "r-$RUNID"
	start_bg "$BATS_TEST_TMPDIR/consume.log" ot-consume -i kafka:inventory.events,delivery.updates -G "c-$RUNID"
	place_n 10
	wait_sql orders "SELECT count(*) FROM orders WHERE customer_id LIKE 'c-$RUNID-%' AND status = 'CONFIRMED'" 10 60
	ot-courier -n 2 < "$BATS_TEST_TMPDIR/placed" | ot-relay -i - -O kafka:delivery.updates 2>/dev/null
	wait_sql orders "SELECT count(*) FROM orders WHERE customer_id LIKE 'c-$RUNID-%' AND status = 'DELIVERED'" 10 60
	[ "$(sql_inventory "SELECT available, reserved FROM stock WHERE sku = '$SKU'")" = "80|20" ]
	for id in $(sed -n 's/.*"order_id":"\([^"]*\)".*/\1/p' "$BATS_TEST_TMPDIR/placed"); do
		[ "$(rcli HGET "order:{$id}" status)" = DELIVERED ]
		[ "$(rcli HGET "order:{$id}" version)" = "$(version_of "$id")" ]
	done
	# The relays emptied both outboxes once Kafka acknowledged.
	wait_sql orders "SELECT count(*) FROM outbox" 0 10
	stop_bg
	grep -q '"level":"info","tool":"ot-consume","msg":"[0-9]* records' "$BATS_TEST_TMPDIR/consume.log"
}

@test "pipeline: cancels racing reservations over Kafka end consistent, and stock is conserved" {
	start_bg "$BATS_TEST_TMPDIR/relay-orders.log" ot-relay --db orders -O kafka
	start_bg "$BATS_TEST_TMPDIR/relay-inventory.log" ot-relay --db inventory -O kafka
	start_bg "$BATS_TEST_TMPDIR/reserve.log" ot-reserve -i kafka:orders.events -G "r-$RUNID"
	start_bg "$BATS_TEST_TMPDIR/consume.log" ot-consume -i kafka:inventory.events,delivery.updates -G "c-$RUNID"
	place_n 30
	# Cancel every other order at once, while their reservations are still in flight.
	sed -n 's/.*"order_id":"\([^"]*\)".*/\1/p' "$BATS_TEST_TMPDIR/placed" | awk 'NR % 2' |
		while read -r id; do event ORDER_CANCELLED "$id" '{"reason":"race"}'; done | ot-consume 2>/dev/null
	wait_sql orders "SELECT count(*) FROM orders WHERE customer_id LIKE 'c-$RUNID-%' AND status = 'CANCELLED'" 15 60
	wait_sql orders "SELECT count(*) FROM orders WHERE customer_id LIKE 'c-$RUNID-%' AND status = 'CONFIRMED'" 15 60
	# Every cancelled order's stock comes back; the confirmed ones keep theirs.
	wait_sql inventory "SELECT available || '|' || reserved FROM stock WHERE sku = '$SKU'" "70|30" 60
	cancelled=$(sql_orders "SELECT string_agg(id::text, ',') FROM orders WHERE customer_id LIKE 'c-$RUNID-%' AND status = 'CANCELLED'")
	[ "$(sql_inventory "SELECT count(*) FROM reservations WHERE order_id = ANY('{$cancelled}'::uuid[]) AND status = 'RESERVED'")" = 0 ]
	[ "$(sql_inventory "SELECT coalesce(sum(qty), 0) FROM reservations WHERE sku = '$SKU' AND status = 'RESERVED'")" = 30 ]
	for id in ${cancelled//,/ }; do
		[ "$(rcli HGET "order:{$id}" status)" = CANCELLED ]
	done
}

@test "pipeline: --help prints its usage, ports and settings to stdout and starts nothing" {
	cd "$BATS_TEST_TMPDIR"
	run --separate-stderr pipeline --help
	assert_success
	assert_line --index 0 'usage: pipeline [LOGDIR]'
	assert_line --partial 'OT_PORT_BASE       the port base (default 8080: ports 8080 to 8083 and 8085 to 8089)'
	assert_line --partial 'ot-relay --db inventory   base + 5'
	assert_line --partial 'ot-pay                    base + 6'
	assert_equal "$stderr" ''
	[ ! -e "$BATS_TEST_TMPDIR/--help" ]
	run --separate-stderr pipeline --bogus
	assert_failure 64
	assert_output ''
	run --separate-stderr env OT_PORT_BASE=80x pipeline
	assert_failure 64
	assert_equal "$stderr" 'pipeline: OT_PORT_BASE=80x: expected a port from 1 to 65530'
}

@test "pipeline: OT_PORT_BASE moves every service's port: ot-serve on base, the others on base+1, +2, +3, +5, +6 and +7" {
	local base p ok
	# A base whose seven ports are free.
	while :; do
		base=$(free_port)
		ok=1
		for p in 1 2 3 5 6 7; do
			if port_open $((base + p)); then ok=0; fi
		done
		[ "$ok" = 0 ] || break
	done
	OT_PORT_BASE=$base pipeline "$BATS_TEST_TMPDIR/logs" &
	pid=$!
	BG_PIDS+=("$pid")
	# Each port is the tool's it should be: ot_build_info says which.
	for p in 0:ot-serve 1:ot-reserve 2:ot-relay 3:ot-consume 5:ot-relay 6:ot-pay 7:ot-relay; do
		wait_health $((base + ${p%%:*}))
		run curl -s "http://127.0.0.1:$((base + ${p%%:*}))/metrics"
		assert_output --partial "ot_build_info{tool=\"${p#*:}\""
	done
	kill -TERM "$pid"
	wait "$pid" # SIGTERM stops the services, and the pipeline exits 0
	BG_PIDS=()
	# Each service logged to a file of its own under LOGDIR.
	for f in relay-orders relay-inventory relay-payments reserve pay consume serve; do
		[ -s "$BATS_TEST_TMPDIR/logs/$f.log" ]
	done
}

@test "pipeline: with payments, a card order is authorised, confirmed, delivered and captured, then partly refunded over gRPC; a declined card is rejected and its stock returned" {
	local base p ok paid declined key="key-$RUNID-0123456789"
	while :; do
		base=$(free_port)
		ok=1
		for p in 1 2 3 5 6 7 8 9; do
			if port_open $((base + p)); then ok=0; fi
		done
		[ "$ok" = 0 ] || break
	done
	printf '{"sku":"%s","qty":100,"price":700}\n' "$SKU" | ot-reserve stock 2>/dev/null
	OT_API_KEY=$key OT_PORT_BASE=$base pipeline "$BATS_TEST_TMPDIR/logs" &
	BG_PIDS+=($!)
	wait_health $((base + 6))
	for src in tok_visa tok_chargeDeclinedInsufficientFunds; do
		printf '{"customer_id":"c-%s-%s","items":[{"sku":"%s","qty":3}],"address":"1 Test Street","payment":{"source":"%s"}}\n' \
			"$RUNID" "$src" "$SKU" "$src"
	done | ot-place > "$BATS_TEST_TMPDIR/placed" 2>/dev/null
	paid=$(sed -n '1s/.*"order_id":"\([^"]*\)".*/\1/p' "$BATS_TEST_TMPDIR/placed")
	declined=$(sed -n '2s/.*"order_id":"\([^"]*\)".*/\1/p' "$BATS_TEST_TMPDIR/placed")
	wait_sql orders "SELECT status FROM orders WHERE id = '$paid'" CONFIRMED 60
	wait_sql orders "SELECT status || ' ' || reason FROM orders WHERE id = '$declined'" "REJECTED payment_declined: insufficient_funds" 60
	# The declined order's stock came back; the paid one keeps its three.
	wait_sql inventory "SELECT available || '|' || reserved FROM stock WHERE sku = '$SKU'" "97|3" 60
	echo "$paid" | ot-courier -n 1 | ot-relay -i - -O kafka:delivery.updates 2>/dev/null
	wait_sql orders "SELECT status FROM orders WHERE id = '$paid'" DELIVERED 60
	wait_sql payments "SELECT status || ' ' || amount || ' ' || captured FROM payments WHERE order_id = '$paid'" "CAPTURED 2100 2100" 60
	# The processor holds one captured charge of the order's total, and for the declined one a
	# failed charge, never captured.
	run bash -c "curl -sf -u '$OT_PAY_KEY:' '$OT_PAY_URL/v1/charges?limit=100' | jq -r '.data[] | select(.metadata.order_id == \"$paid\" or .metadata.order_id == \"$declined\") | \"\(.metadata.order_id) \(.status) \(.amount) \(.captured)\"'"
	assert_line "$paid succeeded 2100 true"
	assert_line "$declined failed 2100 false"
	assert_equal "${#lines[@]}" 2
	# Support staff refund 500 through ot-pay's gRPC: the request goes round payments.events
	# and ot-pay makes it with the processor; the order's payment shows it.
	run node "$ROOT/test/grpc/client.mjs" refund "127.0.0.1:$((base + 8))" "$paid" 500 "damaged box" --key "$key"
	assert_line --index 1 'status OK'
	wait_sql payments "SELECT status || ' ' || refunded FROM payments WHERE order_id = '$paid'" "CAPTURED 500" 60
	run bash -c "curl -sf -u '$OT_PAY_KEY:' '$OT_PAY_URL/v1/charges?limit=100' | jq -r '.data[] | select(.metadata.order_id == \"$paid\") | .amount_refunded'"
	assert_output 500
	run node "$ROOT/test/grpc/client.mjs" payment "127.0.0.1:$((base + 8))" "$paid" --key "$key"
	assert_line --index 1 'status OK'
	[ "$(echo "${lines[0]}" | jq -r '[.status, .captured, .refunded] | join(" ")')" = "CAPTURED 2100 500" ]
	wait_sql payments "SELECT count(*) FROM outbox" 0 10
}
