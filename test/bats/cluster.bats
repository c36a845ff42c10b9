#!/usr/bin/env bats
# The stack's Redis Cluster (three masters) and ot_rcluster and ot_rpipe against it, through the
# cmocka binaries build/test/test_rcluster and test_rpipe_cluster (built by make units);
# scripts/ot-stack status and up for the cluster.

bats_require_minimum_version 1.5.0

setup() {
	load helpers
	common_setup
	: "${OT_REDIS_CLUSTER_URL:?scripts/ot-stack env exports it: eval \"\$(scripts/ot-stack env)\" again}"
	[ -x "$ROOT/build/test/test_rcluster" ] || { echo "build/test/test_rcluster is missing: make units" >&2; false; }
	P1=$(echo "$OT_REDIS_CLUSTER_URL" | sed -n 's|redis://[^:]*:\([0-9]*\).*|\1|p')
	PORTS=("$P1" $((P1 + 1)) $((P1 + 2)))
	# The stack's own base, whatever this shell exported: its masters are base+81..83.
	STACK_BASE=$((P1 - 81))
	KILLED=
}

teardown() {
	stop_bg
	# A master a test stopped (SIGSTOP) runs again, even when the test binary died first.
	for p in "${PORTS[@]}"; do
		kill -CONT "$(cat "$OT_STACK_DIR/rcluster/$p/redis.pid" 2>/dev/null)" 2>/dev/null || true
	done
	# A master killed by a test comes back, so the next test (and file) finds the whole cluster.
	if [ -n "$KILLED" ]; then
		OT_STACK_PORT_BASE=$STACK_BASE ot-stack up >/dev/null 2>&1 || true
	fi
	# A slot a test moved goes back to its master.
	if [ -n "$MOVED" ]; then
		move_slot $MOVED || true
	fi
}

ccli() { redis-cli -c -p "${PORTS[0]}" "$@"; }
slot_of() { redis-cli -p "${PORTS[0]}" cluster keyslot "$1"; }
owner_of() { # SLOT: the port of the master that serves it
	local p
	for p in "${PORTS[@]}"; do
		redis-cli -p "$p" cluster nodes | awk -v s="$1" -v me=0 '$3 ~ /myself/ {
			for (i = 9; i <= NF; i++) { if ($i ~ /^\[/) continue; n = split($i, r, "-")
				if ((n == 1 && r[1] == s) || (n == 2 && s >= r[1] && s <= r[2])) me = 1 } }
			END { exit !me }' && { echo "$p"; return; }
	done
}
move_slot() { # SLOT FROM TO: moves a slot, keys and all, from one master to another
	local slot=$1 from=$2 to=$3 src dst keys p
	src=$(redis-cli -p "$from" cluster myid)
	dst=$(redis-cli -p "$to" cluster myid)
	redis-cli -p "$to" cluster setslot "$slot" importing "$src" >/dev/null
	redis-cli -p "$from" cluster setslot "$slot" migrating "$dst" >/dev/null
	while keys=$(redis-cli -p "$from" cluster getkeysinslot "$slot" 100 | tr '\n' ' ') && [ -n "${keys// /}" ]; do
		# shellcheck disable=SC2086
		redis-cli -p "$from" migrate 127.0.0.1 "$to" "" 0 5000 keys $keys >/dev/null
	done
	for p in "${PORTS[@]}"; do
		redis-cli -p "$p" cluster setslot "$slot" node "$dst" >/dev/null
	done
}

cluster_state() { redis-cli -p "$1" cluster info | tr -d '\r' | sed -n 's/^cluster_state://p'; }
# Every master is ok again, and holds no key matching $1: a test put its slots back and its keys away.
assert_cluster_clean() {
	local p
	for p in "${PORTS[@]}"; do
		[ "$(cluster_state "$p")" = ok ]
		run redis-cli -p "$p" --scan --pattern "$1"
		assert_output ''
	done
}

