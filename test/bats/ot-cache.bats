#!/usr/bin/env bats
# ot-cache: cache-aside reads, warm-up and invalidation against real Redis and PostgreSQL.
bats_require_minimum_version 1.5.0

setup() {
	load helpers
	common_setup
	ID=$(place_order "c-$RUNID")
	[ -n "$ID" ]
}

teardown() {
	stop_bg
}

@test "ot-cache: get answers from Redis when the order is cached" {
	run --separate-stderr ot-cache get "$ID"
	assert_success
	assert_output --partial "\"order_id\":\"$ID\",\"status\":\"PENDING\",\"version\":1"
	assert_output --partial '"cache":"hit"'
}

@test "ot-cache: get on a miss reads the database and refills Redis" {
	rcli DEL "order:{$ID}" >/dev/null
	run --separate-stderr ot-cache get "$ID"
	assert_success
	assert_output --partial '"cache":"miss"'
	[ "$(rcli HGET "order:{$ID}" status)" = PENDING ]
	run --separate-stderr ot-cache get "$ID"
	assert_output --partial '"cache":"hit"'
}

@test "ot-cache: ids can come on stdin; an unknown id exits 65 and the others are answered" {
	run --separate-stderr ot-cache get <<<"$ID
00000000-0000-4000-8000-000000000000"
	assert_failure 65
	[ "${#lines[@]}" = 1 ]
	echo "$stderr" | grep -q 'order 00000000-0000-4000-8000-000000000000 not found'
}

@test "ot-cache: an id in upper case is the canonical order; a non-UUID is refused (65)" {
	up=$(echo "$ID" | tr a-f A-F)
	rcli DEL "order:{$ID}" >/dev/null
	run --separate-stderr ot-cache get <<<"$up"
	assert_success
	assert_output --partial "\"order_id\":\"$ID\",\"status\":\"PENDING\""
	[ "$(rcli HGET "order:{$ID}" status)" = PENDING ]
	[ "$(rcli EXISTS "order:{$up}")" = 0 ]
	run --separate-stderr ot-cache invalidate "$up"
	assert_success
	[ "$(rcli EXISTS "order:{$ID}")" = 0 ]
	run --separate-stderr ot-cache get "$ID" not-an-order
	assert_failure 65
	[ "${#lines[@]}" = 1 ]
	echo "$stderr" | grep -q '"msg":"order id is not a UUID: not-an-order"'
}

@test "ot-cache: a log line quoting bytes that are not UTF-8 is written, with them escaped" {
	run --separate-stderr ot-cache get < <(printf 'bad\xff\xc3id\n')
	assert_failure 65
	echo "$stderr" | grep -qF '"level":"error","tool":"ot-cache","msg":"order id is not a UUID: bad\\xFF\\xC3id"'
}

@test "ot-cache: a Redis URL's password never shows in errors" {
	OT_REDIS_URL='redis://:hunter2@127.0.0.1:1/0' run --separate-stderr ot-cache invalidate "$ID"
	assert_failure 69
	echo "$stderr" | grep -qF 'cannot connect to Redis at redis://:***@127.0.0.1:1/0'
	OT_REDIS_URL='redis://user:hunter2@127.0.0.1:nope/0' run --separate-stderr ot-cache invalidate "$ID"
	assert_failure 78
	echo "$stderr" | grep -qF 'Redis URL redis://user:***@127.0.0.1:nope/0: bad port'
	OT_REDIS_URL='redis://hunter2@127.0.0.1:1/0' run --separate-stderr ot-cache invalidate "$ID"
	echo "$stderr" | grep -qF 'redis://***@127.0.0.1:1/0'
	# a scheme it does not take (in capitals, or another's) is refused (78), its password hidden
	for url in 'REDIS://:hunter2@127.0.0.1:1/0' 'valkey://u:hunter2@127.0.0.1:1/0'; do
		OT_REDIS_URL=$url run --separate-stderr ot-cache invalidate "$ID"
		assert_failure 78
		echo "$stderr" | grep -qF "Redis URL ${url/hunter2/***}: expected redis://"
		refute grep -q hunter2 <<<"$stderr"
	done
	OT_REDIS_URL='redis://:hunter2@127.0.0.1:1/0' run --separate-stderr ot-cache get "$ID"
	assert_success
	! echo "$stderr" | grep -q hunter2 || false
}

