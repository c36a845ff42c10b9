#!/usr/bin/env bats
# ot-serve: the HTTP API and tracking page over real PostgreSQL and Redis.
bats_require_minimum_version 1.5.0

setup() {
	load helpers
	common_setup
	PORT=$((20000 + RANDOM % 20000))
	BASE="http://127.0.0.1:$PORT"
}

teardown() {
	stop_bg
	[ -z "${OWN_REDIS_PORT:-}" ] || redis-cli -p "$OWN_REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
}

serve() { # starts ot-serve on $PORT with the given extra environment, waits for /healthz
	start_bg "$BATS_TEST_TMPDIR/serve.log" env OT_HTTP_ADDR="127.0.0.1:$PORT" "$@" ot-serve
	for i in $(seq 1 50); do curl -sf "$BASE/healthz" >/dev/null && return 0; sleep 0.1; done
	cat "$BATS_TEST_TMPDIR/serve.log" >&2
	return 1
}

# curl printing the body, then the status on the last line
http() { curl -s -w '\n%{http_code}' "$@"; }

@test "ot-serve: GET /orders/{id} answers the status from Redis, then from the database on a miss" {
	serve
	id=$(place_order "c-$RUNID")
	run curl -s -D "$BATS_TEST_TMPDIR/h" "$BASE/orders/$id"
	assert_success
	assert_output --partial "\"order_id\":\"$id\",\"status\":\"PENDING\",\"version\":1"
	grep -qi '^X-Cache: HIT' "$BATS_TEST_TMPDIR/h"
	grep -qi '^Content-Type: application/json' "$BATS_TEST_TMPDIR/h"
	rcli DEL "order:$id" >/dev/null
	run curl -s -D "$BATS_TEST_TMPDIR/h" "$BASE/orders/$id"
	assert_output --partial '"status":"PENDING"'
	grep -qi '^X-Cache: MISS' "$BATS_TEST_TMPDIR/h"
	[ "$(rcli HGET "order:$id" status)" = PENDING ]
}

@test "ot-serve: an unknown order is 404, a malformed id 400, an unknown path 404, a wrong method 405" {
	serve
	run http "$BASE/orders/00000000-0000-4000-8000-000000000000"
	assert_line --index 1 404
	assert_line --index 0 --partial '"error":"order not found"'
	run http "$BASE/orders/not-a-uuid"
	assert_line --index 1 400
	run http "$BASE/nothing-here"
	assert_line --index 1 404
	run http -X DELETE "$BASE/orders/00000000-0000-4000-8000-000000000000"
	assert_line --index 1 405
}

@test "ot-serve: POST /orders places an order (201, Location), the same Idempotency-Key gives it back (200)" {
	serve
	body="{\"customer_id\":\"c-$RUNID\",\"items\":[{\"sku\":\"SKU-A\",\"qty\":1}],\"address\":\"1 Web Street\"}"
	run http -D "$BATS_TEST_TMPDIR/h" -X POST -H 'Content-Type: application/json' -H "Idempotency-Key: k-$RUNID" -d "$body" "$BASE/orders"
	assert_line --index 1 201
	id=$(echo "${lines[0]}" | sed -n 's/.*"order_id":"\([^"]*\)".*/\1/p')
	grep -qi "^Location: /orders/$id" "$BATS_TEST_TMPDIR/h"
	run http -X POST -H 'Content-Type: application/json' -H "Idempotency-Key: k-$RUNID" -d "$body" "$BASE/orders"
	assert_line --index 1 200
	assert_line --index 0 --partial "\"order_id\":\"$id\""
	[ "$(sql_orders "SELECT count(*) FROM orders WHERE customer_id = 'c-$RUNID'")" = 1 ]
	[ "$(sql_orders "SELECT type FROM outbox WHERE key = '$id'")" = ORDER_CREATED ]
}

@test "ot-serve: a bad order is 400 naming the field, a wrong type 415, a huge body 413" {
	serve
	run http -X POST -H 'Content-Type: application/json' -d '{"customer_id":"x","items":[{"sku":"A"}],"address":"y"}' "$BASE/orders"
	assert_line --index 1 400
	assert_line --index 0 --partial 'items[0].qty'
	run http -X POST -H 'Content-Type: application/json' -d '{oops' "$BASE/orders"
	assert_line --index 1 400
	run http -X POST -H 'Content-Type: text/plain' -d '{}' "$BASE/orders"
	assert_line --index 1 415
	head -c 70000 /dev/zero | tr '\0' ' ' > "$BATS_TEST_TMPDIR/big"
	run http -X POST -H 'Content-Type: application/json' --data-binary "@$BATS_TEST_TMPDIR/big" "$BASE/orders"
	assert_line --index 1 413
}

