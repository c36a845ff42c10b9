#!/usr/bin/env bats
# ot-place against the real PostgreSQL and Redis.
bats_require_minimum_version 1.5.0

setup() {
	load helpers
	common_setup
}

@test "ot-place: an order is stored, its ORDER_CREATED is in the outbox, Redis says PENDING" {
	drain_outboxes
	run --separate-stderr ot-place <<<"$(request "c-$RUNID" '[{"sku":"SKU-A","qty":2},{"sku":"SKU-B","qty":1}]')"
	assert_success
	id=$(echo "$output" | sed -n 's/.*"order_id":"\([^"]*\)".*/\1/p')
	[ -n "$id" ]
	assert_output --partial '"status":"PENDING"'
	assert_output --partial '"items":[{"sku":"SKU-A","qty":2},{"sku":"SKU-B","qty":1}]'
	[ "$(sql_orders "SELECT status, version, customer_id FROM orders WHERE id = '$id'")" = "PENDING|1|c-$RUNID" ]
	[ "$(sql_orders "SELECT count(*) FROM order_items WHERE order_id = '$id'")" = 2 ]
	[ "$(sql_orders "SELECT type FROM outbox WHERE key = '$id'")" = ORDER_CREATED ]
	[ "$(rcli HGET "order:{$id}" status)" = PENDING ]
	[ "$(rcli HGET "order:{$id}" version)" = 1 ]
}

@test "ot-place: the same request_id twice creates one order" {
	req=$(request "c-$RUNID" '' "req-$RUNID")
	run --separate-stderr ot-place <<<"$req
$req"
	assert_success
	[ "${#lines[@]}" = 2 ]
	a=$(echo "${lines[0]}" | sed -n 's/.*"order_id":"\([^"]*\)".*/\1/p')
	b=$(echo "${lines[1]}" | sed -n 's/.*"order_id":"\([^"]*\)".*/\1/p')
	[ "$a" = "$b" ]
	[ "$(sql_orders "SELECT count(*) FROM orders WHERE customer_id = 'c-$RUNID'")" = 1 ]
	[ "$(sql_orders "SELECT count(*) FROM outbox WHERE key = '$a'")" -le 1 ]
	# and again in a second run
	run --separate-stderr ot-place <<<"$req"
	assert_success
	assert_output --partial "\"order_id\":\"$a\""
	[ "$(sql_orders "SELECT count(*) FROM orders WHERE customer_id = 'c-$RUNID'")" = 1 ]
}

@test "ot-place: a request_id reused with a different request is refused (65), the first order stands" {
	run --separate-stderr ot-place <<<"$(request "c-$RUNID" '' "req-$RUNID")
$(request "c-$RUNID" '[{"sku":"SKU-A","qty":7}]' "req-$RUNID")"
	assert_failure 65
	[ "${#lines[@]}" = 1 ]
	echo "$stderr" | grep -q 'line 2: request_id \\"req-'"$RUNID"'\\" was already used with a different request'
	[ "$(sql_orders "SELECT count(*) FROM orders WHERE customer_id = 'c-$RUNID'")" = 1 ]
	[ "$(sql_orders "SELECT sum(qty) FROM order_items i JOIN orders o ON o.id = i.order_id WHERE customer_id = 'c-$RUNID'")" = 1 ]
}

