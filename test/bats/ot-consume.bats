#!/usr/bin/env bats
# ot-consume: guarded transitions, write-through to PostgreSQL then Redis.
bats_require_minimum_version 1.5.0

setup() {
	load helpers
	common_setup
	ID=$(place_order "c-$RUNID")
	[ -n "$ID" ]
}

delivery() { # STATUS [EXTRA_DATA]
	event DELIVERY_UPDATED "$ID" "{\"status\":\"$1\"${2:+,$2}}"
}

@test "ot-consume: INVENTORY_RESERVED confirms the order in the database, the outbox and Redis" {
	drain_outboxes
	run --separate-stderr ot-consume <<<"$(event INVENTORY_RESERVED "$ID")"
	assert_success
	[ "$(sql_orders "SELECT status, version FROM orders WHERE id = '$ID'")" = "CONFIRMED|2" ]
	[ "$(sql_orders "SELECT type FROM outbox WHERE key = '$ID'")" = ORDER_STATUS_UPDATED ]
	[ "$(rcli HGET "order:{$ID}" status)" = CONFIRMED ]
	[ "$(rcli HGET "order:{$ID}" version)" = 2 ]
	echo "$stderr" | grep -q "\"msg\":\"PENDING -> CONFIRMED (version 2)\",\"order_id\":\"$ID\""
}

@test "ot-consume: INVENTORY_RESERVATION_FAILED rejects the order with the short SKUs as reason" {
	run --separate-stderr ot-consume <<<"$(event INVENTORY_RESERVATION_FAILED "$ID" '{"short_skus":["SKU-X"]}')"
	assert_success
	[ "$(sql_orders "SELECT status, reason FROM orders WHERE id = '$ID'")" = 'REJECTED|insufficient stock: ["SKU-X"]' ]
	[ "$(rcli HGET "order:{$ID}" status)" = REJECTED ]
}

@test "ot-consume: an order paid by card waits for PAYMENT_AUTHORIZED to confirm; PAYMENT_DECLINED rejects it with the decline code" {
	local pay='"payment":{"source":"tok_visa"},"amount":1250'
	drain_outboxes
	# Reserved, not yet paid: nothing changes, nothing is committed.
	run --separate-stderr ot-consume <<<"$(event INVENTORY_RESERVED "$ID" "{$pay}")"
	assert_success
	[ "$(sql_orders "SELECT status, version FROM orders WHERE id = '$ID'")" = "PENDING|1" ]
	[ "$(sql_orders "SELECT count(*) FROM outbox WHERE key = '$ID'")" = 0 ]
	run --separate-stderr ot-consume <<<"$(event PAYMENT_AUTHORIZED "$ID" '{"amount":1250,"currency":"usd","charge_id":"ch_1"}')"
	assert_success
	[ "$(sql_orders "SELECT status, version FROM orders WHERE id = '$ID'")" = "CONFIRMED|2" ]
	[ "$(rcli HGET "order:{$ID}" status)" = CONFIRMED ]
	# What follows a payment's authorisation moves no order: it is recorded as its payment
	# (CAPTURED, then a VOIDED that comes too late for it, then REFUNDED).
	run --separate-stderr ot-consume <<<"$(event PAYMENT_CAPTURED "$ID" '{"amount":1250,"currency":"usd"}')
$(event PAYMENT_VOIDED "$ID" '{"amount":1250,"currency":"usd"}')
$(event PAYMENT_REFUNDED "$ID" '{"amount":1250,"currency":"usd"}')"
	assert_success
	[ "$(sql_orders "SELECT status, version, payment->>'status' FROM orders WHERE id = '$ID'")" = "CONFIRMED|4|REFUNDED" ]
	# Declined: REJECTED, the processor's decline code in the reason, the event out for the
	# inventory to release the stock.
	local other
	other=$(place_order "d-$RUNID")
	run --separate-stderr ot-consume <<<"$(event INVENTORY_RESERVED "$other" "{$pay}")
$(event PAYMENT_DECLINED "$other" '{"amount":1250,"code":"card_declined","decline_code":"insufficient_funds"}')"
	assert_success
	[ "$(sql_orders "SELECT status, reason FROM orders WHERE id = '$other'")" = "REJECTED|payment_declined: insufficient_funds" ]
	run sql_orders "SELECT payload FROM outbox WHERE key = '$other' AND type = 'ORDER_STATUS_UPDATED'"
	assert_output --partial '"status":"REJECTED"'
	# A decline for an order its authorisation confirmed cannot happen (one payment an order):
	# refused as impossible, nothing changed.
	run --separate-stderr ot-consume <<<"$(event PAYMENT_DECLINED "$ID" '{"code":"card_declined"}')"
	assert_failure 65
	echo "$stderr" | grep -q 'CONFIRMED -> REJECTED'
	[ "$(sql_orders "SELECT status FROM orders WHERE id = '$ID'")" = CONFIRMED ]
}

