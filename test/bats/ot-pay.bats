#!/usr/bin/env bats
# ot-pay, the Payment Service, in the saga over pipes, against the stack's Stripe API emulator
# (OT_PAY_URL): what it decides is read back from the payments database, the orders, the stock
# and the processor's own charges (read with curl, not with the client under test).
bats_require_minimum_version 1.5.0

setup() {
	load helpers
	common_setup
	: "${OT_PAY_URL:?the Stripe API emulator of the stack: eval \"\$(scripts/ot-stack env)\" first}"
	: "${OT_PAY_KEY:?}"
	SKU="P-$RUNID"
	printf '{"sku":"%s","qty":10,"price":1250}\n' "$SKU" | ot-reserve stock 2>/dev/null
	drain_outboxes
	ot-relay --db payments --once >/dev/null 2>&1
}

# The processor's charges that carry order $1, as "amount captured refunded amount_refunded" lines.
charges() {
	curl -sf -u "$OT_PAY_KEY:" "$OT_PAY_URL/v1/charges?limit=100" |
		jq -r --arg o "$1" '.data[] | select(.metadata.order_id == $o) | "\(.amount) \(.captured) \(.refunded) \(.amount_refunded)"'
}

# Places an order of QTY of the SKU paid with SOURCE and prints its id: card_order SOURCE QTY
card_order() {
	printf '{"customer_id":"c-%s","items":[{"sku":"%s","qty":%d}],"address":"1 Test Street","payment":{"source":"%s"}}\n' \
		"$RUNID" "$SKU" "$2" "$1" | ot-place 2>/dev/null | sed -n 's/.*"order_id":"\([^"]*\)".*/\1/p'
}

# The saga's next round over pipes: each outbox drained into the services that read it.
round() {
	ot-relay --db orders --once 2>/dev/null > "$BATS_TEST_TMPDIR/orders.jsonl"
	ot-reserve < "$BATS_TEST_TMPDIR/orders.jsonl" 2>/dev/null
	ot-pay < "$BATS_TEST_TMPDIR/orders.jsonl" 2>>"$BATS_TEST_TMPDIR/pay.log"
	ot-relay --db inventory --once 2>/dev/null > "$BATS_TEST_TMPDIR/inventory.jsonl"
	ot-consume < "$BATS_TEST_TMPDIR/inventory.jsonl" 2>/dev/null
	ot-pay < "$BATS_TEST_TMPDIR/inventory.jsonl" 2>>"$BATS_TEST_TMPDIR/pay.log"
	ot-relay --db payments --once 2>/dev/null | ot-consume 2>/dev/null
}

payment_of() { sql_payments "SELECT status, amount, captured, refunded FROM payments WHERE order_id = '$1'"; }
status_pay() { sql_payments "SELECT status FROM payments WHERE order_id = '$1'"; }

# A card order of 1 paid with SOURCE (tok_visa), reserved: its id; its reservation in
# inventory.jsonl: reserved_order [SOURCE]
reserved_order() {
	local id
	id=$(card_order "${1:-tok_visa}" 1)
	ot-relay --db orders --once 2>/dev/null > "$BATS_TEST_TMPDIR/orders.jsonl"
	ot-reserve < "$BATS_TEST_TMPDIR/orders.jsonl" 2>/dev/null
	ot-relay --db inventory --once 2>/dev/null > "$BATS_TEST_TMPDIR/inventory.jsonl"
	echo "$id"
}

# The reservation handled with the processor at URL telling nothing: ot-pay gives up (69), the
# payment UNKNOWN: no_answer URL
no_answer() {
	run --separate-stderr ot-pay --pay-url "$1" --attempts 1 < "$BATS_TEST_TMPDIR/inventory.jsonl"
	assert_failure 69
}


