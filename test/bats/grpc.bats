#!/usr/bin/env bats
# ot-serve's gRPC services (proto/ordertrack.proto, grpc.health.v1), driven by an independent
# client: Node's @grpc/grpc-js (test/grpc/client.mjs), over real PostgreSQL and Redis.
bats_require_minimum_version 1.5.0

setup() {
	load helpers
	common_setup
	PORT=$(free_port)
	GPORT=$(free_port)
	GRPC="127.0.0.1:$GPORT"
	KEY="key-$RUNID-0123456789"
}

teardown() {
	stop_bg
	[ -z "${OWN_REDIS_PORT:-}" ] || redis-cli -p "$OWN_REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
	show_logs 20
}

serve() { # starts ot-serve with gRPC on $GRPC and the given extra environment; waits for it
	start_bg "$BATS_TEST_TMPDIR/serve.log" env OT_HTTP_ADDR="127.0.0.1:$PORT" OT_GRPC_ADDR="$GRPC" \
		OT_API_KEY="$KEY" "$@" ot-serve
	for _ in $(seq 1 50); do
		grep -q 'gRPC listening' "$BATS_TEST_TMPDIR/serve.log" && grep -q 'subscribed to order' "$BATS_TEST_TMPDIR/serve.log" &&
			return 0
		sleep 0.1
	done
	return 1
}
client() { node "$ROOT/test/grpc/client.mjs" "$@"; }
# Feeds the saga's envelopes for order $1 to ot-consume: change ID TYPE [DATA]
change() { event "$2" "$1" "${3:-}" | ot-consume >/dev/null 2>>"$BATS_TEST_TMPDIR/consume.log"; }
# A Track stream of order $1 in the background into $BATS_TEST_TMPDIR/live.out, once its first
# status (PENDING) arrived.
track_bg() {
	client track "$GRPC" "$1" > "$BATS_TEST_TMPDIR/live.out" 2>&1 &
	BG_PIDS+=($!)
	for _ in $(seq 1 50); do grep -q PENDING "$BATS_TEST_TMPDIR/live.out" && return 0; sleep 0.1; done
	return 1
}
# The statuses a track output file holds, one per line as "STATUS VERSION FINAL".
statuses() { jq -r '"\(.status) \(.version) \(.final)"' < <(grep '^{' "$1"); }

@test "grpc: Track streams an order's whole life, from its current status to DELIVERED, then ends OK; resumed after a version it sends only what is newer" {
	serve
	id=$(place_order "c-$RUNID")
	track_bg "$id"
	change "$id" INVENTORY_RESERVED
	change "$id" DELIVERY_UPDATED '{"status":"PREPARING"}'
	change "$id" DELIVERY_UPDATED '{"status":"IN_TRANSIT","lat":52.37,"lon":4.89}'
	change "$id" DELIVERY_UPDATED '{"status":"DELIVERED"}'
	for _ in $(seq 1 50); do grep -q '^status' "$BATS_TEST_TMPDIR/live.out" && break; sleep 0.1; done
	run statuses "$BATS_TEST_TMPDIR/live.out"
	assert_output "PENDING 1 false
CONFIRMED 2 false
PREPARING 3 false
IN_TRANSIT 4 false
DELIVERED 5 true"
	run tail -1 "$BATS_TEST_TMPDIR/live.out"
	assert_output "status OK"
	run jq -r 'select(.status == "IN_TRANSIT") | "\(.has_position) \(.lat) \(.lon) \(.order_id)"' <(grep '^{' "$BATS_TEST_TMPDIR/live.out")
	assert_output "true 52.37 4.89 $id"

	# Resumed after version 3: the rest from the order's history, and the end.
	run client track "$GRPC" "$id" 3
	assert_success
	assert_line --index 0 --partial '"status":"IN_TRANSIT","version":"4"'
	assert_line --index 1 --partial '"status":"DELIVERED","version":"5"'
	assert_line --index 2 "status OK"
	assert_equal "${#lines[@]}" 3
}

