#!/usr/bin/env bats
# Scale out: three ot-reserve and three ot-consume share their consumer groups over 12
# partitions while members are killed (kill -9) and others join mid-run. Judged by end states
# only, as an outside observer would: every order terminal, each order's history on
# orders.events in order with no gap and a legal path, every effect applied once, nothing
# published twice, both outboxes drained. OT_SCALE_ORDERS sets the orders (default 300).
bats_require_minimum_version 1.5.0

setup() {
	load helpers
	load faults
	common_setup
	N=${OT_SCALE_ORDERS:-300}
	# Every order has a line of SKU, of which there is plenty; every odd one also a line of
	# SKU2, of which there is a third of what they ask, so some are rejected whole.
	SKU="S-$RUNID"
	LOADED=$((N * 10))
	SKU2="T-$RUNID"
	LOADED2=$((N / 3))
	stock "$SKU" "$LOADED"
	stock "$SKU2" "$LOADED2"
	FINAL='DELIVERED|REJECTED|CANCELLED'
	POSITIONS=3
	SUP="$BATS_TEST_TMPDIR/sup"
	mkdir -p "$SUP"
}

teardown() {
	stop_bg
	[ "${RELAY_MODE:-poll}" = poll ] || drop_slots
}

# A member of a consumer group, not restarted when it dies: member NAME COMMAND...
member() {
	local name=$1
	shift
	"$@" 2>>"$SUP/$name.log" &
	echo $! >"$SUP/$name.pid"
	BG_PIDS+=($!)
}

# Waits until a member's log says the group gave it partitions: assigned NAME
assigned() {
	local i
	for ((i = 0; i < 300; i++)); do
		grep -q 'kafka: assigned [1-9]' "$SUP/$1.log" 2>/dev/null && return 0
		sleep 0.2
	done
	echo "$1 never got a partition:" >&2
	tail -n 5 "$SUP/$1.log" >&2
	return 1
}

# Waits until at least COUNT orders of the run are in one of STATES: reach STATES COUNT
reach() {
	local i got
	for ((i = 0; i < 900; i++)); do
		got=$(count_run "$1")
		[ "$got" -ge "$2" ] && return 0
		sleep 0.2
	done
	echo "only $got orders in ($1), waited for $2" >&2
	return 1
}

# Each topic the run reads has at least 12 partitions (ot-stack up makes them so).
twelve_partitions() {
	ot-relay topics create --partitions 12 orders.events inventory.events delivery.updates >/dev/null 2>&1
	run ot-relay topics list orders.events inventory.events delivery.updates
	assert_success
	bad=$(printf '%s\n' "$output" | jq -r 'select(.partitions < 12) | "\(.topic): \(.partitions)"')
	[ -z "$bad" ] || { echo "topics with fewer than 12 partitions (a stack made before they had 12: ot-stack down, up): $bad" >&2; return 1; }
}

scale_run() {
	local t0=$SECONDS half=$((N / 2)) decided="'CONFIRMED','REJECTED','CANCELLED'" i
	twelve_partitions
	supervise relay-orders ot-relay --db orders -O kafka --mode "$RELAY_MODE"
	supervise relay-inventory ot-relay --db inventory -O kafka --mode "$RELAY_MODE"
	for i in 1 2 3; do
		member "reserve-$i" ot-reserve -i kafka:orders.events -G "r-$RUNID"
		member "consume-$i" ot-consume -i kafka:inventory.events,delivery.updates -G "c-$RUNID"
	done
	for i in 1 2 3; do
		assigned "reserve-$i"
		assigned "consume-$i"
	done
	requests >"$BATS_TEST_TMPDIR/requests"
	head -n "$half" "$BATS_TEST_TMPDIR/requests" | ot-place >"$BATS_TEST_TMPDIR/placed" 2>>"$BATS_TEST_TMPDIR/place.log"
	# Every tenth order of the first half is cancelled at once, racing its reservation (the
	# customer's cancel, as ot-serve would apply it). Those have only the plentiful SKU, so
	# none of them can be rejected first.
	sql_orders "SELECT id FROM orders WHERE $(in_run) AND substring(customer_id from '-([0-9]+)\$')::int % 10 = 0" \
		>"$BATS_TEST_TMPDIR/cancelled"
	while read -r id; do event ORDER_CANCELLED "$id" '{"reason":"changed my mind"}'; done \
		<"$BATS_TEST_TMPDIR/cancelled" | ot-consume 2>>"$BATS_TEST_TMPDIR/cancel.log"
	# A member of each group dies without leaving once some orders are decided; its
	# partitions wait out its session, then the others take them.
	reach "$decided" $((half / 3))
	kill -KILL "$(cat "$SUP/reserve-2.pid")" "$(cat "$SUP/consume-2.pid")"
	tail -n +$((half + 1)) "$BATS_TEST_TMPDIR/requests" | ot-place >>"$BATS_TEST_TMPDIR/placed" 2>>"$BATS_TEST_TMPDIR/place.log"
	# and a new member joins each group
	reach "$decided" "$half"
	member reserve-4 ot-reserve -i kafka:orders.events -G "r-$RUNID"
	member consume-4 ot-consume -i kafka:inventory.events,delivery.updates -G "c-$RUNID"
	settle "$decided" 180
	assigned reserve-4
	assigned consume-4
	# the couriers' updates, and one more ot-consume killed while they are applied
	deliver
	reach "'DELIVERED'" $((N / 10))
	kill -KILL "$(cat "$SUP/consume-3.pid")"
	settle "'DELIVERED','REJECTED','CANCELLED'" 180
	RECOVERY=$((SECONDS - t0))
	check_invariants "$LOADED"
	check_ordering
	check_effects
	# the run went where it was sent: exactly the cancelled orders are CANCELLED, and some
	# orders were rejected, some delivered
	diff <(sort "$BATS_TEST_TMPDIR/cancelled") <(sql_orders "SELECT id FROM orders WHERE $(in_run) AND status = 'CANCELLED'" | sort)
	[ "$(count_run "'REJECTED'")" -gt 0 ]
	[ "$(count_run "'DELIVERED'")" -gt 0 ]
	# the members that lived to the end are still there
	for i in reserve-1 reserve-3 reserve-4 consume-1 consume-4; do
		kill -0 "$(cat "$SUP/$i.pid")"
	done
	report scale-12-partitions "$RECOVERY"
}

@test "scale: 3 ot-reserve and 3 ot-consume over 12 partitions, killed and joined mid-run, poll relay: every order terminal, in order, each effect once" {
	RELAY_MODE=poll
	scale_run
}

@test "scale: 3 ot-reserve and 3 ot-consume over 12 partitions, killed and joined mid-run, cdc relay: every order terminal, in order, each effect once" {
	RELAY_MODE=cdc
	scale_run
}
