#!/usr/bin/env bats
# Tracing: the W3C traceparent from POST /orders through the outbox, Kafka and every consumer,
# log lines that carry it, and spans exported to a real Zipkin server started here.
bats_require_minimum_version 1.5.0

setup_file() {
	load helpers
	ZIPKIN_DIR="$BATS_FILE_TMPDIR/zipkin"
	ZIPKIN_PORT=$(free_port)
	export ZIPKIN_DIR ZIPKIN_PORT ZIPKIN="http://127.0.0.1:$ZIPKIN_PORT"
	"$BATS_TEST_DIRNAME/../../scripts/ot-zipkin" up "$ZIPKIN_PORT" "$ZIPKIN_DIR"
}

teardown_file() {
	"$BATS_TEST_DIRNAME/../../scripts/ot-zipkin" down "$ZIPKIN_DIR"
}

setup() {
	load helpers
	common_setup
	PORT=$(free_port)
	BASE="http://127.0.0.1:$PORT"
	KEY="key-$RUNID-0123456789"
	SKU="T-$RUNID"
	stock "$SKU" 10
	# A trace id and a parent span id of the caller's, as a browser's instrumentation sends them.
	T=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
	P=$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')
}

teardown() {
	[ -n "${BATS_TEST_COMPLETED:-}" ] || for f in "$BATS_TEST_TMPDIR"/*.log; do
		[ -s "$f" ] && tail -5 "$f" | sed "s|^|# $(basename "$f"): |" >&3
	done
	stop_bg
	[ -z "${SLOT:-}" ] || ot-relay --db inventory --mode cdc --slot "$SLOT" --drop-slot >/dev/null 2>&1 || true
}

serve() { # starts ot-serve on $PORT with the given extra environment, waits for /healthz
	start_bg "$BATS_TEST_TMPDIR/serve.log" env OT_HTTP_ADDR="127.0.0.1:$PORT" OT_API_KEY="$KEY" "$@" ot-serve
	for i in $(seq 1 50); do curl -sf "$BASE/healthz" >/dev/null && return 0; sleep 0.1; done
	return 1
}

# POST /orders with our traceparent; prints the order id.
post_order() {
	curl -sf -X POST -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \
		-H "traceparent: 00-$T-$P-01" \
		-d "{\"customer_id\":\"c-$RUNID\",\"items\":[{\"sku\":\"$SKU\",\"qty\":1}],\"address\":\"1 Trace Street\"}" \
		"$BASE/orders" | sed -n 's/.*"order_id":"\([^"]*\)".*/\1/p'
}

