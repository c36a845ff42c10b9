#!/usr/bin/env bats
# k8s/monitoring/runbook.md, tried for real: each procedure's `sh` blocks marked
# <!-- runbook-test: NAME --> are taken from the runbook as written and run against the real
# stack; where a step says `kubectl` (stop, start, scale a Deployment), the test stops or starts
# the process itself.
# On its own: eval "$(scripts/ot-stack env)"; bats test/bats/runbook.bats
bats_require_minimum_version 1.5.0

setup() {
	load helpers
	common_setup
	SKU="R-$RUNID"
	stock "$SKU" 100
	SLOT="ot_relay_rb_${RUNID//[^a-z0-9]/_}"
	cd "$BATS_TEST_TMPDIR"
}

teardown() {
	stop_bg
	ot-relay --mode cdc --db orders --slot "$SLOT" --drop-slot >/dev/null 2>&1 || true
	show_logs 5
}

# The shell block of runbook.md marked <!-- runbook-test: NAME -->, as written there.
block() {
	doc_block "$ROOT/k8s/monitoring/runbook.md" runbook-test "$1"
}

# Runs a runbook block with bash -e and pipefail, stdout and stderr apart: step NAME
step() {
	local code
	code=$(block "$1") || return 1
	run --separate-stderr bash -eo pipefail -c "$code"
}

@test "runbook: outbox backlog: the look shows what waits, the drain by hand sends it" {
	drain_outboxes
	export DB=orders DBURL="$OT_ORDERS_DB"
	# The relay is stopped: two orders wait.
	a=$(place_order "c-$RUNID-1" "[{\"sku\":\"$SKU\",\"qty\":1}]")
	b=$(place_order "c-$RUNID-2" "[{\"sku\":\"$SKU\",\"qty\":1}]")
	[ -n "$a" ]
	[ -n "$b" ]
	step outbox-backlog/look
	assert_success
	assert_output --regexp '^orders\.events\|2\|[0-9]+$'
	step outbox-backlog/drain
	assert_success
	[[ "$stderr" == *'"relayed 2 events from the orders outbox"'* ]]
	step outbox-backlog/look
	assert_success
	assert_output ''
	# They are on orders.events now, under their order ids.
	ot-relay -i kafka:orders.events -O - --meta -G "look-$RUNID" -o -200 -e 2>/dev/null > seen
	grep -q "\"key\":\"$a\"" seen
	grep -q "\"key\":\"$b\"" seen
}

@test "runbook: CDC slot drop and re-create: an unread slot is dropped, and the next relay makes it again and sends what waited" {
	drain_outboxes
	export DB=orders DBURL="$OT_ORDERS_DB" SLOT
	port=$(free_port)
	start_bg "$BATS_TEST_TMPDIR/relay.log" ot-relay --db orders --mode cdc --slot "$SLOT" -O kafka --http-addr "127.0.0.1:$port"
	relay=${BG_PIDS[-1]}
	wait_ready "$port"
	for ((i = 0; i < 50; i++)); do step cdc-slot/look; [[ "$output" == *"$SLOT|t|"* ]] && break; sleep 0.2; done
	assert_output --partial "$SLOT|t|"
	# The relay stops (scale to 0); orders go on being placed.
	kill -TERM "$relay"
	wait "$relay" || true
	place_order "c-$RUNID-1" "[{\"sku\":\"$SKU\",\"qty\":1}]" > /dev/null
	place_order "c-$RUNID-2" "[{\"sku\":\"$SKU\",\"qty\":1}]" > /dev/null
	step cdc-slot/look
	assert_line --regexp "^$SLOT\|f\|[1-9][0-9]*$"
	step cdc-slot/drop
	assert_success
	[[ "$stderr" == *"replication slot $SLOT dropped"* ]]
	step cdc-slot/look
	refute_output --partial "$SLOT|"
	[ "$(sql_orders "SELECT count(*) FROM outbox")" = 2 ]
	# Scale to 1: the slot comes back, and the rows that waited are sent.
	start_bg "$BATS_TEST_TMPDIR/relay2.log" ot-relay --db orders --mode cdc --slot "$SLOT" -O kafka --http-addr "127.0.0.1:$port"
	wait_sql orders "SELECT count(*) FROM outbox" 0 30
	for ((i = 0; i < 50; i++)); do step cdc-slot/look; [[ "$output" == *"$SLOT|t|"* ]] && break; sleep 0.2; done
	assert_output --partial "$SLOT|t|"
}