@test "grpc: Track carries an order's card payment: authorised when confirmed, captured after the delivery; none for an order without one" {
	serve
	id=$(place_order "c-$RUNID")
	track_bg "$id"
	change "$id" INVENTORY_RESERVED '{"payment":{"source":"tok_visa"},"amount":2500}'
	change "$id" PAYMENT_AUTHORIZED '{"amount":2500,"currency":"usd","charge_id":"ch_1"}'
	change "$id" DELIVERY_UPDATED '{"status":"PREPARING"}'
	change "$id" DELIVERY_UPDATED '{"status":"IN_TRANSIT"}'
	change "$id" PAYMENT_CAPTURED '{"amount":2500,"currency":"usd","charge_id":"ch_1"}'
	change "$id" DELIVERY_UPDATED '{"status":"DELIVERED"}'
	for _ in $(seq 1 50); do grep -q '^status' "$BATS_TEST_TMPDIR/live.out" && break; sleep 0.1; done
	run jq -r '"\(.status) \(.payment.status // "-") \(.payment.amount // "-") \(.payment.currency // "-")"' \
		<(grep '^{' "$BATS_TEST_TMPDIR/live.out")
	assert_line --index 0 "PENDING - - -"
	assert_line "CONFIRMED AUTHORIZED 2500 usd"
	assert_line "DELIVERED CAPTURED 2500 usd"
	run tail -1 "$BATS_TEST_TMPDIR/live.out"
	assert_output "status OK"
	# A declined card: the final status carries the decline code.
	id=$(place_order "d-$RUNID")
	change "$id" INVENTORY_RESERVED '{"payment":{"source":"tok_chargeDeclined"},"amount":900}'
	change "$id" PAYMENT_DECLINED '{"amount":900,"currency":"usd","code":"card_declined","decline_code":"insufficient_funds"}'
	run client track "$GRPC" "$id" 1
	assert_line --index 1 "status OK"
	[ "$(echo "${lines[0]}" | jq -r '"\(.status) \(.final) \(.payment.status) \(.payment.decline_code)"')" = \
		"REJECTED true DECLINED insufficient_funds" ]
}

@test "grpc: status codes mean what gRPC says: NOT_FOUND, INVALID_ARGUMENT, UNAUTHENTICATED, RESOURCE_EXHAUSTED, UNIMPLEMENTED; health SERVING" {
	serve
	id=$(place_order "c-$RUNID")
	run client track "$GRPC" "$(uuid)"
	assert_output "status NOT_FOUND no such order"
	run client track "$GRPC" "not-a-uuid"
	assert_output "status INVALID_ARGUMENT order_id must be a UUID"
	run client track "$GRPC" "$id" -1
	assert_output "status INVALID_ARGUMENT after_version must be 0 or more"
	run client track "$GRPC" "$id" 0 --key "wrong-key-0123456789"
	assert_output "status UNAUTHENTICATED the authorization metadata holds no valid API key"
	# The right key is accepted (the stream is cut by its deadline).
	run client track "$GRPC" "$id" 0 --key "$KEY" --deadline-ms 1500
	assert_line --index 0 --partial '"status":"PENDING"'
	assert_line --index 1 --partial "status DEADLINE_EXCEEDED"
	# A request over 64 KiB is refused before it is read.
	run client track "$GRPC" "$(head -c 70000 /dev/zero | tr '\0' a)"
	assert_output --partial "status RESOURCE_EXHAUSTED"
	run client unknown "$GRPC"
	assert_output --partial "status UNIMPLEMENTED"
	run client health "$GRPC"
	assert_output "SERVING"
	run client health "$GRPC" ordertrack.Delivery
	assert_output "SERVING"
	run client health "$GRPC" ordertrack.Nothing
	assert_output "status NOT_FOUND no such service"
	# Each call counted by method and code; no stream is left open.
	run curl -s "http://127.0.0.1:$PORT/metrics"
	assert_line 'ot_grpc_calls_total{method="Delivery/Track",code="NOT_FOUND"} 1'
	assert_line 'ot_grpc_calls_total{method="Delivery/Track",code="INVALID_ARGUMENT"} 2'
	assert_line 'ot_grpc_calls_total{method="Delivery/Track",code="UNAUTHENTICATED"} 1'
	assert_line 'ot_grpc_calls_total{method="Health/Check",code="OK"} 2'
	assert_line 'ot_grpc_calls_open{method="Delivery/Track"} 0'
}