@test "tracing: one order's life, POST /orders to DELIVERED, is one trace in Zipkin with every hop's span" {
	export OT_TRACE_URL="$ZIPKIN/api/v2/spans"
	serve
	start_bg "$BATS_TEST_TMPDIR/relay-orders.log" ot-relay --db orders -O kafka
	# The inventory's relay streams from the WAL, so both relay modes publish in the trace.
	SLOT="t_${RUNID//-/_}"
	start_bg "$BATS_TEST_TMPDIR/relay-inventory.log" ot-relay --db inventory --mode cdc --slot "$SLOT" -O kafka
	start_bg "$BATS_TEST_TMPDIR/reserve.log" ot-reserve -i kafka:orders.events -G "r-$RUNID"
	start_bg "$BATS_TEST_TMPDIR/consume.log" ot-consume -i kafka:inventory.events,delivery.updates -G "c-$RUNID"
	id=$(post_order)
	[ -n "$id" ]
	wait_sql orders "SELECT status FROM orders WHERE id = '$id'" CONFIRMED 60
	# The courier takes the order as orders.events announced it confirmed, traceparent and all.
	for i in $(seq 1 30); do
		env -u OT_TRACE_URL ot-relay -i kafka:orders.events -O - -G "x-$RUNID-$i" -o beginning -e 2>/dev/null |
			grep "\"order_id\":\"$id\"" | grep '"status":"CONFIRMED"' | head -1 > "$BATS_TEST_TMPDIR/confirmed"
		[ -s "$BATS_TEST_TMPDIR/confirmed" ] && break
		sleep 1
	done
	grep -q "\"traceparent\":\"00-$T-" "$BATS_TEST_TMPDIR/confirmed"
	ot-courier -n 2 < "$BATS_TEST_TMPDIR/confirmed" | ot-relay -i - -O kafka:delivery.updates 2>/dev/null
	wait_sql orders "SELECT status FROM orders WHERE id = '$id'" DELIVERED 60
	stop_bg # each tool sends the spans it still holds before it exits

	# Zipkin accepts (202) before it stores: every tool's spans show within moments.
	want='["ot-consume","ot-relay","ot-reserve","ot-serve"]'
	orphans='[.[].id] as $ids | [.[] | select(.parentId != $p and (.parentId as $q | $ids | index($q) | not))] | length'
	for i in $(seq 1 50); do
		curl -sf "$ZIPKIN/api/v2/trace/$T" > "$BATS_TEST_TMPDIR/trace.json" || true
		[ "$(jq -c '[.[].localEndpoint.serviceName] | unique' "$BATS_TEST_TMPDIR/trace.json" 2>/dev/null)" = "$want" ] &&
			[ "$(jq -r --arg p "$P" "$orphans" "$BATS_TEST_TMPDIR/trace.json")" = 0 ] && break
		sleep 0.2
	done
	[ "$(jq -c '[.[].localEndpoint.serviceName] | unique' "$BATS_TEST_TMPDIR/trace.json")" = "$want" ]
	# One trace: the id sent; its root is ot-serve's request span, a child of the caller's span.
	[ "$(jq -r '[.[].traceId] | unique | .[]' "$BATS_TEST_TMPDIR/trace.json")" = "$T" ]
	[ "$(jq -r --arg p "$P" '[.[] | select(.parentId == $p)] | map(.localEndpoint.serviceName + " " + .name + " " + .kind) | .[]' \
		"$BATS_TEST_TMPDIR/trace.json")" = "ot-serve post /orders SERVER" ]
	# Every other parent is a span of the trace: nothing hangs off a span that was never sent.
	jq -r --arg p "$P" '[.[].id] as $ids | .[] | select(.parentId != $p and (.parentId as $q | $ids | index($q) | not)) |
		"orphan: \(.localEndpoint.serviceName) \(.name) parent \(.parentId)"' "$BATS_TEST_TMPDIR/trace.json" >&2
	[ "$(jq -r --arg p "$P" "$orphans" "$BATS_TEST_TMPDIR/trace.json")" = 0 ]
	# Each hop: the outbox inserts, the relays' publishes, each consumer's handling, the cache writes.
	names=$(jq -r '.[] | .localEndpoint.serviceName + " " + .name' "$BATS_TEST_TMPDIR/trace.json" | sort -u)
	for n in "ot-serve outbox order_created" "ot-serve cache write" "ot-relay publish orders.events" \
		"ot-reserve handle order_created" "ot-reserve outbox inventory_reserved" \
		"ot-relay publish inventory.events" "ot-consume handle inventory_reserved" \
		"ot-consume outbox order_status_updated" "ot-relay publish delivery.updates" \
		"ot-consume handle delivery_updated" "ot-consume cache write"; do
		grep -qx "$n" <<<"$names" || { echo "no span \"$n\" in: $names" >&2; false; }
	done
	# The consumer's span is the child of the publish whose Kafka header it read.
	[ "$(jq -r '(map({key: .id, value: .}) | from_entries) as $by | .[] | select(.name == "handle inventory_reserved") | $by[.parentId].name' \
		"$BATS_TEST_TMPDIR/trace.json")" = "publish inventory.events" ]
	jq -r --arg id "$id" '[.[] | select(.tags.order_id == $id)] | length' "$BATS_TEST_TMPDIR/trace.json" | grep -qv '^0$'
	echo "# $(jq length "$BATS_TEST_TMPDIR/trace.json") spans from $(jq -r '[.[].localEndpoint.serviceName] | unique | join(", ")' "$BATS_TEST_TMPDIR/trace.json")" >&3
}

@test "tracing: log lines inside a span carry trace_id and span_id next to order_id" {
	OT_LOG_LEVEL=debug serve
	start_bg "$BATS_TEST_TMPDIR/relay-orders.log" ot-relay --db orders -O kafka
	start_bg "$BATS_TEST_TMPDIR/reserve.log" ot-reserve -i kafka:orders.events -G "r-$RUNID"
	id=$(post_order)
	wait_sql inventory "SELECT count(*) FROM reservations WHERE order_id = '$id'" 1 60
	# A read joins a trace it brings; without one it starts none (a tracking page polls).
	T3=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
	curl -sf -H "traceparent: 00-$T3-$P-01" "$BASE/orders/$id" >/dev/null
	curl -sf "$BASE/orders/$id" >/dev/null
	stop_bg
	grep -Eq "\"msg\":\"GET /orders/$id 200 [0-9]+ ms\",\"order_id\":\"$id\",\"trace_id\":\"$T3\",\"span_id\":\"[0-9a-f]{16}\"" "$BATS_TEST_TMPDIR/serve.log"
	[ "$(grep -F "\"msg\":\"GET /orders/$id 200" "$BATS_TEST_TMPDIR/serve.log" | grep -vc trace_id)" = 1 ]
	grep -Eq "\"msg\":\"order placed\",\"order_id\":\"$id\",\"trace_id\":\"$T\",\"span_id\":\"[0-9a-f]{16}\"" "$BATS_TEST_TMPDIR/serve.log"
	grep -Eq "\"msg\":\"reserved stock\",\"order_id\":\"$id\",\"trace_id\":\"$T\",\"span_id\":\"[0-9a-f]{16}\"" "$BATS_TEST_TMPDIR/reserve.log"
	# Outside any span (start, shutdown) a line has none.
	! grep '"msg":"[0-9]* records' "$BATS_TEST_TMPDIR/reserve.log" | grep -q trace_id
}

