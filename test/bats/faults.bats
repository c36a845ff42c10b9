#!/usr/bin/env bats
# Faults with a thousand orders in flight: whatever is killed or restarted, every order ends
# in its expected state, the database, Redis and the event log agree, stock is conserved, and
# no effect is applied twice. Each test reports its figures as a TAP comment.
bats_require_minimum_version 1.5.0

setup() {
	load helpers
	load faults
	common_setup
	SKU="F-$RUNID"
	LOADED=1000000
	stock "$SKU" "$LOADED"
}

teardown() {
	stop_bg
	[ "${RELAY_MODE:-poll}" = poll ] || drop_slots
	scripts_dir="$ROOT/scripts"
	"$scripts_dir/ot-stack" up >/dev/null 2>&1 || true # whatever a test stopped comes back
}

@test "faults: kill -9 of ot-relay, ot-reserve and ot-consume mid-batch loses and repeats nothing" {
	start_services
	place_run &
	placing=$!
	sleep 1
	t0=$SECONDS
	kill9 relay-orders
	sleep 0.5
	kill9 reserve
	sleep 0.5
	kill9 consume
	kill9 relay-inventory
	wait "$placing"
	settle "'CONFIRMED'" 120
	deliver
	sleep 0.5
	kill9 consume
	sleep 1
	kill9 consume
	settle "'DELIVERED'" 180
	recovery=$((SECONDS - t0))
	check_invariants "$LOADED"
	[ -s "$SUP/consume.restarts" ]
	report kill-9 "$recovery"
}

@test "faults: the Kafka broker stopped and restarted mid-run" {
	start_services
	place_run
	t0=$SECONDS
	"$ROOT/scripts/ot-stack" restart kafka
	settle "'CONFIRMED'" 180
	deliver
	settle "'DELIVERED'" 180
	recovery=$((SECONDS - t0))
	check_invariants "$LOADED"
	report kafka-restart "$recovery"
}

@test "faults: PostgreSQL restarted mid-run" {
	start_services
	place_run &
	placing=$!
	sleep 1
	t0=$SECONDS
	"$ROOT/scripts/ot-stack" restart postgres
	wait "$placing"
	[ "$(wc -l < "$BATS_TEST_TMPDIR/placed")" -le "$N" ]
	# whatever ot-place could not confirm is placed again: request_id keeps it to one order each
	ot-place < "$BATS_TEST_TMPDIR/requests" > /dev/null 2>>"$BATS_TEST_TMPDIR/place.log"
	[ "$(sql_orders "SELECT count(*) FROM orders WHERE $(in_run)")" = "$N" ]
	settle "'CONFIRMED'" 180
	deliver
	settle "'DELIVERED'" 180
	recovery=$((SECONDS - t0))
	check_invariants "$LOADED"
	report postgres-restart "$recovery"
}

@test "faults: Redis restarted (and emptied) mid-run; no stale entry survives" {
	start_services
	place_run
	t0=$SECONDS
	"$ROOT/scripts/ot-stack" restart redis
	settle "'CONFIRMED'" 120
	deliver
	"$ROOT/scripts/ot-stack" restart redis
	settle "'DELIVERED'" 180
	recovery=$((SECONDS - t0))
	check_invariants "$LOADED"
	report redis-restart "$recovery"
}

@test "faults: a whole topic delivered twice changes nothing" {
	ALLOW_TWICE=1
	start_services
	place_run
	settle "'CONFIRMED'" 120
	deliver
	settle "'DELIVERED'" 180
	t0=$SECONDS
	before=$(grep -c 'already applied' "$SUP/consume.log" || true)
	# every record of this run on inventory.events and delivery.updates, once more
	for t in inventory.events delivery.updates; do
		ot-relay -i "kafka:$t" -O - -G "again-$RUNID-$t" -e 2>/dev/null |
			grep -F -f <(sed -n 's/.*"order_id":"\([^"]*\)".*/\1/p' "$BATS_TEST_TMPDIR/placed") |
			ot-relay -i - -O "kafka:$t" 2>/dev/null
	done
	want=$((before + 4 * N))
	for i in $(seq 1 240); do
		[ "$(grep -c 'already applied' "$SUP/consume.log")" -ge "$want" ] && break
		sleep 0.5
	done
	[ "$(grep -c 'already applied' "$SUP/consume.log")" -ge "$want" ]
	recovery=$((SECONDS - t0))
	check_invariants "$LOADED"
	report duplicate-topic "$recovery"
}