@test "grpc: 300 Track streams on one order each get every change once; a dropped stream frees its slot; past --max-streams RESOURCE_EXHAUSTED" {
	serve OT_MAX_STREAMS=300 OT_RATE_LIMIT=0
	id=$(place_order "c-$RUNID")
	client many "$GRPC" "$id" 300 > "$BATS_TEST_TMPDIR/many.out" 2>&1 &
	BG_PIDS+=($!)
	for _ in $(seq 1 100); do grep -q '^open 300' "$BATS_TEST_TMPDIR/many.out" && break; sleep 0.1; done
	run cat "$BATS_TEST_TMPDIR/many.out"
	assert_line "open 300"
	# Full: the 301st is refused.
	run client track "$GRPC" "$id"
	assert_output "status RESOURCE_EXHAUSTED too many streams open: try again later"
	change "$id" INVENTORY_RESERVED
	curl -sf -X POST -H "Authorization: Bearer $KEY" "http://127.0.0.1:$PORT/orders/$id/cancel" >/dev/null
	for _ in $(seq 1 100); do grep -q '^got 3 300' "$BATS_TEST_TMPDIR/many.out" && break; sleep 0.1; done
	run cat "$BATS_TEST_TMPDIR/many.out"
	assert_line "got 2 300"
	assert_line "got 3 300"
	refute_line --partial "stream"
	# All ended with the final state: slots free again; a client that cancels frees its own.
	run client track "$GRPC" "$(place_order "c-$RUNID")" 0 --cancel-after 1
	assert_line --index 1 "status CANCELLED Cancelled on client"
	for _ in $(seq 1 50); do
		[ "$(metric_of "$PORT" 'ot_grpc_calls_open{method="Delivery/Track"}')" = 0 ] && break
		sleep 0.1
	done
	assert_equal "$(metric_of "$PORT" 'ot_grpc_calls_open{method="Delivery/Track"}')" 0
}

@test "grpc: SIGTERM ends open streams UNAVAILABLE (resumable) and ot-serve exits 0; a taken port is a clear error" {
	serve
	id=$(place_order "c-$RUNID")
	track_bg "$id"
	pid=${BG_PIDS[0]}
	kill -TERM "$pid"
	wait "$pid" # exits 0
	for _ in $(seq 1 50); do grep -q '^status' "$BATS_TEST_TMPDIR/live.out" && break; sleep 0.1; done
	run tail -1 "$BATS_TEST_TMPDIR/live.out"
	assert_output "status UNAVAILABLE the server is stopping: call again with after_version set to the last version seen"

	# The gRPC port taken: ot-serve says so and exits 69. The holder sets SO_REUSEADDR, so a
	# connection of the stopped server's left in TIME_WAIT does not keep it from binding (a
	# listener still refuses every other bind, SO_REUSEADDR or not).
	python3 -c "import socket,time; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('127.0.0.1', $GPORT)); s.listen(); time.sleep(30)" &
	nc_pid=$!
	BG_PIDS+=($nc_pid)
	for _ in $(seq 1 50); do port_open "$GPORT" && break; sleep 0.1; done
	port_open "$GPORT"
	run -69 timeout 30 env OT_HTTP_ADDR="127.0.0.1:$(free_port)" OT_GRPC_ADDR="$GRPC" ot-serve
	assert_output --partial "cannot listen for gRPC on $GRPC"
}