@test "ot-pay: a card order is authorised before it is confirmed, captured on delivery: one charge of its total" {
	local id
	id=$(card_order tok_visa 2)
	[ -n "$id" ]
	round
	[ "$(payment_of "$id")" = "AUTHORIZED|2500|0|0" ]
	[ "$(status_of "$id")" = CONFIRMED ]
	[ "$(charges "$id")" = "2500 false false 0" ]
	# The courier delivers it; the delivery is captured.
	printf '{"order_id":"%s"}\n' "$id" | ot-courier | ot-consume 2>/dev/null
	[ "$(status_of "$id")" = DELIVERED ]
	round
	[ "$(payment_of "$id")" = "CAPTURED|2500|2500|0" ]
	[ "$(charges "$id")" = "2500 true false 0" ]
	# The order shows it: still DELIVERED, its payment captured.
	[ "$(sql_orders "SELECT status, payment->>'status', payment->>'amount' FROM orders WHERE id = '$id'")" = "DELIVERED|CAPTURED|2500" ]
	# Every change a row, every row an event.
	[ "$(sql_payments "SELECT string_agg(status, ',' ORDER BY id) FROM payment_changes WHERE order_id = '$id'")" = AUTHORIZED,CAPTURED ]
	# The same events again change nothing: they were processed.
	ot-pay < "$BATS_TEST_TMPDIR/orders.jsonl" 2>/dev/null
	[ "$(payment_of "$id")" = "CAPTURED|2500|2500|0" ]
	[ "$(charges "$id" | wc -l)" = 1 ]
}

@test "ot-pay: a declined card rejects the order with the decline code and gives the stock back" {
	local id
	id=$(card_order tok_chargeDeclinedInsufficientFunds 3)
	[ -n "$id" ]
	round
	[ "$(sql_payments "SELECT status, decline_code FROM payments WHERE order_id = '$id'")" = "DECLINED|insufficient_funds" ]
	[ "$(sql_orders "SELECT status, reason FROM orders WHERE id = '$id'")" = "REJECTED|payment_declined: insufficient_funds" ]
	[ "$(sql_orders "SELECT payment->>'status', payment->>'decline_code' FROM orders WHERE id = '$id'")" = "DECLINED|insufficient_funds" ]
	# The rejection reaches the inventory: the three reserved come back.
	round
	[ "$(sql_inventory "SELECT available, reserved FROM stock WHERE sku = '$SKU'")" = "10|0" ]
	[ "$(sql_inventory "SELECT DISTINCT release_reason FROM reservations WHERE order_id = '$id'")" = rejected ]
	# No money taken.
	run charges "$id"
	refute_output --partial ' true '
}

@test "ot-pay: a cancel after the authorisation voids it; a cancel before it means it is never made" {
	local id early
	id=$(card_order tok_visa 1)
	round
	[ "$(payment_of "$id")" = "AUTHORIZED|1250|0|0" ]
	event ORDER_CANCELLED "$id" '{"reason":"changed my mind"}' | ot-consume 2>/dev/null
	[ "$(status_of "$id")" = CANCELLED ]
	round
	[ "$(payment_of "$id")" = "VOIDED|1250|0|0" ]
	[ "$(charges "$id")" = "1250 false true 1250" ]
	[ "$(sql_orders "SELECT status, payment->>'status' FROM orders WHERE id = '$id'")" = "CANCELLED|VOIDED" ]
	# Cancelled before ot-pay saw its reservation: no charge, ever.
	early=$(card_order tok_visa 1)
	ot-relay --db orders --once 2>/dev/null > "$BATS_TEST_TMPDIR/orders.jsonl"
	ot-reserve < "$BATS_TEST_TMPDIR/orders.jsonl" 2>/dev/null
	ot-relay --db inventory --once 2>/dev/null > "$BATS_TEST_TMPDIR/late.jsonl"
	event ORDER_CANCELLED "$early" '{"reason":"too slow"}' | ot-pay 2>/dev/null
	ot-pay < "$BATS_TEST_TMPDIR/late.jsonl" 2>/dev/null
	[ "$(payment_of "$early")" = "VOIDED|0|0|0" ]
	[ "$(charges "$early")" = "" ]
}