@test "runbook: dead-letter replay: an update that came too early goes through once its order caught up" {
	port=$(free_port)
	export TOPIC=delivery.updates
	start_bg "$BATS_TEST_TMPDIR/consume.log" ot-consume -i kafka:inventory.events,delivery.updates -G "c-$RUNID" --http-addr "127.0.0.1:$port"
	assert_serving "$port"
	ORDER_ID=$(place_order "c-$RUNID" "[{\"sku\":\"$SKU\",\"qty\":1}]")
	export ORDER_ID
	# IN_TRANSIT for an order still PENDING: impossible, dead-lettered.
	event DELIVERY_UPDATED "$ORDER_ID" '{"status":"IN_TRANSIT"}' | ot-relay -i - -O kafka:delivery.updates 2>/dev/null
	for ((i = 0; i < 100; i++)); do grep -q "sent to delivery.updates.dlq" consume.log 2>/dev/null && break; sleep 0.2; done
	for ((i = 0; i < 50; i++)); do
		step dead-letter-replay/look
		[[ "$output" == *"\"key\":\"$ORDER_ID\""* ]] && break
		sleep 0.2
	done
	assert_success
	assert_output --regexp "\"key\":\"$ORDER_ID\",\"error\":\"[^\"]*IN_TRANSIT"
	[ "$(status_of "$ORDER_ID")" = PENDING ]
	# The cause goes away: the order is confirmed and its preparation starts.
	event INVENTORY_RESERVED "$ORDER_ID" | ot-relay -i - -O kafka:inventory.events 2>/dev/null
	wait_sql orders "SELECT status FROM orders WHERE id = '$ORDER_ID'" CONFIRMED 30
	event DELIVERY_UPDATED "$ORDER_ID" '{"status":"PREPARING"}' | ot-relay -i - -O kafka:delivery.updates 2>/dev/null
	wait_sql orders "SELECT status FROM orders WHERE id = '$ORDER_ID'" PREPARING 30
	step dead-letter-replay/replay
	assert_success
	[ "$(wc -l < pick.jsonl)" = 1 ]
	wait_sql orders "SELECT status FROM orders WHERE id = '$ORDER_ID'" IN_TRANSIT 30
}

@test "runbook: scaling consumers: the lag exporter shows the group's members grow and its lag drain" {
	topic="rb-scale-$RUNID" lag=$(free_port) a=$(free_port) b=$(free_port)
	export GROUP="g-$RUNID" LAG_ADDR="127.0.0.1:$lag"
	ot-relay topics create --partitions 4 "$topic" > /dev/null
	python3 -c 'import json, uuid
for _ in range(300):
    print(json.dumps({"id": str(uuid.uuid4()), "type": "ORDER_CREATED", "order_id": str(uuid.uuid4()),
                      "ts": "2026-11-24T18:00:00.000Z", "source": "test", "data": {}}))' |
		ot-relay -i - -O "kafka:$topic" 2>/dev/null
	start_bg "$BATS_TEST_TMPDIR/lag.log" ot-relay lag --interval 0.5 --http-addr "$LAG_ADDR" "$GROUP"
	start_bg "$BATS_TEST_TMPDIR/a.log" ot-consume -i "kafka:$topic" -G "$GROUP" --http-addr "127.0.0.1:$a"
	wait_ready "$lag"
	for ((i = 0; i < 100; i++)); do step scaling-consumers/look; [[ "$output" == *"members{group=\"$GROUP\"} 1"* ]] && break; sleep 0.2; done
	assert_output --partial "ot_kafka_consumergroup_members{group=\"$GROUP\"} 1"
	# Scale out: a second member joins.
	start_bg "$BATS_TEST_TMPDIR/b.log" ot-consume -i "kafka:$topic" -G "$GROUP" --http-addr "127.0.0.1:$b"
	for ((i = 0; i < 100; i++)); do step scaling-consumers/look; [[ "$output" == *"members{group=\"$GROUP\"} 2"* ]] && break; sleep 0.2; done
	assert_output --partial "ot_kafka_consumergroup_members{group=\"$GROUP\"} 2"
	# Every partition's lag drains to 0.
	for ((i = 0; i < 100; i++)); do
		step scaling-consumers/look
		[ "$(grep -c '^ot_kafka_consumergroup_lag.* 0$' <<< "$output")" = 4 ] && break
		sleep 0.2
	done
	run grep -c "^ot_kafka_consumergroup_lag{group=\"$GROUP\",topic=\"$topic\",partition=\"[0-3]\"} 0$" <<< "$output"
	assert_output 4
}

