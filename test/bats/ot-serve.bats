#!/usr/bin/env bats
# ot-serve: the HTTP API and tracking page over real PostgreSQL and Redis.
bats_require_minimum_version 1.5.0

setup() {
	load helpers
	common_setup
	PORT=$(free_port)
	BASE="http://127.0.0.1:$PORT"
	KEY="key-$RUNID-0123456789"
}

teardown() {
	# A failed test shows what the server said.
	[ -n "${BATS_TEST_COMPLETED:-}" ] || [ ! -s "$BATS_TEST_TMPDIR/serve.log" ] ||
		tail -20 "$BATS_TEST_TMPDIR/serve.log" | sed 's/^/# serve: /' >&3
	[ -z "${HUNG_REDIS:-}" ] || kill -CONT "$HUNG_REDIS" 2>/dev/null || true
	stop_bg
	[ -z "${OWN_REDIS_PORT:-}" ] || redis-cli -p "$OWN_REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
}

serve() { # starts ot-serve on $PORT with the given extra environment, waits for /healthz
	start_bg "$BATS_TEST_TMPDIR/serve.log" env OT_HTTP_ADDR="127.0.0.1:$PORT" OT_API_KEY="$KEY" "$@" ot-serve
	for i in $(seq 1 50); do curl -sf "$BASE/healthz" >/dev/null && return 0; sleep 0.1; done
	cat "$BATS_TEST_TMPDIR/serve.log" >&2
	return 1
}

# curl with the API key, printing the body, then the status on the last line
http() { curl -s -w '\n%{http_code}' -H "Authorization: Bearer $KEY" "$@"; }
# the same without a key
anon() { curl -s -w '\n%{http_code}' "$@"; }

# An SSE or WebSocket reader in the background, its output in $BATS_TEST_TMPDIR/$1:
# sse NAME URL [curl options]
sse() {
	local name=$1
	shift
	curl -sN --max-time 20 "$@" > "$BATS_TEST_TMPDIR/$name" 2>/dev/null &
	BG_PIDS+=($!)
}
# Waits until file $1 holds $2 lines matching $3
wait_lines() {
	local i
	for ((i = 0; i < 100; i++)); do
		[ "$(grep -c -- "$3" "$BATS_TEST_TMPDIR/$1" 2>/dev/null)" -ge "$2" ] && return 0
		sleep 0.1
	done
	echo "wanted $2 lines like [$3] in $1, have:" >&2
	cat "$BATS_TEST_TMPDIR/$1" >&2
	return 1
}
# A Redis of the test's own on $OWN_REDIS_PORT, to stop and start (again) at will.
own_redis() {
	redis-server --port "$OWN_REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
		--logfile "$BATS_TEST_TMPDIR/redis.log" >/dev/null
	for i in $(seq 1 50); do [ "$(redis-cli -p "$OWN_REDIS_PORT" ping 2>/dev/null)" = PONG ] && break; sleep 0.1; done
}
metric() { curl -s "$BASE/metrics" | awk -v m="$1" '$1 == m { print $2 }'; }

@test "ot-serve: GET /orders/{id} answers the status from Redis, then from the database on a miss" {
	serve
	id=$(place_order "c-$RUNID")
	run curl -s -D "$BATS_TEST_TMPDIR/h" "$BASE/orders/$id"
	assert_success
	assert_output --partial "\"order_id\":\"$id\",\"status\":\"PENDING\",\"version\":1"
	grep -qi '^X-Cache: HIT' "$BATS_TEST_TMPDIR/h"
	grep -qi '^Content-Type: application/json' "$BATS_TEST_TMPDIR/h"
	rcli DEL "order:{$id}" >/dev/null
	run curl -s -D "$BATS_TEST_TMPDIR/h" "$BASE/orders/$id"
	assert_output --partial '"status":"PENDING"'
	grep -qi '^X-Cache: MISS' "$BATS_TEST_TMPDIR/h"
	[ "$(rcli HGET "order:{$id}" status)" = PENDING ]
}

