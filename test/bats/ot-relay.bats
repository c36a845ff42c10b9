#!/usr/bin/env bats
# ot-relay: outbox to stdout or Kafka, and envelopes piped to Kafka.
bats_require_minimum_version 1.5.0

setup() {
	load helpers
	common_setup
}

teardown() {
	stop_bg
}

@test "ot-relay: --once drains the outbox to stdout, oldest first, and empties it" {
	drain_outboxes
	a=$(place_order "a-$RUNID")
	b=$(place_order "b-$RUNID")
	run --separate-stderr ot-relay --once
	assert_success
	[ "${#lines[@]}" = 2 ]
	echo "${lines[0]}" | grep -q "\"type\":\"ORDER_CREATED\",\"order_id\":\"$a\""
	echo "${lines[1]}" | grep -q "\"order_id\":\"$b\""
	[ "$(sql_orders "SELECT count(*) FROM outbox")" = 0 ]
	run --separate-stderr ot-relay --once
	assert_success
	assert_output ''
}

@test "ot-relay: -O kafka publishes each row to its topic with key order_id and envelope headers" {
	drain_outboxes
	id=$(place_order "c-$RUNID")
	run --separate-stderr ot-relay --once -O kafka
	assert_success
	[ "$(sql_orders "SELECT count(*) FROM outbox")" = 0 ]
	# Read the topic back from the end of its history.
	ot-relay -i kafka:orders.events -O - --meta -G "g-$RUNID" -e > "$BATS_TEST_TMPDIR/topic" 2>/dev/null
	line=$(grep "\"key\":\"$id\"" "$BATS_TEST_TMPDIR/topic")
	[ -n "$line" ]
	echo "$line" | grep -q '"headers":{"ot-id":"[0-9a-f-]\{36\}","ot-type":"ORDER_CREATED","traceparent":"00-[0-9a-f]\{32\}-[0-9a-f]\{16\}-01"}'
	echo "$line" | grep -q "\"value\":{\"id\":\"[0-9a-f-]*\",\"type\":\"ORDER_CREATED\",\"order_id\":\"$id\""
}

@test "ot-relay: the inventory outbox is relayed with --db inventory" {
	drain_outboxes
	stock "S-$RUNID" 3
	printf '{"id":"%s","type":"ORDER_CREATED","order_id":"%s","ts":"2026-11-24T18:00:00Z","data":{"items":[{"sku":"S-%s","qty":1}]}}\n' \
		"$(uuid)" "$(uuid)" "$RUNID" | ot-reserve 2>/dev/null
	run --separate-stderr ot-relay --db inventory --once
	assert_success
	assert_output --partial '"type":"INVENTORY_RESERVED"'
	[ "$(sql_inventory "SELECT count(*) FROM outbox")" = 0 ]
}

