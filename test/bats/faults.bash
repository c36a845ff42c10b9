# Fault tests' shared parts: a run of N orders through the services over Kafka, supervised as
# Kubernetes would (a killed service comes back), and the invariants checked at the end.

N=${OT_FAULT_ORDERS:-1000}

# Starts a service under a restart loop: supervise NAME COMMAND...; its pid is in $SUP/NAME.pid.
supervise() {
	local name=$1
	shift
	(
		set +e # bats runs with -e; a killed child must not end the loop
		trap 'kill -TERM "$child" 2>/dev/null; wait "$child"; exit 0' TERM
		while :; do
			"$@" 2>>"$SUP/$name.log" &
			child=$!
			echo "$child" >"$SUP/$name.pid"
			wait "$child"
			echo "restart after exit $?" >>"$SUP/$name.restarts"
			sleep 0.2
		done
	) &
	BG_PIDS+=($!)
}

# The pipeline over Kafka with groups of this run.
start_services() {
	SUP="$BATS_TEST_TMPDIR/sup"
	mkdir -p "$SUP"
	supervise relay-orders ot-relay --db orders -O kafka --mode "${RELAY_MODE:-poll}"
	supervise relay-inventory ot-relay --db inventory -O kafka --mode "${RELAY_MODE:-poll}"
	supervise reserve ot-reserve -i kafka:orders.events -G "r-$RUNID"
	supervise consume ot-consume -i kafka:inventory.events,delivery.updates -G "c-$RUNID"
}

# kill -9 the service's current process.
kill9() { kill -KILL "$(cat "$SUP/$1.pid")"; }

# N order requests with one line of SKU $SKU, qty 1..3, placed as one run.
place_run() {
	awk -v n="$N" -v run="$RUNID" -v sku="$SKU" 'BEGIN { srand(); for (i = 1; i <= n; i++)
		printf "{\"customer_id\":\"f-%s-%d\",\"items\":[{\"sku\":\"%s\",\"qty\":%d}],\"address\":\"x\",\"request_id\":\"f-%s-%d\"}\n",
			run, i, sku, 1 + int(rand() * 3), run, i }' > "$BATS_TEST_TMPDIR/requests"
	ot-place < "$BATS_TEST_TMPDIR/requests" > "$BATS_TEST_TMPDIR/placed" 2>>"$BATS_TEST_TMPDIR/place.log"
}

in_run() { echo "customer_id LIKE 'f-$RUNID-%'"; }
count_run() { sql_orders "SELECT count(*) FROM orders WHERE $(in_run) AND status IN ($1)"; }