@test "ot-pay: the processor's answer lost with the commit (a crash) is asked again with the same key: still one charge" {
	local id
	id=$(card_order tok_visa 2)
	round
	[ "$(charges "$id" | wc -l)" = 1 ]
	# As if ot-pay had died between the processor's answer and its commit.
	sql_payments "DELETE FROM outbox WHERE key = '$id'; DELETE FROM payment_changes WHERE order_id = '$id';
		DELETE FROM payments WHERE order_id = '$id'; DELETE FROM processed_events WHERE consumer = 'ot-pay'"
	ot-pay < "$BATS_TEST_TMPDIR/inventory.jsonl" 2>/dev/null
	[ "$(payment_of "$id")" = "AUTHORIZED|2500|0|0" ]
	[ "$(charges "$id")" = "2500 false false 0" ]
	# The processor unreachable: the payment is UNKNOWN, the event not done (69), nothing guessed.
	sql_payments "DELETE FROM outbox WHERE key = '$id'; DELETE FROM payment_changes WHERE order_id = '$id';
		DELETE FROM payments WHERE order_id = '$id'; DELETE FROM processed_events WHERE consumer = 'ot-pay'"
	run --separate-stderr env OT_PAY_URL="http://127.0.0.1:$(free_port)" ot-pay --attempts 1 < "$BATS_TEST_TMPDIR/inventory.jsonl"
	assert_failure 69
	[ "$(sql_payments "SELECT status FROM payments WHERE order_id = '$id'")" = UNKNOWN ]
	# Back: looked up by the order, found, recorded; no second charge.
	ot-pay < "$BATS_TEST_TMPDIR/inventory.jsonl" 2>"$BATS_TEST_TMPDIR/reconcile.log"
	[ "$(payment_of "$id")" = "AUTHORIZED|2500|0|0" ]
	grep -q 'reconciled: the processor has charge' "$BATS_TEST_TMPDIR/reconcile.log"
	[ "$(charges "$id" | wc -l)" = 1 ]
}

@test "ot-pay: its key from the environment only (78 without it, never printed); its own options; bad records named" {
	run --separate-stderr env -u OT_PAY_KEY ot-pay </dev/null
	assert_failure 78
	echo "$stderr" | grep -q 'OT_PAY_KEY is not set'
	run --separate-stderr ot-pay --currency US </dev/null
	assert_failure 64
	run --separate-stderr ot-pay --redis redis://x </dev/null
	assert_failure 64
	run --separate-stderr ot-pay --help
	assert_success
	assert_output --partial 'usage: ot-pay'
	assert_output --partial '--payments-db'
	run --separate-stderr ot-pay <<<"$(event INVENTORY_RESERVED "$(uuid)" '{"payment":{"source":"tok_visa"},"amount":"12"}')"
	assert_failure 65
	echo "$stderr" | grep -q 'data.amount'
	[[ "$stderr" != *"$OT_PAY_KEY"* ]]
}