@test "ot-place: a malformed line among good ones exits 65, names the line, places the good ones" {
	run --separate-stderr ot-place <<<"$(request "c-$RUNID")
{\"customer_id\": oops
$(request "c-$RUNID")"
	assert_failure 65
	[ "${#lines[@]}" = 2 ]
	echo "$stderr" | grep -q '"level":"error".*line 2: not JSON'
	[ "$(sql_orders "SELECT count(*) FROM orders WHERE customer_id = 'c-$RUNID'")" = 2 ]
}

@test "ot-place: a request with a bad field is refused with the field's name" {
	run --separate-stderr ot-place <<<"$(request "c-$RUNID" '[{"sku":"SKU-A","qty":0}]')"
	assert_failure 65
	[ -z "$output" ]
	echo "$stderr" | grep -q 'line 1: field \\"items\[0\].qty\\"'
	run --separate-stderr ot-place <<<'{"items":[{"sku":"A","qty":1}],"address":"x"}'
	assert_failure 65
	echo "$stderr" | grep -q 'field \\"customer_id\\" is missing'
	[ "$(sql_orders "SELECT count(*) FROM orders WHERE customer_id = 'c-$RUNID'")" = 0 ]
}

@test "ot-place: PostgreSQL unreachable at start exits 69" {
	OT_ORDERS_DB='host=127.0.0.1 port=1 dbname=x connect_timeout=2' run --separate-stderr ot-place <<<"$(request "c-$RUNID")"
	assert_failure 69
	echo "$stderr" | grep -q 'cannot connect to PostgreSQL'
}

@test "ot-place: with Redis unreachable the order is still placed in the database" {
	OT_REDIS_URL=redis://127.0.0.1:1/0 run --separate-stderr ot-place <<<"$(request "c-$RUNID")"
	assert_success
	echo "$stderr" | grep -q '"level":"warn".*Redis'
	[ "$(sql_orders "SELECT status FROM orders WHERE customer_id = 'c-$RUNID'")" = PENDING ]
}

@test "ot-place: -h prints usage on stdout, a bad option exits 64" {
	run --separate-stderr ot-place -h
	assert_success
	assert_output --partial 'usage: ot-place'
	run --separate-stderr ot-place --no-such-option
	assert_failure 64
	[ -z "$output" ]
	echo "$stderr" | grep -q usage
}

@test "ot-place: -i reads a file; a missing file exits 65" {
	request "c-$RUNID" > "$BATS_TEST_TMPDIR/req.jsonl"
	run --separate-stderr ot-place -i "$BATS_TEST_TMPDIR/req.jsonl"
	assert_success
	assert_output --partial '"status":"PENDING"'
	run --separate-stderr ot-place -i "$BATS_TEST_TMPDIR/nope.jsonl"
	assert_failure 65
	echo "$stderr" | grep -q 'cannot open'
}

@test "ot-place: a batch places the good requests in input order, reports the bad ones, and a request_id repeated in it places once" {
	good() { request "c-$RUNID-$1" '' "${2:-}"; }
	{
		good 1
		good 2 "rid-$RUNID"
		echo '{"customer_id":"x","items":[],"address":"a"}' # no items
		good 3
		good 2 "rid-$RUNID"                                   # the same request again: the same order
		request "c-$RUNID-2" '[{"sku":"OTHER","qty":1}]' "rid-$RUNID" # the same request_id, another body
		good 4
	} > "$BATS_TEST_TMPDIR/in"
	run --separate-stderr ot-place < "$BATS_TEST_TMPDIR/in"
	[ "$status" -eq 65 ]
	echo "$stderr" | grep -q '"msg":"7 records: 4 placed, 1 already placed, 2 bad"'
	echo "$stderr" | grep -q 'line 3: field \\"items\\" must be a non-empty array'
	echo "$stderr" | grep -q "line 6: request_id \\\\\"rid-$RUNID\\\\\" was already used with a different request"
	[ "${#lines[@]}" = 5 ]
	[ "$(printf '%s\n' "${lines[@]}" | jq -r .customer_id | paste -sd,)" = "c-$RUNID-1,c-$RUNID-2,c-$RUNID-3,c-$RUNID-2,c-$RUNID-4" ]
	[ "$(echo "${lines[1]}" | jq -r .order_id)" = "$(echo "${lines[3]}" | jq -r .order_id)" ]
	[ "$(sql_orders "SELECT count(*) FROM orders WHERE customer_id LIKE 'c-$RUNID-%'")" = 4 ]
	# Each placed order as the database holds it, and PENDING in the cache.
	for l in "${lines[@]}"; do
		id=$(echo "$l" | jq -r .order_id)
		[ "$(sql_orders "SELECT count(*) FROM outbox WHERE key = '$id' AND type = 'ORDER_CREATED'")" = 1 ]
		[ "$(rcli HGET "order:{$id}" status)" = PENDING ]
		[ "$(echo "$l" | jq -c '{created_at, updated_at, items}')" = "$(sql_orders "SELECT json_build_object('created_at', to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), 'updated_at', to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), 'items', (SELECT json_agg(json_build_object('sku', sku, 'qty', qty) ORDER BY line) FROM order_items WHERE order_id = o.id)) FROM orders o WHERE id = '$id'" | jq -c .)" ]
	done
}

@test "ot-place: an order's payment source goes into ORDER_CREATED; a card number or a bad source is refused" {
	drain_outboxes
	local id
	id=$(printf '{"customer_id":"c-%s","items":[{"sku":"SKU-A","qty":1}],"address":"1 Test Street","payment":{"source":"tok_visa"}}\n' "$RUNID" |
		ot-place 2>/dev/null | sed -n 's/.*"order_id":"\([^"]*\)".*/\1/p')
	[ -n "$id" ]
	run sql_orders "SELECT payload::json->'data'->'payment' FROM outbox WHERE key = '$id'"
	assert_output '{"source":"tok_visa"}'
	for pay in '"tok_visa"' '{}' '{"source":""}' '{"source":"4242424242424242"}' '{"source":"tok visa"}' '{"source":7}'; do
		run --separate-stderr ot-place <<<"{\"customer_id\":\"b-$RUNID\",\"items\":[{\"sku\":\"SKU-A\",\"qty\":1}],\"address\":\"x\",\"payment\":$pay}"
		assert_failure 65
		echo "$stderr" | grep -q 'field \\"payment'
	done
	[ "$(sql_orders "SELECT count(*) FROM orders WHERE customer_id = 'b-$RUNID'")" = 0 ]
}