# Waits until all N orders are in one of the states: settle STATES SECONDS
settle() {
	local states=$1 limit=${2:-120} t0=$SECONDS got
	while :; do
		got=$(count_run "$states")
		[ "$got" = "$N" ] && return 0
		if [ $((SECONDS - t0)) -ge "$limit" ]; then
			echo "after ${limit}s only $got of $N orders in ($states):" >&2
			sql_orders "SELECT status, count(*) FROM orders WHERE $(in_run) GROUP BY 1" >&2
			tail -n 5 "$SUP"/*.log >&2
			return 1
		fi
		sleep 0.5
	done
}

# Couriers for the confirmed orders, through Kafka.
deliver() {
	sql_orders "SELECT id FROM orders WHERE $(in_run) AND status = 'CONFIRMED'" |
		ot-courier -n 1 | ot-relay -i - -O kafka:delivery.updates 2>>"$BATS_TEST_TMPDIR/courier.log"
}

# The invariants, after the run settled:
# - DB, Redis and the event log agree: Redis holds either nothing or the database's status and
#   version; every order's ORDER_STATUS_UPDATED events on orders.events are version - 1
#   distinct ids ending in its status;
# - no effect applied twice: a delivered order is at version 5 (CONFIRMED, PREPARING,
#   IN_TRANSIT, DELIVERED), a cancelled one's stock was released once;
# - stock is conserved: available + reserved = loaded, reserved = the lines of live orders;
# - nothing is stuck: both outboxes are empty.
check_invariants() {
	local loaded=$1 db redis log bad
	db="$BATS_TEST_TMPDIR/db"
	sql_orders "SELECT id, status, version FROM orders WHERE $(in_run) ORDER BY id" > "$db"
	[ "$(wc -l < "$db")" = "$N" ]
	# Redis: one pipelined HMGET per order
	awk -F'|' '{ print "HMGET order:" $1 " status version" }' "$db" | rcli | paste - - > "$BATS_TEST_TMPDIR/redis"
	bad=$(paste -d'|' "$db" "$BATS_TEST_TMPDIR/redis" | awk -F'[|\t]' '!($4 == "" || ($4 == $2 && $5 == $3))' | head -5)
	[ -z "$bad" ] || { echo "Redis disagrees with the database: $bad" >&2; return 1; }
	# lost: an order that did not reach a final state; double effects: a delivered order whose
	# version is not exactly 5 (CONFIRMED, PREPARING, IN_TRANSIT, DELIVERED, once each)
	LOST=$(awk -F'|' '$2 != "DELIVERED" && $2 != "CANCELLED"' "$db" | wc -l)
	DUPS=$(awk -F'|' '$2 == "DELIVERED" && $3 > 5' "$db" | wc -l)
	bad=$(awk -F'|' '($2 == "DELIVERED" && $3 != 5) || ($2 != "DELIVERED" && $2 != "CANCELLED")' "$db" | head -5)
	[ -z "$bad" ] || { echo "unexpected state or version ($LOST lost, $DUPS applied twice): $bad" >&2; return 1; }
	# the event log
	wait_sql orders "SELECT count(*) FROM outbox" 0 60
	wait_sql inventory "SELECT count(*) FROM outbox" 0 60
	ot-relay -i kafka:orders.events -O - --meta -G "log-$RUNID" -e 2>/dev/null |
		grep -F -f <(cut -d'|' -f1 "$db") |
		sed -n 's/.*"key":"\([^"]*\)".*"ot-id":"\([^"]*\)","ot-type":"ORDER_STATUS_UPDATED".*"version":\([0-9]*\).*"data":{"status":"\([A-Z_]*\)".*/\1 \2 \3 \4/p' |
		sort -u | awk '{ n[$1]++; if ($3 > v[$1]) { v[$1] = $3; s[$1] = $4 } } END { for (k in n) print k "|" s[k] "|" n[k] + 1 }' |
		sort > "$BATS_TEST_TMPDIR/log"
	# an order missing from the log, or with fewer events than versions, lost events
	LOST=$((LOST + $(join -t'|' -v1 <(cut -d'|' -f1 "$db" | sort) <(cut -d'|' -f1 "$BATS_TEST_TMPDIR/log" | sort) | wc -l)))
	if ! diff <(sort "$db") "$BATS_TEST_TMPDIR/log" > "$BATS_TEST_TMPDIR/log.diff"; then
		echo "the event log disagrees with the database:" >&2
		head -10 "$BATS_TEST_TMPDIR/log.diff" >&2
		return 1
	fi
	# published twice: an event of the run on its topic more than once (a test that republishes
	# a topic on purpose sets ALLOW_TWICE)
	TWICE=$(( $(published_twice orders.events) + $(published_twice inventory.events) ))
	[ -n "${ALLOW_TWICE:-}" ] || [ "$TWICE" = 0 ] || { echo "$TWICE events published twice" >&2; return 1; }
	# stock
	[ "$(sql_inventory "SELECT available + reserved FROM stock WHERE sku = '$SKU'")" = "$loaded" ]
	live=$(sql_orders "SELECT coalesce(sum(i.qty), 0) FROM orders o JOIN order_items i ON i.order_id = o.id WHERE $(in_run) AND o.status <> 'CANCELLED'")
	[ "$(sql_inventory "SELECT reserved FROM stock WHERE sku = '$SKU'")" = "$live" ]
	[ "$(sql_inventory "SELECT coalesce(sum(qty), 0) FROM reservations WHERE sku = '$SKU' AND status = 'RESERVED'")" = "$live" ]
}

# How many events of this run's orders TOPIC holds more than once (by ot-id), once the run's
# orders are in $BATS_TEST_TMPDIR/db: published_twice TOPIC
published_twice() {
	ot-relay -i "kafka:$1" -O - --meta -G "twice-$RUNID-$1" -e 2>/dev/null |
		grep -F -f <(cut -d'|' -f1 "$BATS_TEST_TMPDIR/db") |
		grep -o '"ot-id":"[^"]*"' | sort | uniq -d | wc -l
}

# After a CDC test: the slots go, so the server keeps no WAL for them.
drop_slots() {
	ot-relay --mode cdc --db orders --drop-slot 2>/dev/null || true
	ot-relay --mode cdc --db inventory --drop-slot 2>/dev/null || true
}

# One line for the record, after check_invariants: fault, orders, events lost, effects applied
# twice (both counted there), recovery seconds.
report() {
	local line="fault=$1 relay=${RELAY_MODE:-poll} orders=$N lost=$LOST duplicate_effects=$DUPS published_twice=${TWICE:-?} recovery_s=$2"
	echo "# $line" >&3
	echo "$line" >> "${OT_FAULT_REPORT:-/dev/null}"
}