@test "ot-pay: a cancel while the payment is UNKNOWN asks the processor first: a charge it made is voided, none is never made" {
	local made never
	made=$(card_order tok_visa 1)
	never=$(card_order tok_visa 2)
	ot-relay --db orders --once 2>/dev/null | ot-reserve 2>/dev/null
	ot-relay --db inventory --once 2>/dev/null > "$BATS_TEST_TMPDIR/inventory.jsonl"
	grep "$made" "$BATS_TEST_TMPDIR/inventory.jsonl" | ot-pay 2>/dev/null
	# As if the processor's answer for $made had been lost: its charge exists, its row says UNKNOWN.
	sql_payments "UPDATE payments SET status = 'UNKNOWN', charge_id = NULL WHERE order_id = '$made';
		DELETE FROM outbox WHERE key = '$made'"
	# $never: the processor away when it was authorised, so no charge was made.
	run env OT_PAY_URL="http://127.0.0.1:$(free_port)" ot-pay --attempts 1 < <(grep "$never" "$BATS_TEST_TMPDIR/inventory.jsonl")
	assert_failure 69
	[ "$(sql_payments "SELECT string_agg(status, ',' ORDER BY order_id = '$never') FROM payments WHERE order_id IN ('$made', '$never')")" = UNKNOWN,UNKNOWN ]
	# Both cancelled: the charge found by the order is voided; the other is recorded so it is never made.
	for id in "$made" "$never"; do event ORDER_CANCELLED "$id" '{"reason":"customer"}'; done | ot-pay 2>"$BATS_TEST_TMPDIR/cancel.log"
	[ "$(payment_of "$made")" = "VOIDED|1250|0|0" ]
	[ "$(charges "$made")" = "1250 false true 1250" ]
	[ "$(payment_of "$never")" = "VOIDED|2500|0|0" ]
	# The reservation's event again (the consumer's retry): nothing is authorised now.
	grep "$never" "$BATS_TEST_TMPDIR/inventory.jsonl" | ot-pay 2>/dev/null
	[ "$(payment_of "$never")" = "VOIDED|2500|0|0" ]
	run charges "$never"
	assert_output ''
	# The void is an event; a payment never made is a row only.
	run sql_payments "SELECT key || ' ' || type FROM outbox WHERE key IN ('$made', '$never')"
	assert_output "$made PAYMENT_VOIDED"
}

@test "ot-pay reconcile: an UNKNOWN payment whose charge the processor made is recorded as it is: still one charge" {
	teardown() { stop_bg; }
	local id
	id=$(reserved_order)
	faults 'drop*' # the charge is made, every answer lost
	no_answer "$FAULTS_URL"
	[ "$(status_pay "$id")" = UNKNOWN ]
	[ "$(charges "$id" | wc -l)" = 1 ]
	run --separate-stderr ot-pay reconcile --older-than 0
	assert_success
	[ "$(grep "\"$id\"" <<<"$output" | jq -r '[.status, .found] | join(" ")')" = "AUTHORIZED true" ]
	[ "$(payment_of "$id")" = "AUTHORIZED|1250|0|0" ]
	[ "$(charges "$id")" = "1250 false false 0" ]
	[ "$(sql_payments "SELECT string_agg(status, ',' ORDER BY id) FROM payment_changes WHERE order_id = '$id'")" = UNKNOWN,AUTHORIZED ]
	[ "$(sql_payments "SELECT count(*) FROM outbox WHERE key = '$id' AND type = 'PAYMENT_AUTHORIZED'")" = 1 ]
	# The consumer's retry of the event finds it decided.
	ot-pay < "$BATS_TEST_TMPDIR/inventory.jsonl" 2>/dev/null
	[ "$(charges "$id" | wc -l)" = 1 ]
}

@test "ot-pay reconcile: an UNKNOWN payment whose charge the processor declined is DECLINED with its code" {
	teardown() { stop_bg; }
	local id
	id=$(reserved_order tok_chargeDeclinedInsufficientFunds)
	faults 'drop*'
	no_answer "$FAULTS_URL"
	[ "$(status_pay "$id")" = UNKNOWN ]
	run --separate-stderr ot-pay reconcile --older-than 0
	assert_success
	[ "$(grep "\"$id\"" <<<"$output" | jq -r '[.status, .found] | join(" ")')" = "DECLINED true" ]
	[ "$(sql_payments "SELECT status FROM payments WHERE order_id = '$id'")" = DECLINED ]
	[ "$(sql_payments "SELECT payload::json->'data'->>'code' FROM outbox WHERE key = '$id' AND type = 'PAYMENT_DECLINED'")" = card_declined ]
}