@test "ot-cache: invalidate deletes the cached entry" {
	run --separate-stderr ot-cache invalidate "$ID"
	assert_success
	[ "$(rcli EXISTS "order:{$ID}")" = 0 ]
}

@test "ot-cache: an ACL user in the Redis URL authenticates; a wrong password exits 69 without showing it" {
	user="u-$RUNID"
	rcli ACL SETUSER "$user" on ">pw-$RUNID" '~*' '&*' '+@all' >/dev/null
	port=$(redis_port)
	OT_REDIS_URL="redis://$user:pw-$RUNID@127.0.0.1:$port/0" run --separate-stderr ot-cache invalidate "$ID"
	status_ok=$status
	OT_REDIS_URL="redis://$user:wrong-$RUNID@127.0.0.1:$port/0" run --separate-stderr ot-cache invalidate "$ID"
	status_wrong=$status
	stderr_wrong=$stderr
	rcli ACL DELUSER "$user" >/dev/null
	[ "$status_ok" = 0 ]
	[ "$(rcli EXISTS "order:{$ID}")" = 0 ]
	[ "$status_wrong" = 69 ]
	echo "$stderr_wrong" | grep -qF "Redis AUTH failed at redis://$user:***@127.0.0.1"
	! echo "$stderr_wrong" | grep -q "wrong-$RUNID"
}

@test "ot-cache: rediss:// needs a build with TLS; a malformed Redis URL exits 78 without its password" {
	OT_REDIS_URL="rediss://127.0.0.1:$(redis_port)/0" run --separate-stderr ot-cache invalidate "$ID"
	if [ "$(pkg-config --exists hiredis_ssl && echo yes)" != yes ]; then
		assert_failure 78
		echo "$stderr" | grep -q 'this build has no TLS'
	fi
	OT_REDIS_URL="redis://u:pw-$RUNID@127.0.0.1:0/0" run --separate-stderr ot-cache invalidate "$ID"
	assert_failure 78
	echo "$stderr" | grep -q 'bad port'
	! echo "$stderr" | grep -q "pw-$RUNID"
}

@test "ot-cache: warm caches active orders from the database" {
	rcli DEL "order:{$ID}" >/dev/null
	run --separate-stderr ot-cache warm
	assert_success
	echo "$stderr" | grep -q 'warmed [0-9]* active orders'
	[ "$(rcli HGET "order:{$ID}" status)" = PENDING ]
	[ "$(rcli TTL "order:{$ID}")" -gt 0 ]
}

@test "ot-cache: a stale version never overwrites a newer one" {
	printf '%s\n' "$(event INVENTORY_RESERVED "$ID")" | ot-consume 2>/dev/null
	[ "$(rcli HGET "order:{$ID}" version)" = 2 ]
	# An old copy of the order written back (as a slow refill would) is refused by the CAS.
	rcli HSET "order:{$ID}" version 1 status PENDING >/dev/null
	run --separate-stderr ot-cache warm
	[ "$(rcli HGET "order:{$ID}" status)" = CONFIRMED ]
	rcli HSET "order:{$ID}" version 9 status PENDING >/dev/null
	run --separate-stderr ot-cache warm
	[ "$(rcli HGET "order:{$ID}" status)" = PENDING ] # version 9 is newer than the database's 2
}