@test "faults: poison records mixed into the stream go to the dead-letter topic; the rest completes" {
	start_services
	place_run
	settle "'CONFIRMED'" 120
	t0=$SECONDS
	# One garbage line after every 60 updates: each order's own updates keep their order.
	sql_orders "SELECT id FROM orders WHERE $(in_run) AND status = 'CONFIRMED'" | ot-courier -n 1 |
		awk '{ print } NR % 60 == 0 && g < 50 { printf "garbage %d {\n", ++g }
		     END { while (g < 50) printf "garbage %d {\n", ++g }' |
		ot-relay -i - -O kafka:delivery.updates --raw 2>/dev/null
	settle "'DELIVERED'" 180
	recovery=$((SECONDS - t0))
	check_invariants "$LOADED"
	report poison "$recovery"
	# every one of them is there (at least once: delivery is at-least-once)
	n=$(ot-relay -i kafka:delivery.updates.dlq -O - --meta -G "dlq-$RUNID" -e 2>/dev/null |
		grep "\"ot-dlq-group\":\"c-$RUNID\"" | grep -o '"value":"garbage [0-9]* {"' | sort -u | wc -l)
	[ "$n" = 50 ]
}

@test "faults: a storm of cancels racing the reservations ends consistent" {
	start_services
	place_run
	t0=$SECONDS
	sed -n 's/.*"order_id":"\([^"]*\)".*/\1/p' "$BATS_TEST_TMPDIR/placed" | awk 'NR % 2' |
		while read -r id; do event ORDER_CANCELLED "$id" '{"reason":"storm"}'; done |
		ot-consume 2>>"$BATS_TEST_TMPDIR/cancel.log"
	settle "'CONFIRMED','CANCELLED'" 120
	deliver
	settle "'DELIVERED','CANCELLED'" 180
	# every cancelled order's stock is back (checked below) once the releases are through
	wait_sql inventory "SELECT count(*) FROM outbox" 0 60
	for i in $(seq 1 120); do
		live=$(sql_orders "SELECT coalesce(sum(i.qty), 0) FROM orders o JOIN order_items i ON i.order_id = o.id WHERE $(in_run) AND o.status <> 'CANCELLED'")
		[ "$(sql_inventory "SELECT reserved FROM stock WHERE sku = '$SKU'")" = "$live" ] && break
		sleep 0.5
	done
	recovery=$((SECONDS - t0))
	[ "$(count_run "'CANCELLED'")" = $((N / 2)) ]
	check_invariants "$LOADED"
	report cancel-storm "$recovery"
}

@test "faults (cdc): a run with no fault drains both outboxes and publishes every event once" {
	RELAY_MODE=cdc
	start_services
	place_run
	t0=$SECONDS
	settle "'CONFIRMED'" 120
	deliver
	settle "'DELIVERED'" 180
	recovery=$((SECONDS - t0))
	check_invariants "$LOADED"
	[ "$(sql_orders "SELECT count(*) FROM outbox")" = 0 ]
	[ "$(sql_inventory "SELECT count(*) FROM outbox")" = 0 ]
	report cdc-no-fault "$recovery"
}

@test "faults (cdc): PostgreSQL restarted and the relays killed mid-run publish no event twice" {
	RELAY_MODE=cdc
	start_services
	place_run &
	placing=$!
	sleep 1
	t0=$SECONDS
	kill9 relay-orders
	"$ROOT/scripts/ot-stack" restart postgres
	wait "$placing" || true
	# whatever ot-place could not confirm is placed again: request_id keeps it to one order each
	ot-place < "$BATS_TEST_TMPDIR/requests" > /dev/null 2>>"$BATS_TEST_TMPDIR/place.log"
	kill9 relay-inventory
	settle "'CONFIRMED'" 180
	deliver
	sleep 0.3
	kill9 relay-orders
	settle "'DELIVERED'" 180
	recovery=$((SECONDS - t0))
	check_invariants "$LOADED"
	report cdc-postgres-restart-kill "$recovery"
}