@test "ot_rcluster: slots as the spec computes them; keys on all three masters; credentials on each node; MOVED and ASK followed; a closed connection replaced; a stopped master gives NULL within its timeout" {
	run env OT_TEST_REDIS_URL="$OT_REDIS_URL" OT_TEST_REDIS_CLUSTER_URL="$OT_REDIS_CLUSTER_URL" \
		"$ROOT/build/test/test_rcluster"
	echo "$output"
	assert_success
	assert_output --partial '[  PASSED  ] 3 test(s).'
	assert_output --partial '[  PASSED  ] 7 test(s).'
	refute_output --partial FAILED
	assert_cluster_clean 'test:rc:*'
}

@test "ot_rpipe: against the cluster, each command answered once, in order per key, on all three masters; a slot moved or migrating mid-way still answers; a stopped master fails only its commands, within 2.5 s" {
	[ -x "$ROOT/build/test/test_rpipe_cluster" ] || { echo "build/test/test_rpipe_cluster is missing: make units" >&2; false; }
	run env OT_TEST_REDIS_CLUSTER_URL="$OT_REDIS_CLUSTER_URL" "$ROOT/build/test/test_rpipe_cluster"
	echo "$output"
	assert_success
	assert_output --partial '[  PASSED  ] 1 test(s).'
	assert_output --partial '[  PASSED  ] 4 test(s).'
	refute_output --partial FAILED
	assert_cluster_clean 'test:rp:*'
}

