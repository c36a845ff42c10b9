#!/usr/bin/env bats
# scripts/ot-stack: down stops only what the stack started, by its pid files; env says when no
# stack runs. The tests that need no stack make a stack directory of their own, on ports of
# their own, and never start one.
bats_require_minimum_version 1.5.0

setup() {
	load helpers
	DIR="$BATS_TEST_TMPDIR/stack"
}

teardown() {
	stop_bg
	local f
	for f in "$BATS_TEST_TMPDIR"/*.pid; do
		[ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null
	done
	true
}

# A port base whose Redis port (base+79) is free: prints the base.
free_base() { echo $(($(free_port) - 79)); }

# Waits until a Redis answers on PORT: redis_up PORT
redis_up() {
	local i
	for ((i = 0; i < 50; i++)); do
		[ "$(redis-cli -p "$1" ping 2>/dev/null)" = PONG ] && return 0
		sleep 0.1
	done
	echo "no Redis answered on port $1" >&2
	return 1
}

@test "ot-stack: down leaves a redis-server it did not start running on its port, and stops its own by its pid file" {
	base=$(free_base)
	port=$((base + 79))
	# Someone else's Redis, on the port this stack would give its own.
	start_bg "$BATS_TEST_TMPDIR/foreign.log" redis-server --bind 127.0.0.1 --port "$port" --save '' \
		--appendonly no --dir "$BATS_TEST_TMPDIR"
	redis_up "$port"
	# The stack's own Redis, named by its pid file, wherever it listens.
	own=$(free_port)
	mkdir -p "$DIR/redis"
	redis-server --bind 127.0.0.1 --port "$own" --save '' --appendonly no --dir "$DIR/redis" --daemonize yes \
		--pidfile "$DIR/redis/redis.pid" --logfile "$DIR/redis/redis.log"
	redis_up "$own"
	cp "$DIR/redis/redis.pid" "$BATS_TEST_TMPDIR/own.pid" # for teardown, should down fail
	run env OT_STACK_DIR="$DIR" OT_STACK_PORT_BASE="$base" ot-stack down
	assert_success
	run redis-cli -p "$port" ping
	assert_output PONG
	run redis-cli -p "$own" ping
	refute_output PONG
	[ ! -e "$DIR" ]
}

@test "ot-stack: down signals no process a stale pid file names that is not the program the stack started" {
	base=$(free_base)
	sleep 300 &
	pid=$!
	echo "$pid" > "$BATS_TEST_TMPDIR/sleep.pid"
	mkdir -p "$DIR/redis" "$DIR/kafka" "$DIR/pg/data" "$DIR/rcluster/$((base + 81))"
	for f in redis/redis.pid kafka/kafka.pid pg/data/postmaster.pid "rcluster/$((base + 81))/redis.pid"; do
		echo "$pid" > "$DIR/$f"
	done
	run env OT_STACK_DIR="$DIR" OT_STACK_PORT_BASE="$base" ot-stack down
	assert_success
	kill -0 "$pid"
}

@test "ot-stack: env exits 69 with a message on stderr, and prints nothing, when no stack runs" {
	base=$(free_base)
	run --separate-stderr env OT_STACK_DIR="$DIR" OT_STACK_PORT_BASE="$base" ot-stack env
	assert_failure 69
	assert_output ''
	[ "$stderr" = "ot-stack: no stack runs in $DIR (OT_STACK_PORT_BASE=$base): scripts/ot-stack up first" ]
}

@test "ot-stack: env exports the running stack's directory and port base with its services' settings" {
	common_setup
	: "${OT_STACK_DIR:?run through make check, or eval the output of ot-stack env}"
	base=$(($(redis_port) - 79))
	run --separate-stderr env OT_STACK_PORT_BASE="$base" ot-stack env
	assert_success
	assert_line "export OT_STACK_DIR='$OT_STACK_DIR'"
	assert_line "export OT_STACK_PORT_BASE='$base'"
	assert_line "export OT_REDIS_URL='$OT_REDIS_URL'"
	assert_line "export OT_ORDERS_DB='$OT_ORDERS_DB'"
	assert_equal "$stderr" ''
}