@test "ot-pay reconcile: the processor away leaves a payment UNKNOWN (69); back, a charge never made is authorised once" {
	local id
	id=$(reserved_order)
	no_answer "http://127.0.0.1:$(free_port)"
	[ "$(status_pay "$id")" = UNKNOWN ]
	run --separate-stderr env OT_PAY_URL="http://127.0.0.1:$(free_port)" ot-pay reconcile --older-than 0
	assert_failure 69
	[[ "$stderr" == *"left UNKNOWN"* ]]
	[ "$(status_pay "$id")" = UNKNOWN ]
	[ "$(charges "$id")" = "" ]
	run --separate-stderr ot-pay reconcile --older-than 0
	assert_success
	[ "$(grep "\"$id\"" <<<"$output" | jq -r '[.status, .found] | join(" ")')" = "AUTHORIZED false" ]
	[ "$(payment_of "$id")" = "AUTHORIZED|1250|0|0" ]
	[ "$(charges "$id")" = "1250 false false 0" ]
}

@test "ot-pay reconcile: a payment UNKNOWN for less than --older-than is left alone; its options" {
	local id
	id=$(reserved_order)
	no_answer "http://127.0.0.1:$(free_port)"
	run --separate-stderr ot-pay reconcile --older-than 1h
	assert_success
	refute_output --partial "$id"
	[ "$(status_pay "$id")" = UNKNOWN ]
	run --separate-stderr ot-pay reconcile --help
	assert_success
	assert_output --partial 'usage: ot-pay reconcile'
	run --separate-stderr ot-pay reconcile --older-than soon
	assert_failure 64
	run --separate-stderr ot-pay reconcile -i x
	assert_failure 64
	run --separate-stderr env -u OT_PAY_KEY ot-pay reconcile
	assert_failure 78
	run --separate-stderr ot-pay reconcile --older-than 0
	assert_success
	[ "$(status_pay "$id")" = AUTHORIZED ]
}

@test "ot-pay: /metrics times each request to the processor and counts its errors; UNKNOWN payments until settled" {
	teardown() { stop_bg; }
	local id port n topic="inventory.events.$RUNID"
	id=$(reserved_order)
	no_answer "http://127.0.0.1:$(free_port)"
	n=$(sql_payments "SELECT count(*) FROM payments WHERE status = 'UNKNOWN'")
	faults # forwards until told
	port=$(free_port)
	start_bg "$BATS_TEST_TMPDIR/pay-run.log" ot-pay -i "kafka:$topic" -G "g-$RUNID" --http-addr "127.0.0.1:$port" \
		--pay-url "$FAULTS_URL"
	wait_health "$port"
	wait_metric "$port" ot_payments_unknown "$n"
	age=$(metric_of "$port" ot_payments_unknown_oldest_seconds)
	awk -v a="$age" 'BEGIN { exit !(a > 0 && a < 86400 * 365) }'
	# The lookup of the charge gets two 500s, then its answer: none made; authorised now.
	curl -sf -X POST -d '500*2' "$FAULTS_URL/__faults"
	ot-relay -i - -O "kafka:$topic" < "$BATS_TEST_TMPDIR/inventory.jsonl" 2>/dev/null
	wait_sql payments "SELECT status FROM payments WHERE order_id = '$id'" AUTHORIZED
	wait_metric "$port" ot_payments_unknown "$((n - 1))"
	[ "$(metric_of "$port" 'ot_pay_processor_errors_total{op="lookup",kind="http_5xx"}')" = 2 ]
	# Two failed attempts, then one request a page of the processor's charges (100 to a page).
	run metric_of "$port" 'ot_pay_processor_seconds_count{op="lookup"}'
	assert [ "$output" -ge 3 ]
	[ "$(metric_of "$port" 'ot_pay_processor_seconds_count{op="authorize"}')" = 1 ]
	run curl -s "http://127.0.0.1:$port/metrics"
	assert_line 'ot_circuit_state{circuit="payment processor"} 0'
	promcheck "$port"
}

