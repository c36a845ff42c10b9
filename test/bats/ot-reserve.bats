#!/usr/bin/env bats
# ot-reserve: stock and all-or-nothing reservations against the real inventory database.
bats_require_minimum_version 1.5.0

setup() {
	load helpers
	common_setup
	A="A-$RUNID"
	B="B-$RUNID"
}

created() { # ORDER_ID ITEMS_JSON [EVENT_ID]
	event ORDER_CREATED "$1" "{\"items\":$2,\"status\":\"PENDING\"}" "${3:-}"
}

@test "ot-reserve: stock lines set the available quantity" {
	run --separate-stderr ot-reserve stock <<<"{\"sku\":\"$A\",\"qty\":5}
{\"sku\":\"$B\",\"qty\":7}
{\"sku\":\"$A\",\"qty\":9}"
	assert_success
	[ "$(sql_inventory "SELECT available FROM stock WHERE sku = '$A'")" = 9 ]
	[ "$(sql_inventory "SELECT available FROM stock WHERE sku = '$B'")" = 7 ]
}

@test "ot-reserve: an order with every line in stock is reserved whole" {
	stock "$A" 5
	stock "$B" 2
	drain_outboxes
	id=$(uuid)
	run --separate-stderr ot-reserve <<<"$(created "$id" "[{\"sku\":\"$A\",\"qty\":3},{\"sku\":\"$B\",\"qty\":2}]")"
	assert_success
	[ "$(sql_inventory "SELECT available, reserved FROM stock WHERE sku = '$A'")" = "2|3" ]
	[ "$(sql_inventory "SELECT available, reserved FROM stock WHERE sku = '$B'")" = "0|2" ]
	[ "$(sql_inventory "SELECT count(*) FROM reservations WHERE order_id = '$id'")" = 2 ]
	[ "$(sql_inventory "SELECT type FROM outbox WHERE key = '$id'")" = INVENTORY_RESERVED ]
}

@test "ot-reserve: one short line reserves nothing and names the short SKU" {
	stock "$A" 5
	stock "$B" 1
	id=$(uuid)
	run --separate-stderr ot-reserve <<<"$(created "$id" "[{\"sku\":\"$A\",\"qty\":3},{\"sku\":\"$B\",\"qty\":2},{\"sku\":\"NOPE-$RUNID\",\"qty\":1}]")"
	assert_success
	[ "$(sql_inventory "SELECT available, reserved FROM stock WHERE sku = '$A'")" = "5|0" ]
	[ "$(sql_inventory "SELECT count(*) FROM reservations WHERE order_id = '$id'")" = 0 ]
	[ "$(sql_inventory "SELECT type FROM outbox WHERE key = '$id'")" = INVENTORY_RESERVATION_FAILED ]
	payload=$(sql_inventory "SELECT payload FROM outbox WHERE key = '$id'")
	echo "$payload" | grep -q "\"short_skus\":\[\"$B\",\"NOPE-$RUNID\"\]"
}

@test "ot-reserve: a repeated ORDER_CREATED changes nothing" {
	stock "$A" 5
	id=$(uuid)
	ev=$(created "$id" "[{\"sku\":\"$A\",\"qty\":2}]")
	run --separate-stderr ot-reserve <<<"$ev
$ev"
	assert_success
	run --separate-stderr ot-reserve <<<"$ev"
	assert_success
	[ "$(sql_inventory "SELECT available, reserved FROM stock WHERE sku = '$A'")" = "3|2" ]
	[ "$(sql_inventory "SELECT count(*) FROM outbox WHERE key = '$id'")" = 1 ]
}

@test "ot-reserve: an event it does not act on commits nothing, not even processed_events; CONFIRMED does commit" {
	stock "$A" 5
	id=$(uuid)
	e1=$(uuid)
	e2=$(uuid)
	e3=$(uuid)
	e4=$(uuid)
	run --separate-stderr ot-reserve <<<"$(created "$id" "[{\"sku\":\"$A\",\"qty\":2}]" "$e1")
$(event ORDER_STATUS_UPDATED "$id" '{"status":"CONFIRMED"}' "$e2")
$(event ORDER_STATUS_UPDATED "$id" '{"status":"PREPARING"}' "$e3")
$(event DELIVERY_UPDATED "$id" '{"status":"IN_TRANSIT"}' "$e4")"
	assert_success
	echo "$stderr" | grep -q '4 records: 2 handled, 2 skipped, 0 bad'
	[ "$(sql_inventory "SELECT count(*) FROM processed_events WHERE event_id IN ('$e1', '$e2')")" = 2 ]
	[ "$(sql_inventory "SELECT count(*) FROM processed_events WHERE event_id IN ('$e3', '$e4')")" = 0 ]
	[ "$(sql_inventory "SELECT bool_and(confirmed) FROM reservations WHERE order_id = '$id'")" = t ]
}

@test "ot-reserve: a bad stock line exits 65 and loads the good ones" {
	run --separate-stderr ot-reserve stock <<<"{\"sku\":\"$A\",\"qty\":4}
{\"sku\":\"$B\",\"qty\":-1}"
	assert_failure 65
	echo "$stderr" | grep -q 'line 2: field \\"qty\\"'
	[ "$(sql_inventory "SELECT available FROM stock WHERE sku = '$A'")" = 4 ]
	[ "$(sql_inventory "SELECT count(*) FROM stock WHERE sku = '$B'")" = 0 ]
}

@test "ot-reserve: an event that is not a valid envelope exits 65 with the reason" {
	run --separate-stderr ot-reserve <<<'{"type":"ORDER_CREATED","order_id":"x","ts":"2026-11-24T18:00:00Z","data":{}}'
	assert_failure 65
	echo "$stderr" | grep -q 'line 1: field \\"id\\" is missing'
}

@test "ot-reserve: the inventory database unreachable at start exits 69; an unknown command exits 64" {
	OT_INVENTORY_DB='host=127.0.0.1 port=1 dbname=x connect_timeout=2' run --separate-stderr ot-reserve </dev/null
	assert_failure 69
	run --separate-stderr ot-reserve frobnicate
	assert_failure 64
}

@test "ot-reserve: ORDER_CANCELLED releases the reservation and announces INVENTORY_RELEASED, once" {
	stock "$A" 5
	id=$(uuid)
	drain_outboxes
	{
		created "$id" "[{\"sku\":\"$A\",\"qty\":3}]"
		event ORDER_CANCELLED "$id" '{"reason":"changed my mind"}'
	} | ot-reserve 2>/dev/null
	[ "$(sql_inventory "SELECT available, reserved FROM stock WHERE sku = '$A'")" = "5|0" ]
	[ "$(sql_inventory "SELECT status, release_reason FROM reservations WHERE order_id = '$id'")" = "RELEASED|cancelled" ]
	[ "$(sql_inventory "SELECT string_agg(type, ',' ORDER BY id) FROM outbox WHERE key = '$id'")" = "INVENTORY_RESERVED,INVENTORY_RELEASED" ]
	sql_inventory "SELECT payload FROM outbox WHERE key = '$id' AND type = 'INVENTORY_RELEASED'" |
		grep -q "\"items\":\[{\"sku\":\"$A\",\"qty\":3}\],\"reason\":\"cancelled\""
	run --separate-stderr ot-reserve <<<"$(event ORDER_CANCELLED "$id")"
	assert_success
	[ "$(sql_inventory "SELECT available, reserved FROM stock WHERE sku = '$A'")" = "5|0" ]
	[ "$(sql_inventory "SELECT count(*) FROM outbox WHERE key = '$id'")" = 2 ]
}

@test "ot-reserve: expire releases reservations left unconfirmed past the deadline, and only those" {
	stock "$A" 10
	a=$(uuid)
	b=$(uuid)
	{
		created "$a" "[{\"sku\":\"$A\",\"qty\":2}]"
		created "$b" "[{\"sku\":\"$A\",\"qty\":3}]"
		event ORDER_STATUS_UPDATED "$b" '{"status":"CONFIRMED"}'
	} | ot-reserve 2>/dev/null
	[ "$(sql_inventory "SELECT available, reserved FROM stock WHERE sku = '$A'")" = "5|5" ]
	run --separate-stderr ot-reserve expire --older-than 1h
	assert_success
	[ "$(sql_inventory "SELECT status FROM reservations WHERE order_id = '$a'")" = RESERVED ]
	run --separate-stderr ot-reserve expire --older-than 0s
	assert_success
	[ "$(sql_inventory "SELECT status, release_reason FROM reservations WHERE order_id = '$a'")" = "RELEASED|expired" ]
	[ "$(sql_inventory "SELECT status FROM reservations WHERE order_id = '$b'")" = RESERVED ]
	[ "$(sql_inventory "SELECT available, reserved FROM stock WHERE sku = '$A'")" = "7|3" ]
	[ "$(sql_inventory "SELECT count(*) FROM outbox WHERE key = '$a' AND type = 'INVENTORY_RELEASED' AND payload LIKE '%\"reason\":\"expired\"%'")" = 1 ]
	run --separate-stderr ot-reserve expire --older-than soon
	assert_failure 64
}

@test "ot-reserve: --http-addr serves /healthz, /readyz and /metrics: records, lag and compensations after consuming" {
	teardown() { stop_bg; }
	port=$(free_port)
	topic="orders.events.$RUNID"
	stock "$A" 5
	id=$(uuid)
	{
		created "$id" "[{\"sku\":\"$A\",\"qty\":2}]"
		event ORDER_STATUS_UPDATED "$id" '{"status":"PREPARING"}'
		event ORDER_CANCELLED "$id" '{"reason":"changed my mind"}'
		echo 'not json'
	} | ot-relay -i - -O "kafka:$topic" --raw 2>/dev/null
	start_bg "$BATS_TEST_TMPDIR/reserve.log" ot-reserve -i "kafka:$topic" -G "r-$RUNID" --http-addr "127.0.0.1:$port" \
		-X statistics.interval.ms=200 -X auto.commit.interval.ms=200
	assert_serving "$port"
	t="tool=\"ot-reserve\",topic=\"$topic\""
	wait_metric "$port" "ot_records_total{$t,result=\"applied\"}" 2
	wait_metric "$port" "ot_records_total{$t,result=\"dead_lettered\"}" 1
	[ "$(metric_of "$port" "ot_records_total{$t,result=\"ignored\"}")" = 1 ]
	[ "$(metric_of "$port" 'ot_saga_compensations_total{kind="released"}')" = 1 ]
	[ "$(sql_inventory "SELECT available, reserved FROM stock WHERE sku = '$A'")" = "5|0" ]
	for i in $(seq 1 50); do
		lags=$(curl -s "http://127.0.0.1:$port/metrics" | grep "^ot_kafka_consumer_lag{$t," | awk '{ print $2 }' | sort -u)
		[ "$lags" = 0 ] && break
		sleep 0.2
	done
	[ "$lags" = 0 ]
	[ -n "$(metric_of "$port" "ot_kafka_last_record_age_seconds{$t}")" ]
	[ "$(metric_of "$port" 'ot_build_info{tool="ot-reserve",version="0.1.0"}')" = 1 ]
	promcheck "$port"
}

@test "ot-reserve: /readyz is 503 while the inventory database does not answer; stock and expire never listen" {
	teardown() { stop_bg; }
	port=$(free_port)
	pgp=$(free_port)
	proxy "$pgp" 127.0.0.1 "$(echo "$OT_INVENTORY_DB" | sed -n 's/.*port=\([0-9]*\).*/\1/p')"
	created "$(uuid)" '[]' | ot-relay -i - -O "kafka:orders.events.$RUNID" 2>/dev/null
	start_bg "$BATS_TEST_TMPDIR/reserve.log" ot-reserve -i "kafka:orders.events.$RUNID" -G "r-$RUNID" \
		--inventory-db "$OT_INVENTORY_DB port=$pgp" --http-addr "127.0.0.1:$port"
	wait_health "$port"
	wait_ready "$port"
	kill "$PROXY_PID"
	sleep 1.1
	run curl -s -w '%{http_code}' "http://127.0.0.1:$port/readyz"
	assert_output "$(printf '{"status":"unavailable","error":"the inventory database does not answer"}\n503')"
	stop_bg
	# expire takes no --http-addr (64); told to listen by the environment, it does not.
	run --separate-stderr ot-reserve expire --http-addr "127.0.0.1:$port"
	assert_failure 64
	OT_HTTP_ADDR="127.0.0.1:$port" run --separate-stderr ot-reserve expire
	assert_success
	refute grep -q 'health and metrics on' <<<"$stderr"
}

@test "ot-reserve: one batch decides orders in turn against what the earlier ones left, releases and confirms" {
	input() { # SKU MISSING_SKU ORDER1..ORDER4
		created "$3" "[{\"sku\":\"$1\",\"qty\":3}]"
		created "$4" "[{\"sku\":\"$1\",\"qty\":3}]"                        # 2 left: short
		event ORDER_CANCELLED "$3" '{"reason":"customer"}'
		created "$5" "[{\"sku\":\"$1\",\"qty\":2},{\"sku\":\"$1\",\"qty\":2}]" # 5 back: 4 taken
		event ORDER_STATUS_UPDATED "$5" '{"status":"CONFIRMED"}'
		created "$6" "[{\"sku\":\"$1\",\"qty\":1},{\"sku\":\"$2\",\"qty\":1}]" # no such SKU: short
		event ORDER_STATUS_UPDATED "$5" '{"status":"PREPARING"}'            # ignored
	}
	outbox() { sql_inventory "SELECT string_agg(type || ':' || key, ',' ORDER BY id) FROM outbox"; }
	for batch in 256 1; do
		sku="$A-$batch"
		stock "$sku" 5
		drain_outboxes
		o1=$(uuid) o2=$(uuid) o3=$(uuid) o4=$(uuid)
		run --separate-stderr ot-reserve --batch "$batch" < <(input "$sku" "$B" "$o1" "$o2" "$o3" "$o4")
		assert_success
		echo "$stderr" | grep -q '"msg":"7 records: 6 handled, 1 skipped'
		[ "$(sql_inventory "SELECT available, reserved FROM stock WHERE sku = '$sku'")" = "1|4" ]
		[ "$(sql_inventory "SELECT status, qty, confirmed FROM reservations WHERE order_id = '$o1'")" = "RELEASED|3|f" ]
		[ "$(sql_inventory "SELECT status, qty, confirmed FROM reservations WHERE order_id = '$o3'")" = "RESERVED|4|t" ]
		[ "$(sql_inventory "SELECT count(*) FROM reservations WHERE order_id IN ('$o2', '$o4')")" = 0 ]
		# The answers in the outbox in the order they were decided.
		[ "$(outbox)" = "INVENTORY_RESERVED:$o1,INVENTORY_RESERVATION_FAILED:$o2,INVENTORY_RELEASED:$o1,INVENTORY_RESERVED:$o3,INVENTORY_RESERVATION_FAILED:$o4" ]
		[ "$(sql_inventory "SELECT payload::jsonb->'data'->>'short_skus' FROM outbox WHERE key = '$o4'")" = "[\"$B\"]" ]
	done
}

@test "ot-reserve: a SKU keeps its price; INVENTORY_RESERVED carries the order's amount and payment; a rejection gives the stock back" {
	drain_outboxes
	run --separate-stderr ot-reserve stock <<<"{\"sku\":\"$A\",\"qty\":10,\"price\":1250}
{\"sku\":\"$B\",\"qty\":10,\"price\":99}
{\"sku\":\"$B\",\"qty\":8}"
	assert_success
	# A line without a price keeps the SKU's.
	[ "$(sql_inventory "SELECT available, price FROM stock WHERE sku = '$B'")" = "8|99" ]
	local id=$(uuid) cash=$(uuid)
	event ORDER_CREATED "$id" "{\"items\":[{\"sku\":\"$A\",\"qty\":2},{\"sku\":\"$B\",\"qty\":3}],\"status\":\"PENDING\",\"payment\":{\"source\":\"tok_visa\"}}" |
		ot-reserve 2>/dev/null
	created "$cash" "[{\"sku\":\"$B\",\"qty\":1}]" | ot-reserve 2>/dev/null
	run sql_inventory "SELECT payload::json->'data' FROM outbox WHERE key = '$id' AND type = 'INVENTORY_RESERVED'"
	assert_output --partial '"amount":2797'
	assert_output --partial '"payment":{"source":"tok_visa"}'
	# An order paid another way has its amount and no payment.
	run sql_inventory "SELECT payload::json->'data' FROM outbox WHERE key = '$cash' AND type = 'INVENTORY_RESERVED'"
	assert_output --partial '"amount":99'
	refute_output --partial '"payment"'
	# Its payment declined, the order is REJECTED: the stock comes back, once.
	for i in 1 2; do
		event ORDER_STATUS_UPDATED "$id" '{"status":"REJECTED","reason":"payment_declined: insufficient_funds"}' | ot-reserve 2>/dev/null
	done
	[ "$(sql_inventory "SELECT available, reserved FROM stock WHERE sku = '$A'")" = "10|0" ]
	[ "$(sql_inventory "SELECT status, release_reason FROM reservations WHERE order_id = '$id' ORDER BY sku LIMIT 1")" = "RELEASED|rejected" ]
	[ "$(sql_inventory "SELECT count(*) FROM outbox WHERE key = '$id' AND type = 'INVENTORY_RELEASED'")" = 1 ]
	# Bad prices are named.
	for p in -1 '"12"' 1.5 1000000001; do
		run --separate-stderr ot-reserve stock <<<"{\"sku\":\"$A\",\"qty\":1,\"price\":$p}"
		assert_failure 65
		echo "$stderr" | grep -q 'field \\"price\\" must be an integer from 0 to 1000000000'
	done
}