@test "ot-relay: the payments outbox is relayed with --db payments, polled and from the WAL" {
	ot-relay --db payments --once >/dev/null 2>&1
	local slot="s_pay_${RUNID//-/_}" i
	# The slot first: a CDC relay streams what is committed after it.
	run --separate-stderr ot-relay --db payments --mode cdc --slot "$slot" --once
	assert_success
	for i in 1 2; do
		sql_payments "INSERT INTO outbox (topic, key, event_id, type, payload) VALUES ('payments.events', 'k-$RUNID', gen_random_uuid(), 'PAYMENT_AUTHORIZED', '{\"n\":$i,\"run\":\"$RUNID\"}')"
	done
	run --separate-stderr ot-relay --db payments --mode cdc --slot "$slot" --once
	assert_success
	assert_output "{\"n\":1,\"run\":\"$RUNID\"}
{\"n\":2,\"run\":\"$RUNID\"}"
	[ "$(sql_payments "SELECT count(*) FROM outbox WHERE key = 'k-$RUNID'")" = 0 ]
	run --separate-stderr ot-relay --db payments --mode cdc --slot "$slot" --drop-slot
	assert_success
	# Polled.
	sql_payments "INSERT INTO outbox (topic, key, event_id, type, payload) VALUES ('payments.events', 'k-$RUNID', gen_random_uuid(), 'PAYMENT_CAPTURED', '{\"n\":3,\"run\":\"$RUNID\"}')"
	run --separate-stderr ot-relay --db payments --once
	assert_success
	assert_output "{\"n\":3,\"run\":\"$RUNID\"}"
	[ "$(sql_payments "SELECT count(*) FROM outbox")" = 0 ]
	run --separate-stderr ot-relay --db other --once
	assert_failure 64
	assert_equal "$stderr" 'ot-relay: --db other: expected orders, inventory or payments'
}

@test "ot-relay: running continuously, a new row is relayed within seconds (LISTEN/NOTIFY), SIGTERM exits 0" {
	drain_outboxes
	ot-relay > "$BATS_TEST_TMPDIR/out" 2> "$BATS_TEST_TMPDIR/err" &
	pid=$!
	sleep 0.5
	id=$(place_order "c-$RUNID")
	for i in $(seq 1 50); do grep -q "$id" "$BATS_TEST_TMPDIR/out" && break; sleep 0.1; done
	grep -q "\"order_id\":\"$id\"" "$BATS_TEST_TMPDIR/out"
	kill -TERM "$pid"
	wait "$pid"
	[ "$(sql_orders "SELECT count(*) FROM outbox")" = 0 ]
}

@test "ot-relay: the outbox rows stay when Kafka does not acknowledge them" {
	drain_outboxes
	id=$(place_order "c-$RUNID")
	run --separate-stderr ot-relay --once -O kafka -b 127.0.0.1:1
	assert_failure 69
	[ "$(sql_orders "SELECT count(*) FROM outbox WHERE key = '$id'")" = 1 ]
}

@test "ot-relay: -i publishes envelopes to a topic; a bad line exits 65 and the good ones go through" {
	topic="delivery.updates.$RUNID"
	id=$(uuid)
	run --separate-stderr ot-relay -i - -O "kafka:$topic" <<<"$(event DELIVERY_UPDATED "$id" '{"status":"PREPARING"}')
{\"nope\":1}
$(event DELIVERY_UPDATED "$id" '{"status":"IN_TRANSIT"}')"
	assert_failure 65
	echo "$stderr" | grep -q 'line 2: field \\"id\\" is missing'
	ot-relay -i "kafka:$topic" -O - -G "g-$RUNID" -e > "$BATS_TEST_TMPDIR/topic" 2>/dev/null
	[ "$(wc -l < "$BATS_TEST_TMPDIR/topic")" = 2 ]
	grep -q PREPARING "$BATS_TEST_TMPDIR/topic"
}

@test "ot-relay: a record naming its order in upper case is keyed by the canonical id, raw or not" {
	topic="delivery.updates.$RUNID"
	id=$(uuid)
	up=$(echo "$id" | tr a-f A-F)
	event DELIVERY_UPDATED "$up" '{"status":"PREPARING"}' | ot-relay -i - -O "kafka:$topic" 2>/dev/null
	event DELIVERY_UPDATED "$up" '{"status":"IN_TRANSIT"}' | ot-relay -i - -O "kafka:$topic" --raw 2>/dev/null
	ot-relay -i "kafka:$topic" -O - --meta -G "g-$RUNID" -e > "$BATS_TEST_TMPDIR/topic" 2>/dev/null
	[ "$(grep -c "\"key\":\"$id\"" "$BATS_TEST_TMPDIR/topic")" = 2 ]
}

@test "ot-relay: contradictory flags are refused with 64" {
	run --separate-stderr ot-relay -i - --once
	assert_failure 64
	run --separate-stderr ot-relay --db shipping
	assert_failure 64
	run --separate-stderr ot-relay --batch 0
	assert_failure 64
}

@test "ot-relay: each job takes only its own options, after its name; another's is a usage error (64)" {
	for a in "replay --from x.dlq --once" "replay --from x.dlq --db orders" "replay --from x.dlq -i -" \
		"replay --from x.dlq --mode cdc" "lag --partitions 3" "lag -G g" "migrate --once" "migrate -O kafka" \
		"topics list --db orders" "topics create --interval 5" "-i - --mode cdc" "-i - --db orders" \
		"-i - --http-addr :0" "-i - --batch 5" "--meta" "--raw" "-G g" "-e" "--redis redis://127.0.0.1:1/0" \
		"--from x.dlq" "--interval 5" "--lock-timeout 5s" "--from x.dlq replay"; do
		run --separate-stderr ot-relay $a
		assert_failure 64
		assert_output ''
	done
	# -h says what a job takes, and nothing of another's
	run --separate-stderr ot-relay replay -h
	assert_success
	assert_line --index 0 --partial 'usage: ot-relay replay --from'
	refute_line --partial -- '--once'
	run --separate-stderr ot-relay -i - -h
	assert_success
	assert_line --partial -- '--meta'
	refute_line --partial -- '--db'
}

@test "ot-relay: a consumer group resumes from its committed offsets; -o beginning and -o s@<ms> start a fresh group" {
	topic="replay.$RUNID"
	id=$(uuid)
	before=$(($(date +%s%3N) - 1))
	for s in PREPARING IN_TRANSIT DELIVERED; do event DELIVERY_UPDATED "$id" "{\"status\":\"$s\"}"; done |
		ot-relay -i - -O "kafka:$topic" 2>/dev/null
	run --separate-stderr ot-relay -i "kafka:$topic" -O - -G "g-$RUNID" -e
	assert_success
	[ "${#lines[@]}" = 3 ]
	run --separate-stderr ot-relay -i "kafka:$topic" -O - -G "g-$RUNID" -e
	assert_success
	[ "${#lines[@]}" = 0 ]
	run --separate-stderr ot-relay -i "kafka:$topic" -O - -G "f-$RUNID" -e -o beginning
	[ "${#lines[@]}" = 3 ]
	run --separate-stderr ot-relay -i "kafka:$topic" -O - -G "h-$RUNID" -e -o "s@$before"
	[ "${#lines[@]}" = 3 ]
	run --separate-stderr ot-relay -i "kafka:$topic" -O - -G "i-$RUNID" -e -o "s@$(($(date +%s%3N) + 60000))"
	[ "${#lines[@]}" = 0 ]
	run --separate-stderr ot-relay -i "kafka:$topic" -O - -G "j-$RUNID" -e -c 2
	[ "${#lines[@]}" = 2 ]
}

@test "ot-relay: -o applies only where the group has no committed offset, so a restart never re-reads" {
	topic="restart.$RUNID"
	for i in 1 2 3; do event DELIVERY_UPDATED "$(uuid)" '{"status":"PREPARING"}'; done |
		ot-relay -i - -O "kafka:$topic" 2>/dev/null
	export OT_KAFKA_OFFSET=beginning # as a ConfigMap would set it
	run --separate-stderr ot-relay -i "kafka:$topic" -O - -G "g-$RUNID" -e
	assert_success
	[ "${#lines[@]}" = 3 ]
	# Restarted: the group's committed offsets win over -o and OT_KAFKA_OFFSET.
	run --separate-stderr ot-relay -i "kafka:$topic" -O - -G "g-$RUNID" -e
	assert_success
	[ "${#lines[@]}" = 0 ]
	run --separate-stderr ot-relay -i "kafka:$topic" -O - -G "g-$RUNID" -e -o beginning
	[ "${#lines[@]}" = 0 ]
	event DELIVERY_UPDATED "$(uuid)" '{"status":"DELIVERED"}' | ot-relay -i - -O "kafka:$topic" 2>/dev/null
	run --separate-stderr ot-relay -i "kafka:$topic" -O - -G "g-$RUNID" -e -o beginning
	[ "${#lines[@]}" = 1 ]
	echo "${lines[0]}" | grep -q DELIVERED
}

@test "ot-relay: -o -N starts a fresh group at the last N records of each partition" {
	topic="tail.$RUNID"
	id=$(uuid) # one key: one partition
	for s in PREPARING IN_TRANSIT DELIVERED; do event DELIVERY_UPDATED "$id" "{\"status\":\"$s\"}"; done |
		ot-relay -i - -O "kafka:$topic" 2>/dev/null
	run --separate-stderr ot-relay -i "kafka:$topic" -O - -G "g-$RUNID" -e -o -2
	assert_success
	[ "${#lines[@]}" = 2 ]
	echo "${lines[0]}" | grep -q IN_TRANSIT
	echo "${lines[1]}" | grep -q DELIVERED
	run --separate-stderr ot-relay -i "kafka:$topic" -O - -G "h-$RUNID" -e -o -10
	[ "${#lines[@]}" = 3 ]
}

@test "ot-relay: a malformed -o or OT_KAFKA_OFFSET is refused" {
	for o in s@abc s@ -abc -0 -- 1x ' 5' +5 99999999999999999999 s@-1 begin; do
		run --separate-stderr ot-relay -i - -o "$o" </dev/null
		assert_failure 64
		echo "$stderr" | grep -q -- "-o $o: expected"
	done
	OT_KAFKA_OFFSET=s@abc run --separate-stderr ot-relay -i - </dev/null
	assert_failure 78
	echo "$stderr" | grep -q 'OT_KAFKA_OFFSET=s@abc'
}

@test "ot-relay replay: a dead letter goes back to its topic and applies once its cause is fixed" {
	topic="flow.$RUNID"
	id=$(place_order "c-$RUNID")
	# PREPARING before the order is confirmed is impossible: dead-lettered.
	event DELIVERY_UPDATED "$id" '{"status":"PREPARING"}' | ot-relay -i - -O "kafka:$topic" 2>/dev/null
	ot-consume -i "kafka:$topic" -G "g-$RUNID" -e 2>/dev/null
	[ "$(status_of "$id")" = PENDING ]
	event INVENTORY_RESERVED "$id" | ot-consume 2>/dev/null
	# dry run: printed, not published
	run --separate-stderr ot-relay replay --from "$topic.dlq" --dry-run
	assert_success
	[ "${#lines[@]}" = 1 ]
	echo "${lines[0]}" | grep -q "\"ot-dlq-topic\":\"$topic\""
	run --separate-stderr ot-relay replay --from "$topic.dlq"
	assert_success
	echo "$stderr" | grep -q 'replay: 1 read, 1 replayed'
	ot-consume -i "kafka:$topic" -G "g-$RUNID" -e 2>/dev/null
	[ "$(status_of "$id")" = PREPARING ]
	ot-relay -i "kafka:$topic" -O - --meta -G "m-$RUNID" -e 2>/dev/null | tail -1 | grep -q '"ot-replay-count":"1"'
}

@test "ot-relay replay: says nothing of a dead-letter topic's own .dlq; a consumer is still told its .dlq is missing" {
	topic="nodlq.$RUNID"
	event DELIVERY_UPDATED "$(uuid)" '{"status":"PREPARING"}' | ot-relay -i - -O "kafka:$topic" 2>/dev/null
	# a consumer whose dead-letter topic is not there (yet) hears of it
	run --separate-stderr ot-relay -i "kafka:$topic" -O - -G "m-$RUNID" -e
	assert_success
	grep -q "topic $topic.dlq does not exist (yet)" <<<"$stderr"
	ot-consume -i "kafka:$topic" -G "g-$RUNID" -e 2>/dev/null # an unknown order: dead-lettered
	run --separate-stderr ot-relay replay --from "$topic.dlq" --dry-run
	assert_success
	[ "${#lines[@]}" = 1 ]
	run grep -c 'dlq\.dlq' <<<"$stderr"
	assert_output 0
}

@test "ot-relay replay: --dry-run output filtered and piped back in; --since/--until select; the replay limit refuses loops" {
	topic="dl.$RUNID"
	{
		event DELIVERY_UPDATED "$(uuid)" '{"status":"PREPARING"}'
		event DELIVERY_UPDATED "$(uuid)" '{"status":"DELIVERED"}'
	} | ot-relay -i - -O "kafka:$topic" 2>/dev/null
	before=$(date -u +%Y-%m-%dT%H:%M:%S.000Z)
	sleep 0.01
	ot-consume -i "kafka:$topic" -G "g-$RUNID" -e 2>/dev/null # both: unknown orders
	run --separate-stderr ot-relay replay --from "$topic.dlq" --until "$before"
	assert_success
	echo "$stderr" | grep -q 'replay: 2 read, 0 replayed, 2 outside the time window'
	ot-relay replay --from "$topic.dlq" --dry-run --since "$before" 2>/dev/null > "$BATS_TEST_TMPDIR/dry"
	[ "$(wc -l < "$BATS_TEST_TMPDIR/dry")" = 2 ]
	run --separate-stderr ot-relay replay --from - < <(grep DELIVERED "$BATS_TEST_TMPDIR/dry")
	assert_success
	ot-relay -i "kafka:$topic" -O - --meta -G "m-$RUNID" -e 2>/dev/null > "$BATS_TEST_TMPDIR/topic"
	[ "$(wc -l < "$BATS_TEST_TMPDIR/topic")" = 3 ]
	[ "$(grep -c '"ot-replay-count":"1"' "$BATS_TEST_TMPDIR/topic")" = 1 ]
	# A record at the limit is refused, and says why.
	sed 's/"ot-dlq-topic"/"ot-replay-count":"3","ot-dlq-topic"/' "$BATS_TEST_TMPDIR/dry" > "$BATS_TEST_TMPDIR/looping"
	run --separate-stderr ot-relay replay --from - < "$BATS_TEST_TMPDIR/looping"
	assert_failure 65
	echo "$stderr" | grep -q 'already replayed 3 times (limit 3): refusing to loop'
	run --separate-stderr ot-relay replay --from "$topic.dlq" --max 1 --dry-run
	[ "${#lines[@]}" = 1 ]
	run --separate-stderr ot-relay --dry-run
	assert_failure 64
}

@test "ot-relay topics create: makes missing topics with --partitions and --replication-factor, leaves existing ones" {
	run --separate-stderr ot-relay topics create --partitions 5 --replication-factor 1 "a.$RUNID" "b.$RUNID"
	assert_success
	assert_line --index 0 "{\"topic\":\"a.$RUNID\",\"partitions\":5,\"replication_factor\":1,\"config\":{},\"created\":true,\"altered\":false}"
	assert_line --index 1 "{\"topic\":\"b.$RUNID\",\"partitions\":5,\"replication_factor\":1,\"config\":{},\"created\":true,\"altered\":false}"
	# Partitions are not changed (more would move keys): said, and left.
	run --separate-stderr ot-relay topics create --partitions 2 "a.$RUNID"
	assert_success
	assert_output "{\"topic\":\"a.$RUNID\",\"partitions\":5,\"replication_factor\":1,\"config\":{},\"created\":false,\"altered\":false}"
	echo "$stderr" | grep -q "topics: a.$RUNID has 5 partitions, not 2: left as it is"
	run --separate-stderr ot-relay topics list "b.$RUNID" "none.$RUNID"
	assert_failure 65
	assert_line --index 0 "{\"topic\":\"b.$RUNID\",\"partitions\":5,\"replication_factor\":1,\"config\":{}}"
	assert_line --index 1 "{\"topic\":\"none.$RUNID\",\"error\":\"unknown topic\"}"
	ot-relay topics list 2>/dev/null | grep -q "\"topic\":\"a.$RUNID\""
	# Without names: every topic the tools use, here already made by ot-stack up.
	run --separate-stderr ot-relay topics create
	assert_success
	[ "${#lines[@]}" = 8 ]
	assert_line --index 0 --partial '{"topic":"orders.events","partitions":'
	assert_line --index 5 --partial '{"topic":"delivery.updates.dlq","partitions":'
	assert_line --index 7 --partial '{"topic":"payments.events.dlq","partitions":'
	# More replicas than brokers: a request to fix, not to retry.
	run --separate-stderr ot-relay topics create --replication-factor 3 "c.$RUNID"
	assert_failure 78
	echo "$stderr" | grep -q "creating topic c.$RUNID"
	run --separate-stderr ot-relay topics create -b 127.0.0.1:1 "c.$RUNID"
	assert_failure 69
}

@test "ot-relay topics create: settings per topic and for the dead-letter topics; an existing topic is brought in line, its other settings kept" {
	t="s.$RUNID"
	run --separate-stderr ot-relay topics create --partitions 3 --replication-factor 1 --config min.insync.replicas=1 \
		--config retention.ms=86400000 --dlq-config retention.ms=2592000000 "$t" "$t.dlq"
	assert_success
	assert_line --index 0 "{\"topic\":\"$t\",\"partitions\":3,\"replication_factor\":1,\"config\":{\"min.insync.replicas\":\"1\",\"retention.ms\":\"86400000\"},\"created\":true,\"altered\":false}"
	assert_line --index 1 "{\"topic\":\"$t.dlq\",\"partitions\":3,\"replication_factor\":1,\"config\":{\"min.insync.replicas\":\"1\",\"retention.ms\":\"2592000000\"},\"created\":true,\"altered\":false}"
	# A setting added: the others stay (Kafka's AlterConfigs would reset what it is not sent).
	run --separate-stderr ot-relay topics create --config segment.ms=3600000 "$t"
	assert_success
	assert_output "{\"topic\":\"$t\",\"partitions\":3,\"replication_factor\":1,\"config\":{\"min.insync.replicas\":\"1\",\"retention.ms\":\"86400000\",\"segment.ms\":\"3600000\"},\"created\":false,\"altered\":true}"
	echo "$stderr" | grep -q "topics: $t: segment.ms=3600000 (was the broker's default)"
	# The first command again: every topic in line already, nothing altered, nothing lost.
	run --separate-stderr ot-relay topics create --partitions 3 --replication-factor 1 --config min.insync.replicas=1 \
		--config retention.ms=86400000 --dlq-config retention.ms=2592000000 "$t" "$t.dlq"
	assert_success
	assert_line --index 0 "{\"topic\":\"$t\",\"partitions\":3,\"replication_factor\":1,\"config\":{\"min.insync.replicas\":\"1\",\"retention.ms\":\"86400000\",\"segment.ms\":\"3600000\"},\"created\":false,\"altered\":false}"
	assert_line --index 1 --partial "\"created\":false,\"altered\":false}"
	# Another dead-letter retention: that topic alone changes.
	run --separate-stderr ot-relay topics create --config min.insync.replicas=1 --dlq-config retention.ms=1209600000 "$t" "$t.dlq"
	assert_success
	assert_line --index 0 --partial "\"created\":false,\"altered\":false}"
	assert_line --index 1 "{\"topic\":\"$t.dlq\",\"partitions\":3,\"replication_factor\":1,\"config\":{\"min.insync.replicas\":\"1\",\"retention.ms\":\"1209600000\"},\"created\":false,\"altered\":true}"
	echo "$stderr" | grep -q "topics: $t.dlq: retention.ms=1209600000 (was 2592000000)"
	# Refused, nothing changed: another replication factor (a reassignment), a quorum larger
	# than the topic's replicas, a setting Kafka does not know.
	run --separate-stderr ot-relay topics create --replication-factor 3 --config min.insync.replicas=2 "$t"
	assert_failure 78
	echo "$stderr" | grep -q "topic $t has replication factor 1, not the 3 asked"
	run --separate-stderr ot-relay topics create --config min.insync.replicas=2 "$t" "$t.dlq"
	assert_failure 78
	echo "$stderr" | grep -q "topic $t: min.insync.replicas=2 is more than its replication factor 1: producers with acks=all could never write to it"
	run --separate-stderr ot-relay topics create --config no.such.setting=1 "u.$RUNID"
	assert_failure 78
	echo "$stderr" | grep -q "creating topic u.$RUNID"
	run --separate-stderr ot-relay topics list "$t" "$t.dlq" "u.$RUNID"
	assert_failure 65
	assert_line --index 0 --partial "\"config\":{\"min.insync.replicas\":\"1\",\"retention.ms\":\"86400000\",\"segment.ms\":\"3600000\"}}"
	assert_line --index 1 --partial "\"config\":{\"min.insync.replicas\":\"1\",\"retention.ms\":\"1209600000\"}}"
	assert_line --index 2 "{\"topic\":\"u.$RUNID\",\"error\":\"unknown topic\"}"
}

@test "ot-relay topics: bad values and combinations are refused with 64" {
	for a in "topics" "topics drop" "topics create --partitions 0" "topics create --partitions x" \
		"topics create --replication-factor 0" "topics list --partitions 3" "--partitions 3" \
		"topics create --once" "topics create -O kafka" "topics create __consumer_offsets" "topics create a/b" \
		"topics create --config retention.ms" "topics create --config =1" "topics create --dlq-config x=" \
		"topics list --config a=b" "--config a=b" "topics create --replication-factor 1 --config min.insync.replicas=2" \
		"topics create --replication-factor 2 --dlq-config min.insync.replicas=3"; do
		run --separate-stderr ot-relay $a
		assert_failure 64
	done
	# Help, where a subcommand's options go too.
	for a in "topics -h" "topics create -h" "topics list --help" "migrate -h"; do
		run --separate-stderr ot-relay $a
		assert_success
		assert_line --index 0 --partial 'usage: ot-relay'
	done
}

@test "ot-relay: a consumer does not create its topics; it waits for them and says so" {
	topic="absent.$RUNID"
	run --separate-stderr timeout --preserve-status -s TERM 8 ot-relay -i "kafka:$topic" -O - -G "g-$RUNID"
	assert_success
	echo "$stderr" | grep -q "topic $topic does not exist (yet); create it with ot-relay topics create $topic"
	run --separate-stderr ot-relay topics list "$topic" "$topic.dlq"
	assert_failure 65
	assert_line --index 0 "{\"topic\":\"$topic\",\"error\":\"unknown topic\"}"
	assert_line --index 1 "{\"topic\":\"$topic.dlq\",\"error\":\"unknown topic\"}"
	# Once made, it is read without a restart.
	ot-relay topics create "$topic" "$topic.dlq" >/dev/null 2>&1
	timeout 60 ot-relay -i "kafka:$topic" -O - -G "h-$RUNID" -c 1 -o beginning \
		>"$BATS_TEST_TMPDIR/out" 2>"$BATS_TEST_TMPDIR/consumer.log" &
	event DELIVERY_UPDATED "$(uuid)" '{"status":"PREPARING"}' | ot-relay -i - -O "kafka:$topic" 2>/dev/null
	wait $!
	grep -q PREPARING "$BATS_TEST_TMPDIR/out"
}

@test "ot-relay: -F and OT_KAFKA_CONFIG read librdkafka properties from a file; -X wins; secrets stay out of logs" {
	topic="conf.$RUNID"
	event DELIVERY_UPDATED "$(uuid)" '{"status":"PREPARING"}' | ot-relay -i - -O "kafka:$topic" 2>/dev/null
	conf="$BATS_TEST_TMPDIR/kafka.properties"
	printf '# nothing listens there\nbootstrap.servers = 127.0.0.1:1\n' > "$conf"
	run --separate-stderr ot-relay -F "$conf" -i "kafka:$topic" -O - -G "g-$RUNID" -e
	assert_failure 69
	OT_KAFKA_CONFIG=$conf run --separate-stderr ot-relay -i "kafka:$topic" -O - -G "g-$RUNID" -e
	assert_failure 69
	run --separate-stderr ot-relay -F "$conf" -X "bootstrap.servers=$OT_KAFKA_BROKERS" -i "kafka:$topic" -O - -G "g-$RUNID" -e
	assert_success
	[ "${#lines[@]}" = 1 ]
	# SASL against a listener without it: refused, and the password is never printed.
	printf 'security.protocol=SASL_PLAINTEXT\nsasl.mechanism=PLAIN\nsasl.username=svc\nsasl.password=pw-%s\n' "$RUNID" > "$conf"
	run --separate-stderr ot-relay -F "$conf" -i "kafka:$topic" -O - -G "h-$RUNID" -e
	assert_failure 69
	refute grep -q "pw-$RUNID" <<<"$stderr"
	printf 'sasl.password=pw-%s\nno.such.property=1\n' "$RUNID" > "$conf"
	OT_KAFKA_CONFIG=$conf run --separate-stderr ot-relay -i "kafka:$topic" -O - -G "h-$RUNID" -e
	assert_failure 78
	echo "$stderr" | grep -q 'kafka property no.such.property'
	run --separate-stderr ot-relay -X "sasl.password=pw-$RUNID" -X "no.such.property=pw-$RUNID" -i "kafka:$topic" -O - -e
	assert_failure 78
	refute grep -q "pw-$RUNID" <<<"$stderr"
	printf 'sasl.password pw-%s\n' "$RUNID" > "$conf"
	run --separate-stderr ot-relay -F "$conf" -i - </dev/null
	assert_failure 78
	echo "$stderr" | grep -q "$conf:1: expected property=value"
	refute grep -q "pw-$RUNID" <<<"$stderr"
	run --separate-stderr ot-relay -F "$BATS_TEST_TMPDIR/missing" -i - </dev/null
	assert_failure 78
}

@test "ot-relay: a -F file that every user can read is used, with a warning that says how to fix it" {
	conf="$BATS_TEST_TMPDIR/kafka.properties"
	printf 'bootstrap.servers=%s\n' "$OT_KAFKA_BROKERS" > "$conf"
	chmod 644 "$conf"
	run --separate-stderr ot-relay topics list -F "$conf"
	assert_success
	echo "$stderr" | grep '"level":"warn"' | grep -qF "\"msg\":\"-F $conf can be read by every user of this machine, and may hold passwords: chmod o-rwx $conf\""
	chmod 640 "$conf"
	run --separate-stderr ot-relay topics list -F "$conf"
	assert_success
	refute grep -q 'every user' <<<"$stderr"
}

# A dead letter as replay --dry-run prints it: dead_letter ORIGIN_TOPIC [EXTRA_HEADERS_JSON]
dead_letter() {
	printf '{"topic":"%s.dlq","partition":0,"offset":0,"key":"k","headers":{%s"ot-dlq-topic":"%s","ot-dlq-error":"e"},"value":{"id":"x"}}\n' \
		"$1" "${2:+$2,}" "$1"
}

@test "ot-relay replay: a malformed ot-replay-count is a bad record, never a reset loop guard" {
	for c in -5 -1 abc 1.5 ' 2' 99999999999; do
		run --separate-stderr ot-relay replay --from - --dry-run < <(dead_letter "t.$RUNID" "\"ot-replay-count\":\"$c\"")
		assert_failure 65
		[ "${#lines[@]}" = 0 ]
		echo "$stderr" | grep -qF "ot-replay-count \\\"$c\\\": expected 0 to"
		echo "$stderr" | grep -q 'replay: 1 read, 0 printed, 0 outside the time window, 0 refused, 1 bad'
	done
	run --separate-stderr ot-relay replay --from - --dry-run < <(dead_letter "t.$RUNID" '"ot-replay-count":"2"')
	assert_success
	[ "${#lines[@]}" = 1 ]
}

@test "ot_in_stop_at_end: a run to the end reads only what the topic held when it looked (test_io against the broker)" {
	run env OT_TEST_KAFKA_BROKERS="$OT_KAFKA_BROKERS" "$ROOT/build/test/test_io"
	echo "$output"
	assert_success
	assert_output --partial '[       OK ] stop_at_end_reads_only_what_was_there'
	refute_output --partial FAILED
}

@test "ot-relay replay: records that fail again while it runs wait for the next replay; each poison record is replayed once" {
	topic="again.$RUNID"
	ot-relay topics create --partitions 1 "$topic" "$topic.dlq" >/dev/null 2>&1
	# Courier updates for orders nobody placed: they fail wherever they are applied.
	for i in $(seq 1 200); do event DELIVERY_UPDATED "$(uuid)" '{"status":"PREPARING"}'; done |
		ot-relay -i - -O "kafka:$topic" 2>/dev/null
	start_bg "$BATS_TEST_TMPDIR/consume.log" ot-consume -i "kafka:$topic" -G "g-$RUNID" --attempts 1
	dlq() { ot-relay -i "kafka:$topic.dlq" -O - -G "d-$RUNID-$RANDOM" -e 2>/dev/null | wc -l; }
	for i in $(seq 1 100); do [ "$(dlq)" = 200 ] && break; sleep 0.3; done
	[ "$(dlq)" = 200 ]
	run --separate-stderr ot-relay replay --from "$topic.dlq"
	assert_success
	echo "$stderr" | grep -q 'replay: 200 read, 200 replayed, 0 outside the time window, 0 refused, 0 bad'
	# The live consumer fails each again: one more dead letter each, and nothing goes round.
	for i in $(seq 1 100); do [ "$(dlq)" = 400 ] && break; sleep 0.3; done
	sleep 2
	[ "$(dlq)" = 400 ]
	ot-relay -i "kafka:$topic" -O - --meta -G "m-$RUNID" -e 2>/dev/null > "$BATS_TEST_TMPDIR/topic"
	[ "$(wc -l < "$BATS_TEST_TMPDIR/topic")" = 400 ]
	[ "$(grep -c '"ot-replay-count":"1"' "$BATS_TEST_TMPDIR/topic")" = 200 ]
}

@test "ot-relay replay: internal topics such as __consumer_offsets are refused as targets" {
	for t in __consumer_offsets __transaction_state 'a b' ..; do
		run --separate-stderr ot-relay replay --from - --dry-run < <(dead_letter "$t")
		assert_failure 65
		[ "${#lines[@]}" = 0 ]
		echo "$stderr" | grep -q 'refusing to replay there'
		echo "$stderr" | grep -q '0 printed, 0 outside the time window, 1 refused, 0 bad'
	done
	run --separate-stderr ot-relay replay --from - < <(dead_letter __consumer_offsets)
	assert_failure 65
	echo "$stderr" | grep -q '__consumer_offsets is an internal topic: refusing to replay there'
	echo "$stderr" | grep -q '0 replayed'
}

cdc_slot() { echo "t_${RUNID//-/_}"; }
drop_slot() { sql_orders "SELECT pg_drop_replication_slot('$(cdc_slot)') FROM pg_replication_slots WHERE slot_name = '$(cdc_slot)'" >/dev/null 2>&1 || true; }

@test "ot-relay --mode cdc: committed outbox rows stream from the WAL to Kafka, then leave the table" {
	slot=$(cdc_slot)
	run --separate-stderr ot-relay --mode cdc --slot "$slot" --once -O kafka
	assert_success
	[ "$(sql_orders "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '$slot'")" = 1 ]
	ot-relay --mode cdc --slot "$slot" -O kafka 2>"$BATS_TEST_TMPDIR/cdc.log" &
	pid=$!
	sleep 1
	a=$(place_order "a-$RUNID")
	b=$(place_order "b-$RUNID")
	lsn=$(sql_orders "SELECT pg_current_wal_lsn()")
	wait_sql orders "SELECT count(*) FROM outbox WHERE key IN ('$a', '$b')" 0 10
	wait_sql orders "SELECT confirmed_flush_lsn >= '$lsn' FROM pg_replication_slots WHERE slot_name = '$slot'" t 10
	kill -TERM "$pid"
	wait "$pid"
	ot-relay -i kafka:orders.events -O - --meta -G "g-$RUNID" -e 2>/dev/null > "$BATS_TEST_TMPDIR/topic"
	for id in "$a" "$b"; do
		grep "\"key\":\"$id\"" "$BATS_TEST_TMPDIR/topic" | grep -q '"ot-type":"ORDER_CREATED","traceparent":"00-'
	done
	drop_slot
}

@test "ot-relay --mode cdc: one transaction of 1,200 rows goes out in parts, each row once, each key in order" {
	slot=$(cdc_slot)
	topic="cdc-big.$RUNID"
	ot-relay topics create "$topic" >/dev/null 2>&1
	ot-relay --mode cdc --slot "$slot" --once -O kafka 2>/dev/null
	ot-relay --mode cdc --slot "$slot" -O kafka 2>"$BATS_TEST_TMPDIR/cdc.log" &
	pid=$!
	sleep 1
	sql_orders "INSERT INTO outbox (topic, key, event_id, type, payload) SELECT '$topic', 'k' || i % 3, gen_random_uuid(), 'T', '{\"n\":' || i || '}' FROM generate_series(1, 1200) i"
	lsn=$(sql_orders "SELECT pg_current_wal_lsn()")
	wait_sql orders "SELECT count(*) FROM outbox WHERE topic = '$topic'" 0 30
	wait_sql orders "SELECT confirmed_flush_lsn >= '$lsn' FROM pg_replication_slots WHERE slot_name = '$slot'" t 10
	kill -TERM "$pid"
	wait "$pid"
	ot-relay -i "kafka:$topic" -O - --meta -G "g-$RUNID" -e 2>/dev/null > "$BATS_TEST_TMPDIR/topic"
	[ "$(jq -r '.value.n' "$BATS_TEST_TMPDIR/topic" | sort -u | wc -l)" = 1200 ]
	[ "$(wc -l < "$BATS_TEST_TMPDIR/topic")" = 1200 ]
	# by offset, each key's rows come in the order they were inserted
	run bash -c "jq -r '[.key, .offset, .value.n] | @tsv' '$BATS_TEST_TMPDIR/topic' | sort -k1,1 -k2,2n |
		awk '\$1 == k && \$3 <= n { print \"out of order: \" \$0 } { k = \$1; n = \$3 }'"
	assert_success
	assert_output ''
	drop_slot
}

@test "ot-relay --mode cdc: killed mid-stream, it resumes from the confirmed LSN and loses nothing" {
	slot=$(cdc_slot)
	ot-relay --mode cdc --slot "$slot" --once -O kafka 2>/dev/null
	ot-relay --mode cdc --slot "$slot" -O kafka 2>"$BATS_TEST_TMPDIR/cdc1.log" &
	pid=$!
	for i in $(seq 1 40); do request "c-$RUNID-$i"; done | ot-place > "$BATS_TEST_TMPDIR/placed" 2>/dev/null &
	placing=$!
	sleep 0.3
	kill -KILL "$pid"
	wait "$placing"
	ot-relay --mode cdc --slot "$slot" -O kafka 2>"$BATS_TEST_TMPDIR/cdc2.log" &
	pid=$!
	wait_sql orders "SELECT count(*) FROM orders o JOIN outbox x ON x.key = o.id::text WHERE o.customer_id LIKE 'c-$RUNID-%'" 0 20
	kill -TERM "$pid"
	wait "$pid"
	ot-relay -i kafka:orders.events -O - --meta -G "g-$RUNID" -e 2>/dev/null > "$BATS_TEST_TMPDIR/topic"
	for id in $(sed -n 's/.*"order_id":"\([^"]*\)".*/\1/p' "$BATS_TEST_TMPDIR/placed"); do
		grep -q "\"key\":\"$id\".*\"ot-type\":\"ORDER_CREATED\"" "$BATS_TEST_TMPDIR/topic"
	done
	[ "$(wc -l < "$BATS_TEST_TMPDIR/placed")" = 40 ]
	drop_slot
}

@test "ot-relay --mode cdc: while the outbox is idle, heartbeats keep confirming so WAL is not held" {
	slot=$(cdc_slot)
	ot-relay --mode cdc --slot "$slot" -O kafka 2>"$BATS_TEST_TMPDIR/cdc.log" &
	pid=$!
	sleep 1
	# WAL written elsewhere in the cluster, nothing for the outbox
	sql_inventory "CREATE TEMP TABLE t AS SELECT g FROM generate_series(1, 1000) g; SELECT 1" >/dev/null
	sql_orders "SELECT pg_switch_wal()" >/dev/null
	lsn=$(sql_orders "SELECT pg_current_wal_lsn()")
	wait_sql orders "SELECT confirmed_flush_lsn >= '$lsn' FROM pg_replication_slots WHERE slot_name = '$slot'" t 30
	kill -TERM "$pid"
	wait "$pid"
	drop_slot
}

@test "ot-relay --mode: bad values and combinations are refused with 64" {
	run --separate-stderr ot-relay --mode push
	assert_failure 64
	run --separate-stderr ot-relay --mode cdc -i -
	assert_failure 64
	run --separate-stderr ot-relay --mode cdc --slot 'Bad-Slot' --once
	assert_failure 78
}

@test "ot-relay: two poll relays side by side share the outbox and keep each order's events in order" {
	drain_outboxes
	topic="order.$RUNID"
	# 100 orders, each with 5 events in a row: version 1..5 under one key
	for i in $(seq 1 100); do
		k=$(uuid)
		for v in 1 2 3 4 5; do
			echo "INSERT INTO outbox (topic, key, event_id, type, payload) VALUES ('$topic', '$k', gen_random_uuid(), 'T', '{\"v\":$v}');"
		done
	done | psql "$OT_ORDERS_DB" -Xq -v ON_ERROR_STOP=1
	ot-relay -O kafka --batch 7 2>"$BATS_TEST_TMPDIR/r1.log" &
	a=$!
	ot-relay -O kafka --batch 7 2>"$BATS_TEST_TMPDIR/r2.log" &
	b=$!
	wait_sql orders "SELECT count(*) FROM outbox" 0 30
	kill -TERM "$a" "$b"
	wait "$a" "$b"
	ot-relay -i "kafka:$topic" -O - --meta -G "g-$RUNID" -e 2>/dev/null |
		sed -n 's/.*"offset":\([0-9]*\).*"key":"\([^"]*\)".*"value":{"v":\([0-9]\)}.*/\2 \1 \3/p' > "$BATS_TEST_TMPDIR/seen"
	[ "$(wc -l < "$BATS_TEST_TMPDIR/seen")" -ge 500 ]
	# per key, in offset order, the versions never go back
	[ -z "$(sort -k1,1 -k2,2n "$BATS_TEST_TMPDIR/seen" | awk '$1 == k && $3 < v { print } { k = $1; v = $3 }')" ]
	[ "$(cut -d' ' -f1,3 "$BATS_TEST_TMPDIR/seen" | sort -u | wc -l)" = 500 ]
	# both did a share of the work
	grep -q 'relayed [1-9][0-9]* events' "$BATS_TEST_TMPDIR/r1.log"
	grep -q 'relayed [1-9][0-9]* events' "$BATS_TEST_TMPDIR/r2.log"
}

# Publishes the outbox rows of order $1 to Kafka by hand, leaving them in the table: what a relay
# killed between Kafka's acknowledgement and its DELETE leaves behind.
publish_behind_back() {
	sql_orders "SELECT payload FROM outbox WHERE key = '$1' ORDER BY id" | ot-relay -i - -O kafka:orders.events 2>/dev/null
}

count_on_topic() { # ORDER_ID: records of the order on orders.events
	ot-relay -i kafka:orders.events -O - --meta -G "n-$RUNID-$RANDOM" -e 2>/dev/null | grep -c "\"key\":\"$1\""
}

@test "ot-relay: rows already on Kafka when a relay starts are deleted, not published again (poll and cdc)" {
	drain_outboxes
	a=$(place_order "a-$RUNID")
	publish_behind_back "$a"
	[ "$(count_on_topic "$a")" = 1 ]
	run --separate-stderr ot-relay --once -O kafka
	assert_success
	echo "$stderr" | grep -q '"msg":"relay: 1 outbox rows were on Kafka already'
	[ "$(sql_orders "SELECT count(*) FROM outbox WHERE key = '$a'")" = 0 ]
	[ "$(count_on_topic "$a")" = 1 ]
	# cdc: the row is also in the WAL after the slot's position; it is replayed, found gone, skipped
	slot=$(cdc_slot)
	ot-relay --mode cdc --slot "$slot" --once -O kafka 2>/dev/null
	b=$(place_order "b-$RUNID")
	publish_behind_back "$b"
	run --separate-stderr ot-relay --mode cdc --slot "$slot" --once -O kafka
	assert_success
	[ "$(sql_orders "SELECT count(*) FROM outbox WHERE key = '$b'")" = 0 ]
	[ "$(count_on_topic "$b")" = 1 ]
	drop_slot
}

@test "ot-relay --mode cdc --drop-slot: refused while a relay streams from it, then drops it" {
	slot=$(cdc_slot)
	ot-relay --mode cdc --slot "$slot" -O kafka 2>"$BATS_TEST_TMPDIR/cdc.log" &
	pid=$!
	wait_sql orders "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '$slot' AND active" 1 20
	run --separate-stderr ot-relay --mode cdc --slot "$slot" --drop-slot
	assert_failure 69
	echo "$stderr" | grep -q 'stop its relay first'
	kill -TERM "$pid"
	wait "$pid"
	run --separate-stderr ot-relay --mode cdc --slot "$slot" --drop-slot
	assert_success
	echo "$stderr" | grep -q "replication slot $slot dropped"
	[ "$(sql_orders "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '$slot'")" = 0 ]
	run --separate-stderr ot-relay --mode cdc --slot "$slot" --drop-slot
	assert_success
	run --separate-stderr ot-relay --drop-slot
	assert_failure 64
}

@test "ot-relay: --http-addr serves /healthz, /readyz and /metrics: outbox pending rows and age, published events and ack time" {
	port=$(free_port)
	drain_outboxes
	id=$(place_order "m-$RUNID")
	# A row another session holds stays pending (the relay skips locked rows) until it lets go.
	psql "$OT_ORDERS_DB" -XAtq -c "BEGIN" -c "SELECT 1 FROM outbox WHERE key = '$id' FOR UPDATE" \
		-c "SELECT pg_sleep(7)" -c "COMMIT" >/dev/null &
	BG_PIDS+=($!)
	sleep 0.5
	start_bg "$BATS_TEST_TMPDIR/relay.log" ot-relay --db orders -O kafka --http-addr "127.0.0.1:$port"
	wait_health "$port"
	wait_ready "$port"
	for i in $(seq 1 40); do
		p=$(metric_of "$port" 'ot_outbox_pending_rows{db="orders"}')
		[ "${p:-0}" -ge 1 ] && break
		sleep 0.2
	done
	[ "$p" -ge 1 ]
	age=$(metric_of "$port" 'ot_outbox_oldest_age_seconds{db="orders"}')
	awk -v a="$age" 'BEGIN { exit !(a > 0 && a < 60) }'
	wait_sql orders "SELECT count(*) FROM outbox WHERE key = '$id'" 0 20
	[ "$(metric_of "$port" 'ot_relay_published_total{db="orders",topic="orders.events"}')" -ge 1 ]
	[ "$(metric_of "$port" 'ot_relay_ack_seconds_count{db="orders"}')" -ge 1 ]
	# the held row waited about 7 s between its commit and Kafka's acknowledgement
	[ "$(metric_of "$port" 'ot_relay_ack_seconds_bucket{db="orders",le="2.5"}')" -lt \
		"$(metric_of "$port" 'ot_relay_ack_seconds_bucket{db="orders",le="+Inf"}')" ]
	wait_metric "$port" 'ot_outbox_pending_rows{db="orders"}' 0 15
	[ "$(metric_of "$port" 'ot_outbox_oldest_age_seconds{db="orders"}')" = 0 ]
	[ "$(metric_of "$port" 'ot_build_info{tool="ot-relay",version="0.1.0"}')" = 1 ]
	promcheck "$port"
	stop_bg
	run --separate-stderr ot-relay --once --http-addr "127.0.0.1:$port"
	assert_success
	! grep -q 'health and metrics on' <<<"$stderr"
}

@test "ot-relay --mode cdc: /metrics shows the slot's retained WAL and unconfirmed lag in bytes, and ack times" {
	slot=$(cdc_slot)
	port=$(free_port)
	start_bg "$BATS_TEST_TMPDIR/cdc.log" ot-relay --mode cdc --slot "$slot" -O kafka --http-addr "127.0.0.1:$port"
	wait_health "$port"
	wait_ready "$port"
	a=$(place_order "a-$RUNID")
	wait_sql orders "SELECT count(*) FROM outbox WHERE key = '$a'" 0 20
	s="db=\"orders\",slot=\"$slot\""
	for i in $(seq 1 40); do
		retained=$(metric_of "$port" "ot_cdc_slot_retained_wal_bytes{$s}")
		[ -n "$retained" ] && break
		sleep 0.2
	done
	[ "$retained" -ge 0 ]
	[ "$(metric_of "$port" "ot_cdc_confirmed_lag_bytes{$s}")" -ge 0 ]
	[ "$(metric_of "$port" 'ot_relay_published_total{db="orders",topic="orders.events"}')" -ge 1 ]
	[ "$(metric_of "$port" 'ot_relay_ack_seconds_count{db="orders"}')" -ge 1 ]
	promcheck "$port"
	stop_bg
	drop_slot
}

@test "ot-relay: /readyz is 503 while its database does not answer" {
	port=$(free_port)
	pgp=$(free_port)
	proxy "$pgp" 127.0.0.1 "$(echo "$OT_ORDERS_DB" | sed -n 's/.*port=\([0-9]*\).*/\1/p')"
	start_bg "$BATS_TEST_TMPDIR/relay.log" ot-relay --db orders -O kafka --orders-db "$OT_ORDERS_DB port=$pgp" \
		--http-addr "127.0.0.1:$port"
	wait_health "$port"
	wait_ready "$port"
	kill "$PROXY_PID"
	sleep 1.1
	run curl -s -w '%{http_code}' "http://127.0.0.1:$port/readyz"
	assert_output "$(printf '{"status":"unavailable","error":"the orders database does not answer"}\n503')"
}