@test "ot-consume: every payment event is recorded on the order, after DELIVERED too, never moved back" {
	local pay='"payment":{"source":"tok_visa"},"amount":2500' auth
	drain_outboxes
	auth=$(event PAYMENT_AUTHORIZED "$ID" '{"amount":2500,"currency":"usd","charge_id":"ch_1"}')
	run --separate-stderr ot-consume <<<"$(event INVENTORY_RESERVED "$ID" "{$pay}")
$auth"
	assert_success
	[ "$(sql_orders "SELECT status, version, payment FROM orders WHERE id = '$ID'")" = \
		'CONFIRMED|2|{"amount": 2500, "status": "AUTHORIZED", "currency": "usd"}' ]
	[ "$(rcli HGET "order:{$ID}" payment)" = '{"status":"AUTHORIZED","amount":2500,"currency":"usd"}' ]
	run --separate-stderr ot-consume <<<"$(delivery PREPARING)
$(delivery IN_TRANSIT)
$(delivery DELIVERED)
$(event PAYMENT_CAPTURED "$ID" '{"amount":2500,"currency":"usd","charge_id":"ch_1"}')"
	assert_success
	# Captured after the delivery: the order stays DELIVERED, a new version carries the payment
	# to the cache and to orders.events.
	[ "$(sql_orders "SELECT status, version, payment->>'status' FROM orders WHERE id = '$ID'")" = "DELIVERED|6|CAPTURED" ]
	[ "$(rcli HGET "order:{$ID}" version)" = 6 ]
	[ "$(rcli HGET "order:{$ID}" payment)" = '{"status":"CAPTURED","amount":2500,"currency":"usd"}' ]
	run sql_orders "SELECT payload FROM outbox WHERE key = '$ID' AND type = 'ORDER_STATUS_UPDATED' ORDER BY id DESC LIMIT 1"
	assert_output --partial '"status":"DELIVERED"'
	assert_output --partial '"payment":{"status":"CAPTURED","amount":2500,"currency":"usd"}'
	echo "$stderr" | grep -q '"msg":"payment CAPTURED, order stays DELIVERED (version 6)"'
	run sql_orders "SELECT count(*) FROM outbox WHERE key = '$ID' AND type = 'ORDER_CANCELLED'"
	assert_output 0
	# The authorisation redelivered, or again under a new id, moves nothing back.
	run --separate-stderr ot-consume <<<"$auth
$(event PAYMENT_AUTHORIZED "$ID" '{"amount":2500,"currency":"usd","charge_id":"ch_1"}')"
	assert_success
	[ "$(sql_orders "SELECT status, version, payment->>'status' FROM orders WHERE id = '$ID'")" = "DELIVERED|6|CAPTURED" ]
	[ "$(rcli HGET "order:{$ID}" payment)" = '{"status":"CAPTURED","amount":2500,"currency":"usd"}' ]
}

@test "ot-consume: a declined payment is recorded with its decline code; a void after a cancel keeps the order CANCELLED" {
	local pay='"payment":{"source":"tok_visa"},"amount":900' other
	run --separate-stderr ot-consume <<<"$(event INVENTORY_RESERVED "$ID" "{$pay}")
$(event PAYMENT_DECLINED "$ID" '{"amount":900,"currency":"usd","code":"card_declined","decline_code":"insufficient_funds"}')"
	assert_success
	[ "$(sql_orders "SELECT status, reason, payment->>'status', payment->>'decline_code' FROM orders WHERE id = '$ID'")" = \
		"REJECTED|payment_declined: insufficient_funds|DECLINED|insufficient_funds" ]
	[ "$(rcli HGET "order:{$ID}" payment)" = \
		'{"status":"DECLINED","amount":900,"currency":"usd","decline_code":"insufficient_funds"}' ]
	# An order without a payment has none.
	other=$(place_order "n-$RUNID")
	event INVENTORY_RESERVED "$other" | ot-consume 2>/dev/null
	[ "$(sql_orders "SELECT status, payment IS NULL FROM orders WHERE id = '$other'")" = "CONFIRMED|t" ]
	run rcli HEXISTS "order:{$other}" payment
	assert_output 0
	# Authorised, then cancelled: the void arrives after the order is final.
	other=$(place_order "v-$RUNID")
	run --separate-stderr ot-consume <<<"$(event INVENTORY_RESERVED "$other" "{$pay}")
$(event PAYMENT_AUTHORIZED "$other" '{"amount":700,"currency":"eur"}')
$(event ORDER_CANCELLED "$other" '{"reason":"changed my mind"}')
$(event PAYMENT_VOIDED "$other" '{"amount":700,"currency":"eur","reason":"cancelled"}')"
	assert_success
	[ "$(sql_orders "SELECT status, reason, payment->>'status', payment->>'amount' FROM orders WHERE id = '$other'")" = \
		"CANCELLED|changed my mind|VOIDED|700" ]
	[ "$(rcli HGET "order:{$other}" status)" = CANCELLED ]
	run sql_orders "SELECT count(*) FROM outbox WHERE key = '$other' AND type = 'ORDER_CANCELLED'"
	assert_output 1
}