@test "ot-cache: with Redis unreachable get falls back to the database; invalidate exits 69" {
	OT_REDIS_URL=redis://127.0.0.1:1/0 run --separate-stderr ot-cache get "$ID"
	assert_success
	assert_output --partial '"status":"PENDING"'
	OT_REDIS_URL=redis://127.0.0.1:1/0 run --separate-stderr ot-cache invalidate "$ID"
	assert_failure 69
}

@test "ot-cache: each subcommand takes only its own options, after it; another's is a usage error (64)" {
	for a in "stats --repair" "warm --since 5m" "get -i kafka:orders.events" "invalidate --orders-db x" \
		"stats -G g" "verify -i -" "rebuild --http-addr :0" "rebuild --repair" "sync --since 5m" "--repair verify" \
		"--redis redis://127.0.0.1:1/0 get" "warm $ID" "bogus"; do
		run --separate-stderr ot-cache $a
		assert_failure 64
		assert_output ''
	done
	# -h prints a subcommand's own options, and no other's
	run --separate-stderr ot-cache verify -h
	assert_success
	assert_line --index 0 'usage: ot-cache verify [--repair] [--since DURATION] [options]'
	assert_line --partial -- '--repair'
	refute_line --partial -- '--input'
	run --separate-stderr ot-cache -h
	assert_success
	assert_output --partial 'get warm invalidate rebuild sync stats verify'
}