@test "ot-pay: a cancel read before a lost authorisation (a crash, or no answer) voids the charge it made" {
	local id unk
	id=$(card_order tok_visa 2)
	unk=$(card_order tok_visa 1)
	round
	[ "$(charges "$id")" = "2500 false false 0" ]
	[ "$(charges "$unk")" = "1250 false false 0" ]
	# As if ot-pay had died between the processor's answer and its commit, and for the second
	# order had then heard nothing more from the processor: no row, and UNKNOWN.
	sql_payments "DELETE FROM outbox WHERE key IN ('$id', '$unk');
		DELETE FROM payment_changes WHERE order_id IN ('$id', '$unk');
		DELETE FROM payments WHERE order_id IN ('$id', '$unk'); DELETE FROM processed_events WHERE consumer = 'ot-pay'"
	run --separate-stderr env OT_PAY_URL="http://127.0.0.1:$(free_port)" ot-pay --attempts 1 < <(grep "$unk" "$BATS_TEST_TMPDIR/inventory.jsonl")
	assert_failure 69
	[ "$(sql_payments "SELECT status FROM payments WHERE order_id = '$unk'")" = UNKNOWN ]
	# The cancels come first (another partition), then the reservations again.
	{ event ORDER_CANCELLED "$id" '{"reason":"changed my mind"}'; event ORDER_CANCELLED "$unk" '{"reason":"changed my mind"}'; } |
		ot-pay 2>/dev/null
	ot-pay < "$BATS_TEST_TMPDIR/inventory.jsonl" 2>/dev/null
	[ "$(payment_of "$id")" = "VOIDED|2500|0|0" ]
	[ "$(charges "$id")" = "2500 false true 2500" ]
	[ "$(payment_of "$unk")" = "VOIDED|1250|0|0" ]
	[ "$(charges "$unk")" = "1250 false true 1250" ]
}

@test "ot-pay gRPC: GetPayment and Refund (a refund through the saga, once per request_id) for a key, with gRPC's codes" {
	teardown() { stop_bg; }
	local id gport key="key-$RUNID-0123456789" client="$ROOT/test/grpc/client.mjs"
	id=$(card_order tok_visa 2)
	round
	printf '{"order_id":"%s"}\n' "$id" | ot-courier | ot-consume 2>/dev/null
	round
	[ "$(payment_of "$id")" = "CAPTURED|2500|2500|0" ]
	gport=$(free_port)
	ot-relay --db payments --once >/dev/null 2>&1
	start_bg "$BATS_TEST_TMPDIR/pay-rpc.log" env OT_API_KEY="$key" ot-pay -i kafka:payments.events -G "p-$RUNID" \
		-o end --http-addr '' --grpc-addr "127.0.0.1:$gport"
	for _ in $(seq 1 100); do grep -q '"kafka: assigned' "$BATS_TEST_TMPDIR/pay-rpc.log" && break; sleep 0.1; done
	run node "$client" health "127.0.0.1:$gport" ordertrack.Payment
	assert_output SERVING
	run node "$client" payment "127.0.0.1:$gport" "$id"
	assert_output 'status UNAUTHENTICATED Payment needs an API key in the authorization metadata'
	run node "$client" payment "127.0.0.1:$gport" "$id" --key "$key"
	assert_line --index 1 'status OK'
	[ "$(echo "${lines[0]}" | jq -r '[.status, .captured, .refunded, (.changes | map(.status) | join(","))] | join(" ")')" = "CAPTURED 2500 0 AUTHORIZED,CAPTURED" ]
	run node "$client" payment "127.0.0.1:$gport" "$(uuid)" --key "$key"
	assert_output --partial 'status NOT_FOUND'
	run node "$client" payment "127.0.0.1:$gport" not-a-uuid --key "$key"
	assert_output 'status INVALID_ARGUMENT order_id is not a UUID'
	run node "$client" refund "127.0.0.1:$gport" "$id" 9999 "too much" --key "$key"
	assert_output 'status INVALID_ARGUMENT amount 9999 is more than the 2500 left to refund'
	# A refund of 1000 asked twice under one request_id: one refund request, one refund made.
	run node "$client" refund "127.0.0.1:$gport" "$id" 1000 "damaged box" "r-$RUNID" --key "$key"
	assert_line --index 1 'status OK'
	run node "$client" refund "127.0.0.1:$gport" "$id" 1000 "damaged box" "r-$RUNID" --key "$key"
	assert_line --index 1 'status OK'
	[ "$(echo "${lines[0]}" | jq -r '.amount + " " + .status')" = "1000 REQUESTED" ]
	# Through the saga: its event relayed to payments.events, ot-pay makes it with the processor.
	ot-relay --db payments -O kafka --once 2>/dev/null
	wait_sql payments "SELECT status || ' ' || refunded FROM payments WHERE order_id = '$id'" "CAPTURED 1000" 30
	[ "$(charges "$id")" = "2500 true false 1000" ]
	[ "$(sql_payments "SELECT string_agg(status, ',' ORDER BY id) FROM payment_changes WHERE order_id = '$id'")" = AUTHORIZED,CAPTURED,REFUND_REQUESTED,REFUNDED ]
	# The rest, with a new request: refunded in full; then nothing is left to refund.
	run node "$client" refund "127.0.0.1:$gport" "$id" 0 "gone" --key "$key"
	assert_line --index 1 'status OK'
	ot-relay --db payments -O kafka --once 2>/dev/null
	wait_sql payments "SELECT status || ' ' || refunded FROM payments WHERE order_id = '$id'" "REFUNDED 2500" 30
	[ "$(charges "$id")" = "2500 true true 2500" ]
	run node "$client" refund "127.0.0.1:$gport" "$id" 0 "again" --key "$key"
	assert_output --partial 'status FAILED_PRECONDITION'
}