@test "ot-consume: a duplicate event changes nothing" {
	ev=$(event INVENTORY_RESERVED "$ID")
	run --separate-stderr ot-consume <<<"$ev
$ev"
	assert_success
	run --separate-stderr ot-consume <<<"$ev"
	assert_success
	echo "$stderr" | grep -q 'already applied'
	[ "$(version_of "$ID")" = 2 ]
	[ "$(sql_orders "SELECT count(*) FROM outbox WHERE key = '$ID' AND type = 'ORDER_STATUS_UPDATED'")" -le 1 ]
}

@test "ot-consume: a redelivered event puts the database's status back in a cache left behind (a crash between commit and cache write)" {
	ev=$(event INVENTORY_RESERVED "$ID")
	ot-consume <<<"$ev" 2>/dev/null
	[ "$(rcli HGET "order:{$ID}" version)" = 2 ]
	# As if the process had died after its commit and before its cache write:
	rcli HSET "order:{$ID}" version 1 status PENDING >/dev/null
	run --separate-stderr ot-consume <<<"$ev"
	assert_success
	echo "$stderr" | grep -q 'already applied'
	[ "$(rcli HGET "order:{$ID}" status)" = CONFIRMED ]
	[ "$(rcli HGET "order:{$ID}" version)" = 2 ]
	[ "$(version_of "$ID")" = 2 ]
}

@test "ot-consume: an impossible transition is refused, logged, and applies nothing" {
	run --separate-stderr ot-consume <<<"$(delivery DELIVERED)"
	assert_failure 65
	echo "$stderr" | grep -q "\"level\":\"error\".*impossible transition PENDING -> DELIVERED refused"
	echo "$stderr" | grep -q "$ID"
	[ "$(sql_orders "SELECT status, version FROM orders WHERE id = '$ID'")" = "PENDING|1" ]
	[ "$(rcli HGET "order:{$ID}" status)" = PENDING ]
}

@test "ot-consume: a late event for a state already passed is skipped, not refused" {
	run --separate-stderr ot-consume <<<"$(event INVENTORY_RESERVED "$ID")
$(delivery PREPARING)
$(event INVENTORY_RESERVED "$ID")"
	assert_success
	echo "$stderr" | grep -q 'stale CONFIRMED: order is already PREPARING'
	[ "$(sql_orders "SELECT status, version FROM orders WHERE id = '$ID'")" = "PREPARING|3" ]
}

@test "ot-consume: IN_TRANSIT carries the position into the database and Redis" {
	run --separate-stderr ot-consume <<<"$(event INVENTORY_RESERVED "$ID")
$(delivery PREPARING)
$(delivery IN_TRANSIT '"lat":52.37,"lon":4.89,"eta":"2026-11-24T19:00:00Z"')
$(delivery IN_TRANSIT '"lat":52.38,"lon":4.90')"
	assert_success
	[ "$(sql_orders "SELECT status, version, lat, lon, eta FROM orders WHERE id = '$ID'")" = "IN_TRANSIT|5|52.38|4.9|2026-11-24T19:00:00Z" ]
	[ "$(rcli HGET "order:{$ID}" lat)" = 52.380000 ]
	[ "$(rcli HGET "order:{$ID}" eta)" = 2026-11-24T19:00:00Z ]
	[ "$(rcli HGET "order:{$ID}" version)" = 5 ]
}