@test "ot-cache: rebuild from the orders event log gives the same cache as live processing" {
	drain_outboxes
	stock "R-$RUNID" 10
	ids=()
	for i in 1 2 3; do ids+=("$(place_order "r-$RUNID-$i" "[{\"sku\":\"R-$RUNID\",\"qty\":1}]")"); done
	log="$BATS_TEST_TMPDIR/orders.events"
	ot-relay --once 2>/dev/null | tee -a "$log" | ot-reserve 2>/dev/null
	ot-relay --db inventory --once 2>/dev/null | ot-consume 2>/dev/null
	printf '%s\n' "${ids[0]}" "${ids[1]}" | ot-courier -n 2 | ot-consume 2>/dev/null
	event ORDER_CANCELLED "${ids[2]}" | ot-consume 2>/dev/null
	ot-relay --once 2>/dev/null >> "$log"
	topic="orders.events.$RUNID"
	ot-relay -i "$log" -O "kafka:$topic" 2>/dev/null
	live() { for id in "${ids[@]}"; do rcli HGETALL "order:{$id}" | paste - - | sort | tr '\n' ' '; echo; done; }
	before=$(live)
	[ "$(rcli HGET "order:{${ids[0]}}" status)" = DELIVERED ]
	[ "$(rcli HGET "order:{${ids[2]}}" status)" = CANCELLED ]
	for id in "${ids[@]}"; do rcli DEL "order:{$id}" >/dev/null; done
	run --separate-stderr ot-cache rebuild -i "kafka:$topic"
	assert_success
	[ "$(live)" = "$before" ]
	for id in "${ids[@]}"; do
		[ "$(rcli HGET "order:{$id}" version)" = "$(version_of "$id")" ]
		[ "$(rcli TTL "order:{$id}")" -gt 0 ]
	done
	# a second rebuild over a current cache writes nothing and changes nothing
	run --separate-stderr ot-cache rebuild -i "kafka:$topic"
	assert_success
	echo "$stderr" | grep -q ', 0 written,'
	[ "$(live)" = "$before" ]
	# a rebuild leaves no offsets in its group (nothing whose lag would grow): the same group
	# named again reads the whole topic again
	for i in 1 2; do
		run --separate-stderr ot-cache rebuild -i "kafka:$topic" -G "rb-$RUNID"
		assert_success
		echo "$stderr" | grep -q '"msg":"rebuild: 1[0-9] events, 0 written'
	done
}

@test "ot-cache: rebuild, warm, a refill and verify give an order's payment as live processing does" {
	local pay='"payment":{"source":"tok_visa"},"amount":2500' ids log topic before
	drain_outboxes
	log="$BATS_TEST_TMPDIR/orders.events"
	ids=("$ID" "$(place_order "d-$RUNID")" "$(place_order "a-$RUNID")" "$(place_order "n-$RUNID")")
	printf '%s\n' "$(event INVENTORY_RESERVED "${ids[0]}" "{$pay}")" \
		"$(event PAYMENT_AUTHORIZED "${ids[0]}" '{"amount":2500,"currency":"usd"}')" \
		"$(event DELIVERY_UPDATED "${ids[0]}" '{"status":"PREPARING"}')" \
		"$(event DELIVERY_UPDATED "${ids[0]}" '{"status":"IN_TRANSIT"}')" \
		"$(event DELIVERY_UPDATED "${ids[0]}" '{"status":"DELIVERED"}')" \
		"$(event PAYMENT_CAPTURED "${ids[0]}" '{"amount":2500,"currency":"usd"}')" \
		"$(event INVENTORY_RESERVED "${ids[1]}" "{$pay}")" \
		"$(event PAYMENT_DECLINED "${ids[1]}" '{"amount":2500,"currency":"usd","code":"card_declined","decline_code":"insufficient_funds"}')" \
		"$(event INVENTORY_RESERVED "${ids[2]}" "{$pay}")" \
		"$(event PAYMENT_AUTHORIZED "${ids[2]}" '{"amount":2500,"currency":"usd"}')" \
		"$(event INVENTORY_RESERVED "${ids[3]}")" | ot-consume 2>/dev/null
	ot-relay --once 2>/dev/null > "$log"
	topic="orders.events.$RUNID"
	ot-relay -i "$log" -O "kafka:$topic" 2>/dev/null
	live() { for id in "${ids[@]}"; do ot-cache get "$id" 2>/dev/null; rcli HGETALL "order:{$id}" | paste - - | sort | tr '\n' ' '; echo; done; }
	before=$(live)
	run ot-cache get "${ids[0]}"
	assert_output --partial '"status":"DELIVERED","version":6,'
	assert_output --partial '"payment":{"status":"CAPTURED","amount":2500,"currency":"usd"}'
	run ot-cache get "${ids[1]}"
	assert_output --partial '"payment":{"status":"DECLINED","amount":2500,"currency":"usd","decline_code":"insufficient_funds"}'
	run ot-cache get "${ids[3]}"
	assert_output --partial '"status":"CONFIRMED"'
	refute_output --partial payment
	# the change log stays: Redis knows the orders, so each entry comes from the events
	for id in "${ids[@]}"; do rcli DEL "order:{$id}" >/dev/null; done
	run --separate-stderr ot-cache rebuild -i "kafka:$topic"
	assert_success
	echo "$stderr" | grep -q '"msg":"rebuild: 1[0-9] events, 4 written'
	[ "$(live)" = "$before" ]
	# warm (the active orders) and a refill after a miss (the others) read the database's
	for id in "${ids[@]}"; do rcli DEL "order:{$id}" "orderlog:{$id}" >/dev/null; done
	run --separate-stderr ot-cache warm
	assert_success
	[ "$(rcli HGET "order:{${ids[2]}}" payment)" = '{"status":"AUTHORIZED","amount":2500,"currency":"usd"}' ]
	for id in "${ids[0]}" "${ids[1]}"; do ot-cache get "$id" >/dev/null 2>&1; done
	after=$(live)
	[ "$(echo "$after" | sed 's/"cache":"[a-z]*"//')" = "$(echo "$before" | sed 's/"cache":"[a-z]*"//')" ]
	# a payment other than the database's at the same version is drift, and repaired
	rcli HSET "order:{${ids[0]}}" payment '{"status":"AUTHORIZED","amount":2500,"currency":"usd"}' >/dev/null
	run --separate-stderr ot-cache verify
	assert_failure 65
	assert_output --partial "{\"drift\":\"mismatch\",\"order_id\":\"${ids[0]}\""
	run --separate-stderr ot-cache verify --repair
	assert_success
	[ "$(rcli HGET "order:{${ids[0]}}" payment)" = '{"status":"CAPTURED","amount":2500,"currency":"usd"}' ]
}

@test "ot-cache: after FLUSHALL, rebuild and then sync put back every order of the topic under its own key" {
	topic="orders.events.$RUNID"
	order_history "$topic" fl
	flush_cache
	run --separate-stderr ot-cache rebuild -i "kafka:$topic"
	assert_success
	echo "$stderr" | grep -q ', 4 written,'
	assert_cache_restored fl
	run --separate-stderr ot-cache verify
	assert_success
	assert_output ''
	flush_cache
	run --separate-stderr ot-cache sync -i "kafka:$topic" -G "s-$RUNID" -e
	assert_success
	assert_cache_restored fl
}

@test "ot-cache: verify reports keys that are no order's entry (order:{}, the old order:ID) and --repair removes them" {
	rcli HSET 'order:{}' status PENDING version 1 >/dev/null
	rcli ZADD 'orderlog:{}' 1 '{"status":"PENDING"}' >/dev/null
	rcli HSET "order:$ID" status PENDING version 1 >/dev/null
	run --separate-stderr ot-cache verify
	assert_failure 65
	assert_line '{"drift":"orphan","key":"order:{}"}'
	assert_line "{\"drift\":\"orphan\",\"key\":\"order:$ID\"}"
	run --separate-stderr ot-cache verify --repair
	assert_success
	[ "$(rcli EXISTS 'order:{}' 'orderlog:{}' "order:$ID")" = 0 ]
	[ "$(rcli HGET "order:{$ID}" status)" = PENDING ]
	run --separate-stderr ot-cache verify
	assert_success
	assert_output ''
}

@test "ot-cache: stats counts hits, misses and fills of cache-aside reads, and keys per state" {
	before=$(ot-cache stats 2>/dev/null)
	hits0=$(echo "$before" | sed -n 's/.*"hits":\([0-9]*\).*/\1/p')
	misses0=$(echo "$before" | sed -n 's/.*"misses":\([0-9]*\).*/\1/p')
	ot-cache get "$ID" >/dev/null 2>&1
	rcli DEL "order:{$ID}" >/dev/null
	ot-cache get "$ID" >/dev/null 2>&1
	run --separate-stderr ot-cache stats
	assert_success
	[ "$(echo "$output" | sed -n 's/.*"hits":\([0-9]*\).*/\1/p')" = $((hits0 + 1)) ]
	[ "$(echo "$output" | sed -n 's/.*"misses":\([0-9]*\).*/\1/p')" = $((misses0 + 1)) ]
	assert_output --partial '"hit_ratio":0.'
	echo "$output" | grep -q '"keys_per_state":{.*"PENDING":[1-9]'
}

@test "ot-cache: verify reports drift as JSON lines and exits 65; --repair puts the database's state back" {
	other=$(place_order "d-$RUNID")
	rcli HSET "order:{$ID}" version 0 status DELIVERED >/dev/null   # stale
	rcli HSET "order:{$other}" status CANCELLED >/dev/null         # same version, other status
	orphan=$(uuid)
	rcli HSET "order:{$orphan}" version 3 status PREPARING >/dev/null
	# an entry under an upper-case id (as the letter-case bug left them): nobody reads it
	up=$(echo "$ID" | tr a-f A-F)
	rcli HSET "order:{$up}" version 1 status PENDING >/dev/null
	run --separate-stderr ot-cache verify
	assert_failure 65
	assert_output --partial "{\"drift\":\"orphan\",\"order_id\":\"$up\""
	assert_output --partial "{\"drift\":\"stale\",\"order_id\":\"$ID\",\"cached\":{\"status\":\"DELIVERED\",\"version\":0},\"database\":{\"status\":\"PENDING\",\"version\":1}}"
	assert_output --partial "{\"drift\":\"mismatch\",\"order_id\":\"$other\""
	assert_output --partial "{\"drift\":\"orphan\",\"order_id\":\"$orphan\""
	run --separate-stderr ot-cache verify --repair
	assert_success
	[ "$(rcli HGET "order:{$ID}" status)" = PENDING ]
	[ "$(rcli HGET "order:{$other}" status)" = PENDING ]
	[ "$(rcli EXISTS "order:{$orphan}")" = 0 ]
	[ "$(rcli EXISTS "order:{$up}")" = 0 ]
	run --separate-stderr ot-cache verify
	assert_success
	assert_output ''
}

@test "ot-cache: sync keeps Redis in step with the order events, resuming in its group" {
	topic="orders.events.$RUNID"
	printf '%s\n' "$(event INVENTORY_RESERVED "$ID")" | ot-consume 2>/dev/null
	drain_log="$BATS_TEST_TMPDIR/log"
	ot-relay --once 2>/dev/null > "$drain_log"
	ot-relay -i "$drain_log" -O "kafka:$topic" 2>/dev/null
	rcli DEL "order:{$ID}" >/dev/null
	ot-cache sync -i "kafka:$topic" -G "s-$RUNID" 2>"$BATS_TEST_TMPDIR/sync.log" &
	pid=$!
	for i in $(seq 1 50); do [ "$(rcli HGET "order:{$ID}" version)" = 2 ] && break; sleep 0.2; done
	[ "$(rcli HGET "order:{$ID}" status)" = CONFIRMED ]
	kill -TERM "$pid"
	wait "$pid"
	# the group resumes: a restart reads nothing old again
	run --separate-stderr ot-cache sync -i "kafka:$topic" -G "s-$RUNID" -e
	assert_success
	echo "$stderr" | grep -q '"msg":"sync: 0 events'
}

@test "ot-cache: entries expire by state, spread by up to 10%" {
	ttl=$(rcli TTL "order:{$ID}")
	[ "$ttl" -gt 3500 ]
	[ "$ttl" -le 3960 ]
	printf '%s\n' "$(event INVENTORY_RESERVATION_FAILED "$ID")" | ot-consume 2>/dev/null
	ttl=$(rcli TTL "order:{$ID}")
	[ "$ttl" -gt 604000 ]
	[ "$ttl" -le 665280 ]
}

@test "ot-cache: a crowd of readers missing the same order refills it once (single flight)" {
	fills() { ot-cache stats 2>/dev/null | sed -n 's/.*"fills":\([0-9]*\).*/\1/p'; }
	port=$((20000 + RANDOM % 20000))
	OT_HTTP_ADDR="127.0.0.1:$port" OT_RATE_LIMIT=0 ot-serve 2>"$BATS_TEST_TMPDIR/serve.log" &
	pid=$!
	for i in $(seq 1 50); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
	sleep 1.2 # a stats flush of its own start has passed
	before=$(fills)
	rcli DEL "order:{$ID}" >/dev/null
	seq 1 200 | xargs -P 40 -I{} curl -s -o /dev/null -w '%{http_code}\n' "http://127.0.0.1:$port/orders/$ID" > "$BATS_TEST_TMPDIR/codes"
	sleep 1.5 # ot-serve adds its counts to ot:stats once a second
	kill -TERM "$pid"
	wait "$pid"
	[ "$(grep -c '^200$' "$BATS_TEST_TMPDIR/codes")" = 200 ]
	[ "$(fills)" = $((before + 1)) ]
	[ "$(rcli EXISTS "lock:order:{$ID}")" = 0 ]
}

@test "ot-cache: sync with --http-addr serves /healthz, /readyz and /metrics; rebuild never listens" {
	port=$(free_port)
	topic="orders.events.$RUNID"
	printf '%s\n' "$(event INVENTORY_RESERVED "$ID")" | ot-consume 2>/dev/null
	ot-relay --once 2>/dev/null > "$BATS_TEST_TMPDIR/log"
	ot-relay -i "$BATS_TEST_TMPDIR/log" -O "kafka:$topic" 2>/dev/null
	rcli DEL "order:{$ID}" >/dev/null
	start_bg "$BATS_TEST_TMPDIR/sync.log" ot-cache sync -i "kafka:$topic" -G "s-$RUNID" --http-addr "127.0.0.1:$port" \
		-X statistics.interval.ms=200 -X auto.commit.interval.ms=200
	assert_serving "$port"
	t="tool=\"ot-cache\",topic=\"$topic\""
	wait_metric "$port" "ot_records_total{$t,result=\"applied\"}" 1
	[ "$(rcli HGET "order:{$ID}" status)" = CONFIRMED ]
	[ "$(metric_of "$port" 'ot_cache_writes_total{tool="ot-cache",result="applied"}')" = 1 ]
	for i in $(seq 1 50); do
		lags=$(curl -s "http://127.0.0.1:$port/metrics" | grep "^ot_kafka_consumer_lag{$t," | awk '{ print $2 }' | sort -u)
		[ "$lags" = 0 ] && break
		sleep 0.2
	done
	[ "$lags" = 0 ]
	[ "$(metric_of "$port" 'ot_build_info{tool="ot-cache",version="0.1.0"}')" = 1 ]
	promcheck "$port"
	stop_bg
	# rebuild never listens: OT_HTTP_ADDR is not for it, and --http-addr is not its option
	OT_HTTP_ADDR="127.0.0.1:$port" run --separate-stderr ot-cache rebuild -i "kafka:$topic"
	assert_success
	run grep -c 'health and metrics on' <<<"$stderr"
	assert_output 0
	run --separate-stderr ot-cache rebuild -i "kafka:$topic" --http-addr "127.0.0.1:$port"
	assert_failure 64
}

@test "ot-cache: sync's /readyz is 503 while Redis does not answer" {
	port=$(free_port)
	rp=$(free_port)
	proxy "$rp" 127.0.0.1 "$(redis_port)"
	event INVENTORY_RESERVED "$ID" | ot-relay -i - -O "kafka:orders.events.$RUNID" 2>/dev/null
	start_bg "$BATS_TEST_TMPDIR/sync.log" ot-cache sync -i "kafka:orders.events.$RUNID" -G "s-$RUNID" \
		--redis "redis://127.0.0.1:$rp/0" --http-addr "127.0.0.1:$port"
	wait_health "$port"
	wait_ready "$port"
	kill "$PROXY_PID"
	sleep 1.1
	run curl -s -w '%{http_code}' "http://127.0.0.1:$port/readyz"
	assert_line --index 1 503
	assert_line --index 0 --partial '"status":"unavailable","error":"Redis: '
}

# An ot-serve on a free port whose Redis is reached through a proxy it alone uses; its port in
# $1_PORT, its pid in $1_PID, the proxy's in $1_PROXY: serve_via_proxy NAME
serve_via_proxy() {
	local name=$1 port px
	port=$(free_port) px=$(free_port)
	proxy "$px" 127.0.0.1 "$(redis_port)"
	printf -v "${name}_PROXY" '%s' "$PROXY_PID"
	start_bg "$BATS_TEST_TMPDIR/$name.log" env OT_HTTP_ADDR="127.0.0.1:$port" OT_API_KEY="key-$RUNID-0123456789" \
		OT_REDIS_URL="${OT_REDIS_URL/:$(redis_port)/:$px}" ot-serve
	printf -v "${name}_PID" '%s' "${BG_PIDS[-1]}"
	printf -v "${name}_PORT" '%s' "$port"
	wait_health "$port"
}
# The status a replica on PORT serves for ID, and its X-Cache: served PORT ID
served() {
	curl -s -D "$BATS_TEST_TMPDIR/h" "http://127.0.0.1:$1/orders/$2" | jq -r .status
	tr -d '\r' < "$BATS_TEST_TMPDIR/h" | sed -n 's/^[Xx]-[Cc]ache: //p'
}

@test "ot-cache: a cancel whose ot-serve died before Redis took it is served by every replica once verify --repair --since runs" {
	serve_via_proxy a
	serve_via_proxy b
	run served "$b_PORT" "$ID"
	assert_output "$(printf 'PENDING\nHIT')"
	kill "$a_PROXY"                     # a's Redis link is cut...
	run curl -s -o /dev/null -w '%{http_code}' -X POST -H "Authorization: Bearer key-$RUNID-0123456789" \
		"http://127.0.0.1:$a_PORT/orders/$ID/cancel"
	assert_output 200                   # ...the cancel is committed...
	kill -KILL "$a_PID"                 # ...and a dies before it could repair Redis.
	[ "$(status_of "$ID")" = CANCELLED ]
	run served "$b_PORT" "$ID"
	assert_output "$(printf 'PENDING\nHIT')"
	# What the ot-cache-repair CronJob runs every minute.
	run --separate-stderr ot-cache verify --repair --since 2m
	assert_success
	assert_line --partial "{\"drift\":\"stale\",\"order_id\":\"$ID\",\"cached\":{\"status\":\"PENDING\",\"version\":1},\"database\":{\"status\":\"CANCELLED\",\"version\":2}}"
	for i in $(seq 1 60); do [ "$(served "$b_PORT" "$ID" | head -1)" = CANCELLED ] && break; sleep 1; done
	run served "$b_PORT" "$ID"
	assert_output "$(printf 'CANCELLED\nHIT')"
	run --separate-stderr ot-cache verify --since 2m
	assert_success
	assert_output ''
}

@test "ot-serve: on SIGTERM, a status Redis did not take is named in the log by its order id" {
	serve_via_proxy a
	kill "$a_PROXY"
	run curl -s -o /dev/null -w '%{http_code}' -X POST -H "Authorization: Bearer key-$RUNID-0123456789" \
		"http://127.0.0.1:$a_PORT/orders/$ID/cancel"
	assert_output 200
	kill -TERM "$a_PID"
	wait "$a_PID"   # exit status 0
	BG_PIDS=("$a_PROXY")
	run grep '"level":"warn"' "$BATS_TEST_TMPDIR/a.log"
	assert_output --partial "\"msg\":\"cache entry not repaired before exit"
	assert_output --partial "\"order_id\":\"$ID\""
}

@test "ot-cache: an order the database does not have is remembered for 5 s, and forgotten when it is written" {
	port=$(free_port)
	start_bg "$BATS_TEST_TMPDIR/serve.log" env OT_HTTP_ADDR="127.0.0.1:$port" ot-serve
	wait_health "$port"
	none=$(uuid)
	for i in 1 2 3; do
		run curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/orders/$none"
		assert_output 404
	done
	[ "$(rcli GET "lock:order:{$none}")" = none ]
	ttl=$(rcli PTTL "lock:order:{$none}")
	[ "$ttl" -gt 0 ]
	[ "$ttl" -le 5000 ]
	# the first read asked the database; the next two did not
	[ "$(metric_of "$port" 'ot_cache_none_hits_total{tool="ot-serve"}')" = 2 ]
	# ot-cache get reads through the same entry
	run --separate-stderr ot-cache get "$none"
	assert_failure 65
	# An order written to the cache drops its negative entry (here one set by hand: a reader that
	# found nothing just before the order's transaction committed).
	rcli DEL "order:{$ID}" "orderlog:{$ID}" >/dev/null
	rcli SET "lock:order:{$ID}" none PX 5000 >/dev/null
	event INVENTORY_RESERVED "$ID" | ot-consume 2>/dev/null
	[ "$(rcli EXISTS "lock:order:{$ID}")" = 0 ]
	run curl -s "http://127.0.0.1:$port/orders/$ID"
	assert_output --partial '"status":"CONFIRMED"'
}