@test "runbook: cache rebuild and verify: drift found and repaired; after a flush the rebuild puts every order back" {
	export TOPIC="orders.events.$RUNID"
	order_history "$TOPIC" rb
	mapfile -t ids < "$BATS_TEST_TMPDIR/rb.ids"
	rcli HSET "order:{${ids[0]}}" version 1 status PENDING >/dev/null
	rcli HSET 'order:{}' status PENDING version 1 >/dev/null
	step cache/verify
	assert_success
	assert_line "{\"drift\":\"stale\",\"order_id\":\"${ids[0]}\",\"key\":null}"
	assert_line '{"drift":"orphan","order_id":null,"key":"order:{}"}'
	step cache/repair
	assert_success
	[ "$(rcli HGET "order:{${ids[0]}}" status)" = "$(status_of "${ids[0]}")" ]
	[ "$(rcli EXISTS 'order:{}')" = 0 ]
	rcli FLUSHALL >/dev/null
	step cache/rebuild
	assert_success
	assert_output ''
	assert_cache_restored rb
}

@test "runbook: rotating API keys: both keys write while they overlap, only the new one after" {
	port=$(free_port)
	export OLD_KEY="old-$RUNID-0123456789" NEW_KEY="new-$RUNID-0123456789" API="http://127.0.0.1:$port"
	OT_API_KEY="$OLD_KEY,$NEW_KEY" start_bg "$BATS_TEST_TMPDIR/serve1.log" ot-serve --http-addr "127.0.0.1:$port"
	serve=${BG_PIDS[-1]}
	wait_health "$port"
	step rotating-api-keys/check
	assert_success
	assert_output "$(printf '404\n404')"
	kill -TERM "$serve"
	wait "$serve" || true
	OT_API_KEY="$NEW_KEY" start_bg "$BATS_TEST_TMPDIR/serve2.log" ot-serve --http-addr "127.0.0.1:$port"
	wait_health "$port"
	step rotating-api-keys/check
	assert_success
	assert_output "$(printf '401\n404')"
}

# A payment left UNKNOWN: its authorisation reached the emulator, which made the charge, and
# every answer was lost on the way back (http-faults drop*). Sets ORDER_ID.
unknown_payment() {
	local port
	port=$(free_port)
	start_bg "$BATS_TEST_TMPDIR/faults.log" python3 "$ROOT/test/tools/http-faults.py" "$port" "$OT_PAY_URL" 'drop*'
	for ((i = 0; i < 50; i++)); do curl -fsS -o /dev/null "http://127.0.0.1:$port/__faults" 2>/dev/null && break; sleep 0.1; done
	ORDER_ID=$(uuid)
	export ORDER_ID
	run bash -c "$(declare -f event uuid); event INVENTORY_RESERVED '$ORDER_ID' '{\"payment\":{\"source\":\"tok_visa\"},\"amount\":1500}' |
		OT_PAY_URL=http://127.0.0.1:$port ot-pay 2>/dev/null"
	assert_failure 69
	[ "$(sql_payments "SELECT status FROM payments WHERE order_id = '$ORDER_ID'")" = UNKNOWN ]
}

@test "runbook: reconciling a payment by hand: the look finds the UNKNOWN payment, and the processor the charge made for its order" {
	: "${OT_PAY_URL:?}" "${OT_PAY_KEY:?}"
	unknown_payment
	step pay-reconcile/look
	assert_success
	assert_line --regexp "^$ORDER_ID\|1500\|usd\|[0-9]+$"
	step pay-reconcile/processor
	assert_success
	assert_output --regexp '^\{"id":"ch_[A-Za-z0-9]+","status":"succeeded","amount":1500,"currency":"usd","captured":false,"refunded":false,"created":[0-9]+\}$'
	# The key travelled in a header: no process saw it on a command line, nothing printed it.
	[[ "$output$stderr" != *"$OT_PAY_KEY"* ]]
}

@test "runbook: reconciling a payment by hand: ot-pay reconcile records the charge found, once" {
	: "${OT_PAY_URL:?}" "${OT_PAY_KEY:?}"
	ot-pay -h 2>&1 | grep -q reconcile || skip "ot-pay has no reconcile subcommand in this build"
	unknown_payment
	step pay-reconcile/processor
	charge=$(jq -r .id <<<"$output")
	[ -n "$charge" ]
	# Older than the CronJob's --older-than 60, as a payment stuck for the alert would be.
	sql_payments "UPDATE payments SET updated_at = now() - interval '2 minutes' WHERE order_id = '$ORDER_ID'"
	step pay-reconcile/reconcile
	assert_success
	[ "$(sql_payments "SELECT status, charge_id FROM payments WHERE order_id = '$ORDER_ID'")" = "AUTHORIZED|$charge" ]
	# Still that one charge at the processor.
	step pay-reconcile/processor
	assert_success
	[ "$(wc -l <<<"$output")" = 1 ]
	step pay-reconcile/look
	refute_output --partial "$ORDER_ID"
}
