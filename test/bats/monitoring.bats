#!/usr/bin/env bats
# k8s/monitoring against the real thing: Debian's Prometheus, with the repository's scrape
# configuration (targets rewritten to 127.0.0.1) and alert rules, scrapes every long-running
# tool while orders go through; then every dashboard expression returns a series, every metric
# a rule selects exists, and every rule evaluates without error.
# On its own: eval "$(scripts/ot-stack env)"; bats test/bats/monitoring.bats
bats_require_minimum_version 1.5.0

setup() {
	load helpers
	common_setup
	SKU="M-$RUNID"
	stock "$SKU" 100
	SLOT="ot_relay_mon_${RUNID//[^a-z0-9]/_}"
}

teardown() {
	stop_bg
	ot-relay --mode cdc --db orders --slot "$SLOT" --drop-slot >/dev/null 2>&1 || true
	if [ -n "${BATS_TEST_COMPLETED:-}" ] || [ ! -d "$BATS_TEST_TMPDIR" ]; then return; fi
	# On failure, what the tools and Prometheus said last.
	for f in "$BATS_TEST_TMPDIR"/*.log; do
		echo "--- $(basename "$f")"
		tail -n 5 "$f"
	done >&2
}

# Waits until http://127.0.0.1:PORT/PATH answers: wait_http PORT PATH NAME [SECONDS]
wait_http() {
	local i
	for ((i = 0; i < ${4:-30} * 5; i++)); do
		curl -fsS -o /dev/null "http://127.0.0.1:$1$2" 2>/dev/null && return 0
		sleep 0.2
	done
	echo "$3 does not answer http://127.0.0.1:$1$2" >&2
	return 1
}

# A PromQL query's first value (empty if no series): prom QUERY
prom() {
	curl -fsS --get "http://127.0.0.1:$PROM/api/v1/query" --data-urlencode "query=$1" |
		jq -r '.data.result[0].value[1] // empty'
}

wait_prom() { # wait_prom QUERY EXPECTED SECONDS
	local i got
	for ((i = 0; i < $3 * 2; i++)); do
		got=$(prom "$1")
		[ "$got" = "$2" ] && return 0
		sleep 0.5
	done
	echo "waited $3s for Prometheus: [$1] = $2; last got: $got" >&2
	return 1
}

@test "monitoring: Prometheus scrapes every tool with k8s/monitoring's config, and every dashboard and rule expression has data" {
	command -v prometheus >/dev/null || fail "prometheus is not installed: scripts/deps"
	serve=$(free_port) reserve=$(free_port) relay_o=$(free_port) relay_i=$(free_port)
	consume=$(free_port) cache=$(free_port) PROM=$(free_port)
	key="k-$RUNID-0123456789"

	# The orders relay in CDC mode, so the slot's gauges exist; the inventory one polls.
	start_bg "$BATS_TEST_TMPDIR/relay-orders.log" ot-relay --db orders -O kafka --mode cdc --slot "$SLOT" --http-addr "127.0.0.1:$relay_o"
	start_bg "$BATS_TEST_TMPDIR/relay-inventory.log" ot-relay --db inventory -O kafka --http-addr "127.0.0.1:$relay_i"
	start_bg "$BATS_TEST_TMPDIR/reserve.log" ot-reserve -i kafka:orders.events -G "r-$RUNID" --http-addr "127.0.0.1:$reserve"
	start_bg "$BATS_TEST_TMPDIR/consume.log" ot-consume -i kafka:inventory.events,delivery.updates -G "c-$RUNID" --http-addr "127.0.0.1:$consume"
	start_bg "$BATS_TEST_TMPDIR/cache.log" ot-cache sync -G "s-$RUNID" --http-addr "127.0.0.1:$cache"
	OT_API_KEY=$key start_bg "$BATS_TEST_TMPDIR/serve.log" ot-serve --http-addr "127.0.0.1:$serve"
	for t in serve:$serve reserve:$reserve relay-orders:$relay_o relay-inventory:$relay_i consume:$consume cache:$cache; do
		wait_http "${t#*:}" /metrics "ot-${t%%:*}"
	done

	python3 "$ROOT/test/tools/prom-check.py" config "$ROOT/k8s/monitoring/prometheus.yml" \
		"$BATS_TEST_TMPDIR/prometheus.yml" "$ROOT/k8s/monitoring/rules.yml" \
		"ot-serve=127.0.0.1:$serve" "ot-reserve=127.0.0.1:$reserve" \
		"ot-relay=127.0.0.1:$relay_o,127.0.0.1:$relay_i" "ot-consume=127.0.0.1:$consume" \
		"ot-cache=127.0.0.1:$cache"
	start_bg "$BATS_TEST_TMPDIR/prometheus.log" prometheus --config.file="$BATS_TEST_TMPDIR/prometheus.yml" \
		--storage.tsdb.path="$BATS_TEST_TMPDIR/tsdb" --web.listen-address="127.0.0.1:$PROM"
	wait_http "$PROM" /-/ready prometheus 60

	# Orders through the saga: ten placed over HTTP, one cancelled (stock released), the rest
	# delivered; reads that hit and miss the cache; one record for an order nobody knows,
	# which ot-consume dead-letters.
	for i in $(seq 1 10); do
		request "c-$RUNID-$i" "[{\"sku\":\"$SKU\",\"qty\":1}]" "m-$RUNID-$i" |
			curl -fsS -H "Authorization: Bearer $key" -H 'Content-Type: application/json' \
				--data-binary @- "http://127.0.0.1:$serve/orders"
		echo
	done > "$BATS_TEST_TMPDIR/placed"
	[ "$(grep -c '"order_id"' "$BATS_TEST_TMPDIR/placed")" = 10 ]
	wait_sql orders "SELECT count(*) FROM orders WHERE customer_id LIKE 'c-$RUNID-%' AND status = 'CONFIRMED'" 10 60
	first=$(sed -n '1s/.*"order_id":"\([^"]*\)".*/\1/p' "$BATS_TEST_TMPDIR/placed")
	curl -fsS -o /dev/null -X POST -H "Authorization: Bearer $key" "http://127.0.0.1:$serve/orders/$first/cancel"
	sed 1d "$BATS_TEST_TMPDIR/placed" | ot-courier -n 1 | ot-relay -i - -O kafka:delivery.updates 2>/dev/null
	event DELIVERY_UPDATED "$(uuid)" '{"status":"PREPARING"}' | ot-relay -i - -O kafka:delivery.updates 2>/dev/null
	wait_sql orders "SELECT count(*) FROM orders WHERE customer_id LIKE 'c-$RUNID-%' AND status = 'DELIVERED'" 9 60
	wait_sql inventory "SELECT available || '|' || reserved FROM stock WHERE sku = '$SKU'" "91|9" 60
	for id in $(sed -n 's/.*"order_id":"\([^"]*\)".*/\1/p' "$BATS_TEST_TMPDIR/placed"); do
		curl -fsS -o /dev/null "http://127.0.0.1:$serve/orders/$id"
		rcli DEL "order:{$id}" >/dev/null
		curl -fsS -o /dev/null "http://127.0.0.1:$serve/orders/$id"
	done

	# Every target up, and the scrapes that saw the last of the above.
	wait_prom 'count(up == 1)' 6 30
	# (at least: a new group may also read older tests' records on a shared stack)
	wait_prom 'sum(ot_order_transitions_total{to="DELIVERED"}) >= bool 9' 1 30
	wait_prom 'sum(ot_records_total{result="dead_lettered"}) >= bool 1' 1 30
	# lag is read from librdkafka's statistics (every 5 s) once the group committed an offset
	wait_prom 'count(ot_kafka_consumer_lag) >= bool 1' 1 45
	sleep 3
	run --separate-stderr bash -c "'$ROOT/scripts/check-monitoring' --exprs | python3 '$ROOT/test/tools/prom-check.py' query 'http://127.0.0.1:$PROM'"
	[ "$status" = 0 ] || fail "expressions without data in Prometheus:
$output"
}