@test "ot-stack: status shows the Redis Cluster, whose three masters cover the 16384 slots" {
	run env OT_STACK_PORT_BASE="$STACK_BASE" ot-stack status
	echo "$output"
	assert_success
	assert_line "rcluster   running 127.0.0.1:${PORTS[0]} 127.0.0.1:${PORTS[1]} 127.0.0.1:${PORTS[2]}: 3 masters, 16384 slots ok"
	# From the cluster itself: three masters, each with slots, 16384 in all (CLUSTER NODES: the
	# flags are field 3, the slots and ranges from field 9; [slot->-id] marks a migration).
	got=$(redis-cli -p "${PORTS[0]}" cluster nodes | awk '$3 ~ /master/ {
		m++; n = 0
		for (i = 9; i <= NF; i++) if ($i !~ /^\[/) { k = split($i, r, "-"); n += k == 2 ? r[2] - r[1] + 1 : 1 }
		if (n > 0) owners++
		s += n
	} END { print m, owners, s }')
	[ "$got" = "3 3 16384" ] || { echo "masters, masters with slots, slots: $got" >&2; false; }
	for p in "${PORTS[@]}"; do
		[ "$(cluster_state "$p")" = ok ]
	done
}

@test "ot_rcluster: a killed master gives NULL at once while the others answer; ot-stack up brings it back" {
	local p=${PORTS[2]} pid i
	pid=$(cat "$OT_STACK_DIR/rcluster/$p/redis.pid")
	KILLED=1
	kill -9 "$pid"
	for ((i = 0; i < 50; i++)); do
		redis-cli -p "$p" ping >/dev/null 2>&1 || break
		sleep 0.1
	done
	run env OT_TEST_REDIS_CLUSTER_URL="$OT_REDIS_CLUSTER_URL" OT_TEST_RCLUSTER_DEAD_MASTER="127.0.0.1:$p" \
		"$ROOT/build/test/test_rcluster"
	echo "$output"
	assert_success
	assert_output --partial '[  PASSED  ] 1 test(s).'
	run env OT_STACK_PORT_BASE="$STACK_BASE" ot-stack up
	assert_success
	KILLED=
	for q in "${PORTS[@]}"; do
		[ "$(cluster_state "$q")" = ok ]
	done
	[ "$(cat "$OT_STACK_DIR/rcluster/$p/redis.pid")" != "$pid" ]
}

@test "cluster: an order's whole life over pipes with the cache on a Redis Cluster: both its keys in one slot, orders on every master; stats, verify, repair, invalidate and get work across them" {
	single=$(redis_port)
	export OT_REDIS_URL="$OT_REDIS_CLUSTER_URL"
	SKU="CL-$RUNID"
	stock "$SKU" 100
	drain_outboxes
	for i in $(seq 1 12); do request "cl-$RUNID-$i" "[{\"sku\":\"$SKU\",\"qty\":1}]"; done |
		ot-place > "$BATS_TEST_TMPDIR/placed" 2>"$BATS_TEST_TMPDIR/place.log"
	ot-relay --once 2>/dev/null | ot-reserve 2>/dev/null
	ot-relay --db inventory --once 2>/dev/null | ot-consume 2>"$BATS_TEST_TMPDIR/consume.log"
	ot-courier -n 3 < "$BATS_TEST_TMPDIR/placed" | ot-consume 2>>"$BATS_TEST_TMPDIR/consume.log"
	mapfile -t ids < <(sed -n 's/.*"order_id":"\([^"]*\)".*/\1/p' "$BATS_TEST_TMPDIR/placed")
	[ "${#ids[@]}" = 12 ]
	refute grep -q 'cache write' "$BATS_TEST_TMPDIR/place.log" "$BATS_TEST_TMPDIR/consume.log"
	declare -A owners=()
	for id in "${ids[@]}"; do
		[ "$(version_of "$id")" = 7 ]
		[ "$(ccli HGET "order:{$id}" status)" = DELIVERED ]
		[ "$(ccli HGET "order:{$id}" version)" = 7 ]
		[ "$(ccli ZCARD "orderlog:{$id}")" = 7 ]
		[ "$(slot_of "order:{$id}")" = "$(slot_of "orderlog:{$id}")" ]
		owners[$(owner_of "$(slot_of "order:{$id}")")]=1
	done
	# Twelve random ids on one master of three: 3 * (1/3)^12.
	[ "${#owners[@]}" -ge 2 ]
	# The single Redis got nothing.
	[ "$(redis-cli -p "$single" EXISTS "order:{${ids[0]}}")" = 0 ]
	[ "$(ot-cache stats 2>/dev/null | jq '.keys_per_state.DELIVERED')" -ge 12 ]
	# From a cache without drift (earlier tests' orders may have moved on without it)...
	ot-cache verify --repair >/dev/null 2>&1
	run ot-cache verify
	assert_success
	# Drift on two masters' entries, found and repaired.
	ccli HSET "order:{${ids[0]}}" version 3 status PREPARING >/dev/null
	ccli HSET "order:{${ids[1]}}" status CANCELLED >/dev/null
	run ot-cache verify
	[ "$status" = 65 ]
	assert_output --partial "\"drift\":\"stale\",\"order_id\":\"${ids[0]}\""
	assert_output --partial "\"drift\":\"mismatch\",\"order_id\":\"${ids[1]}\""
	run ot-cache verify --repair
	assert_success
	[ "$(ccli HGET "order:{${ids[0]}}" status)" = DELIVERED ]
	[ "$(ccli HGET "order:{${ids[1]}}" status)" = DELIVERED ]
	# Invalidated, then read: a miss, refilled from the database on the right master.
	run ot-cache invalidate "${ids[2]}"
	assert_success
	[ "$(ccli EXISTS "order:{${ids[2]}}")" = 0 ]
	run ot-cache get "${ids[2]}"
	assert_success
	assert_output --partial '"status":"DELIVERED","version":7'
	assert_output --partial '"cache":"miss"'
	[ "$(ccli HGET "order:{${ids[2]}}" version)" = 7 ]
	run ot-cache get "${ids[2]}"
	assert_output --partial '"cache":"hit"'
}

@test "cluster: after FLUSHALL on every master, rebuild and then sync put back every order of the topic under its own key, and verify finds a stray key" {
	export OT_REDIS_URL="$OT_REDIS_CLUSTER_URL"
	topic="orders.events.$RUNID"
	order_history "$topic" cf
	flush_cache
	run --separate-stderr ot-cache rebuild -i "kafka:$topic"
	assert_success
	assert_cache_restored cf
	flush_cache
	run --separate-stderr ot-cache sync -i "kafka:$topic" -G "s-$RUNID" -e
	assert_success
	assert_cache_restored cf
	ccli HSET 'order:{}' status PENDING version 1 >/dev/null
	run --separate-stderr ot-cache verify
	assert_failure 65
	assert_line '{"drift":"orphan","key":"order:{}"}'
	run --separate-stderr ot-cache verify --repair
	assert_success
	assert_cluster_clean 'order:{}'
}

@test "cluster: over Kafka, ot-consume follows an order's slot to another master mid-run (MOVED); every status lands, in order" {
	export OT_REDIS_URL="$OT_REDIS_CLUSTER_URL"
	SKU="CK-$RUNID"
	stock "$SKU" 100
	start_bg "$BATS_TEST_TMPDIR/relay-orders.log" ot-relay --db orders -O kafka
	start_bg "$BATS_TEST_TMPDIR/relay-inventory.log" ot-relay --db inventory -O kafka
	start_bg "$BATS_TEST_TMPDIR/reserve.log" ot-reserve -i kafka:orders.events -G "r-$RUNID"
	start_bg "$BATS_TEST_TMPDIR/consume.log" ot-consume -i kafka:inventory.events,delivery.updates -G "c-$RUNID"
	for i in $(seq 1 6); do request "ck-$RUNID-$i" "[{\"sku\":\"$SKU\",\"qty\":1}]"; done |
		ot-place > "$BATS_TEST_TMPDIR/placed" 2>/dev/null
	mapfile -t ids < <(sed -n 's/.*"order_id":"\([^"]*\)".*/\1/p' "$BATS_TEST_TMPDIR/placed")
	wait_sql orders "SELECT count(*) FROM orders WHERE customer_id LIKE 'ck-$RUNID-%' AND status = 'CONFIRMED'" 6 60
	for id in "${ids[@]}"; do
		for ((i = 0; i < 50; i++)); do [ "$(ccli HGET "order:{$id}" status)" = CONFIRMED ] && break; sleep 0.1; done
		[ "$(ccli HGET "order:{$id}" status)" = CONFIRMED ]
	done
	# The first order's slot moves to the next master, its keys with it, under the running consumer.
	slot=$(slot_of "order:{${ids[0]}}")
	from=$(owner_of "$slot")
	for to in "${PORTS[@]}"; do [ "$to" != "$from" ] && break; done
	move_slot "$slot" "$from" "$to"
	MOVED="$slot $to $from"
	[ "$(owner_of "$slot")" = "$to" ]
	[ "$(redis-cli -p "$to" HGET "order:{${ids[0]}}" status)" = CONFIRMED ]
	ot-courier -n 3 < "$BATS_TEST_TMPDIR/placed" | ot-relay -i - -O kafka:delivery.updates 2>/dev/null
	wait_sql orders "SELECT count(*) FROM orders WHERE customer_id LIKE 'ck-$RUNID-%' AND status = 'DELIVERED'" 6 60
	for id in "${ids[@]}"; do
		for ((i = 0; i < 100; i++)); do [ "$(ccli HGET "order:{$id}" status)" = DELIVERED ] && break; sleep 0.1; done
		[ "$(ccli HGET "order:{$id}" status)" = DELIVERED ]
		[ "$(ccli HGET "order:{$id}" version)" = "$(version_of "$id")" ]
		# Every change in the log, versions 1 to 7 with no gap.
		[ "$(ccli ZRANGE "orderlog:{$id}" 0 -1 WITHSCORES | awk 'NR % 2 == 0' | tr '\n' ' ')" = "1 2 3 4 5 6 7 " ]
	done
	[ "$(redis-cli -p "$to" HGET "order:{${ids[0]}}" version)" = 7 ]
	# Followed, not failed and repaired: no write was lost on the way.
	refute grep -q 'cache write of' "$BATS_TEST_TMPDIR/consume.log"
	stop_bg
}

@test "cluster: ot-serve on a Redis Cluster: reads through its pipe at each order's master, the rate limiter, resumed and live streams, and POST" {
	export OT_REDIS_URL="$OT_REDIS_CLUSTER_URL"
	local port key=key-$RUNID-0123456789 base i id
	port=$(free_port)
	base="http://127.0.0.1:$port"
	start_bg "$BATS_TEST_TMPDIR/serve.log" env OT_HTTP_ADDR="127.0.0.1:$port" OT_API_KEY="$key" \
		OT_RATE_LIMIT=1000 OT_RATE_BURST=1000 ot-serve
	wait_health "$port"
	for i in $(seq 1 12); do place_order "cs-$RUNID-$i"; done > "$BATS_TEST_TMPDIR/ids"
	mapfile -t ids < "$BATS_TEST_TMPDIR/ids"
	declare -A owners=()
	for id in "${ids[@]}"; do
		owners[$(owner_of "$(slot_of "order:{$id}")")]=1
		# From Redis (the pipe, at the order's master), then as fresh from the in-process copy.
		run curl -s -D - "$base/orders/$id"
		assert_output --partial 'HTTP/1.1 200'
		assert_output --partial 'X-Cache: HIT'
		assert_output --partial "\"order_id\":\"$id\",\"status\":\"PENDING\",\"version\":1"
	done
	[ "${#owners[@]}" -ge 2 ]
	# Redis answered them all: nothing fell back to the database, nothing was moved.
	[ "$(curl -s "$base/metrics" | awk '$1 == "ot_cache_reads_total{result=\"bypass\"}" { print $2 }')" = 0 ]
	run grep -E 'MOVED|cache read failed' "$BATS_TEST_TMPDIR/serve.log"
	assert_failure
	run curl -s -o /dev/null -w '%{http_code}' "$base/readyz"
	assert_output 200
	# A live stream gets a change applied by ot-consume on the cluster, and resumes from orderlog.
	id=${ids[3]}
	curl -sN --max-time 20 "$base/orders/$id/events" > "$BATS_TEST_TMPDIR/live" 2>/dev/null &
	BG_PIDS+=($!)
	for ((i = 0; i < 100; i++)); do grep -q '^id: 1$' "$BATS_TEST_TMPDIR/live" && break; sleep 0.1; done
	printf '%s\n' "$(event INVENTORY_RESERVED "$id")" "$(event DELIVERY_UPDATED "$id" '{"status":"PREPARING"}')" |
		ot-consume 2>/dev/null
	for ((i = 0; i < 100; i++)); do grep -q '^id: 3$' "$BATS_TEST_TMPDIR/live" && break; sleep 0.1; done
	run cat "$BATS_TEST_TMPDIR/live"
	assert_line --partial '"status":"CONFIRMED","version":2'
	assert_line --partial '"status":"PREPARING","version":3'
	run curl -sN --max-time 1 -H 'Last-Event-ID: 1' "$base/orders/$id/events"
	[ "$(echo "$output" | grep -c '^id: ')" = 2 ]
	# The status after the change, not the copy from before it.
	run curl -s "$base/orders/$id"
	assert_output --partial '"status":"PREPARING","version":3'
	# An order placed through the API is cached at its own master.
	run curl -s -X POST -H "Authorization: Bearer $key" -H 'Content-Type: application/json' \
		-d "{\"customer_id\":\"cs-$RUNID-post\",\"items\":[{\"sku\":\"SKU-1\",\"qty\":1}],\"address\":\"x\"}" "$base/orders"
	id=$(echo "$output" | sed -n 's/.*"order_id":"\([^"]*\)".*/\1/p')
	[ -n "$id" ]
	[ "$(redis-cli -p "$(owner_of "$(slot_of "order:{$id}")")" HGET "order:{$id}" status)" = PENDING ]
	stop_bg
	# The limiter counts at its key's master: past a burst of 3, a 429 (a limiter that could not
	# reach Redis would let everything through).
	start_bg "$BATS_TEST_TMPDIR/serve2.log" env OT_HTTP_ADDR="127.0.0.1:$port" OT_RATE_LIMIT=0.5 OT_RATE_BURST=3 ot-serve
	wait_health "$port"
	codes=$(for i in 1 2 3 4 5 6; do curl -s -o /dev/null -w '%{http_code} ' "$base/orders/${ids[0]}"; done)
	[ "$codes" = "200 200 200 429 429 429 " ] || { echo "codes: $codes" >&2; false; }
	[ -n "$(for p in "${PORTS[@]}"; do redis-cli -p "$p" --scan --pattern 'rl:*'; done)" ]
}

@test "cluster: with one master killed, writes for its slots are marked and repaired once it is back; the other masters take theirs at once" {
	export OT_REDIS_URL="$OT_REDIS_CLUSTER_URL"
	local port key=key-$RUNID-0123456789 base i id dead=${PORTS[2]} pid
	port=$(free_port)
	base="http://127.0.0.1:$port"
	start_bg "$BATS_TEST_TMPDIR/serve.log" env OT_HTTP_ADDR="127.0.0.1:$port" OT_API_KEY="$key" ot-serve
	wait_health "$port"
	for i in $(seq 1 24); do place_order "ck-$RUNID-$i"; done > "$BATS_TEST_TMPDIR/ids"
	mapfile -t ids < "$BATS_TEST_TMPDIR/ids"
	on_dead=() on_live=()
	for id in "${ids[@]}"; do
		if [ "$(owner_of "$(slot_of "order:{$id}")")" = "$dead" ]; then on_dead+=("$id"); else on_live+=("$id"); fi
	done
	# 24 random ids, none on one master of three: (2/3)^24.
	[ "${#on_dead[@]}" -ge 1 ]
	[ "${#on_live[@]}" -ge 1 ]
	pid=$(cat "$OT_STACK_DIR/rcluster/$dead/redis.pid")
	KILLED=1
	kill -9 "$pid"
	for ((i = 0; i < 50; i++)); do redis-cli -p "$dead" ping >/dev/null 2>&1 || break; sleep 0.1; done
	for id in "${ids[@]}"; do
		run curl -s -o /dev/null -w '%{http_code}' -X POST -H "Authorization: Bearer $key" "$base/orders/$id/cancel"
		assert_output 200
		[ "$(status_of "$id")" = CANCELLED ]
	done
	# The live masters have theirs (written at once, or repaired within seconds if the circuit
	# opened meanwhile).
	for id in "${on_live[@]}"; do
		for ((i = 0; i < 300; i++)); do [ "$(ccli HGET "order:{$id}" status)" = CANCELLED ] && break; sleep 0.1; done
		[ "$(ccli HGET "order:{$id}" status)" = CANCELLED ]
	done
	# Back (empty: the stack's nodes keep no data), the dead master's orders are rewritten from
	# the database.
	run env OT_STACK_PORT_BASE="$STACK_BASE" ot-stack up
	assert_success
	KILLED=
	for id in "${on_dead[@]}"; do
		for ((i = 0; i < 150; i++)); do [ "$(redis-cli -p "$dead" HGET "order:{$id}" status)" = CANCELLED ] && break; sleep 0.2; done
		[ "$(redis-cli -p "$dead" HGET "order:{$id}" status)" = CANCELLED ]
	done
	grep -q 'cache repaired to version' "$BATS_TEST_TMPDIR/serve.log"
	stop_bg
}