@test "ot-serve: GET / is the tracking page, polling the order's status" {
	serve
	run curl -s -D "$BATS_TEST_TMPDIR/h" "$BASE/"
	assert_success
	assert_output --partial '<title>ordertrack'
	assert_output --partial 'fetch("/orders/"'
	grep -qi '^Content-Type: text/html' "$BATS_TEST_TMPDIR/h"
}

@test "ot-serve: /readyz goes 503 when Redis stops, reads fall back to the database, and it recovers" {
	OWN_REDIS_PORT=$((PORT + 1))
	redis-server --port "$OWN_REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
		--logfile "$BATS_TEST_TMPDIR/redis.log" >/dev/null
	for i in $(seq 1 50); do [ "$(redis-cli -p "$OWN_REDIS_PORT" ping 2>/dev/null)" = PONG ] && break; sleep 0.1; done
	serve OT_REDIS_URL="redis://127.0.0.1:$OWN_REDIS_PORT/0"
	id=$(place_order "c-$RUNID")
	run http "$BASE/readyz"
	assert_line --index 1 200
	assert_line --index 0 '{"status":"ready","db":"ok","redis":"ok"}'
	redis-cli -p "$OWN_REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
	run http "$BASE/readyz"
	assert_line --index 1 503
	assert_line --index 0 --partial '"redis":"down"'
	run http -D "$BATS_TEST_TMPDIR/h" "$BASE/orders/$id"
	assert_line --index 1 200
	assert_line --index 0 --partial '"status":"PENDING"'
	grep -qi '^X-Cache: BYPASS' "$BATS_TEST_TMPDIR/h"
	redis-server --port "$OWN_REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
		--logfile "$BATS_TEST_TMPDIR/redis.log" >/dev/null
	for i in $(seq 1 50); do
		run http "$BASE/readyz"
		[ "${lines[1]}" = 200 ] && break
		sleep 0.2
	done
	assert_line --index 1 200
}

@test "ot-serve: the orders database unreachable at start exits 69; a bad address exits 78" {
	OT_ORDERS_DB='host=127.0.0.1 port=1 dbname=x connect_timeout=2' OT_HTTP_ADDR="127.0.0.1:$PORT" run --separate-stderr ot-serve
	assert_failure 69
	echo "$stderr" | grep -q 'cannot connect to PostgreSQL'
	OT_HTTP_ADDR="127.0.0.1:notaport" run --separate-stderr ot-serve
	assert_failure 78
}

@test "ot-serve: SIGTERM stops it with exit 0" {
	OT_HTTP_ADDR="127.0.0.1:$PORT" ot-serve 2>"$BATS_TEST_TMPDIR/serve.log" &
	pid=$!
	for i in $(seq 1 50); do curl -sf "$BASE/healthz" >/dev/null && break; sleep 0.1; done
	kill -TERM "$pid"
	status=0
	wait "$pid" || status=$?
	[ "$status" = 0 ]
	grep -q '"msg":"stopping"' "$BATS_TEST_TMPDIR/serve.log"
}

@test "ot-serve: POST /orders/{id}/cancel cancels (200, again 200), refuses once on its way (409), 404 unknown" {
	serve
	id=$(place_order "c-$RUNID")
	run http -X POST -H 'Content-Type: application/json' -d '{"reason":"too slow"}' "$BASE/orders/$id/cancel"
	assert_line --index 1 200
	assert_line --index 0 --partial '"status":"CANCELLED"'
	[ "$(sql_orders "SELECT reason FROM orders WHERE id = '$id'")" = "too slow" ]
	run http -X POST "$BASE/orders/$id/cancel"
	assert_line --index 1 200
	other=$(place_order "d-$RUNID")
	printf '%s\n' "$(event INVENTORY_RESERVED "$other")" "$(event DELIVERY_UPDATED "$other" '{"status":"PREPARING"}')" \
		"$(event DELIVERY_UPDATED "$other" '{"status":"IN_TRANSIT"}')" | ot-consume 2>/dev/null
	run http -X POST "$BASE/orders/$other/cancel"
	assert_line --index 1 409
	assert_line --index 0 --partial 'IN_TRANSIT -> CANCELLED'
	run http -X POST "$BASE/orders/00000000-0000-4000-8000-000000000000/cancel"
	assert_line --index 1 404
	run http "$BASE/orders/$id/cancel"
	assert_line --index 1 405
}
