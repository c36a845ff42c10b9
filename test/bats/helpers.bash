# Shared by every .bats file: the real stack's settings come from scripts/check (ot-stack env).
load '/usr/lib/bats/bats-support/load.bash'
load '/usr/lib/bats/bats-assert/load.bash'

ROOT=$(cd "$BATS_TEST_DIRNAME/../.." && pwd)
export PATH="$ROOT/bin:$ROOT/scripts:$PATH"

common_setup() {
	: "${OT_ORDERS_DB:?run through make check, or eval \"\$(scripts/ot-stack env)\" first}"
	: "${OT_INVENTORY_DB:?}" "${OT_PAYMENTS_DB:?}" "${OT_REDIS_URL:?}" "${OT_KAFKA_BROKERS:?}"
	# Unique names per test, so tests share one stack without seeing each other's data.
	RUNID="t$$-${BATS_TEST_NUMBER}-$RANDOM"
	export RUNID
	# Long-running tools listen on their default ports unless told: tests that want a
	# listener pass --http-addr with a port of free_port.
	export OT_HTTP_ADDR=
	# ot-serve's gRPC on a port the kernel picks, unless a test names one.
	export OT_GRPC_ADDR=127.0.0.1:0
}

# A port in 24000-32000 that nothing listens on (below the ephemeral range, clear of the stacks).
free_port() {
	local p
	while :; do
		p=$((24000 + RANDOM % 8000))
		(exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return 0; }
	done
}
# Something accepts connections on 127.0.0.1:PORT: port_open PORT
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# Waits until http://127.0.0.1:PORT/healthz answers 200: wait_health PORT
wait_health() {
	local i
	for ((i = 0; i < 100; i++)); do
		curl -sf "http://127.0.0.1:$1/healthz" >/dev/null && return 0
		sleep 0.1
	done
	echo "nothing answered /healthz on port $1" >&2
	return 1
}
# Waits until /readyz on PORT answers 200 (a consumer may still be joining its group)
wait_ready() {
	local i
	for ((i = 0; i < 50; i++)); do
		curl -sf "http://127.0.0.1:$1/readyz" >/dev/null && return 0
		sleep 0.2
	done
	curl -s "http://127.0.0.1:$1/readyz" >&2
	return 1
}
# A consumer on PORT is up and has joined its group: /healthz, then /readyz answers exactly
# {"status":"ready"} with 200: assert_serving PORT
assert_serving() {
	wait_health "$1"
	wait_ready "$1"
	run curl -s -w '%{http_code}' "http://127.0.0.1:$1/readyz"
	assert_output "$(printf '{"status":"ready"}\n200')"
}
# One sample's value from /metrics: metric_of PORT 'name{labels}'
metric_of() { curl -s "http://127.0.0.1:$1/metrics" | awk -v m="$2" '$1 == m { print $2 }'; }
# Waits until a sample has the value: wait_metric PORT 'name{labels}' VALUE [SECONDS]
wait_metric() {
	local i got limit=${4:-20}
	for ((i = 0; i < limit * 5; i++)); do
		got=$(metric_of "$1" "$2")
		[ "$got" = "$3" ] && return 0
		sleep 0.2
	done
	echo "waited ${limit}s for $2 = $3 on port $1; last got: ${got:-nothing}" >&2
	return 1
}
# /metrics from PORT through promtool check metrics (naming, types, help); fails on any complaint.
promcheck() {
	local out
	out=$(curl -s "http://127.0.0.1:$1/metrics" | promtool check metrics 2>&1) || { echo "$out" >&2; return 1; }
	[ -z "$out" ] || { echo "$out" >&2; return 1; }
}
# A TCP proxy from 127.0.0.1:PORT to HOST:TPORT in the background, its pid in PROXY_PID:
# proxy PORT HOST TPORT. Killing it takes the service away from whoever connected through it.
proxy() {
	python3 "$ROOT/test/tools/tcp-proxy.py" "$@" &
	PROXY_PID=$!
	BG_PIDS+=($PROXY_PID)
	local i
	for ((i = 0; i < 50; i++)); do
		(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
		sleep 0.1
	done
	return 1
}

# psql against the orders, inventory or payments database: sql_orders "SELECT ..."
sql_orders() { psql "$OT_ORDERS_DB" -XAtq -F '|' -v ON_ERROR_STOP=1 -c "$1"; }
sql_inventory() { psql "$OT_INVENTORY_DB" -XAtq -F '|' -v ON_ERROR_STOP=1 -c "$1"; }
sql_payments() { psql "$OT_PAYMENTS_DB" -XAtq -F "|" -v ON_ERROR_STOP=1 -c "$1"; }

redis_port() { echo "$OT_REDIS_URL" | sed -n 's|redis://[^:]*:\([0-9]*\).*|\1|p'; }
rcli() { redis-cli -p "$(redis_port)" "$@"; }

# An order request line for customer $1 with items JSON $2 (default one SKU-A).
request() {
	local items=${2:-'[{"sku":"SKU-A","qty":1}]'}
	printf '{"customer_id":"%s","items":%s,"address":"1 Test Street"%s}\n' "$1" "$items" \
		"${3:+,\"request_id\":\"$3\"}"
}

# A fresh uuid.
uuid() { cat /proc/sys/kernel/random/uuid; }

# An envelope: event TYPE ORDER_ID [DATA_JSON] [ID]
event() {
	printf '{"id":"%s","type":"%s","order_id":"%s","ts":"2026-11-24T18:00:00.000Z","source":"test","data":%s}\n' \
		"${4:-$(uuid)}" "$1" "$2" "${3:-{\}}"
}

# Places one order and prints its id: place_order CUSTOMER [ITEMS]
place_order() {
	request "$1" "${2:-}" | ot-place 2>/dev/null | sed -n 's/.*"order_id":"\([^"]*\)".*/\1/p'
}

# Loads stock: stock SKU QTY
stock() { printf '{"sku":"%s","qty":%d}\n' "$1" "$2" | ot-reserve stock 2>/dev/null; }

# Drains both outboxes so a test starts with only its own events.
drain_outboxes() {
	ot-relay --db orders --once >/dev/null 2>&1
	ot-relay --db inventory --once >/dev/null 2>&1
}

status_of() { sql_orders "SELECT status FROM orders WHERE id = '$1'"; }
version_of() { sql_orders "SELECT version FROM orders WHERE id = '$1'"; }

# Waits until a SQL query prints the expected value: wait_sql orders|inventory QUERY EXPECTED [SECONDS]
wait_sql() {
	local db=$1 q=$2 want=$3 limit=${4:-30} i got
	for ((i = 0; i < limit * 5; i++)); do
		got=$("sql_$db" "$q")
		[ "$got" = "$want" ] && return 0
		sleep 0.2
	done
	echo "waited ${limit}s for [$q] = $want; last got: $got" >&2
	return 1
}

# Starts a background process, logging to a file; stop_bg stops all of them.
BG_PIDS=()
start_bg() { # logfile command...
	local log=$1
	shift
	"$@" 2>"$log" &
	BG_PIDS+=($!)
}
stop_bg() {
	if [ ${#BG_PIDS[@]} -gt 0 ]; then
		kill -TERM "${BG_PIDS[@]}" 2>/dev/null || true
		wait "${BG_PIDS[@]}" 2>/dev/null || true
	fi
	BG_PIDS=()
}

# Orders with a whole history on a topic of their own, as the relay would have put it there:
# order_history TOPIC PREFIX. Four orders: two DELIVERED, one CANCELLED, one CONFIRMED; their
# ids in $BATS_TEST_TMPDIR/$PREFIX.ids.
order_history() {
	local topic=$1 p=$2 log="$BATS_TEST_TMPDIR/$2.events" i
	drain_outboxes
	stock "$p-$RUNID" 10
	for i in 1 2 3 4; do place_order "$p-$RUNID-$i" "[{\"sku\":\"$p-$RUNID\",\"qty\":1}]"; done > "$BATS_TEST_TMPDIR/$p.ids"
	ot-relay --once 2>/dev/null | tee "$log" | ot-reserve 2>/dev/null
	ot-relay --db inventory --once 2>/dev/null | ot-consume 2>/dev/null
	head -2 "$BATS_TEST_TMPDIR/$p.ids" | ot-courier -n 2 | ot-consume 2>/dev/null
	event ORDER_CANCELLED "$(sed -n 3p "$BATS_TEST_TMPDIR/$p.ids")" | ot-consume 2>/dev/null
	ot-relay --once 2>/dev/null >> "$log"
	ot-relay -i "$log" -O "kafka:$topic" 2>/dev/null
}

# The cache's keys matching PATTERN, sorted, from the Redis of OT_REDIS_URL (every master when it
# is the stack's Redis Cluster): cache_keys PATTERN
cache_keys() {
	local p ports
	if [ "$OT_REDIS_URL" = "${OT_REDIS_CLUSTER_URL:-}" ]; then
		p=$(echo "$OT_REDIS_CLUSTER_URL" | sed -n 's|redis://[^:]*:\([0-9]*\).*|\1|p')
		ports="$p $((p + 1)) $((p + 2))"
	else
		ports=$(redis_port)
	fi
	for p in $ports; do redis-cli -p "$p" --scan --pattern "$1"; done | sort
}

# Every key of the cache gone: on the one Redis, or on every master of the cluster.
flush_cache() {
	local p
	if [ "$OT_REDIS_URL" = "${OT_REDIS_CLUSTER_URL:-}" ]; then
		p=$(echo "$OT_REDIS_CLUSTER_URL" | sed -n 's|redis://[^:]*:\([0-9]*\).*|\1|p')
		for p in "$p" $((p + 1)) $((p + 2)); do redis-cli -p "$p" FLUSHALL >/dev/null; done
	else
		rcli FLUSHALL >/dev/null
	fi
}

# After a FLUSHALL and a replay of order_history's topic: the cache holds exactly one entry per
# order of the topic, under its own key, at the database's status and version.
assert_cache_restored() { # PREFIX
	local id
	run cache_keys 'order:*'
	assert_output "$(sed 's/.*/order:{&}/' "$BATS_TEST_TMPDIR/$1.ids" | sort)"
	while read -r id; do
		run redis-cli -c -u "$OT_REDIS_URL" HMGET "order:{$id}" status version
		assert_output "$(sql_orders "SELECT status || chr(10) || version FROM orders WHERE id = '$id'")"
	done < "$BATS_TEST_TMPDIR/$1.ids"
}

# At a failed test's teardown, the last LINES (default 10) of each log it left in its temp
# dir, on stderr; nothing after a test that passed. Always returns 0.
show_logs() {
	if [ -n "${BATS_TEST_COMPLETED:-}" ] || [ ! -d "${BATS_TEST_TMPDIR:-}" ]; then return 0; fi
	for f in "$BATS_TEST_TMPDIR"/*.log; do
		[ -e "$f" ] || continue
		echo "--- $(basename "$f")"
		tail -n "${1:-10}" "$f"
	done >&2
	return 0
}

# The shell block of a Markdown FILE marked <!-- MARK: NAME --> on the line before its ```sh,
# indented or not, as written there (dedented): doc_block FILE MARK NAME.
doc_block() {
	python3 - "$1" "$2" "$3" <<-'EOF'
	import re, sys, textwrap
	path, mark, name = sys.argv[1:]
	text = open(path).read()
	m = re.search(r"<!-- %s: %s -->[ \t]*\n[ \t]*```sh\n(.*?)\n[ \t]*```" % (re.escape(mark), re.escape(name)),
	              text, re.S)
	if not m:
	    sys.exit("%s has no block marked %s: %s" % (path, mark, name))
	print(textwrap.dedent(m.group(1)))
	EOF
}

# test/tools/http-faults.py in front of the payment processor (OT_PAY_URL), with RULEs:
# faults RULE... (its URL in FAULTS_URL)
faults() {
	local port i
	port=$(free_port)
	start_bg "$BATS_TEST_TMPDIR/faults.log" python3 "$ROOT/test/tools/http-faults.py" "$port" "$OT_PAY_URL" "$@"
	for ((i = 0; i < 50; i++)); do
		port_open "$port" && break
		sleep 0.1
	done
	FAULTS_URL=http://127.0.0.1:$port
	port_open "$port"
}
