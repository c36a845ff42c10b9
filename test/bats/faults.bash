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
	if [ -z "${PAY_URL:-}" ]; then
		supervise consume ot-consume -i kafka:inventory.events,delivery.updates -G "c-$RUNID"
		return 0
	fi
	# With $PAY_URL, the Payment Service too, paying with the processor there.
	supervise relay-payments ot-relay --db payments -O kafka --mode "${RELAY_MODE:-poll}"
	supervise pay ot-pay -i kafka:inventory.events,orders.events -G "p-$RUNID" --pay-url "$PAY_URL"
	supervise consume ot-consume -i kafka:inventory.events,delivery.updates,payments.events -G "c-$RUNID"
}

# kill -9 the service's current process.
kill9() { kill -KILL "$(cat "$SUP/$1.pid")"; }

# N order requests with one line of SKU $SKU, qty 1..3, and with $SKU2 set a second line of
# it (qty 1..3) on every odd one, placed as one run. With $SOURCES (payment sources, space
# separated) the i-th order is paid with the i-th of them, round and round.
place_run() {
	requests > "$BATS_TEST_TMPDIR/requests"
	ot-place < "$BATS_TEST_TMPDIR/requests" > "$BATS_TEST_TMPDIR/placed" 2>>"$BATS_TEST_TMPDIR/place.log"
}
requests() {
	awk -v n="$N" -v run="$RUNID" -v sku="$SKU" -v sku2="${SKU2:-}" -v sources="${SOURCES:-}" 'BEGIN {
		srand(); ns = split(sources, src, " "); for (i = 1; i <= n; i++) {
		second = sku2 != "" && i % 2 ? sprintf(",{\"sku\":\"%s\",\"qty\":%d}", sku2, 1 + int(rand() * 3)) : ""
		pay = ns ? sprintf(",\"payment\":{\"source\":\"%s\"}", src[(i - 1) % ns + 1]) : ""
		printf "{\"customer_id\":\"f-%s-%d\",\"items\":[{\"sku\":\"%s\",\"qty\":%d}%s],\"address\":\"x\",\"request_id\":\"f-%s-%d\"%s}\n",
			run, i, sku, 1 + int(rand() * 3), second, run, i, pay } }'
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

# Couriers for the confirmed orders, through Kafka: PREPARING, $POSITIONS IN_TRANSIT updates
# (default 1), DELIVERED.
deliver() {
	sql_orders "SELECT id FROM orders WHERE $(in_run) AND status = 'CONFIRMED'" |
		ot-courier -n "${POSITIONS:-1}" | ot-relay -i - -O kafka:delivery.updates 2>>"$BATS_TEST_TMPDIR/courier.log"
}