@test "ot-consume: a malformed line among good ones exits 65 with its line number, the good ones applied" {
	run --separate-stderr ot-consume <<<"$(event INVENTORY_RESERVED "$ID")
this is not json
$(delivery PREPARING)
{\"id\":\"$(uuid)\",\"type\":\"DELIVERY_UPDATED\",\"order_id\":\"$ID\",\"ts\":\"yesterday\",\"data\":{}}"
	assert_failure 65
	echo "$stderr" | grep -q '"msg":"line 2: not JSON'
	echo "$stderr" | grep -q 'line 4: field \\"ts\\" is not an RFC 3339 timestamp'
	[ "$(status_of "$ID")" = PREPARING ]
}

@test "ot-consume: a position out of range is refused" {
	run --separate-stderr ot-consume <<<"$(event INVENTORY_RESERVED "$ID")
$(delivery PREPARING)
$(delivery IN_TRANSIT '"lat":123,"lon":4.89')"
	assert_failure 65
	echo "$stderr" | grep -q 'line 3: .*data.lat'
	[ "$(status_of "$ID")" = PREPARING ]
}

@test "ot-consume: the orders database unreachable at start exits 69" {
	OT_ORDERS_DB='host=127.0.0.1 port=1 dbname=x connect_timeout=2' run --separate-stderr ot-consume </dev/null
	assert_failure 69
	echo "$stderr" | grep -q 'cannot connect to PostgreSQL'
}

@test "ot-consume: Kafka unreachable at start exits 69" {
	run --separate-stderr ot-consume -b 127.0.0.1:1 -i kafka:delivery.updates </dev/null
	assert_failure 69
	echo "$stderr" | grep -q 'cannot reach Kafka'
}

@test "ot-consume: from Kafka it applies the records and commits their offsets (-e)" {
	group="g-$RUNID"
	topic="inventory.events.$RUNID"
	printf '%s\n' "$(event INVENTORY_RESERVED "$ID")" | ot-relay -i - -O "kafka:$topic" 2>/dev/null
	run --separate-stderr ot-consume -i "kafka:$topic" -G "$group" -e
	assert_success
	[ "$(status_of "$ID")" = CONFIRMED ]
	# The group's offsets were committed: a second run reads nothing new.
	run --separate-stderr ot-consume -i "kafka:$topic" -G "$group" -e
	assert_success
	echo "$stderr" | grep -q '"msg":"0 records'
}

@test "ot-consume: poison records from Kafka go to the dead-letter topic with their key, value and headers; the rest is applied" {
	topic="poison.$RUNID"
	good=$(event INVENTORY_RESERVED "$ID")
	{
		echo "$good"
		echo 'this is not json'
		event DELIVERY_UPDATED "$ID" '{"status":"DELIVERED"}' # impossible from CONFIRMED
		echo "{\"id\":\"x\",\"type\":\"DELIVERY_UPDATED\",\"order_id\":\"$ID\",\"ts\":\"2026-11-24T18:00:00Z\"}"
		event DELIVERY_UPDATED "$ID" '{"status":"PREPARING"}'
	} | ot-relay -i - -O "kafka:$topic" --raw 2>/dev/null
	run --separate-stderr ot-consume -i "kafka:$topic" -G "g-$RUNID" -e
	assert_success
	echo "$stderr" | grep -q '"msg":"5 records: 2 applied, 0 skipped, 0 refused, 3 dead-lettered'
	echo "$stderr" | grep -q "sent to $topic.dlq after 1 attempt: not JSON"
	[ "$(sql_orders "SELECT status, version FROM orders WHERE id = '$ID'")" = "PREPARING|3" ]
	ot-relay -i "kafka:$topic.dlq" -O - --meta -G "d-$RUNID" -e > "$BATS_TEST_TMPDIR/dlq" 2>/dev/null
	[ "$(wc -l < "$BATS_TEST_TMPDIR/dlq")" = 3 ]
	grep -q '"value":"this is not json"' "$BATS_TEST_TMPDIR/dlq"
	line=$(grep 'impossible transition' "$BATS_TEST_TMPDIR/dlq")
	echo "$line" | grep -q "\"key\":\"$ID\""
	echo "$line" | grep -q "\"ot-dlq-topic\":\"$topic\",\"ot-dlq-partition\":\"[0-9]\",\"ot-dlq-offset\":\"[12]\",\"ot-dlq-group\":\"g-$RUNID\""
	echo "$line" | grep -q '"ot-dlq-attempts":"1","ot-dlq-ts":"20[0-9-]*T[0-9:.]*Z"'
	echo "$line" | grep -q '"value":{"id":"[0-9a-f-]*","type":"DELIVERY_UPDATED"'
	# the offsets were committed past the poison: nothing is read twice
	run --separate-stderr ot-consume -i "kafka:$topic" -G "g-$RUNID" -e
	echo "$stderr" | grep -q '"msg":"0 records'
}

@test "ot-consume: an envelope whose traceparent is not one is applied in a trace of its own, never dead-lettered" {
	topic="inventory.events.$RUNID"
	event INVENTORY_RESERVED "$ID" | sed 's/"source":"test",/"source":"test","traceparent":"00-not-a-trace",/' |
		ot-relay -i - -O "kafka:$topic" --raw 2>/dev/null
	run --separate-stderr ot-consume -i "kafka:$topic" -G "g-$RUNID" -e
	assert_success
	echo "$stderr" | grep -q '"msg":"1 records: 1 applied, 0 skipped, 0 refused, 0 dead-lettered'
	[ "$(status_of "$ID")" = CONFIRMED ]
	run sql_orders "SELECT traceparent FROM outbox WHERE key = '$ID' AND type = 'ORDER_STATUS_UPDATED'"
	assert_output --regexp '^00-[0-9a-f]{32}-[0-9a-f]{16}-01$'
}

@test "ot-consume: --attempts is validated" {
	run --separate-stderr ot-consume --attempts 0 </dev/null
	assert_failure 64
	OT_RETRY_ATTEMPTS=x run --separate-stderr ot-consume </dev/null
	assert_failure 78
}

@test "ot-consume: ORDER_CANCELLED cancels the order and announces ORDER_CANCELLED with its lines" {
	drain_outboxes
	run --separate-stderr ot-consume <<<"$(event INVENTORY_RESERVED "$ID")
$(event ORDER_CANCELLED "$ID" '{"reason":"customer called"}')"
	assert_success
	[ "$(sql_orders "SELECT status, version, reason FROM orders WHERE id = '$ID'")" = "CANCELLED|3|customer called" ]
	[ "$(rcli HGET "order:{$ID}" status)" = CANCELLED ]
	sql_orders "SELECT payload FROM outbox WHERE key = '$ID' AND type = 'ORDER_CANCELLED'" |
		grep -q '"data":{"reason":"customer called","items":\[{"sku":"SKU-A","qty":1}\]}'
}

@test "ot-consume: the inventory's answer arriving after a cancel is skipped; an expired release cancels" {
	run --separate-stderr ot-consume <<<"$(event ORDER_CANCELLED "$ID")
$(event INVENTORY_RESERVED "$ID")
$(event INVENTORY_RELEASED "$ID" '{"reason":"cancelled"}')"
	assert_success
	[ "$(sql_orders "SELECT status, version FROM orders WHERE id = '$ID'")" = "CANCELLED|2" ]
	other=$(place_order "d-$RUNID")
	run --separate-stderr ot-consume <<<"$(event INVENTORY_RELEASED "$other" '{"reason":"expired"}')"
	assert_success
	[ "$(sql_orders "SELECT status, reason FROM orders WHERE id = '$other'")" = "CANCELLED|reservation expired" ]
	# a second cancel changes nothing
	run --separate-stderr ot-consume <<<"$(event ORDER_CANCELLED "$ID")"
	assert_success
	[ "$(version_of "$ID")" = 2 ]
}

@test "ot-consume: an event naming the order in upper case updates the canonical cache entry" {
	up=$(echo "$ID" | tr a-f A-F)
	[ "$(rcli HGET "order:{$ID}" status)" = PENDING ]
	run --separate-stderr ot-consume <<<"$(event ORDER_CANCELLED "$up" '{"reason":"case"}')"
	assert_success
	[ "$(status_of "$ID")" = CANCELLED ]
	[ "$(rcli HGET "order:{$ID}" status)" = CANCELLED ]
	[ "$(rcli EXISTS "order:{$up}")" = 0 ]
	echo "$stderr" | grep -q "\"order_id\":\"$ID\""
	! echo "$stderr" | grep -q "$up" || false
	# the announcement for the Inventory Service carries the canonical id too
	[ "$(sql_orders "SELECT count(*) FROM outbox WHERE type = 'ORDER_CANCELLED' AND key = '$ID' AND payload LIKE '%\"order_id\":\"$ID\"%'")" = 1 ]
}

@test "ot-consume: courier updates for an order cancelled meanwhile are skipped as late, counted and logged at info, never dead-lettered" {
	topic="late.$RUNID"
	other=$(place_order "d-$RUNID")
	{
		event INVENTORY_RESERVED "$ID"
		event ORDER_CANCELLED "$ID" '{"reason":"changed my mind"}'
		delivery PREPARING
		delivery IN_TRANSIT '"lat":52.37,"lon":4.89'
		delivery DELIVERED
		event DELIVERY_UPDATED "$other" '{"status":"DELIVERED"}' # impossible from PENDING
	} | ot-relay -i - -O "kafka:$topic" --raw 2>/dev/null
	run --separate-stderr ot-consume -i "kafka:$topic" -G "g-$RUNID" -e
	assert_success
	echo "$stderr" | grep -q '"msg":"6 records: 2 applied, 3 skipped, 0 refused, 1 dead-lettered, 0 retries; 3 of the skipped late'
	[ "$(echo "$stderr" | grep -c "\"level\":\"info\".*skipped: order $ID: late DELIVERY_UPDATED: the order was cancelled meanwhile")" = 3 ]
	[ "$(sql_orders "SELECT status, version FROM orders WHERE id = '$ID'")" = "CANCELLED|3" ]
	[ "$(rcli HGET "order:{$ID}" status)" = CANCELLED ]
	ot-relay -i "kafka:$topic.dlq" -O - --meta -G "d-$RUNID" -e > "$BATS_TEST_TMPDIR/dlq" 2>/dev/null
	[ "$(wc -l < "$BATS_TEST_TMPDIR/dlq")" = 1 ]
	grep -q "\"key\":\"$other\".*impossible transition PENDING -> DELIVERED" "$BATS_TEST_TMPDIR/dlq"
	# from stdin too: a late update is no bad record
	run --separate-stderr ot-consume <<<"$(delivery PREPARING)"
	assert_success
}

@test "ot-consume: a long list of short SKUs in UTF-8 becomes a reason cut on a character boundary" {
	# 'insufficient stock: ["' is 22 bytes: the 255-byte cut falls inside the 117th "é"
	sku=$(printf 'é%.0s' $(seq 1 150))
	run --separate-stderr ot-consume <<<"$(event INVENTORY_RESERVATION_FAILED "$ID" "{\"short_skus\":[\"$sku\"]}")"
	assert_success
	[ "$(status_of "$ID")" = REJECTED ]
	[ "$(sql_orders "SELECT reason = 'insufficient stock: [\"' || repeat('é', 116) FROM orders WHERE id = '$ID'")" = t ]
	[ "$(rcli HGET "order:{$ID}" status)" = REJECTED ]
}

@test "ot-consume: a failing connection never shows the database password (conninfo, URI, help)" {
	for db in 'host=127.0.0.1 port=1 dbname=x user=u password=hunter2 connect_timeout=2' \
		"host=127.0.0.1 port=1 dbname=x password='hunter2 with space' connect_timeout=2" \
		'host=127.0.0.1 port=1 dbname=x PASSWORD=hunter2 connect_timeout=2' \
		'postgresql://u:hunter2@127.0.0.1:1/x?connect_timeout=2' \
		'postgresql://u@127.0.0.1:1/x?password=hunter2&connect_timeout=2' \
		'postgresql://u:hunter2@[::1'; do
		OT_ORDERS_DB=$db run --separate-stderr ot-consume </dev/null
		assert_failure 69
		echo "$stderr" | grep -q 'cannot connect to PostgreSQL'
		echo "$stderr" | grep -qF '***'
		if echo "$stderr" | grep -q hunter2; then
			echo "password shown for $db: $stderr" >&2
			false
		fi
	done
	OT_ORDERS_DB='host=db password=hunter2' OT_REDIS_URL='redis://:hunter2@redis/0' run ot-consume -h
	assert_success
	refute_output --partial hunter2
}

@test "ot-consume: --http-addr serves /healthz, /readyz and /metrics: records by result, handling time, lag and record age" {
	teardown() { stop_bg; }
	port=$(free_port)
	topic="inventory.events.$RUNID"
	ev=$(event INVENTORY_RESERVED "$ID")
	printf '%s\n%s\n' "$ev" "$ev" | ot-relay -i - -O "kafka:$topic" 2>/dev/null
	start_bg "$BATS_TEST_TMPDIR/consume.log" ot-consume -i "kafka:$topic" -G "g-$RUNID" --http-addr "127.0.0.1:$port" \
		-X statistics.interval.ms=200 -X auto.commit.interval.ms=200
	assert_serving "$port"
	t="tool=\"ot-consume\",topic=\"$topic\""
	wait_metric "$port" "ot_records_total{$t,result=\"applied\"}" 1
	wait_metric "$port" "ot_records_total{$t,result=\"duplicate\"}" 1
	[ "$(status_of "$ID")" = CONFIRMED ]
	[ "$(metric_of "$port" "ot_record_handling_seconds_count{$t}")" = 2 ]
	[ "$(metric_of "$port" 'ot_order_transitions_total{tool="ot-consume",to="CONFIRMED"}')" = 1 ]
	[ "$(metric_of "$port" 'ot_cache_writes_total{tool="ot-consume",result="applied"}')" = 1 ]
	# once the offsets are committed, the partition that had the records is caught up (one
	# that never had any has no committed offset, so no lag to show)
	for i in $(seq 1 50); do
		lags=$(curl -s "http://127.0.0.1:$port/metrics" | grep "^ot_kafka_consumer_lag{$t," | awk '{ print $2 }' | sort -u)
		[ "$lags" = 0 ] && break
		sleep 0.2
	done
	[ "$lags" = 0 ]
	age=$(metric_of "$port" "ot_kafka_last_record_age_seconds{$t}")
	awk -v a="$age" 'BEGIN { exit !(a >= 0 && a < 120) }'
	[ "$(metric_of "$port" 'ot_build_info{tool="ot-consume",version="0.1.0"}')" = 1 ]
	[ "$(metric_of "$port" process_open_fds)" -gt 3 ]
	[ "$(metric_of "$port" process_resident_memory_bytes)" -gt 1000000 ]
	promcheck "$port"
}

@test "ot-consume: /readyz is 503 while the orders database does not answer; a run from stdin or with -e never listens" {
	teardown() { stop_bg; }
	port=$(free_port)
	pgp=$(free_port)
	pghost=$(echo "$OT_ORDERS_DB" | sed -n 's/.*port=\([0-9]*\).*/\1/p')
	proxy "$pgp" 127.0.0.1 "$pghost"
	event INVENTORY_RESERVED "$ID" | ot-relay -i - -O "kafka:inventory.events.$RUNID" 2>/dev/null
	start_bg "$BATS_TEST_TMPDIR/consume.log" ot-consume -i "kafka:inventory.events.$RUNID" -G "g-$RUNID" \
		--orders-db "$OT_ORDERS_DB port=$pgp" --http-addr "127.0.0.1:$port"
	wait_health "$port"
	wait_ready "$port"
	kill "$PROXY_PID"
	sleep 1.1 # the last check may be up to a second old
	run curl -s -D "$BATS_TEST_TMPDIR/h" -w '%{http_code}' "http://127.0.0.1:$port/readyz"
	assert_output "$(printf '{"status":"unavailable","error":"the orders database does not answer"}\n503')"
	grep -qi '^Retry-After: 1' "$BATS_TEST_TMPDIR/h"
	run curl -s -w '%{http_code}' "http://127.0.0.1:$port/healthz"
	assert_line --index 1 200
	stop_bg
	# one-shot runs: the port stays free
	event INVENTORY_RESERVED "$ID" | OT_HTTP_ADDR="127.0.0.1:$port" ot-consume 2>/dev/null &
	pid=$!
	run ! port_open "$port"
	wait "$pid"
	run --separate-stderr ot-consume -i "kafka:inventory.events.$RUNID" -G "g-$RUNID" -e --http-addr "127.0.0.1:$port"
	assert_success
	! grep -q 'health and metrics on' <<<"$stderr"
}

@test "ot-consume: a batch with refused events in it applies the rest in order; --batch 1 ends the same" {
	other=$(place_order "c2-$RUNID")
	unknown=$(uuid)
	input() { # ORDER_A ORDER_B
		event INVENTORY_RESERVED "$1"
		event DELIVERY_UPDATED "$2" '{"status":"DELIVERED"}'   # impossible from PENDING
		event INVENTORY_RESERVED "$2"
		event DELIVERY_UPDATED "$unknown" '{"status":"PREPARING"}' # unknown order
		event DELIVERY_UPDATED "$1" '{"status":"PREPARING"}'
		event DELIVERY_UPDATED "$1" '{"status":"IN_TRANSIT","lat":52.1,"lon":4.9,"eta":"2026-11-27T12:00:00Z"}'
		event DELIVERY_UPDATED "$1" '{"status":"IN_TRANSIT","lat":52.2,"lon":4.8}'
	}
	input "$ID" "$other" > "$BATS_TEST_TMPDIR/in"
	run --separate-stderr ot-consume < "$BATS_TEST_TMPDIR/in"
	[ "$status" -eq 65 ]
	echo "$stderr" | grep -q '"msg":"7 records: 5 applied, 0 skipped, 2 refused'
	echo "$stderr" | grep -q "line 2: order $other: impossible transition [A-Z]* -> DELIVERED refused"
	echo "$stderr" | grep -q "line 4: order $unknown: DELIVERY_UPDATED for unknown order"
	[ "$(sql_orders "SELECT status, version, lat, lon, eta FROM orders WHERE id = '$ID'")" = "IN_TRANSIT|5|52.2|4.8|2026-11-27T12:00:00Z" ]
	[ "$(sql_orders "SELECT status, version FROM orders WHERE id = '$other'")" = "CONFIRMED|2" ]
	# Each change in the outbox in order, and the cache at the last one.
	[ "$(sql_orders "SELECT string_agg(payload::jsonb->>'version', ',' ORDER BY id) FROM outbox WHERE key = '$ID'")" = "1,2,3,4,5" ]
	[ "$(rcli HGET "order:{$ID}" version)" = 5 ]
	[ "$(rcli HGET "order:{$ID}" lat)" = 52.200000 ]
	# The refused events left no processed_events row: a later copy is judged again.
	refused=$(sed -n '2p;4p' "$BATS_TEST_TMPDIR/in" | jq -r .id | sed "s/.*/'&'/" | paste -sd,)
	[ "$(sql_orders "SELECT count(*) FROM processed_events WHERE event_id IN ($refused)")" = 0 ]
	# The same input one record per transaction ends in the same state.
	a=$(place_order "c3-$RUNID")
	b=$(place_order "c4-$RUNID")
	input "$a" "$b" | ot-consume --batch 1 2>/dev/null || true
	[ "$(sql_orders "SELECT status, version, lat, lon, eta FROM orders WHERE id = '$a'")" = "IN_TRANSIT|5|52.2|4.8|2026-11-27T12:00:00Z" ]
	[ "$(sql_orders "SELECT status, version FROM orders WHERE id = '$b'")" = "CONFIRMED|2" ]
}

@test "ot-consume: a record read from a slow writer is applied without waiting for a batch to fill" {
	mkfifo "$BATS_TEST_TMPDIR/fifo"
	ot-consume < "$BATS_TEST_TMPDIR/fifo" 2>"$BATS_TEST_TMPDIR/log" &
	pid=$!
	exec 5>"$BATS_TEST_TMPDIR/fifo"
	event INVENTORY_RESERVED "$ID" >&5
	wait_sql orders "SELECT status FROM orders WHERE id = '$ID'" CONFIRMED
	event DELIVERY_UPDATED "$ID" '{"status":"PREPARING"}' >&5
	wait_sql orders "SELECT status FROM orders WHERE id = '$ID'" PREPARING
	exec 5>&-
	wait "$pid"
}

@test "ot-consume: --batch and OT_BATCH are validated" {
	run ot-consume --batch 0
	[ "$status" -eq 64 ]
	assert_output --partial "--batch 0: expected 1 to 4096"
	OT_BATCH=5000 run ot-consume
	[ "$status" -eq 78 ]
	assert_output --partial "OT_BATCH=5000: expected 1 to 4096"
}

@test "ot-consume: a refused event in a batch is judged where it stands, as one at a time: not retried after later ones" {
	for batch in 256 1; do
		id=$(place_order "c-$RUNID-$batch")
		ot-consume <<<"$(event INVENTORY_RESERVED "$id")" 2>/dev/null
		# IN_TRANSIT before PREPARING: impossible from CONFIRMED, whatever follows it.
		run --separate-stderr ot-consume --batch "$batch" <<<"$(event DELIVERY_UPDATED "$id" '{"status":"IN_TRANSIT"}')
$(event DELIVERY_UPDATED "$id" '{"status":"PREPARING"}')"
		[ "$status" -eq 65 ]
		echo "$stderr" | grep -q "line 1: order $id: impossible transition CONFIRMED -> IN_TRANSIT refused"
		[ "$(sql_orders "SELECT status, version FROM orders WHERE id = '$id'")" = "PREPARING|3" ]
	done
}
