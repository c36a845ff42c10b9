#!/usr/bin/env bats
# The tracking page (ot-serve GET /) in a real headless Chromium, driven by test/browser/track.mjs
# while ot-consume moves a real order. Needs node and /usr/bin/chromium: missing, the tests fail.
bats_require_minimum_version 1.5.0

setup_file() {
	local dir
	dir=$(cd "$BATS_TEST_DIRNAME/../browser" && pwd)
	command -v node >/dev/null || { echo "node is not installed (Debian: apt-get install nodejs npm)" >&2; return 1; }
	[ -x "${CHROMIUM:-/usr/bin/chromium}" ] || { echo "no Chromium at ${CHROMIUM:-/usr/bin/chromium} (Debian: apt-get install chromium)" >&2; return 1; }
	if [ ! -d "$dir/node_modules/playwright-core" ]; then
		npm ci --prefix "$dir" --no-audit --no-fund >&2 || { echo "npm ci in $dir failed" >&2; return 1; }
	fi
}

setup() {
	load helpers
	common_setup
	PORT=$(free_port)
	BASE="http://127.0.0.1:$PORT"
	SHOTS="$ROOT/.run/artifacts"
	mkdir -p "$SHOTS"
}

teardown() {
	stop_bg
}

serve() { # starts ot-serve on $PORT, waits for /healthz
	start_bg "$BATS_TEST_TMPDIR/serve.log" env OT_HTTP_ADDR="127.0.0.1:$PORT" ot-serve
	for i in $(seq 1 50); do curl -sf "$BASE/healthz" >/dev/null && return 0; sleep 0.1; done
	cat "$BATS_TEST_TMPDIR/serve.log" >&2
	return 1
}

@test "ot-serve page: a status change applied by ot-consume shows on the tracking page within one second" {
	serve
	id=$(place_order "c-$RUNID")
	[ -n "$id" ]
	# an order paid by card, delivered while its payment is only authorised (check h)
	paid=$(place_order "p-$RUNID")
	printf '%s\n' "$(event INVENTORY_RESERVED "$paid" '{"payment":{"source":"tok_visa"},"amount":2500}')" \
		"$(event PAYMENT_AUTHORIZED "$paid" '{"amount":2500,"currency":"usd"}')" \
		"$(event DELIVERY_UPDATED "$paid" '{"status":"PREPARING"}')" "$(event DELIVERY_UPDATED "$paid" '{"status":"IN_TRANSIT"}')" \
		"$(event DELIVERY_UPDATED "$paid" '{"status":"DELIVERED"}')" | ot-consume 2>/dev/null
	run env PAID_ORDER="$paid" node "$ROOT/test/browser/track.mjs" "$BASE" "$id" "$SHOTS/tracking-page.png"
	printf '# %s\n' "${lines[@]}" >&3
	assert_success
	assert_line --regexp '^ok a: the page shows PENDING .* #conn is "live"'
	assert_line --regexp '^ok b: CONFIRMED showed [0-9]+ ms after ot-consume exited \(limit 1000 ms\)$'
	assert_line --regexp '^ok c: .*path of 3 points, courier shown, ETA ".*in [0-9]+ min"$'
	assert_line --regexp '^ok d: .*left it at IN_TRANSIT version 6'
	assert_line --regexp '^ok e: without EventSource the next position showed in [0-9]+ ms by polling \(#conn "poll"'
	assert_line --regexp '^ok f: DELIVERED showed in [0-9]+ ms .*#conn "done" on both'
	assert_line "ok g: screenshot saved to $SHOTS/tracking-page.png"
	assert_line --regexp '^ok h: "Paid by card: authorised \$25\.00" while live, then "Paid by card: captured \$25\.00" and #conn "done"$'
	assert_line 'ok no page errors or CSP violations'
	refute_line --partial 'not ok'
	[ -s "$SHOTS/tracking-page.png" ]
	[ "$(sql_orders "SELECT status, version FROM orders WHERE id = '$id'")" = "DELIVERED|8" ]
}

@test "ot-serve page: without EventSource the page falls back to polling" {
	serve
	id=$(place_order "c-$RUNID")
	[ -n "$id" ]
	run node "$ROOT/test/browser/track.mjs" "$BASE" "$id" "$SHOTS/tracking-page-polling.png" --poll
	printf '# %s\n' "${lines[@]}" >&3
	assert_success
	assert_line --regexp '^ok a: without EventSource, .* shows PENDING \(version 1\), #conn "poll"'
	assert_line --regexp '^ok b: each change showed by polling within 3000 ms'
	assert_line --regexp '^ok d: [0-9]+ stale poll answers .* left the page at IN_TRANSIT version 4$'
	assert_line --regexp '^ok f: DELIVERED showed by polling [0-9]+ ms after .*#conn "done"'
	assert_line 'ok no page errors or CSP violations'
	[ -s "$SHOTS/tracking-page-polling.png" ]
}