@test "grpc: Report takes a courier's 1,000 updates on one stream; each lands on delivery.updates once, and ot-consume delivers every order; bad updates are named" {
	serve
	: > "$BATS_TEST_TMPDIR/updates.jsonl"
	for o in $(seq 1 10); do
		id=$(place_order "c-$RUNID")
		change "$id" INVENTORY_RESERVED
		echo "$id" >> "$BATS_TEST_TMPDIR/ids"
		printf '{"order_id":"%s","status":"PREPARING"}\n' "$id" >> "$BATS_TEST_TMPDIR/updates.jsonl"
		for i in $(seq 1 98); do
			printf '{"order_id":"%s","status":"IN_TRANSIT","has_position":true,"lat":52.%02d,"lon":4.%02d,"eta":"2026-12-05T12:%02d:00Z"}\n' \
				"$id" "$i" "$o" $((i % 60)) >> "$BATS_TEST_TMPDIR/updates.jsonl"
		done
		printf '{"order_id":"%s","status":"DELIVERED","has_position":true,"lat":52.99,"lon":4.%02d}\n' "$id" "$o" \
			>> "$BATS_TEST_TMPDIR/updates.jsonl"
	done
	# Three that are not updates: positions 1001-1003.
	printf '%s\n' '{"order_id":"nope","status":"PREPARING"}' \
		"{\"order_id\":\"$id\",\"status\":\"LOST\"}" \
		"{\"order_id\":\"$id\",\"status\":\"IN_TRANSIT\",\"has_position\":true,\"lat\":91,\"lon\":4}" \
		>> "$BATS_TEST_TMPDIR/updates.jsonl"
	t0=$(($(date +%s%3N) - 1000))

	trace=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
	run client report "$GRPC" "$BATS_TEST_TMPDIR/updates.jsonl" --key "$KEY" --traceparent "00-$trace-00f067aa0ba902b7-01"
	assert_success
	assert_line --index 1 "status OK"
	run jq -c '{accepted, rejected, errors}' <<<"${lines[0]}"
	assert_output '{"accepted":"1000","rejected":"3","errors":["update 1001: field \"order_id\" is not a UUID","update 1002: field \"data.status\" of DELIVERY_UPDATED must be PREPARING, IN_TRANSIT or DELIVERED","update 1003: fields \"data.lat\" and \"data.lon\" must both be numbers within [-90, 90] and [-180, 180]"]}'

	# On the topic: each of the 1,000 once, in order per order, as ot-consume's envelopes.
	ot-relay -i kafka:delivery.updates -O - -G "r-$RUNID" -e -o "s@$t0" 2>/dev/null |
		grep -F -f "$BATS_TEST_TMPDIR/ids" > "$BATS_TEST_TMPDIR/topic.jsonl"
	run wc -l < "$BATS_TEST_TMPDIR/topic.jsonl"
	assert_output 1000
	run jq -r 'select(.type != "DELIVERY_UPDATED" or .source != "ot-serve") | .id' "$BATS_TEST_TMPDIR/topic.jsonl"
	assert_output ""
	# Each continues the courier's trace (the traceparent metadata).
	run bash -c "jq -r '.traceparent | split(\"-\")[1]' '$BATS_TEST_TMPDIR/topic.jsonl' | sort -u"
	assert_output "$trace"
	run bash -c "jq -r .id '$BATS_TEST_TMPDIR/topic.jsonl' | sort | uniq -d"
	assert_output ""
	# The topic's records, applied: every order DELIVERED at its last position.
	ot-consume -i kafka:delivery.updates -G "c-$RUNID" -e -o "s@$t0" 2>>"$BATS_TEST_TMPDIR/consume.log" >/dev/null
	run sql_orders "SELECT count(*) FROM orders WHERE id IN ($(sed "s/.*/'&'/" "$BATS_TEST_TMPDIR/ids" | paste -sd,)) AND status = 'DELIVERED' AND lat = 52.99"
	assert_output 10
}

@test "grpc: Report needs the key; a courier that drops its stream half way leaves what was sent written and the server serving" {
	serve
	id=$(place_order "c-$RUNID")
	for i in $(seq 1 50); do
		printf '{"order_id":"%s","status":"IN_TRANSIT","has_position":true,"lat":52.%02d,"lon":4.9}\n' "$id" "$i"
	done > "$BATS_TEST_TMPDIR/updates.jsonl"
	run client report "$GRPC" "$BATS_TEST_TMPDIR/updates.jsonl"
	assert_output "status UNAUTHENTICATED Report needs an API key in the authorization metadata"
	t0=$(($(date +%s%3N) - 1000))
	run client report "$GRPC" "$BATS_TEST_TMPDIR/updates.jsonl" --key "$KEY" --drop-after 20
	assert_output "status CANCELLED Cancelled on client"
	for _ in $(seq 1 50); do
		[ "$(metric_of "$PORT" 'ot_grpc_calls_open{method="Delivery/Report"}')" = 0 ] && break
		sleep 0.1
	done
	assert_equal "$(metric_of "$PORT" 'ot_grpc_calls_open{method="Delivery/Report"}')" 0
	run client health "$GRPC"
	assert_output SERVING
	# The 20 sent before the drop are on the topic, once each.
	run bash -c "ot-relay -i kafka:delivery.updates -O - -G 'r-$RUNID' -e -o 's@$t0' 2>/dev/null | grep -c '$id'"
	assert_output 20
}

