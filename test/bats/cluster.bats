#!/usr/bin/env bats
# The stack's Redis Cluster (three masters) and ot_rcluster against it, through the cmocka binary
# build/test/test_rcluster (built by make units); scripts/ot-stack status and up for the cluster.

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
	# A master killed by a test comes back, so the next test (and file) finds the whole cluster.
	if [ -n "$KILLED" ]; then
		OT_STACK_PORT_BASE=$STACK_BASE ot-stack up >/dev/null 2>&1 || true
	fi
}

cluster_state() { redis-cli -p "$1" cluster info | tr -d '\r' | sed -n 's/^cluster_state://p'; }

@test "ot_rcluster: slots as the spec computes them; keys on all three masters; credentials on each node; MOVED and ASK followed; a closed connection replaced; a stopped master gives NULL within its timeout" {
	run env OT_TEST_REDIS_URL="$OT_REDIS_URL" OT_TEST_REDIS_CLUSTER_URL="$OT_REDIS_CLUSTER_URL" \
		"$ROOT/build/test/test_rcluster"
	echo "$output"
	assert_success
	assert_output --partial '[  PASSED  ] 3 test(s).'
	assert_output --partial '[  PASSED  ] 7 test(s).'
	refute_output --partial FAILED
	# Every test put its slots back and its keys away.
	for p in "${PORTS[@]}"; do
		[ "$(cluster_state "$p")" = ok ]
		run redis-cli -p "$p" --scan --pattern 'test:rc:*'
		assert_output ''
	done
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