# The invariants, after the run settled:
# - DB, Redis and the event log agree: Redis holds either nothing or the database's status and
#   version; every order's ORDER_STATUS_UPDATED events on orders.events are version - 1
#   distinct ids ending in its status;
# - every order is in one of $FINAL (default DELIVERED|CANCELLED);
# - no effect applied twice: a delivered order is at version 4 + $POSITIONS (CONFIRMED,
#   PREPARING, each IN_TRANSIT, DELIVERED), one more when its capture is recorded after it
#   ($CAPTURED=1: orders paid by card), a rejected one at 2, a cancelled one's stock was
#   released once;
# - stock is conserved: available + reserved = loaded, reserved = the lines of live orders
#   ($SKU loaded with $1, and $SKU2 with $LOADED2 when set);
# - nothing is stuck: both outboxes are empty.
check_invariants() {
	local loaded=$1 db redis log bad final=${FINAL:-DELIVERED|CANCELLED} delivered=$((4 + ${POSITIONS:-1} + ${CAPTURED:-0}))
	db="$BATS_TEST_TMPDIR/db"
	sql_orders "SELECT id, status, version FROM orders WHERE $(in_run) ORDER BY id" > "$db"
	[ "$(wc -l < "$db")" = "$N" ]
	# Redis: one pipelined HMGET per order. A consumer killed between its commit and its cache
	# write leaves the cache behind until its records are delivered again to the member that
	# takes its partitions (after the session timeout), which then writes the database's
	# status: so the cache must agree within a minute, not at once.
	local t0=$SECONDS
	while :; do
		awk -F'|' '{ print "HMGET order:{" $1 "} status version" }' "$db" | rcli | paste - - > "$BATS_TEST_TMPDIR/redis"
		bad=$(paste -d'|' "$db" "$BATS_TEST_TMPDIR/redis" | awk -F'[|\t]' '!($4 == "" || ($4 == $2 && $5 == $3))' | head -5)
		[ -n "$bad" ] && [ $((SECONDS - t0)) -lt 60 ] || break
		sleep 1
	done
	[ -z "$bad" ] || { echo "Redis disagrees with the database: $bad" >&2; return 1; }
	# lost: an order that did not reach a final state; double effects: a delivered order whose
	# version is not exactly 4 + POSITIONS (CONFIRMED, PREPARING, each IN_TRANSIT, DELIVERED,
	# once each; + CAPTURED), a rejected one past 2
	LOST=$(awk -F'|' -v f="^($final)\$" '$2 !~ f' "$db" | wc -l)
	DUPS=$(awk -F'|' -v d="$delivered" '($2 == "DELIVERED" && $3 > d) || ($2 == "REJECTED" && $3 > 2)' "$db" | wc -l)
	bad=$(awk -F'|' -v f="^($final)\$" -v d="$delivered" '($2 == "DELIVERED" && $3 != d) || ($2 == "REJECTED" && $3 != 2) || $2 !~ f' "$db" | head -5)
	[ -z "$bad" ] || { echo "unexpected state or version ($LOST lost, $DUPS applied twice): $bad" >&2; return 1; }
	# the event log
	wait_sql orders "SELECT count(*) FROM outbox" 0 60
	wait_sql inventory "SELECT count(*) FROM outbox" 0 60
	sed -n 's/.*"key":"\([^"]*\)".*"ot-id":"\([^"]*\)","ot-type":"ORDER_STATUS_UPDATED".*"version":\([0-9]*\).*"data":{"status":"\([A-Z_]*\)".*/\1 \2 \3 \4/p' "$(run_log orders.events)" |
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
	check_stock "$SKU" "$loaded"
	[ -z "${SKU2:-}" ] || check_stock "$SKU2" "$LOADED2"
}

# Stock is conserved and decremented once per live order: available + reserved = loaded, and
# reserved = the open reservations = the run's lines of SKU in orders neither cancelled nor
# rejected: check_stock SKU LOADED
check_stock() {
	local sku=$1 loaded=$2 live got
	got=$(sql_inventory "SELECT available + reserved FROM stock WHERE sku = '$sku'")
	[ "$got" = "$loaded" ] || { echo "$sku: available + reserved = $got, loaded $loaded" >&2; return 1; }
	live=$(sql_orders "SELECT coalesce(sum(i.qty), 0) FROM orders o JOIN order_items i ON i.order_id = o.id WHERE $(in_run) AND i.sku = '$sku' AND o.status NOT IN ('CANCELLED', 'REJECTED')")
	got=$(sql_inventory "SELECT reserved FROM stock WHERE sku = '$sku'")
	[ "$got" = "$live" ] || { echo "$sku: reserved $got, live orders hold $live" >&2; return 1; }
	got=$(sql_inventory "SELECT coalesce(sum(qty), 0) FROM reservations WHERE sku = '$sku' AND status = 'RESERVED'")
	[ "$got" = "$live" ] || { echo "$sku: open reservations $got, live orders hold $live" >&2; return 1; }
}

# The run's records on TOPIC (--meta lines), read once from its beginning by a group of their
# own, once the run's orders are in $BATS_TEST_TMPDIR/db; prints the file's name: run_log TOPIC
run_log() {
	local f="$BATS_TEST_TMPDIR/log.$1"
	[ -e "$f" ] || ot-relay -i "kafka:$1" -O - --meta -G "log-$RUNID-$1" -e 2>/dev/null |
		grep -F -f <(cut -d'|' -f1 "$BATS_TEST_TMPDIR/db") > "$f"
	echo "$f"
}