@test "grpc: Track and Report answer to the rate limiter: RESOURCE_EXHAUSTED past a client's rate, and past its address's failed authentications" {
	serve OT_RATE_LIMIT=1 OT_RATE_BURST=3
	id=$(uuid)
	: > "$BATS_TEST_TMPDIR/codes"
	for _ in $(seq 1 6); do client track "$GRPC" "$id" >> "$BATS_TEST_TMPDIR/codes"; done
	run sort "$BATS_TEST_TMPDIR/codes"
	assert_line --partial "status NOT_FOUND no such order"
	assert_line --partial "status RESOURCE_EXHAUSTED rate limit exceeded; retry after"
	# A valid key has its own budget, apart from the address's.
	run client track "$GRPC" "$id" 0 --key "$KEY"
	assert_output "status NOT_FOUND no such order"
	run curl -s "http://127.0.0.1:$PORT/metrics"
	assert_line --regexp '^ot_grpc_calls_total\{method="Delivery/Track",code="RESOURCE_EXHAUSTED"\} [1-9]'
	assert_line --regexp '^ot_rate_limited_total [1-9]'

	# Without a rate, wrong keys are refused as such until the address's limit on failed
	# authentications (10 at once), then RESOURCE_EXHAUSTED: Report too.
	stop_bg
	serve OT_RATE_LIMIT=0
	for _ in $(seq 1 12); do client track "$GRPC" "$id" 0 --key "wrong-key-0123456789"; done > "$BATS_TEST_TMPDIR/auth"
	# (the address's earlier failures, of other tests too, count: how many pass first varies)
	run grep -vc -e "^status UNAUTHENTICATED the authorization metadata holds no valid API key" \
		-e "^status RESOURCE_EXHAUSTED too many failed authentications" "$BATS_TEST_TMPDIR/auth"
	assert_output 0
	run tail -1 "$BATS_TEST_TMPDIR/auth"
	assert_output --partial "status RESOURCE_EXHAUSTED too many failed authentications from this client"
	printf '{"order_id":"%s","status":"PREPARING"}\n' "$id" > "$BATS_TEST_TMPDIR/one.jsonl"
	run client report "$GRPC" "$BATS_TEST_TMPDIR/one.jsonl" --key "wrong-key-0123456789"
	assert_output --partial "status RESOURCE_EXHAUSTED too many failed authentications from this client"
}

@test "grpc: with Redis gone, open Track streams end UNAVAILABLE (resumable), new ones are refused UNAVAILABLE and health says NOT_SERVING; back, it serves again" {
	OWN_REDIS_PORT=$(free_port)
	redis-server --port "$OWN_REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
		--logfile "$BATS_TEST_TMPDIR/redis.log" >/dev/null
	for _ in $(seq 1 50); do [ "$(redis-cli -p "$OWN_REDIS_PORT" ping 2>/dev/null)" = PONG ] && break; sleep 0.1; done
	export OT_REDIS_URL="redis://127.0.0.1:$OWN_REDIS_PORT/0"
	serve
	id=$(place_order "c-$RUNID")
	track_bg "$id"
	redis-cli -p "$OWN_REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
	for _ in $(seq 1 50); do grep -q '^status' "$BATS_TEST_TMPDIR/live.out" && break; sleep 0.1; done
	run tail -1 "$BATS_TEST_TMPDIR/live.out"
	assert_output "status UNAVAILABLE live updates were interrupted: call again with after_version set to the last version seen"
	run client track "$GRPC" "$id"
	assert_output "status UNAVAILABLE live updates are not running (Redis is down): try again later"
	run client health "$GRPC"
	assert_output NOT_SERVING

	redis-server --port "$OWN_REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
		--logfile "$BATS_TEST_TMPDIR/redis.log" >/dev/null
	for _ in $(seq 1 100); do [ "$(client health "$GRPC")" = SERVING ] && break; sleep 0.2; done
	run client health "$GRPC"
	assert_output SERVING
	# From the start again, from the database (the new Redis holds nothing): its status, then
	# the stream waits for a change; its deadline ends it.
	run client track "$GRPC" "$id" 0 --deadline-ms 1500
	assert_line --index 0 --partial '"status":"PENDING","version":"1"'
	assert_line --index 1 --partial "status DEADLINE_EXCEEDED"
}