@test "tracing: without OT_TRACE_URL the traceparent still travels: outbox row, payload and Kafka header" {
	unset OT_TRACE_URL
	serve
	id=$(post_order)
	row=$(sql_orders "SELECT traceparent, payload::json->>'traceparent' FROM outbox WHERE key = '$id'")
	[[ "$row" =~ ^00-$T-[0-9a-f]{16}-01\|00-$T-[0-9a-f]{16}-01$ ]]
	# The row names the span of its insert, not the caller's.
	[[ "$row" != *"$P"* ]]
	ot-relay --db orders -O kafka 2>/dev/null --once
	for i in $(seq 1 20); do
		ot-relay -i kafka:orders.events -O - --meta -G "x-$RUNID-$i" -o beginning -e 2>/dev/null |
			grep "\"key\":\"$id\"" > "$BATS_TEST_TMPDIR/rec" && break
		sleep 0.5
	done
	# The header names the relay's publish, a child of the row's span, in the same trace.
	grep -Eq "\"traceparent\":\"00-$T-[0-9a-f]{16}-01\"\}" "$BATS_TEST_TMPDIR/rec"
	hdr=$(sed -n 's/.*"headers":{[^}]*"traceparent":"\([^"]*\)".*/\1/p' "$BATS_TEST_TMPDIR/rec")
	[ "$hdr" != "${row%%|*}" ]
	# A cancel continues the trace its request came with, into every event it causes.
	T2=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
	curl -sf -X POST -H "Authorization: Bearer $KEY" -H "traceparent: 00-$T2-$P-01" "$BASE/orders/$id/cancel" >/dev/null
	[ "$(sql_orders "SELECT string_agg(type || ' ' || substr(traceparent, 4, 32), ',' ORDER BY id) FROM outbox WHERE key = '$id'")" = \
		"ORDER_STATUS_UPDATED $T2,ORDER_CANCELLED $T2" ]
}

@test "tracing: with the collector down spans are dropped and counted; nothing waits for it; exit stays 0" {
	dead=$(free_port)
	export OT_TRACE_URL="http://127.0.0.1:$dead/api/v2/spans"
	t0=$SECONDS
	run --separate-stderr ot-place <<<"$(request "c-$RUNID" "[{\"sku\":\"$SKU\",\"qty\":1}]")"
	[ "$status" -eq 0 ]
	[ $((SECONDS - t0)) -lt 10 ]
	[[ "$output" == *'"status":"PENDING"'* ]]
	[[ "$stderr" == *'"level":"warn","tool":"ot-place","msg":"trace export to http://127.0.0.1:'$dead'/api/v2/spans failed, dropping spans until it answers'* ]]
	[[ "$stderr" =~ '"msg":"tracing: 0 spans exported, '[1-9][0-9]*' dropped"' ]]
}

@test "tracing: a long-running tool counts the spans it sent and dropped in /metrics" {
	OT_TRACE_URL="http://127.0.0.1:$(free_port)/api/v2/spans" serve
	[ -n "$(post_order)" ]
	for i in $(seq 1 50); do
		dropped=$(curl -sf "$BASE/metrics" | sed -n 's/^ot_trace_spans_dropped_total \([0-9]*\).*/\1/p')
		[ "${dropped:-0}" -ge 1 ] && break
		sleep 0.2
	done
	[ "${dropped:-0}" -ge 1 ]
	curl -sf "$BASE/metrics" | grep -q '^ot_trace_spans_sent_total 0$'
}

@test "tracing: an OT_TRACE_URL that is not http(s) is a configuration error (78)" {
	OT_TRACE_URL=ftp://example.invalid/spans run --separate-stderr ot-place < /dev/null
	[ "$status" -eq 78 ]
	[[ "$stderr" == *"OT_TRACE_URL=ftp://example.invalid/spans: expected an http:// or https:// URL"* ]]
}