@test "ot-pay gRPC: past --grpc-rate a key's calls answer RESOURCE_EXHAUSTED, and wrong keys past ten from one address too" {
	teardown() { stop_bg; }
	local gport key="key-$RUNID-0123456789" client="$ROOT/test/grpc/client.mjs" i
	gport=$(free_port)
	# One call every 20 s per key, after a burst of one.
	start_bg "$BATS_TEST_TMPDIR/pay-rate.log" env OT_API_KEY="$key" ot-pay -i kafka:payments.events -G "p-$RUNID" \
		-o end --http-addr '' --grpc-addr "127.0.0.1:$gport" --grpc-rate 0.05
	for _ in $(seq 1 100); do grep -q '"kafka: assigned' "$BATS_TEST_TMPDIR/pay-rate.log" && break; sleep 0.1; done
	run node "$client" payment "127.0.0.1:$gport" "$(uuid)" --key "$key"
	assert_output --partial 'status NOT_FOUND'
	run node "$client" payment "127.0.0.1:$gport" "$(uuid)" --key "$key"
	assert_output --regexp '^status RESOURCE_EXHAUSTED rate limit exceeded; retry after [0-9]+ s$'
	# The health check needs no key and is not limited.
	run node "$client" health "127.0.0.1:$gport" ordertrack.Payment
	assert_output SERVING
	# Ten wrong keys are told UNAUTHENTICATED; the eleventh is refused for a while.
	for i in $(seq 1 10); do
		run node "$client" payment "127.0.0.1:$gport" "$(uuid)" --key "wrong-key-$i-0123456789"
		assert_output 'status UNAUTHENTICATED the authorization metadata holds no valid API key'
	done
	run node "$client" payment "127.0.0.1:$gport" "$(uuid)" --key "wrong-key-11-0123456789"
	assert_output --regexp '^status RESOURCE_EXHAUSTED too many failed authentications from this client; retry after [0-9]+ s$'
	# A bad rate is refused before anything starts.
	run ot-pay -i kafka:payments.events --http-addr '' --grpc-addr 127.0.0.1:0 --grpc-rate fast
	assert_failure 64
	assert_output --partial '--grpc-rate fast: expected calls a second'
}