# Per-order ordering, after check_invariants, from orders.events as a reader sees it: each
# order's records are on one partition; by offset they are ORDER_CREATED at version 1, then
# ORDER_STATUS_UPDATED at versions 2, 3, ... with no gap or step back, each a transition the
# saga allows (or the status kept while the payment moves: a capture, a void), ending at the
# database's status and version; ORDER_CANCELLED comes once, right after the update to
# CANCELLED, for a cancelled order only.
check_ordering() {
	local out="$BATS_TEST_TMPDIR/ordering" bad
	jq -r 'select(.value | type == "object") | [.key, .partition, .offset, .headers["ot-type"],
		.headers["ot-id"], .value.version, (.value.data.status // "-"), (.value.data.payment.status // "-")] | @tsv' \
		"$(run_log orders.events)" |
		LC_ALL=C sort -t"$(printf '\t')" -k1,1 -k3,3n | awk -F'\t' '
		function flush() { if (key != "") print key "|" st "|" v "|" cancels }
		function bad(why) { print "BAD " key ": " why; broken = 1 }
		BEGIN { split("PENDING>CONFIRMED PENDING>REJECTED PENDING>CANCELLED CONFIRMED>PREPARING " \
			"CONFIRMED>CANCELLED PREPARING>IN_TRANSIT PREPARING>CANCELLED IN_TRANSIT>IN_TRANSIT " \
			"IN_TRANSIT>DELIVERED", t, " "); for (i in t) legal[t[i]] = 1 }
		$5 in seen { next } # copies of one event: published_twice counts them
		{ seen[$5] = 1 }
		$1 != key { flush(); key = $1; part = $2; st = ""; ps = "-"; v = 0; cancels = 0 }
		$2 != part { bad("records on partitions " part " and " $2) }
		$4 == "ORDER_CREATED" { if (v != 0 || $6 != 1) bad("ORDER_CREATED at version " $6 " after " v); v = 1; st = "PENDING"; next }
		$4 == "ORDER_STATUS_UPDATED" {
			if (v == 0) bad("an update before ORDER_CREATED")
			if ($6 != v + 1) bad("version " $6 " after " v)
			if (!((st ">" $7) in legal) && !(st == $7 && $8 != "-" && $8 != ps))
				bad(st " -> " $7 " is no transition of the saga")
			v = $6; st = $7; ps = $8; next }
		$4 == "ORDER_CANCELLED" { cancels++; if (st != "CANCELLED" || $6 != v) bad("ORDER_CANCELLED at version " $6 " in " st " " v); next }
		{ bad("unexpected " $4) }
		END { flush() }' > "$out"
	bad=$(grep '^BAD ' "$out" | head -5)
	[ -z "$bad" ] || { echo "per-order ordering broken: $bad" >&2; return 1; }
	# each order's history ends where the database is, with one ORDER_CANCELLED if cancelled
	bad=$(LC_ALL=C join -t'|' -a1 -e MISSING -o 1.1,1.2,1.3,2.2,2.3,2.4 <(LC_ALL=C sort "$BATS_TEST_TMPDIR/db") \
		<(grep -v '^BAD ' "$out" | LC_ALL=C sort) |
		awk -F'|' '$2 != $4 || $3 != $5 || $6 != ($2 == "CANCELLED" ? 1 : 0)' | head -5)
	[ -z "$bad" ] || { echo "history and database disagree (id|db status|db version|log status|log version|cancels): $bad" >&2; return 1; }
}

# Each effect once, after check_invariants: on inventory.events every order has exactly one
# decision (INVENTORY_RESERVED for an order that went on or was cancelled,
# INVENTORY_RESERVATION_FAILED for a rejected or cancelled one) and an INVENTORY_RELEASED only
# if it was reserved and then cancelled; the open reservations are exactly the lines of the
# orders still holding stock; no consumer recorded an event twice in processed_events.
check_effects() {
	local bad
	bad=$(jq -r '[.key, .headers["ot-type"], .headers["ot-id"]] | @tsv' "$(run_log inventory.events)" |
		LC_ALL=C sort -u | awk -F'\t' '{ k = $1 }
		$2 == "INVENTORY_RESERVED" { r[k]++ } $2 == "INVENTORY_RESERVATION_FAILED" { f[k]++ }
		$2 == "INVENTORY_RELEASED" { rel[k]++ }
		END { for (k in r) print k "|" r[k] "|" (k in f ? f[k] : 0) "|" (k in rel ? rel[k] : 0)
		      for (k in f) if (!(k in r)) print k "|0|" f[k] "|" (k in rel ? rel[k] : 0) }' |
		LC_ALL=C sort | LC_ALL=C join -t'|' -a1 -e 0 -o 1.1,1.2,2.2,2.3,2.4 <(LC_ALL=C sort "$BATS_TEST_TMPDIR/db") - |
		awk -F'|' '$3 + $4 != 1 ||
			($2 == "DELIVERED" && ($3 != 1 || $5 != 0)) || ($2 == "REJECTED" && ($4 != 1 || $5 != 0)) ||
			($2 == "CANCELLED" && $5 != $3)' | head -5)
	[ -z "$bad" ] || { echo "inventory decisions not once each (id|status|reserved|failed|released): $bad" >&2; return 1; }
	diff <(sql_orders "SELECT i.order_id, i.sku, i.qty FROM orders o JOIN order_items i ON i.order_id = o.id
		WHERE $(in_run) AND o.status NOT IN ('CANCELLED', 'REJECTED') ORDER BY 1, 2") \
		<(sql_inventory "SELECT order_id, sku, qty FROM reservations WHERE status = 'RESERVED'
		AND sku IN ('$SKU', '${SKU2:-$SKU}') ORDER BY 1, 2") >&2 || { echo "open reservations are not the live orders' lines" >&2; return 1; }
	[ "$(sql_orders "SELECT count(*) FROM (SELECT 1 FROM processed_events GROUP BY consumer, event_id HAVING count(*) > 1) d")" = 0 ]
	[ "$(sql_inventory "SELECT count(*) FROM (SELECT 1 FROM processed_events GROUP BY consumer, event_id HAVING count(*) > 1) d")" = 0 ]
}

# How many events of this run's orders TOPIC holds more than once (by ot-id), once the run's
# orders are in $BATS_TEST_TMPDIR/db: published_twice TOPIC
published_twice() {
	grep -o '"ot-id":"[^"]*"' "$(run_log "$1")" | sort | uniq -d | wc -l
}

# After a CDC test: the slots go, so the server keeps no WAL for them.
drop_slots() {
	ot-relay --mode cdc --db orders --drop-slot 2>/dev/null || true
	ot-relay --mode cdc --db inventory --drop-slot 2>/dev/null || true
	[ -z "${PAY_URL:-}" ] || ot-relay --mode cdc --db payments --drop-slot 2>/dev/null || true
}

# One line for the record, after check_invariants: fault, orders, events lost, effects applied
# twice (both counted there), recovery seconds.
report() {
	local line="fault=$1 relay=${RELAY_MODE:-poll} orders=$N lost=$LOST duplicate_effects=$DUPS published_twice=${TWICE:-?} recovery_s=$2"
	echo "# $line" >&3
	echo "$line" >> "${OT_FAULT_REPORT:-/dev/null}"
}

# The processor behind test/tools/http-faults.py on a port of its own, its pid in BG_PIDS and its
# URL in PAY_URL for start_services: of its first $1 requests (default 3000) one in $2 (default 4)
# fails at random (a 500, a 429, a reset, an answer lost after the processor acted on it, or one
# held back 400 ms), and one in 25 starts four answers lost in a row (as many as a call's
# attempts: its outcome unknown), then every one goes through: faulty_processor [REQUESTS] [EVERY]
faulty_processor() {
	local port rules i
	port=$(free_port)
	rules=$(awk -v n="${1:-3000}" -v every="${2:-4}" 'BEGIN { srand(); split("500 429:1 reset drop delay:400", f, " ")
		for (i = 0; i < n; i++) print rand() < 0.04 ? "drop*4" : rand() * every < 1 ? f[1 + int(rand() * 5)] : "delay:0" }')
	# shellcheck disable=SC2086 # one rule a word
	python3 "$ROOT/test/tools/http-faults.py" "$port" "$OT_PAY_URL" $rules &
	BG_PIDS+=($!)
	PAY_URL="http://127.0.0.1:$port"
	for ((i = 0; i < 50; i++)); do
		port_open "$port" && return 0
		sleep 0.1
	done
	return 1
}

# How many requests the proxy failed on purpose, by rule, on one line.
faults_injected() {
	curl -sf "$PAY_URL/__faults" | jq -r '[.requests[].action | select(. != "delay:0")] | group_by(.) |
		map("\(.[0])=\(length)") | join(" ")'
}

# The processor's charges created since $1 (seconds since the epoch), read from its API as any
# client would, a page of 100 at a time: "order_id|charge|status|amount|captured|refunded|
# amount_refunded" lines: processor_charges SINCE
processor_charges() {
	local after= page
	while :; do
		page=$(curl -sf -u "$OT_PAY_KEY:" "$OT_PAY_URL/v1/charges?limit=100&created%5Bgte%5D=$1${after:+&starting_after=$after}") || return 1
		jq -r '.data[] | select(.metadata.order_id) |
			[.metadata.order_id, .id, .status, .amount, .captured, .refunded, .amount_refunded] | join("|")' <<<"$page"
		[ "$(jq -r .has_more <<<"$page")" = true ] || return 0
		after=$(jq -r '.data[-1].id' <<<"$page")
	done
}

# Money, after check_invariants on a run paid by card ($SKU at $PRICE, $SKU2 at $PRICE2), as an
# outside observer sees it: the processor's charges since $1, the payments rows and
# payments.events.
# - each order has at most one charge; a DELIVERED one exactly one, captured, of its total
#   (the sum of qty x price), nothing refunded; a CANCELLED or REJECTED one no money kept (no
#   charge, a failed one, or one refunded in full);
# - its payment row is final and agrees: CAPTURED of the total for DELIVERED, VOIDED, REFUNDED
#   or DECLINED for the others, never UNKNOWN, PENDING or AUTHORIZED; an order is REJECTED
#   only when its card was declined (tok_visa never is), and one whose card was is not
#   delivered;
# - payments.events holds each order's changes once each: PAYMENT_AUTHORIZED then
#   PAYMENT_CAPTURED for a delivered one, PAYMENT_DECLINED for a declined one, a
#   PAYMENT_VOIDED or PAYMENT_REFUNDED after its authorisation for a cancelled one;
# - the payments outbox is empty.
# Sets CHARGES, CAPTURED (cents), VOIDED, DECLINED, TWICE_CHARGED and MONEY_BAD for report.
check_payments() {
	local since=$1 ids rows bad
	ids=$(cut -d'|' -f1 "$BATS_TEST_TMPDIR/db" | paste -sd, -)
	wait_sql payments "SELECT count(*) FROM outbox" 0 60
	sql_orders "SELECT o.id, sum(i.qty * CASE i.sku WHEN '$SKU' THEN ${PRICE:?} ELSE ${PRICE2:-0} END)
		FROM orders o JOIN order_items i ON i.order_id = o.id WHERE $(in_run) GROUP BY o.id ORDER BY 1" > "$BATS_TEST_TMPDIR/totals"
	sql_payments "SELECT order_id, status, amount, captured, refunded, source FROM payments
		WHERE order_id = ANY('{$ids}'::uuid[]) ORDER BY 1" > "$BATS_TEST_TMPDIR/payments"
	processor_charges "$since" | grep -F -f <(cut -d'|' -f1 "$BATS_TEST_TMPDIR/db") | LC_ALL=C sort > "$BATS_TEST_TMPDIR/charges"
	jq -r '[.key, .headers["ot-id"], .headers["ot-type"], .offset] | @tsv' "$(run_log payments.events)" |
		LC_ALL=C sort -u -t"$(printf '\t')" -k1,1 -k2,2 | LC_ALL=C sort -t"$(printf '\t')" -k1,1 -k4,4n |
		awk -F'\t' '{ t[$1] = t[$1] (t[$1] == "" ? "" : ",") $3 } END { for (k in t) print k "|" t[k] }' |
		LC_ALL=C sort > "$BATS_TEST_TMPDIR/paid.events"
	# one line an order: id|status|version|total|payment status|amount|captured|refunded|source|
	# charges|charge status|amount|captured|amount_refunded|events
	LC_ALL=C join -t'|' <(LC_ALL=C sort "$BATS_TEST_TMPDIR/db") <(LC_ALL=C sort "$BATS_TEST_TMPDIR/totals") |
		LC_ALL=C join -t'|' -a1 -e - -o 1.1,1.2,1.3,1.4,2.2,2.3,2.4,2.5,2.6 - <(LC_ALL=C sort "$BATS_TEST_TMPDIR/payments") |
		LC_ALL=C join -t'|' -a1 -e 0 -o 1.1,1.2,1.3,1.4,1.5,1.6,1.7,1.8,1.9,2.2,2.3,2.4,2.5,2.6 - \
			<(awk -F'|' '{ n[$1]++; c[$1] = $3 "|" $4 "|" $5 "|" $7 } END { for (k in n) print k "|" n[k] "|" c[k] }' \
			"$BATS_TEST_TMPDIR/charges" | LC_ALL=C sort) |
		LC_ALL=C join -t'|' -a1 -e - -o 1.1,1.2,1.3,1.4,1.5,1.6,1.7,1.8,1.9,1.10,1.11,1.12,1.13,1.14,2.2 - \
			"$BATS_TEST_TMPDIR/paid.events" > "$BATS_TEST_TMPDIR/money"
	rows=$(wc -l < "$BATS_TEST_TMPDIR/money")
	[ "$rows" = "$N" ] || { echo "$rows of $N orders joined their totals" >&2; return 1; }
	TWICE_CHARGED=$(awk -F'|' '$10 > 1' "$BATS_TEST_TMPDIR/money" | wc -l)
	awk -F'|' '
		function bad(why) { print $1 " (" $2 ", total " $4 ", payment " $5 " " $6 "/" $7 "/" $8 " " $9 \
			", " $10 " charges: " $11 " " $12 " captured " $13 " refunded " $14 ", events " $15 "): " why }
		$10 > 1 { bad("charged " $10 " times") }
		$9 == "tok_visa" && $2 == "REJECTED" { bad("a good card rejected") }
		$9 != "tok_visa" && $2 !~ /^(REJECTED|CANCELLED)$/ { bad("a declined card not rejected") }
		$2 == "DELIVERED" {
			if ($10 != 1 || $11 != "succeeded" || $12 != $4 || $13 != "true" || $14 != 0) bad("not one capture of its total")
			if ($5 != "CAPTURED" || $6 != $4 || $7 != $4 || $8 != 0) bad("payment row not CAPTURED of its total")
			if ($15 != "PAYMENT_AUTHORIZED,PAYMENT_CAPTURED") bad("events not authorised then captured, once each")
		}
		$2 == "CANCELLED" || $2 == "REJECTED" {
			if ($10 == 1 && $11 != "failed" && $14 != $12) bad("money kept")
			if ($5 !~ /^(VOIDED|REFUNDED|DECLINED)$/ || $7 != $8) bad("payment row not given back")
		}
		$2 == "CANCELLED" && $15 !~ /^((PAYMENT_AUTHORIZED,)?PAYMENT_(VOIDED|REFUNDED)|PAYMENT_DECLINED|-)$/ { bad("events " $15) }
		$2 == "REJECTED" && $15 != "PAYMENT_DECLINED" { bad("events " $15) }
		$5 ~ /^(UNKNOWN|PENDING|AUTHORIZED|-)$/ { bad("payment left " $5) }' "$BATS_TEST_TMPDIR/money" > "$BATS_TEST_TMPDIR/money.bad"
	MONEY_BAD=$(wc -l < "$BATS_TEST_TMPDIR/money.bad")
	CHARGES=$(wc -l < "$BATS_TEST_TMPDIR/charges")
	CAPTURED=$(awk -F'|' '$5 == "true" { s += $4 - $7 } END { print s + 0 }' "$BATS_TEST_TMPDIR/charges")
	VOIDED=$(awk -F'|' '$5 ~ /^(VOIDED|REFUNDED)$/' "$BATS_TEST_TMPDIR/money" | wc -l)
	DECLINED=$(awk -F'|' '$5 == "DECLINED"' "$BATS_TEST_TMPDIR/money" | wc -l)
	TWICE=$(published_twice payments.events)
	[ "$MONEY_BAD" = 0 ] || { echo "money wrong for $MONEY_BAD orders:" >&2; head -5 "$BATS_TEST_TMPDIR/money.bad" >&2; return 1; }
	[ "$TWICE" = 0 ] || { echo "$TWICE payment events published twice" >&2; return 1; }
}