@test "ot-serve: a path with an encoded NUL or control character is 400, not the order" {
	serve
	id=$(place_order "c-$RUNID")
	run http "$BASE/orders/$id"
	assert_line --index 1 200
	for bad in "$id%00" "$id%00/events" "$id%0a" "$id%1F" "$id%7f"; do
		run http "$BASE/orders/$bad"
		assert_line --index 1 400
		assert_line --index 0 '{"error":"the path holds a control character"}'
	done
	run http "$BASE/healthz%00"
	assert_line --index 1 400
	# an escaped percent sign is not a NUL
	run http "$BASE/orders/$id%2500"
	assert_line --index 1 400
	assert_line --index 0 --partial 'must be a UUID'
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

@test "ot-serve: an Idempotency-Key reused with another body is 422; another key's holder never gets the order" {
	serve OT_API_KEY="$KEY,other-$RUNID-0123456789"
	body="{\"customer_id\":\"c-$RUNID\",\"items\":[{\"sku\":\"SKU-A\",\"qty\":1}],\"address\":\"1 First Street\"}"
	run http -X POST -H 'Content-Type: application/json' -H "Idempotency-Key: k-$RUNID" -d "$body" "$BASE/orders"
	assert_line --index 1 201
	id=$(echo "${lines[0]}" | sed -n 's/.*"order_id":"\([^"]*\)".*/\1/p')
	# the same body, spelt differently, is the same request
	same="{ \"address\": \"1 First Street\", \"items\": [{\"qty\": 1, \"sku\": \"SKU-A\"}], \"customer_id\": \"c-$RUNID\" }"
	run http -X POST -H 'Content-Type: application/json' -H "Idempotency-Key: k-$RUNID" -d "$same" "$BASE/orders"
	assert_line --index 1 200
	assert_line --index 0 --partial "\"order_id\":\"$id\""
	# another body under the same key: refused, and nothing of the first order shown
	other="{\"customer_id\":\"c-$RUNID\",\"items\":[{\"sku\":\"SKU-A\",\"qty\":5}],\"address\":\"2 Other Road\"}"
	run http -D "$BATS_TEST_TMPDIR/h" -X POST -H 'Content-Type: application/json' -H "Idempotency-Key: k-$RUNID" -d "$other" "$BASE/orders"
	assert_line --index 1 422
	assert_line --index 0 '{"error":"Idempotency-Key already used with a different request body"}'
	grep -qi '^Content-Type: application/json' "$BATS_TEST_TMPDIR/h"
	# the holder of another key with the same Idempotency-Key gets an order of its own
	KEY="other-$RUNID-0123456789" run http -X POST -H 'Content-Type: application/json' -H "Idempotency-Key: k-$RUNID" -d "$body" "$BASE/orders"
	assert_line --index 1 201
	refute_line --index 0 --partial "$id"
	[ "$(sql_orders "SELECT count(*) FROM orders WHERE customer_id = 'c-$RUNID'")" = 2 ]
	[ "$(sql_orders "SELECT count(*) FROM orders WHERE address = '2 Other Road' AND customer_id = 'c-$RUNID'")" = 0 ]
	# the key's hash, never the key, is stored
	[ "$(sql_orders "SELECT count(*) FROM idempotency_keys WHERE request_id = 'k-$RUNID' AND scope LIKE '%$KEY%'")" = 0 ]
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

@test "ot-serve: with Redis stopped /readyz stays 200 (reads come from the database); /healthz and metrics show the cache degraded" {
	OWN_REDIS_PORT=$((PORT + 1))
	own_redis
	serve OT_REDIS_URL="redis://127.0.0.1:$OWN_REDIS_PORT/0"
	id=$(place_order "c-$RUNID")
	run http "$BASE/readyz"
	assert_line --index 1 200
	assert_line --index 0 '{"status":"ready","db":"ok","redis":"ok"}'
	run http "$BASE/healthz"
	assert_line --index 0 '{"status":"ok","cache":"ok","db":"ok"}'
	[ "$(metric ot_cache_degraded)" = 0 ]
	redis-cli -p "$OWN_REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
	sleep 1.1 # past the age of the last check
	run http "$BASE/readyz"
	assert_line --index 1 200
	assert_line --index 0 '{"status":"ready","db":"ok","redis":"down","cache":"degraded"}'
	run http "$BASE/healthz"
	assert_line --index 1 200
	assert_line --index 0 '{"status":"ok","cache":"degraded","db":"ok"}'
	[ "$(metric ot_cache_degraded)" = 1 ]
	run http -D "$BATS_TEST_TMPDIR/h" "$BASE/orders/$id"
	assert_line --index 1 200
	assert_line --index 0 --partial '"status":"PENDING"'
	grep -qi '^X-Cache: BYPASS' "$BATS_TEST_TMPDIR/h"
	own_redis
	for i in $(seq 1 50); do
		run http "$BASE/readyz"
		[ "${lines[0]}" = '{"status":"ready","db":"ok","redis":"ok"}' ] && break
		sleep 0.2
	done
	assert_line --index 0 '{"status":"ready","db":"ok","redis":"ok"}'
	for i in $(seq 1 50); do
		[ "$(metric ot_cache_degraded)" = 0 ] && break
		sleep 0.2
	done
	[ "$(metric ot_cache_degraded)" = 0 ]
}

@test "ot-serve: with Redis hung, 100 reads at once all answer from the database and /readyz says so; reads use Redis again once it answers" {
	OWN_REDIS_PORT=$((PORT + 1))
	own_redis
	# No in-process cache: every read goes to Redis.
	serve OT_REDIS_URL="redis://127.0.0.1:$OWN_REDIS_PORT/0" OT_LOCAL_CACHE_MS=0 OT_RATE_LIMIT=0 OT_MAX_PER_CLIENT=0
	ids=()
	for i in 1 2 3 4; do ids+=("$(place_order "c-$RUNID-$i")"); done
	for id in "${ids[@]}"; do http "$BASE/orders/$id" >/dev/null; done # refilled into Redis
	run http -D "$BATS_TEST_TMPDIR/h" "$BASE/orders/${ids[0]}"
	assert_line --index 1 200
	grep -qi '^X-Cache: HIT' "$BATS_TEST_TMPDIR/h"
	# Stopped, not shut down: connections stay open and nothing answers on them.
	HUNG_REDIS=$(redis-cli -p "$OWN_REDIS_PORT" INFO server | tr -d '\r' | sed -n 's/^process_id://p')
	kill -STOP "$HUNG_REDIS"
	for i in $(seq 0 99); do
		echo "url = \"$BASE/orders/${ids[i % 4]}\""
		echo "output = $BATS_TEST_TMPDIR/read-$i"
	done > "$BATS_TEST_TMPDIR/urls"
	codes=$(curl -s -Z --parallel-max 100 -w '%{http_code}\n' -K "$BATS_TEST_TMPDIR/urls" | sort | uniq -c |
		awk '{ print $2 "x" $1 }')
	[ "$codes" = 200x100 ] || { echo "codes: $codes" >&2; false; }
	for i in $(seq 0 99); do
		grep -q "\"order_id\":\"${ids[i % 4]}\",\"status\":\"PENDING\"" "$BATS_TEST_TMPDIR/read-$i"
	done
	[ "$(metric 'ot_cache_reads_total{result="bypass"}')" -ge 1 ]
	sleep 1.1 # past the age of the last readiness check
	run http "$BASE/readyz"
	assert_line --index 1 200
	assert_line --index 0 '{"status":"ready","db":"ok","redis":"down","cache":"degraded"}'
	kill -CONT "$HUNG_REDIS"
	HUNG_REDIS=
	for i in $(seq 1 50); do
		http -D "$BATS_TEST_TMPDIR/h" "$BASE/orders/${ids[1]}" >/dev/null
		grep -qi '^X-Cache: HIT' "$BATS_TEST_TMPDIR/h" && break
		sleep 0.2
	done
	grep -qi '^X-Cache: HIT' "$BATS_TEST_TMPDIR/h"
}

@test "ot-serve: with PostgreSQL down /readyz stays 200 while Redis answers: cached reads answer, writes get 503 with Retry-After, /healthz and metrics say so; writes work again once it is back" {
	pgp=$(free_port)
	pghost=$(echo "$OT_ORDERS_DB" | sed -n 's/.*port=\([0-9]*\).*/\1/p')
	proxy "$pgp" 127.0.0.1 "$pghost"
	serve OT_ORDERS_DB="$OT_ORDERS_DB port=$pgp"
	body="{\"customer_id\":\"c-$RUNID\",\"items\":[{\"sku\":\"SKU-A\",\"qty\":1}],\"address\":\"1 Outage Street\"}"
	run http -X POST -H 'Content-Type: application/json' -d "$body" "$BASE/orders"
	assert_line --index 1 201
	id=$(echo "${lines[0]}" | sed -n 's/.*"order_id":"\([^"]*\)".*/\1/p')
	[ "$(metric ot_db_down)" = 0 ]
	kill "$PROXY_PID"
	sleep 1.1 # past the age of the last check
	run http -D "$BATS_TEST_TMPDIR/h" "$BASE/readyz"
	assert_line --index 1 200
	assert_line --index 0 '{"status":"ready","db":"down","redis":"ok","writes":"unavailable"}'
	run http "$BASE/healthz"
	assert_line --index 1 200
	assert_line --index 0 '{"status":"ok","cache":"ok","db":"down"}'
	[ "$(metric ot_db_down)" = 1 ]
	# the order is in Redis: its status, its stream and its ETag answer without the database
	run http -D "$BATS_TEST_TMPDIR/h" "$BASE/orders/$id"
	assert_line --index 1 200
	assert_line --index 0 --partial "\"order_id\":\"$id\",\"status\":\"PENDING\",\"version\":1"
	run curl -s -o /dev/null -w '%{http_code}' -H 'If-None-Match: "v1"' "$BASE/orders/$id"
	assert_output 304
	sse live "$BASE/orders/$id/events"
	wait_lines live 1 '^id: 1$'
	# writes, and reads Redis cannot answer, wait for the database: 503 with Retry-After
	run http -D "$BATS_TEST_TMPDIR/h" -X POST -H 'Content-Type: application/json' -d "$body" "$BASE/orders"
	assert_line --index 1 503
	assert_line --index 0 '{"error":"the orders database is unavailable"}'
	grep -qi '^Retry-After: 1' "$BATS_TEST_TMPDIR/h"
	run http -D "$BATS_TEST_TMPDIR/h" -X POST "$BASE/orders/$id/cancel"
	assert_line --index 1 503
	grep -qi '^Retry-After: 1' "$BATS_TEST_TMPDIR/h"
	run http -D "$BATS_TEST_TMPDIR/h" "$BASE/orders/$(uuid)"
	assert_line --index 1 503
	grep -qi '^Retry-After: 1' "$BATS_TEST_TMPDIR/h"
	# back: the next check sees it, and writes go through again
	proxy "$pgp" 127.0.0.1 "$pghost"
	for i in $(seq 1 50); do
		run http -X POST "$BASE/orders/$id/cancel"
		[ "${lines[1]}" = 200 ] && break
		sleep 0.2
	done
	assert_line --index 1 200
	assert_line --index 0 --partial '"status":"CANCELLED"'
	[ "$(status_of "$id")" = CANCELLED ]
	wait_lines live 1 '"status":"CANCELLED"'
	run http -X POST -H 'Content-Type: application/json' -d "$body" "$BASE/orders"
	assert_line --index 1 201
	sleep 1.1
	run http "$BASE/readyz"
	assert_line --index 0 '{"status":"ready","db":"ok","redis":"ok"}'
	[ "$(metric ot_db_down)" = 0 ]
	run http "$BASE/healthz"
	assert_line --index 0 '{"status":"ok","cache":"ok","db":"ok"}'
}

@test "ot-serve: with PostgreSQL and Redis both down /readyz is 503 with Retry-After" {
	OWN_REDIS_PORT=$((PORT + 1))
	own_redis
	pgp=$(free_port)
	pghost=$(echo "$OT_ORDERS_DB" | sed -n 's/.*port=\([0-9]*\).*/\1/p')
	proxy "$pgp" 127.0.0.1 "$pghost"
	serve OT_ORDERS_DB="$OT_ORDERS_DB port=$pgp" OT_REDIS_URL="redis://127.0.0.1:$OWN_REDIS_PORT/0"
	kill "$PROXY_PID"
	redis-cli -p "$OWN_REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
	sleep 1.1
	run http -D "$BATS_TEST_TMPDIR/h" "$BASE/readyz"
	assert_line --index 1 503
	assert_line --index 0 '{"status":"unavailable","db":"down","redis":"down","cache":"degraded","writes":"unavailable","error":"PostgreSQL and Redis are down"}'
	grep -qi '^Retry-After: 1' "$BATS_TEST_TMPDIR/h"
	run http "$BASE/healthz"
	assert_line --index 1 200
}

@test "ot-serve: /readyz checks PostgreSQL and Redis at most once a second however often it is asked" {
	OWN_REDIS_PORT=$((PORT + 1))
	own_redis
	serve OT_REDIS_URL="redis://127.0.0.1:$OWN_REDIS_PORT/0"
	redis-cli -p "$OWN_REDIS_PORT" CONFIG RESETSTAT >/dev/null
	t0=$(date +%s%N)
	for i in $(seq 1 100); do echo "url = \"$BASE/readyz\""; echo 'output = /dev/null'; done > "$BATS_TEST_TMPDIR/urls"
	codes=$(curl -s -w '%{http_code}\n' -K "$BATS_TEST_TMPDIR/urls" | sort | uniq -c | awk '{ print $2 "x" $1 }')
	ms=$((($(date +%s%N) - t0) / 1000000))
	[ "$codes" = 200x100 ] || { echo "codes: $codes" >&2; false; }
	pings=$(redis-cli -p "$OWN_REDIS_PORT" INFO commandstats | sed -n 's/^cmdstat_ping:calls=\([0-9]*\).*/\1/p')
	echo "# 100 /readyz in $ms ms: ${pings:-0} PINGs" >&3
	[ "${pings:-0}" -le $((ms / 1000 + 2)) ]
	# the result is never more than a second old
	redis-cli -p "$OWN_REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
	sleep 1.1
	run http "$BASE/readyz"
	assert_line --index 0 --partial '"redis":"down"'
}

@test "ot-serve: the orders database unreachable at start exits 69; a bad address exits 78" {
	OT_ORDERS_DB='host=127.0.0.1 port=1 dbname=x connect_timeout=2' OT_HTTP_ADDR="127.0.0.1:$PORT" run --separate-stderr ot-serve
	assert_failure 69
	echo "$stderr" | grep -q 'cannot connect to PostgreSQL'
	OT_HTTP_ADDR="127.0.0.1:notaport" run --separate-stderr ot-serve
	assert_failure 78
}

@test "ot-serve: a trusted proxy that is not an address or range is refused at start: 64 as a flag, 78 from OT_TRUSTED_PROXIES" {
	OT_HTTP_ADDR="127.0.0.1:$PORT" run --separate-stderr ot-serve --trusted-proxies '10.0.0.0/8,proxy.example'
	assert_failure 64
	assert_equal "$stderr" 'ot-serve: --trusted-proxies: "proxy.example" is not an address or CIDR range (10.0.0.0/8, fd00::/8)'
	OT_HTTP_ADDR="127.0.0.1:$PORT" OT_TRUSTED_PROXIES='10.0.0.0/33' run --separate-stderr ot-serve
	assert_failure 78
	assert_equal "$stderr" 'ot-serve: OT_TRUSTED_PROXIES: "10.0.0.0/33" is not an address or CIDR range (10.0.0.0/8, fd00::/8)'
	OT_HTTP_ADDR="127.0.0.1:$PORT" run --separate-stderr ot-serve --request-timeout 0
	assert_failure 64
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

@test "ot-serve: GET /orders/{id} has an ETag; If-None-Match with it is 304, after a change 200" {
	serve
	id=$(place_order "c-$RUNID")
	run curl -s -D "$BATS_TEST_TMPDIR/h" -o /dev/null "$BASE/orders/$id"
	grep -qi '^ETag: "v1"' "$BATS_TEST_TMPDIR/h"
	run http -H 'If-None-Match: "v1"' "$BASE/orders/$id"
	assert_line --index 0 304
	event INVENTORY_RESERVED "$id" | ot-consume 2>/dev/null
	run http -D "$BATS_TEST_TMPDIR/h" -H 'If-None-Match: "v1"' "$BASE/orders/$id"
	assert_line --index 1 200
	assert_line --index 0 --partial '"status":"CONFIRMED","version":2'
	grep -qi '^ETag: "v2"' "$BATS_TEST_TMPDIR/h"
}

@test "ot-serve: writes need the API key (401 without or with a wrong one); X-API-Key works too" {
	serve OT_API_KEY="other-key-0123456789,$KEY"
	body="{\"customer_id\":\"c-$RUNID\",\"items\":[{\"sku\":\"SKU-A\",\"qty\":1}],\"address\":\"1 Key Street\"}"
	run anon -D "$BATS_TEST_TMPDIR/h" -X POST -H 'Content-Type: application/json' -d "$body" "$BASE/orders"
	assert_line --index 1 401
	assert_line --index 0 --partial '"error":"a valid API key is required'
	grep -qi '^WWW-Authenticate: Bearer' "$BATS_TEST_TMPDIR/h"
	run anon -X POST -H 'Authorization: Bearer wrong' -H 'Content-Type: application/json' -d "$body" "$BASE/orders"
	assert_line --index 1 401
	[ "$(sql_orders "SELECT count(*) FROM orders WHERE customer_id = 'c-$RUNID'")" = 0 ]
	run anon -X POST -H "X-API-Key: $KEY" -H 'Content-Type: application/json' -d "$body" "$BASE/orders"
	assert_line --index 1 201
	id=$(echo "${lines[0]}" | sed -n 's/.*"order_id":"\([^"]*\)".*/\1/p')
	run anon -X POST "$BASE/orders/$id/cancel"
	assert_line --index 1 401
	[ "$(status_of "$id")" = PENDING ]
	# reads need no key
	run anon "$BASE/orders/$id"
	assert_line --index 1 200
}

@test "ot-serve: GET /orders/{id}?full=1 needs the API key (401 without or with a wrong one)" {
	serve
	id=$(place_order "c-$RUNID")
	run anon -D "$BATS_TEST_TMPDIR/h" "$BASE/orders/$id?full=1"
	assert_line --index 1 401
	refute_output --partial 'Test Street'
	refute_output --partial "c-$RUNID"
	grep -qi '^WWW-Authenticate: Bearer' "$BATS_TEST_TMPDIR/h"
	run anon -H 'X-API-Key: wrong' "$BASE/orders/$id?full=true"
	assert_line --index 1 401
	refute_output --partial 'Test Street'
	run http "$BASE/orders/$id?full=1"
	assert_line --index 1 200
	assert_line --index 0 --partial '"address":"1 Test Street"'
	assert_line --index 0 --partial "\"customer_id\":\"c-$RUNID\""
	# the status alone still needs no key
	run anon "$BASE/orders/$id"
	assert_line --index 1 200
}

@test "ot-serve: without OT_API_KEY every write is 401 and says how to enable writes" {
	start_bg "$BATS_TEST_TMPDIR/serve.log" env -u OT_API_KEY OT_HTTP_ADDR="127.0.0.1:$PORT" ot-serve
	for i in $(seq 1 50); do curl -sf "$BASE/healthz" >/dev/null && break; sleep 0.1; done
	run http -X POST -H 'Content-Type: application/json' -d '{}' "$BASE/orders"
	assert_line --index 1 401
	assert_line --index 0 --partial 'OT_API_KEY'
	grep -q 'no OT_API_KEY' "$BATS_TEST_TMPDIR/serve.log"
}

@test "ot-serve: a client over its rate gets 429 with Retry-After; another client is not affected" {
	# one every 4 s: six reads stay within that even on a machine too busy to make them in 1 s
	serve OT_RATE_LIMIT=0.25 OT_RATE_BURST=3 OT_API_KEY="$KEY,other-$RUNID-0123456789"
	id=$(place_order "c-$RUNID")
	codes=$(for i in 1 2 3 4 5 6; do
		curl -s -o /dev/null -w '%{http_code} ' -H "Authorization: Bearer $KEY" "$BASE/orders/$id"
	done)
	[ "$codes" = "200 200 200 429 429 429 " ] || { echo "codes: $codes" >&2; false; }
	run http -D "$BATS_TEST_TMPDIR/h" "$BASE/orders/$id"
	assert_line --index 1 429
	assert_line --index 0 --partial '"error":"rate limit exceeded"'
	retry=$(tr -d '\r' < "$BATS_TEST_TMPDIR/h" | sed -n 's/^Retry-After: //Ip')
	[ "$retry" -ge 1 ]
	[ "$retry" -le 4 ]
	KEY="other-$RUNID-0123456789" run http "$BASE/orders/$id"
	assert_line --index 1 200
	[ "$(metric ot_rate_limited_total)" -ge 4 ]
	sleep "$retry" # as the answer said: one more is allowed again
	run http "$BASE/orders/$id"
	assert_line --index 1 200
}

@test "ot-serve: a new junk API key per request buys no fresh rate limit: the address's applies" {
	OWN_REDIS_PORT=$((PORT + 1)) # its own, so the failures counted here stay here
	own_redis
	serve OT_RATE_LIMIT=2 OT_RATE_BURST=3 OT_REDIS_URL="redis://127.0.0.1:$OWN_REDIS_PORT/0"
	id=$(place_order "c-$RUNID")
	ok=0
	t0=$(date +%s%N)
	for i in $(seq 1 20); do
		code=$(curl -s -o /dev/null -w '%{http_code}' -H "X-API-Key: junk-$i-$RANDOM" "$BASE/orders/$id")
		[ "$code" != 200 ] || ok=$((ok + 1))
	done
	# The burst (3), plus what the rate (2/s) gave back while the loop ran on a busy machine;
	# a bucket per junk key would have let all 20 through.
	most=$((3 + ($(date +%s%N) - t0) * 2 / 1000000000 + 1))
	echo "# 20 reads with a new junk key each: $ok allowed (at most $most)" >&3
	[ "$ok" -ge 3 ]
	[ "$ok" -le "$most" ]
	[ "$ok" -lt 20 ]
	# the limit was the address's: no bucket per junk key
	[ "$(redis-cli -p "$OWN_REDIS_PORT" --scan --pattern 'rl:key:*' | wc -l)" = 0 ]
}

@test "ot-serve: where the rate allows, the limiter takes requests from Redis in leases: 64 reads, one round trip" {
	OWN_REDIS_PORT=$((PORT + 1))
	own_redis
	export OT_REDIS_URL="redis://127.0.0.1:$OWN_REDIS_PORT/0"
	serve OT_RATE_LIMIT=1000 OT_RATE_BURST=1000
	id=$(place_order "c-$RUNID")
	redis-cli -p "$OWN_REDIS_PORT" CONFIG RESETSTAT >/dev/null
	urls=()
	for i in $(seq 1 64); do urls+=("$BASE/orders/$id"); done
	codes=$(curl -s -w '%{http_code}\n' "${urls[@]}" | grep -xE '[0-9]{3}' | sort | uniq -c | awk '{ print $1 "x" $2 }')
	[ "$codes" = "64x200" ] || { echo "codes: $codes" >&2; false; }
	# one EVALSHA took 64 (100 ms of the rate), the other 63 were spent here (a lease lapses
	# after 100 ms: a slow run may take one more)
	calls=$(redis-cli -p "$OWN_REDIS_PORT" INFO commandstats |
		awk -F'[:=,]' '$1 == "cmdstat_evalsha" || $1 == "cmdstat_eval" { n += $3 } END { print n + 0 }')
	echo "# limiter scripts run for 64 reads: $calls" >&3
	[ "$calls" -ge 1 ] && [ "$calls" -le 8 ]
}

@test "ot-serve: failed authentications are limited per address; a valid key from that address is judged by its own budget alone" {
	OWN_REDIS_PORT=$((PORT + 1))
	own_redis
	serve OT_RATE_LIMIT=0 OT_REDIS_URL="redis://127.0.0.1:$OWN_REDIS_PORT/0"
	body="{\"customer_id\":\"c-$RUNID\",\"items\":[{\"sku\":\"SKU-A\",\"qty\":1}],\"address\":\"1 Guess Street\"}"
	codes=$(for i in $(seq 1 15); do
		curl -s -o /dev/null -w '%{http_code} ' -X POST -H "Authorization: Bearer guess-$i" \
			-H 'Content-Type: application/json' -d "$body" "$BASE/orders"
	done)
	echo "# 15 guessed keys: $codes" >&3
	[ "$codes" = "401 401 401 401 401 401 401 401 401 401 429 429 429 429 429 " ] || { echo "codes: $codes" >&2; false; }
	run anon -D "$BATS_TEST_TMPDIR/h" -X POST -H 'Authorization: Bearer guess-16' -H 'Content-Type: application/json' \
		-d "$body" "$BASE/orders"
	assert_line --index 1 429
	grep -qi '^Retry-After: [1-9]' "$BATS_TEST_TMPDIR/h"
	# Behind an ingress every client shares this address: the junk keys of one must not lock
	# out another's valid key, so 20 placements with the right key all go through.
	codes=$(for i in $(seq 1 20); do
		curl -s -o /dev/null -w '%{http_code} ' -X POST -H "Authorization: Bearer $KEY" \
			-H 'Content-Type: application/json' -d "$body" "$BASE/orders"
	done)
	echo "# then 20 placements with the right key: $codes" >&3
	[ "$codes" = "$(printf '201 %.0s' $(seq 1 20))" ] || { echo "codes: $codes" >&2; false; }
	[ "$(sql_orders "SELECT count(*) FROM orders WHERE customer_id = 'c-$RUNID'")" = 20 ]
	# requests without a key are not failed authentications
	run anon "$BASE/orders/00000000-0000-4000-8000-000000000000"
	assert_line --index 1 404
}

@test "ot-serve: a 429 after failed authentications says why in its body, unlike one for the rate" {
	OWN_REDIS_PORT=$((PORT + 1))
	own_redis
	serve OT_RATE_LIMIT=0 OT_REDIS_URL="redis://127.0.0.1:$OWN_REDIS_PORT/0"
	for i in $(seq 1 10); do
		run anon -X POST -H "Authorization: Bearer guess-$i" -H 'Content-Type: application/json' -d '{}' "$BASE/orders"
		assert_line --index 1 401
	done
	run anon -D "$BATS_TEST_TMPDIR/h" -X POST -H 'Authorization: Bearer guess-11' -H 'Content-Type: application/json' \
		-d '{}' "$BASE/orders"
	assert_line --index 1 429
	retry=$(tr -d '\r' < "$BATS_TEST_TMPDIR/h" | sed -n 's/^Retry-After: //Ip')
	[ "$retry" -ge 1 ]
	assert_line --index 0 --partial "\"error\":\"too many failed authentications from this client; retry after $retry s\""
	refute_output --partial 'rate limit exceeded'
	# a read with a wrong key meets the same limit, and hears the same
	run anon -H 'X-API-Key: guess-12' "$BASE/orders/00000000-0000-4000-8000-000000000000"
	assert_line --index 1 429
	assert_line --index 0 --partial '"error":"too many failed authentications from this client; retry after '
	# the right key is not refused
	run http "$BASE/orders/00000000-0000-4000-8000-000000000000"
	assert_line --index 1 404
}

@test "ot-serve: behind --trusted-proxies each client has its own limits, named by X-Forwarded-For or Forwarded; from an untrusted peer those headers count for nothing" {
	OWN_REDIS_PORT=$((PORT + 1))
	own_redis
	# 127.0.0.1 plays the ingress; 127.0.0.2 is a client that connects directly. One request
	# every 10 s after a burst of 3: nothing comes back while the test runs.
	serve OT_RATE_LIMIT=0.1 OT_RATE_BURST=3 OT_REDIS_URL="redis://127.0.0.1:$OWN_REDIS_PORT/0" \
		OT_TRUSTED_PROXIES='127.0.0.1/32, fd00::/8'
	id=$(place_order "c-$RUNID")
	reads() { # N [curl options]: the codes of N keyless reads of the order
		local n=$1
		shift
		for i in $(seq 1 "$n"); do curl -s -o /dev/null -w '%{http_code} ' "$@" "$BASE/orders/$id"; done
	}
	# One client behind the ingress spends its burst and more ...
	codes=$(reads 6 -H 'X-Forwarded-For: 203.0.113.50, 198.51.100.7')
	[ "$codes" = "200 200 200 429 429 429 " ] || { echo "codes: $codes" >&2; false; }
	# ... and another reader behind the same ingress is not affected, whichever header names it
	codes=$(reads 3 -H 'X-Forwarded-For: 198.51.100.8')
	[ "$codes" = "200 200 200 " ] || { echo "codes: $codes" >&2; false; }
	codes=$(reads 3 -H 'Forwarded: for="[2001:db8::9]:4711";proto=https')
	[ "$codes" = "200 200 200 " ] || { echo "codes: $codes" >&2; false; }
	# what the client wrote left of the ingress's entry buys it nothing
	run anon -H 'X-Forwarded-For: 192.0.2.99, 198.51.100.7' "$BASE/orders/$id"
	assert_line --index 1 429
	[ "$(redis-cli -p "$OWN_REDIS_PORT" --scan --pattern 'rl:*' | sort | tr '\n' ' ')" = \
	  "rl:ip:198.51.100.7 rl:ip:198.51.100.8 rl:ip:2001:db8::9 " ] ||
		{ redis-cli -p "$OWN_REDIS_PORT" --scan --pattern 'rl:*' >&2; false; }
	# A direct client cannot name itself: its headers are ignored, its own address counts.
	codes=$(reads 6 --interface 127.0.0.2 -H 'X-Forwarded-For: 198.51.100.20' -H 'Forwarded: for=198.51.100.21')
	[ "$codes" = "200 200 200 429 429 429 " ] || { echo "codes: $codes" >&2; false; }
	codes=$(reads 1 --interface 127.0.0.2 -H 'X-Forwarded-For: 198.51.100.22')
	[ "$codes" = "429 " ] || { echo "codes: $codes" >&2; false; }
	[ "$(redis-cli -p "$OWN_REDIS_PORT" EXISTS rl:ip:127.0.0.2 rl:ip:198.51.100.20 rl:ip:198.51.100.22)" = 1 ]
	# Failed authentications count per client too, not against the ingress's address.
	run anon -X POST -H 'Authorization: Bearer junk' -H 'X-Forwarded-For: 203.0.113.66' \
		-H 'Content-Type: application/json' -d '{}' "$BASE/orders"
	assert_line --index 1 401
	[ "$(redis-cli -p "$OWN_REDIS_PORT" EXISTS rl:authfail:ip:203.0.113.66)" = 1 ]
	[ "$(redis-cli -p "$OWN_REDIS_PORT" EXISTS rl:authfail:ip:127.0.0.1)" = 0 ]
}

@test "ot-serve: behind --trusted-proxies --max-per-client counts each client's requests (streams too), not the ingress's connections" {
	serve OT_MAX_PER_CLIENT=3 OT_RATE_LIMIT=0 OT_TRUSTED_PROXIES=127.0.0.1
	id=$(place_order "c-$RUNID")
	for i in 1 2 3; do sse "a$i" -H 'X-Forwarded-For: 198.51.100.1' "$BASE/orders/$id/events"; done
	for i in 1 2 3; do wait_lines "a$i" 1 '^id: 1$'; done
	# a fourth stream of that client is refused; another client behind the ingress gets its own
	run anon -D "$BATS_TEST_TMPDIR/h" -H 'X-Forwarded-For: 198.51.100.1' "$BASE/orders/$id"
	assert_line --index 1 429
	assert_line --index 0 '{"error":"too many requests at once from this client"}'
	grep -qi '^Retry-After: 1' "$BATS_TEST_TMPDIR/h"
	sse b1 -H 'X-Forwarded-For: 198.51.100.2' "$BASE/orders/$id/events"
	wait_lines b1 1 '^id: 1$'
	[ "$(metric ot_http_client_refused_total)" = 1 ]
	# The ingress itself is not capped by connections: 10 idle ones from it stay open, while a
	# client that connects directly (127.0.0.2) gets 3.
	run python3 "$ROOT/test/tools/slow-heads.py" 127.0.0.1 "$PORT" 10 2
	assert_output --partial '"failed": 0, "refused": 0, "open": 10'
	run python3 "$ROOT/test/tools/slow-heads.py" 127.0.0.1 "$PORT" 10 2 127.0.0.2
	assert_output --partial '"failed": 0, "refused": 7, "open": 3'
}

@test "ot-serve: oversized headers are 431; a wrong method on a stream 405; errors are JSON" {
	serve
	run anon -H "X-Padding: $(head -c 20000 /dev/zero | tr '\0' a)" "$BASE/healthz"
	assert_line --index 1 431
	# Heads from 5.5 KiB up to where MHD itself refuses: an answer, not a closed connection.
	for n in 5000 5600 6000 6400; do
		code=$(curl -s -o /dev/null -w '%{http_code}' -H "X-Padding: $(head -c "$n" /dev/zero | tr '\0' a)" "$BASE/")
		[ "$code" = "$([ "$n" -lt 5500 ] && echo 200 || echo 431)" ]
	done
	run http -X POST "$BASE/orders/00000000-0000-4000-8000-000000000000/events"
	assert_line --index 1 405
	assert_line --index 0 '{"error":"method not allowed"}'
	run http -X PUT "$BASE/orders"
	assert_line --index 1 405
	run http "$BASE/orders/00000000-0000-4000-8000-000000000000/events"
	assert_line --index 1 404
	run http "$BASE/orders/nope/events"
	assert_line --index 1 400
}

# Measures GET /healthz from 127.0.0.1 every 0.2 s until $BATS_TEST_TMPDIR/stop exists: one
# line per probe, "time_total code", in $BATS_TEST_TMPDIR/probe.
probe_healthz() {
	while [ ! -e "$BATS_TEST_TMPDIR/stop" ]; do
		curl -s -o /dev/null -w '%{time_total} %{http_code}\n' --max-time 5 "$BASE/healthz" >> "$BATS_TEST_TMPDIR/probe"
		sleep 0.2
	done
}

@test "ot-serve: slow clients: one address gets --max-per-client connections, each head has --request-timeout; /healthz stays quick" {
	serve OT_MAX_PER_CLIENT=20 OT_REQUEST_TIMEOUT_S=3
	probe_healthz & BG_PIDS+=($!)
	# 40 connections from 127.0.0.2, each trickling its head a byte a second for up to 6 s
	run python3 "$ROOT/test/tools/slow-heads.py" 127.0.0.1 "$PORT" 40 6 127.0.0.2
	touch "$BATS_TEST_TMPDIR/stop"
	echo "# $output" >&3
	assert_success
	# 20 refused at once, the other 20 closed when their 3 s were up, none left open
	assert_output --regexp '"failed": 0, "refused": 20, "open": 0, "closed": 20, "closed_min_s": [34]\.[0-9], "closed_max_s": [34]\.[0-9]'
	[ "$(metric ot_http_slow_heads_total)" = 20 ]
	sleep 0.3
	slow=$(awk '$2 != 200 || $1 > 1 { n++ } END { print n + 0 }' "$BATS_TEST_TMPDIR/probe")
	echo "# $(wc -l < "$BATS_TEST_TMPDIR/probe") /healthz probes, $slow slow or failed; slowest $(sort -n "$BATS_TEST_TMPDIR/probe" | tail -1)" >&3
	[ "$slow" = 0 ]
	# a client that keeps its connection alive between requests is not cut off mid-use
	run curl -s -o /dev/null -o /dev/null -w '%{http_code} %{num_connects}\n' "$BASE/healthz" "$BASE/healthz"
	assert_line --index 1 '200 0'
}

@test "ot-serve: slow request bodies: one deadline (--request-timeout) for head and body, and a minimum rate; /healthz stays quick, descriptors come back, the log stays short" {
	serve OT_REQUEST_TIMEOUT_S=3 OT_MAX_PER_CLIENT=0
	fds=$(metric process_open_fds)
	probe_healthz & BG_PIDS+=($!)
	# 300 placements with a valid key whose 60,000-byte bodies come a byte a second: cut once
	# they fall behind 1 KiB a second, a second or so after their heads
	run python3 "$ROOT/test/tools/slow-bodies.py" 127.0.0.1 "$PORT" 300 8 -H "Authorization: Bearer $KEY"
	echo "# 300 bodies at 1 B/s: $output" >&3
	assert_output --regexp '"failed": 0, "refused": 0, "answered": \{\}, "answer_max_s": 0, "open": 0, "closed": 300, "closed_min_s": [0-9.]+, "closed_max_s": [0-3]\.[0-9]'
	# 20 bodies at 2 KiB a second keep up the rate but would take 30 s: cut at the deadline
	run python3 "$ROOT/test/tools/slow-bodies.py" 127.0.0.1 "$PORT" 20 8 -r 2048 -H "Authorization: Bearer $KEY"
	echo "# 20 bodies at 2 KiB/s: $output" >&3
	assert_output --regexp '"open": 0, "closed": 20, "closed_min_s": 3\.[0-9], "closed_max_s": [34]\.[0-9]'
	touch "$BATS_TEST_TMPDIR/stop"
	[ "$(metric ot_http_slow_bodies_total)" = 320 ]
	[ "$(metric ot_http_slow_heads_total)" = 0 ]
	sleep 0.3
	slow=$(awk '$2 != 200 || $1 > 1 { n++ } END { print n + 0 }' "$BATS_TEST_TMPDIR/probe")
	echo "# $(wc -l < "$BATS_TEST_TMPDIR/probe") /healthz probes, $slow slow or failed; slowest $(sort -n "$BATS_TEST_TMPDIR/probe" | tail -1)" >&3
	[ "$slow" = 0 ]
	for i in $(seq 1 20); do [ "$(metric process_open_fds)" -le $((fds + 4)) ] && break; sleep 0.2; done
	echo "# descriptors: $fds before, $(metric process_open_fds) after" >&3
	[ "$(metric process_open_fds)" -le $((fds + 4)) ]
	# libmicrohttpd's word on each connection cut ("closed by remote side with incomplete
	# request", and the like) is a warning once, not 320 lines
	n=$(grep -c '"msg":"http: ' "$BATS_TEST_TMPDIR/serve.log")
	echo "# server log: $n lines from libmicrohttpd" >&3
	[ "$n" -le 4 ]
	run ! grep -q 'thread pool' "$BATS_TEST_TMPDIR/serve.log"
	# the server still takes a body that comes at a normal pace
	run http -X POST -H 'Content-Type: application/json' -d "{\"customer_id\":\"c-$RUNID\",\"items\":[{\"sku\":\"SKU-A\",\"qty\":1}],\"address\":\"x\"}" "$BASE/orders"
	assert_line --index 1 201
}

@test "ot-serve: what is refused whatever its body holds is answered before the body comes: 401, 405, 413, 415, 400, 404" {
	serve
	early() { # EXPECTED slow-bodies options: one request whose body would take 60,000 s
		run python3 "$ROOT/test/tools/slow-bodies.py" 127.0.0.1 "$PORT" 1 4 "${@:2}"
		assert_output --regexp "\"answered\": \\{\"$1\": 1\\}, \"answer_max_s\": 0(\\.[0-9])?,"
	}
	early 401                                    # POST /orders without a key
	early 401 -H 'Authorization: Bearer wrong'   # with a wrong one
	early 405 -m PUT                             # a method /orders does not take
	early 405 -p "/orders/$(uuid)/events"        # a stream takes no POST
	early 405 -p /healthz
	early 400 -m GET -p "/orders/$(uuid)"        # a GET with a body
	early 404 -p /nothing-here
	early 413 -l 70000 -H "Authorization: Bearer $KEY"
	early 415 -H "Authorization: Bearer $KEY" -H 'Content-Type: text/plain'
	# a valid placement's body is waited for, as long as it keeps coming
	run python3 "$ROOT/test/tools/slow-bodies.py" 127.0.0.1 "$PORT" 1 2 -l 100 -r 2048 -H "Authorization: Bearer $KEY"
	assert_output --partial '"answered": {"400": 1}' # 100 spaces are not an order
}

@test "ot-serve: the request deadline leaves live streams alone" {
	serve OT_REQUEST_TIMEOUT_S=1
	id=$(place_order "c-$RUNID")
	sse live "$BASE/orders/$id/events"
	wait_lines live 1 '^id: 1$'
	sleep 2
	event INVENTORY_RESERVED "$id" | ot-consume 2>/dev/null
	wait_lines live 1 '^id: 2$'
	[ "$(metric ot_http_slow_heads_total)" = 0 ]
}

@test "ot-serve: GET /orders/{id}/events streams each change as SSE; Last-Event-ID resumes after it" {
	serve
	id=$(place_order "c-$RUNID")
	sse live "$BASE/orders/$id/events"
	wait_lines live 1 '^id: 1$'
	printf '%s\n' "$(event INVENTORY_RESERVED "$id")" "$(event DELIVERY_UPDATED "$id" '{"status":"PREPARING"}')" |
		ot-consume 2>/dev/null
	wait_lines live 1 '^id: 3$'
	run cat "$BATS_TEST_TMPDIR/live"
	assert_line --index 0 'retry: 1000'
	assert_line 'event: status'
	assert_line --partial '"status":"CONFIRMED","version":2'
	assert_line --partial '"status":"PREPARING","version":3'
	# a duplicate and a stale event send nothing
	event INVENTORY_RESERVED "$id" | ot-consume 2>/dev/null
	sleep 0.3
	[ "$(grep -c '^id: ' "$BATS_TEST_TMPDIR/live")" = 3 ]
	# resuming after version 1 gets 2 and 3 only, from the change log
	run curl -sN --max-time 1 -H 'Last-Event-ID: 1' "$BASE/orders/$id/events"
	[ "$(echo "$output" | grep -c '^id: ')" = 2 ]
	assert_line 'id: 2'
	assert_line 'id: 3'
	run curl -sN --max-time 1 "$BASE/orders/$id/events?last_event_id=3"
	[ "$(echo "$output" | grep -c '^id: ')" = 0 ]
	[ "$(metric 'ot_live_streams{protocol="sse"}')" -ge 1 ]
}

@test "ot-serve: an order paid by card shows its payment in GET and on its stream: authorised, then captured after the delivery" {
	local pay='"payment":{"source":"tok_visa"},"amount":2500' auth
	serve
	id=$(place_order "c-$RUNID")
	plain=$(place_order "p-$RUNID")
	sse live "$BASE/orders/$id/events"
	wait_lines live 1 '^id: 1$'
	auth=$(event PAYMENT_AUTHORIZED "$id" '{"amount":2500,"currency":"usd","charge_id":"ch_1"}')
	printf '%s\n' "$(event INVENTORY_RESERVED "$id" "{$pay}")" "$auth" | ot-consume 2>/dev/null
	run curl -s "$BASE/orders/$id"
	assert_output --partial '"status":"CONFIRMED","version":2,'
	assert_output --partial '"payment":{"status":"AUTHORIZED","amount":2500,"currency":"usd"}'
	printf '%s\n' "$(event DELIVERY_UPDATED "$id" '{"status":"PREPARING"}')" \
		"$(event DELIVERY_UPDATED "$id" '{"status":"IN_TRANSIT"}')" "$(event DELIVERY_UPDATED "$id" '{"status":"DELIVERED"}')" \
		"$(event PAYMENT_CAPTURED "$id" '{"amount":2500,"currency":"usd","charge_id":"ch_1"}')" | ot-consume 2>/dev/null
	wait_lines live 1 '^id: 6$'
	run grep -A2 '^id: 6$' "$BATS_TEST_TMPDIR/live"
	assert_line --partial '"status":"DELIVERED","version":6,'
	assert_line --partial '"payment":{"status":"CAPTURED","amount":2500,"currency":"usd"}'
	run curl -s "$BASE/orders/$id"
	assert_output --partial '"status":"DELIVERED","version":6,'
	assert_output --partial '"payment":{"status":"CAPTURED","amount":2500,"currency":"usd"}'
	# the authorisation again changes nothing, in GET or on the stream
	printf '%s\n' "$auth" "$(event PAYMENT_AUTHORIZED "$id" '{"amount":2500,"currency":"usd"}')" | ot-consume 2>/dev/null
	run curl -s "$BASE/orders/$id"
	assert_output --partial '"version":6,'
	assert_output --partial '"payment":{"status":"CAPTURED"'
	run curl -s -H "Authorization: Bearer $KEY" "$BASE/orders/$id?full=1"
	assert_output --partial '"payment":{"status":"CAPTURED","amount":2500,"currency":"usd"}'
	# an order without a payment has no payment field, from Redis or from the database
	run curl -s "$BASE/orders/$plain"
	assert_output --partial '"status":"PENDING"'
	refute_output --partial payment
	rcli DEL "order:{$plain}" >/dev/null
	run curl -s -H "Authorization: Bearer $KEY" "$BASE/orders/$plain?full=1"
	assert_output --partial '"customer_id":"p-'
	refute_output --partial payment
	[ "$(grep -c '^id: ' "$BATS_TEST_TMPDIR/live")" = 6 ]
}

@test "ot-serve: a declined payment shows with its decline code, read from the database after a miss" {
	serve
	id=$(place_order "c-$RUNID")
	printf '%s\n' "$(event INVENTORY_RESERVED "$id" '{"payment":{"source":"tok_chargeDeclined"},"amount":900}')" \
		"$(event PAYMENT_DECLINED "$id" '{"amount":900,"currency":"usd","code":"card_declined","decline_code":"insufficient_funds"}')" |
		ot-consume 2>/dev/null
	rcli DEL "order:{$id}" >/dev/null
	run curl -s -D "$BATS_TEST_TMPDIR/h" "$BASE/orders/$id"
	assert_output --partial '"status":"REJECTED"'
	assert_output --partial '"payment":{"status":"DECLINED","amount":900,"currency":"usd","decline_code":"insufficient_funds"}'
	grep -qi '^X-Cache: MISS' "$BATS_TEST_TMPDIR/h"
	run curl -s "$BASE/orders/$id"
	assert_output --partial '"decline_code":"insufficient_funds"'
}

@test "ot-serve: the same stream over WebSocket (101, Sec-WebSocket-Accept, one text frame per change)" {
	serve
	id=$(place_order "c-$RUNID")
	node "$ROOT/test/tools/ws-read.mjs" "$BASE/orders/$id/ws" 2 > "$BATS_TEST_TMPDIR/ws" 2>&1 &
	BG_PIDS+=($!)
	wait_lines ws 1 '"version":1'
	event INVENTORY_RESERVED "$id" | ot-consume 2>/dev/null
	wait_lines ws 1 '"status":"CONFIRMED","version":2'
	run cat "$BATS_TEST_TMPDIR/ws"
	assert_line --index 0 'HTTP/1.1 101 Switching Protocols'
	run node "$ROOT/test/tools/ws-read.mjs" "$BASE/orders/$id/events" 1 1
	assert_success
	assert_line --index 1 --partial '"version":2'
	run http "$BASE/orders/$id/ws"
	assert_line --index 1 400
}

@test "ot-serve: a WebSocket client that resets before its 101 leaves no stream or descriptor behind" {
	serve OT_RATE_LIMIT=0 OT_MAX_STREAMS=5
	pid=${BG_PIDS[0]}
	id=$(place_order "c-$RUNID")
	fds=$(ls "/proc/$pid/fd" | wc -l)
	run node "$ROOT/test/tools/ws-raw.mjs" reset "$BASE/orders/$id/ws" 100
	assert_success
	# at most the four worker threads' own PostgreSQL and Redis connections are new
	for i in $(seq 1 50); do
		[ "$(metric 'ot_live_streams{protocol="websocket"}')" = 0 ] &&
			[ "$(ls "/proc/$pid/fd" | wc -l)" -le $((fds + 8)) ] && break
		sleep 0.1
	done
	[ "$(metric 'ot_live_streams{protocol="websocket"}')" = 0 ]
	[ "$(ls "/proc/$pid/fd" | wc -l)" -le $((fds + 8)) ]
	# and the five slots are free for real clients
	run node "$ROOT/test/tools/ws-read.mjs" "$BASE/orders/$id/ws" 1
	assert_success
	assert_line --index 0 'HTTP/1.1 101 Switching Protocols'
}

@test "ot-serve: a WebSocket frame RFC 6455 forbids gets a close with 1002, then the end" {
	serve
	id=$(place_order "c-$RUNID")
	mask=01020304
	# unmasked; RSV1; RSV3; opcode 3; opcode 11; a 126-byte ping; a fragmented ping; a
	# continuation with nothing to continue; a close with a one-byte status
	for bad in 8100 c180$mask 9180$mask 8380$mask 8b80$mask "89fe007e$mask$(printf '%0252d' 0)" \
		0980$mask 8080$mask 8881${mask}02; do
		run node "$ROOT/test/tools/ws-raw.mjs" frame "$BASE/orders/$id/ws" "$bad"
		assert_success
		assert_line --index 0 'HTTP/1.1 101 Switching Protocols'
		assert_line 'close 1002'
		assert_line eof
	done
	# a masked ping ("hi") gets its pong; a masked close is answered with its own code
	run node "$ROOT/test/tools/ws-raw.mjs" frame "$BASE/orders/$id/ws" "8982${mask}696b8882${mask}02eb"
	assert_success
	assert_line 'pong hi'
	assert_line 'close 1001'
	assert_line eof
	grep -q '"msg":"WebSocket client broke RFC 6455: closing with 1002"' "$BATS_TEST_TMPDIR/serve.log"
}

@test "ot-serve: a HEAD upgrade is 400; with OT_WS_ORIGINS a WebSocket from another Origin is 403" {
	serve OT_WS_ORIGINS="https://track.example,http://127.0.0.1:$PORT"
	id=$(place_order "c-$RUNID")
	exec {tcp}<>"/dev/tcp/127.0.0.1/$PORT"
	printf 'HEAD /orders/%s/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n' "$id" >&$tcp
	read -r -t 5 line <&$tcp
	exec {tcp}<&-
	[ "$line" = $'HTTP/1.1 400 Bad Request\r' ]
	close=8880$(printf 01020304)
	run node "$ROOT/test/tools/ws-raw.mjs" frame "$BASE/orders/$id/ws" "$close" https://evil.example
	assert_line --index 0 'HTTP/1.1 403 Forbidden'
	run node "$ROOT/test/tools/ws-raw.mjs" frame "$BASE/orders/$id/ws" "$close" https://track.example.evil
	assert_line --index 0 'HTTP/1.1 403 Forbidden'
	for ok in https://TRACK.example "http://127.0.0.1:$PORT" ""; do
		run node "$ROOT/test/tools/ws-raw.mjs" frame "$BASE/orders/$id/ws" "$close" $ok
		assert_line --index 0 'HTTP/1.1 101 Switching Protocols'
		assert_line 'close 1000'
	done
	# SSE is not a WebSocket: the list does not apply
	run curl -s --max-time 1 -o /dev/null -w '%{http_code}' -H 'Origin: https://evil.example' "$BASE/orders/$id/events"
	assert_output 200
}

@test "ot-serve: past --max-streams a stream is 503 with Retry-After; a stream the client closed frees its slot at once" {
	serve OT_MAX_STREAMS=2
	id=$(place_order "c-$RUNID")
	sse one "$BASE/orders/$id/events"
	one=$!
	sse two "$BASE/orders/$id/events"
	wait_lines one 1 '^id: 1$'
	wait_lines two 1 '^id: 1$'
	run curl -s --max-time 5 -D "$BATS_TEST_TMPDIR/h" -w '\n%{http_code}' "$BASE/orders/$id/events"
	assert_line --index 1 503
	assert_line --index 0 '{"error":"too many live streams open: try again later"}'
	grep -qi '^Retry-After: 5' "$BATS_TEST_TMPDIR/h"
	# The client goes: its slot is free well before the next ping (15 s), which freed it before.
	kill "$one"
	wait_metric "$PORT" 'ot_live_streams{protocol="sse"}' 1 5
	run curl -sN --max-time 1 "$BASE/orders/$id/events"
	assert_line 'id: 1'
	# and the stream still open gets the next change
	event INVENTORY_RESERVED "$id" | ot-consume 2>/dev/null
	wait_lines two 1 '^id: 2$'
}

@test "ot-serve: its soft open-files limit goes up to the hard one, since each stream holds a descriptor" {
	ulimit -Sn 256
	serve
	pid=${BG_PIDS[0]}
	read -r soft hard < <(awk '/^Max open files/ { print $4, $5 }' "/proc/$pid/limits")
	[ "$soft" = "$hard" ] || { echo "soft $soft, hard $hard" >&2; false; }
}

@test "ot-serve: 200 WebSockets at once share the event loop, not a thread each, and each gets the change" {
	serve OT_RATE_LIMIT=0 OT_MAX_PER_CLIENT=0
	pid=${BG_PIDS[0]}
	id=$(place_order "c-$RUNID")
	run http "$BASE/orders/$id"
	assert_line --index 1 200
	threads=$(awk '/^Threads:/ { print $2 }' "/proc/$pid/status")
	node "$ROOT/test/tools/ws-many.mjs" "$BASE/orders/$id/ws" 200 '"version":2' > "$BATS_TEST_TMPDIR/many" 2>&1 &
	many=$!
	BG_PIDS+=($many)
	wait_lines many 1 '^open 200$'
	[ "$(metric 'ot_live_streams{protocol="websocket"}')" = 200 ]
	now=$(awk '/^Threads:/ { print $2 }' "/proc/$pid/status")
	[ "$now" -le "$threads" ] || { echo "threads: $threads before, $now with 200 WebSockets" >&2; false; }
	event INVENTORY_RESERVED "$id" | ot-consume 2>/dev/null
	wait_lines many 1 '^got 200$'
	wait "$many" # 0 once the server answered every close
	wait_metric "$PORT" 'ot_live_streams{protocol="websocket"}' 0 5
}

@test "ot-serve: with Redis down the circuit opens and reads answer from the database at once; it closes when Redis is back" {
	OWN_REDIS_PORT=$((PORT + 1))
	own_redis
	serve OT_REDIS_URL="redis://127.0.0.1:$OWN_REDIS_PORT/0"
	id=$(place_order "c-$RUNID")
	[ "$(metric 'ot_circuit_state{circuit="redis"}')" = 0 ]
	redis-cli -p "$OWN_REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
	for i in $(seq 1 12); do
		run http -D "$BATS_TEST_TMPDIR/h" "$BASE/orders/$id"
		assert_line --index 1 200
	done
	grep -qi '^X-Cache: BYPASS' "$BATS_TEST_TMPDIR/h"
	[ "$(metric 'ot_circuit_state{circuit="redis"}')" = 2 ]
	[ "$(metric 'ot_circuit_opens_total{circuit="redis"}')" -ge 1 ]
	[ "$(metric 'ot_circuit_rejected_total{circuit="redis"}')" -ge 1 ]
	# a write while Redis is down commits to the database ...
	run http -X POST "$BASE/orders/$id/cancel"
	assert_line --index 1 200
	own_redis
	# ... and reaches the cache once Redis answers, without a read asking for it
	for i in $(seq 1 50); do
		[ "$(redis-cli -p "$OWN_REDIS_PORT" HGET "order:{$id}" status 2>/dev/null)" = CANCELLED ] && break
		sleep 0.2
	done
	[ "$(redis-cli -p "$OWN_REDIS_PORT" HGET "order:{$id}" status)" = CANCELLED ]
	# the circuit half-opens after 2 s, one probe closes it
	for i in $(seq 1 30); do
		http -o /dev/null "$BASE/orders/$id" >/dev/null
		[ "$(metric 'ot_circuit_state{circuit="redis"}')" = 0 ] && break
		sleep 0.2
	done
	[ "$(metric 'ot_circuit_state{circuit="redis"}')" = 0 ]
	run http -D "$BATS_TEST_TMPDIR/h" "$BASE/orders/$id"
	grep -qi '^X-Cache: HIT' "$BATS_TEST_TMPDIR/h"
}

@test "ot-serve: a stale cache entry left by a failed write is repaired once Redis answers again" {
	serve
	id=$(place_order "c-$RUNID")
	[ "$(rcli HGET "order:{$id}" status)" = PENDING ]
	# Redis keeps its data but takes no writes for 3 s: the cancel commits, its cache write times out
	rcli CLIENT PAUSE 3000 WRITE >/dev/null
	run http -X POST "$BASE/orders/$id/cancel"
	assert_line --index 1 200
	[ "$(status_of "$id")" = CANCELLED ]
	for i in $(seq 1 50); do [ "$(rcli HGET "order:{$id}" status)" = CANCELLED ] && break; sleep 0.2; done
	[ "$(rcli HGET "order:{$id}" status)" = CANCELLED ]
	grep -q 'cache repaired to version' "$BATS_TEST_TMPDIR/serve.log"
}

@test "ot-serve: /metrics is Prometheus text with requests, latency, cache reads and circuits" {
	serve
	id=$(place_order "c-$RUNID")
	http "$BASE/orders/$id" >/dev/null
	http "$BASE/orders/00000000-0000-4000-8000-000000000000" >/dev/null
	run curl -s -D "$BATS_TEST_TMPDIR/h" "$BASE/metrics"
	assert_success
	grep -qi '^Content-Type: text/plain; version=0.0.4' "$BATS_TEST_TMPDIR/h"
	assert_line '# TYPE ot_http_requests_total counter'
	assert_line 'ot_http_requests_total{route="order_get",code="200"} 1'
	assert_line 'ot_http_requests_total{route="order_get",code="404"} 1'
	assert_line '# TYPE ot_http_request_duration_seconds histogram'
	assert_line 'ot_http_request_duration_seconds_count{route="order_get"} 2'
	assert_line 'ot_cache_reads_total{result="hit"} 1'
	assert_line 'ot_circuit_state{circuit="postgres"} 0'
	assert_line 'ot_live_subscribed 1'
	assert_line 'ot_build_info{tool="ot-serve",version="0.1.0"} 1'
	# every sample line is "name{labels} number"
	bad=$(echo "$output" | grep -v '^#' | grep -vE '^[a-z_]+(\{[^}]*\})? [-+0-9.eE]+$' || true)
	[ -z "$bad" ]
	# a miss refills the entry; an order placed over HTTP is a transition to PENDING
	rcli DEL "order:{$id}" >/dev/null
	http "$BASE/orders/$id" >/dev/null
	[ "$(metric 'ot_cache_reads_total{result="miss"}')" = 1 ]
	[ "$(metric 'ot_cache_fills_total{tool="ot-serve"}')" = 1 ]
	[ "$(metric 'ot_cache_writes_total{tool="ot-serve",result="applied"}')" = 1 ]
	http -X POST -H 'Content-Type: application/json' --data "$(request "c2-$RUNID")" "$BASE/orders" >/dev/null
	[ "$(metric 'ot_order_transitions_total{tool="ot-serve",to="PENDING"}')" = 1 ]
	[ "$(metric process_open_fds)" -gt 3 ]
	promcheck "$PORT"
}

# Reads every order in $BATS_TEST_TMPDIR/ids over and over on one connection until the file
# $BATS_TEST_TMPDIR/stop exists, appending each answer to $BATS_TEST_TMPDIR/reader.$1.
reader() {
	local urls=()
	while read -r id; do urls+=("$BASE/orders/$id"); done < "$BATS_TEST_TMPDIR/ids"
	while [ ! -e "$BATS_TEST_TMPDIR/stop" ]; do
		curl -s "${urls[@]}" >> "$BATS_TEST_TMPDIR/reader.$1" || sleep 0.05
	done
}

@test "ot-serve: no read ever sees a status or version go backwards (out-of-order and duplicate events, concurrent reads, refills, invalidations and a Redis restart)" {
	OWN_REDIS_PORT=$((PORT + 1))
	own_redis
	export OT_REDIS_URL="redis://127.0.0.1:$OWN_REDIS_PORT/0"
	serve OT_RATE_LIMIT=0
	for i in $(seq 1 25); do place_order "c-$RUNID-$i"; done > "$BATS_TEST_TMPDIR/ids"
	[ "$(wc -l < "$BATS_TEST_TMPDIR/ids")" = 25 ]
	# Each order's life, one step at a time across all orders; every event sent twice, and after
	# each step the previous step's event sent again under a new id (stale).
	steps=('INVENTORY_RESERVED {}' 'DELIVERY_UPDATED {"status":"PREPARING"}'
		'DELIVERY_UPDATED {"status":"IN_TRANSIT","lat":52.50,"lon":13.40}'
		'DELIVERY_UPDATED {"status":"IN_TRANSIT","lat":52.51,"lon":13.41}'
		'DELIVERY_UPDATED {"status":"IN_TRANSIT","lat":52.52,"lon":13.42}'
		'DELIVERY_UPDATED {"status":"DELIVERED"}')
	for s in "${!steps[@]}"; do
		while read -r id; do
			ev=$(event ${steps[$s]%% *} "$id" "${steps[$s]#* }")
			printf '%s\n%s\n' "$ev" "$ev"
			# (a position re-sent is a move, not a stale event, so positions are not re-sent)
			[ "$s" = 0 ] || [[ ${steps[$s]} == *IN_TRANSIT* && ${steps[$((s - 1))]} == *IN_TRANSIT* ]] ||
				event ${steps[$((s - 1))]%% *} "$id" "${steps[$((s - 1))]#* }"
		done < "$BATS_TEST_TMPDIR/ids"
	done > "$BATS_TEST_TMPDIR/events"
	# Replays of the changes committed so far, shuffled, racing the live ones (as ot-cache
	# rebuild during traffic does): the outbox holds each committed ORDER_STATUS_UPDATED.
	(while [ ! -e "$BATS_TEST_TMPDIR/stop" ]; do
		sql_orders "SELECT payload FROM outbox WHERE type = 'ORDER_STATUS_UPDATED' AND key IN
			(SELECT id::text FROM orders WHERE customer_id LIKE 'c-$RUNID-%')" | shuf |
			ot-cache rebuild -i - >/dev/null 2>>"$BATS_TEST_TMPDIR/replay.log"
		sleep 0.05
	done) & BG_PIDS+=($!)
	for r in 1 2 3 4; do reader "$r" & BG_PIDS+=($!); done
	# Invalidations force refills that race the writes.
	(while [ ! -e "$BATS_TEST_TMPDIR/stop" ]; do
		redis-cli -p "$OWN_REDIS_PORT" DEL "order:{$(shuf -n1 "$BATS_TEST_TMPDIR/ids")}" >/dev/null 2>&1
		sleep 0.02
	done) & BG_PIDS+=($!)
	half=$(($(wc -l < "$BATS_TEST_TMPDIR/events") / 2))
	head -n "$half" "$BATS_TEST_TMPDIR/events" | while read -r l; do echo "$l"; sleep 0.002; done |
		ot-consume 2>"$BATS_TEST_TMPDIR/consume1.log" || true
	# Redis restarts in the middle, losing every entry.
	redis-cli -p "$OWN_REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
	sleep 0.5
	own_redis
	tail -n +"$((half + 1))" "$BATS_TEST_TMPDIR/events" | while read -r l; do echo "$l"; sleep 0.002; done |
		ot-consume 2>"$BATS_TEST_TMPDIR/consume2.log" || true
	sleep 1.5
	touch "$BATS_TEST_TMPDIR/stop"
	sleep 0.3
	# Every order ended DELIVERED at version 7 (6 changes applied once each) in the database ...
	[ "$(sql_orders "SELECT count(*) FROM orders WHERE customer_id LIKE 'c-$RUNID-%' AND status = 'DELIVERED' AND version = 7")" = 25 ]
	# ... and every reader saw each order's version only grow, with the status that version had.
	cat "$BATS_TEST_TMPDIR"/reader.* | sed -n 's/.*"order_id":"\([^"]*\)","status":"\([A-Z_]*\)","version":\([0-9]*\).*/\1 \2 \3/p' \
		> "$BATS_TEST_TMPDIR/seen"
	reads=$(wc -l < "$BATS_TEST_TMPDIR/seen")
	echo "# $reads reads checked" >&3
	[ "$reads" -gt 500 ]
	for r in 1 2 3 4; do
		sed -n 's/.*"order_id":"\([^"]*\)","status":"\([A-Z_]*\)","version":\([0-9]*\).*/\1 \2 \3/p' "$BATS_TEST_TMPDIR/reader.$r" |
			awk -v r="$r" 'BEGIN { split("PENDING CONFIRMED PREPARING IN_TRANSIT IN_TRANSIT IN_TRANSIT DELIVERED", want, " ") }
				$3 < max[$1] { print "reader " r ": " $1 " went from version " max[$1] " back to " $3; bad = 1 }
				want[$3] != $2 { print "reader " r ": " $1 " version " $3 " with status " $2; bad = 1 }
				$3 > max[$1] { max[$1] = $3 }
				END { exit bad }'
	done
	# The cache agrees with the database at the end.
	while read -r id; do
		v=$(redis-cli -p "$OWN_REDIS_PORT" HGET "order:{$id}" version)
		[ -z "$v" ] || [ "$v" = 7 ] || { echo "order:{$id} has version $v in Redis" >&2; false; }
	done < "$BATS_TEST_TMPDIR/ids"
}

@test "ot-serve: the in-process cache: another process's change shows at once, a DEL drops the entry, a subscription drop empties it" {
	OWN_REDIS_PORT=$((PORT + 1))
	own_redis
	export OT_REDIS_URL="redis://127.0.0.1:$OWN_REDIS_PORT/0"
	serve OT_LOCAL_CACHE_MS=60000
	wait_metric "$PORT" ot_local_cache_flushes_total 1 # subscribed and tracking: taking entries
	id=$(place_order "c-$RUNID")
	http "$BASE/orders/$id" >/dev/null
	run http -D "$BATS_TEST_TMPDIR/h" "$BASE/orders/$id"
	assert_line --index 0 --partial '"status":"PENDING","version":1'
	grep -qi '^X-Cache: HIT' "$BATS_TEST_TMPDIR/h"
	[ "$(metric 'ot_cache_reads_total{result="local"}')" = 1 ]
	[ "$(metric ot_local_cache_entries)" = 1 ]
	# a change another process makes is published: the entry takes it, served in process
	printf '%s\n' "$(event INVENTORY_RESERVED "$id")" | ot-consume 2>/dev/null
	run http "$BASE/orders/$id"
	assert_line --index 0 --partial '"status":"CONFIRMED","version":2'
	[ "$(metric 'ot_cache_reads_total{result="local"}')" = 2 ]
	# a DEL publishes nothing: Redis's invalidation drops the entry, the read misses and refills
	redis-cli -p "$OWN_REDIS_PORT" DEL "order:{$id}" >/dev/null
	run http -D "$BATS_TEST_TMPDIR/h" "$BASE/orders/$id"
	assert_line --index 0 --partial '"status":"CONFIRMED","version":2'
	grep -qi '^X-Cache: MISS' "$BATS_TEST_TMPDIR/h"
	[ "$(redis-cli -p "$OWN_REDIS_PORT" HGET "order:{$id}" version)" = 2 ]
	http "$BASE/orders/$id" >/dev/null
	http "$BASE/orders/$id" >/dev/null
	[ "$(metric ot_local_cache_entries)" = 1 ]
	# the subscription dropped: the cache empties, and fills again once it is back
	redis-cli -p "$OWN_REDIS_PORT" CLIENT KILL TYPE pubsub >/dev/null
	wait_metric "$PORT" ot_local_cache_flushes_total 3 # the drop, the new subscription
	[ "$(metric ot_local_cache_entries)" = 0 ]
	hits=$(metric 'ot_cache_reads_total{result="hit"}')
	run http "$BASE/orders/$id"
	assert_line --index 0 --partial '"status":"CONFIRMED","version":2'
	[ "$(metric 'ot_cache_reads_total{result="hit"}')" = $((hits + 1)) ]
	# this server's own write is never followed by a read of the status before it
	run http -X POST "$BASE/orders/$id/cancel"
	assert_line --index 1 200
	run http "$BASE/orders/$id"
	assert_line --index 0 --partial '"status":"CANCELLED","version":3'
}

@test "ot-serve: an in-process cache entry serves reads at most --local-cache-ms; 0 turns the cache off" {
	serve OT_LOCAL_CACHE_MS=300
	wait_metric "$PORT" ot_local_cache_flushes_total 1
	id=$(place_order "c-$RUNID")
	http "$BASE/orders/$id" >/dev/null
	http "$BASE/orders/$id" >/dev/null
	[ "$(metric 'ot_cache_reads_total{result="local"}')" = 1 ]
	[ "$(metric 'ot_cache_reads_total{result="hit"}')" = 1 ]
	sleep 0.5 # past the bound: the next read asks Redis again
	http "$BASE/orders/$id" >/dev/null
	[ "$(metric 'ot_cache_reads_total{result="local"}')" = 1 ]
	[ "$(metric 'ot_cache_reads_total{result="hit"}')" = 2 ]
	stop_bg
	serve OT_LOCAL_CACHE_MS=0
	for i in 1 2 3; do http "$BASE/orders/$id" >/dev/null; done
	[ "$(metric 'ot_cache_reads_total{result="local"}')" = 0 ]
	[ "$(metric 'ot_cache_reads_total{result="hit"}')" = 3 ]
	[ "$(metric ot_local_cache_entries)" = 0 ]
}

@test "ot-serve: an order read often is renewed from Redis in the background: its reads stay in process past --local-cache-ms, and a change still shows" {
	OWN_REDIS_PORT=$((PORT + 1))
	own_redis
	export OT_REDIS_URL="redis://127.0.0.1:$OWN_REDIS_PORT/0"
	serve OT_LOCAL_CACHE_MS=2000
	wait_metric "$PORT" ot_local_cache_flushes_total 1
	id=$(place_order "c-$RUNID")
	http "$BASE/orders/$id" >/dev/null # the miss that fills Redis and the entry
	redis-cli -p "$OWN_REDIS_PORT" CONFIG RESETSTAT >/dev/null
	# three times the entry's age, a read every 0.1 s: each renewal is an HGETALL no read waits on
	for i in $(seq 1 60); do
		http "$BASE/orders/$id" >/dev/null
		sleep 0.1
	done
	waited=$(metric 'ot_cache_reads_total{result="hit"}')
	renewals=$(redis-cli -p "$OWN_REDIS_PORT" INFO commandstats | tr -d '\r' |
		sed -n 's/^cmdstat_hgetall:calls=\([0-9]*\).*/\1/p')
	echo "# 60 reads: ${waited:-0} waited on Redis, ${renewals:-0} background renewals" >&3
	[ "${waited:-0}" -le 2 ] # without renewals, at least 3 would have
	[ "${renewals:-0}" -ge 2 ]
	[ "$(metric 'ot_cache_reads_total{result="local"}')" -ge 58 ]
	# a renewed entry is still replaced by the next change
	printf '%s\n' "$(event INVENTORY_RESERVED "$id")" | ot-consume 2>/dev/null
	run http "$BASE/orders/$id"
	assert_line --index 0 --partial '"status":"CONFIRMED","version":2'
}

@test "ot-serve: a live stream ends after --stream-max seconds, so the client resumes it" {
	serve OT_STREAM_MAX_S=1
	id=$(place_order "c-$RUNID")
	t0=$(date +%s%N)
	run curl -sN --max-time 10 "$BASE/orders/$id/events"
	assert_success # the server ended the stream: curl did not time out
	ms=$((($(date +%s%N) - t0) / 1000000))
	[ "$ms" -lt 5000 ] || { echo "the stream lasted $ms ms" >&2; false; }
	assert_line 'id: 1'
}

@test "ot-serve: an order id in any letter case is the one order: one cache entry, and a cancel reaches every reader" {
	serve
	id=$(place_order "c-$RUNID")
	up=$(echo "$id" | tr a-f A-F)
	mixed="${up:0:18}${id:18}"
	for v in "$id" "$up" "$mixed"; do
		run http -D "$BATS_TEST_TMPDIR/h" "$BASE/orders/$v"
		assert_line --index 1 200
		assert_line --index 0 --partial "\"order_id\":\"$id\",\"status\":\"PENDING\""
	done
	# one entry, under the canonical (lower-case) id
	[ "$(rcli --scan --pattern "order:*" | grep -ic "order:{$id}")" = 1 ]
	# a cancel that names the order in upper case
	printf '%s\n' "$(event ORDER_CANCELLED "$up" '{"reason":"case"}')" | ot-consume 2>/dev/null
	[ "$(status_of "$id")" = CANCELLED ]
	stale=0
	for v in "$id" "$up" "$mixed"; do
		run http "$BASE/orders/$v"
		[[ ${lines[0]} == *'"status":"CANCELLED"'* ]] || stale=$((stale + 1))
	done
	echo "# stale answers after the cancel: $stale of 3" >&3
	[ "$stale" = 0 ]
	# the cancel over HTTP with an upper-case id answers the canonical order
	run http -X POST "$BASE/orders/$up/cancel"
	assert_line --index 1 200
	assert_line --index 0 --partial "\"order_id\":\"$id\""
}

@test "ot-serve: a long reason in UTF-8 is cut on a character boundary and the cancel happens" {
	serve
	id=$(place_order "c-$RUNID")
	reason=$(printf 'é%.0s' $(seq 1 200))
	run http -X POST -H 'Content-Type: application/json' -d "{\"reason\":\"$reason\"}" "$BASE/orders/$id/cancel"
	assert_line --index 1 200
	assert_line --index 0 --partial '"status":"CANCELLED"'
	refute_output --partial 'PostgreSQL'
	[ "$(status_of "$id")" = CANCELLED ]
	# 127 whole characters (254 bytes) of the 200 fit in the 255 bytes kept
	[ "$(sql_orders "SELECT length(reason), octet_length(reason) FROM orders WHERE id = '$id'")" = "127|254" ]
}

@test "ot-serve: an API key shorter than 16 characters, empty, or the example file's placeholder is refused at start (78), never printed" {
	for keys in sh0rt CHANGE-ME "$KEY,,$KEY" "$KEY,tiny"; do
		OT_HTTP_ADDR="127.0.0.1:$PORT" OT_API_KEY=$keys run --separate-stderr ot-serve
		assert_failure 78
		echo "$stderr" | grep -q 'use at least 16 random characters'
		refute grep -qE "sh0rt|tiny" <<<"$stderr"
	done
	OT_HTTP_ADDR="127.0.0.1:$PORT" run --separate-stderr ot-serve --api-key CHANGE-ME
	assert_failure 78
	echo "$stderr" | grep -qF "API key 1 of 1 (OT_API_KEY or --api-key) is the example file's placeholder"
	OT_HTTP_ADDR="127.0.0.1:$PORT" OT_API_KEY="$KEY,tiny" run --separate-stderr ot-serve
	echo "$stderr" | grep -qF 'API key 2 of 2 (OT_API_KEY or --api-key) is too short'
}
