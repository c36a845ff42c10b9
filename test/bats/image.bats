#!/usr/bin/env bats
# The container image (Containerfile, make image): Debian 13 built with podman from Debian's
# packages, a runtime FROM scratch; then the whole pipeline run from it, each tool in its own
# container on the host network, against the local stack, and its tools against a Redis that
# speaks TLS only. Needs podman, runc, debootstrap, openssl and redis-server (scripts/deps
# installs them). OT_IMAGE_BUILT=1 uses the image already built instead of building it again
# (a build takes minutes).
bats_require_minimum_version 1.5.0

setup_file() {
	local root
	root=$(cd "$BATS_TEST_DIRNAME/../.." && pwd)
	for t in podman runc debootstrap openssl redis-server; do
		command -v "$t" >/dev/null || { echo "$t is not installed (make deps)" >&2; return 1; }
	done
	if [ "${OT_IMAGE_BUILT:-}" = 1 ]; then
		return 0
	fi
	"$root/scripts/image" build > "$root/.run/image-build.log" 2>&1 ||
		{ tail -30 "$root/.run/image-build.log" >&2; return 1; }
}

setup() {
	load helpers
	eval "$("$ROOT/scripts/image" env)"
	VERSION=$(sed -n 's/^VERSION *= *//p' "$ROOT/Makefile")
	IMAGE=localhost/ordertrack:$VERSION
	CONTAINERS=()
	PODMAN_ARGS=()
	TLS_PID=
}

teardown() {
	local c
	# A failed test shows what each tool said.
	if [ -z "${BATS_TEST_COMPLETED:-}" ]; then
		for c in "${CONTAINERS[@]}"; do echo "== $c" >&2; podman logs "$c" 2>&1 | tail -15 >&2; done
	fi
	# SIGTERM first, as Kubernetes would: each tool finishes its batch and exits 0.
	for c in "${CONTAINERS[@]}"; do podman stop -t 15 "$c" >/dev/null 2>&1 || true; done
	for c in "${CONTAINERS[@]}"; do podman rm -f "$c" >/dev/null 2>&1 || true; done
	if [ -n "$TLS_PID" ]; then
		kill "$TLS_PID" 2>/dev/null || true
	fi
}

# As the Kubernetes pods run it: read-only root with no tmpfs, no capabilities, no new
# privileges.
RESTRICTED=(--read-only --read-only-tmpfs=false --cap-drop ALL --security-opt no-new-privileges)

# A tool from the image, on the host network, with the stack's settings: ot TOOL ARGS...
ot() {
	podman run --rm -i "${RESTRICTED[@]}" --network host --env 'OT_*' "${PODMAN_ARGS[@]}" "$IMAGE" "$@"
}

# A long-running tool in a container of its own: ot_bg NAME TOOL ARGS...
ot_bg() {
	local name="ot-$RUNID-$1"
	shift
	podman run -d --name "$name" "${RESTRICTED[@]}" --network host --env 'OT_*' "${PODMAN_ARGS[@]}" "$IMAGE" "$@" >/dev/null
	CONTAINERS+=("$name")
}

# The image's files as tar lists them (mode, owner, size, date, time, path), into $1.
image_files() {
	local c
	c=$(podman create "$IMAGE")
	podman export "$c" | tar -tvf - > "$1"
	podman rm "$c" >/dev/null
}

# The programs in a list of image_files: regular files with an x bit, libraries aside.
programs() {
	awk 'substr($1, 1, 1) == "-" && $1 ~ /x/ { sub(/^\.\//, "", $6); print $6 }' "$1" |
		grep -v -E '\.so(\.[0-9.]+)?$' | sort
}

# A Redis that speaks TLS only, on a free port, with a CA and a certificate for 127.0.0.1 (and
# no other name) made here, and a second CA that signed nothing of it. Sets TLS (the folder,
# mounted in containers at /tls), TLS_PORT and TLS_PID.
tls_redis() {
	TLS=$BATS_TEST_TMPDIR/tls
	mkdir -p "$TLS"
	local ec=(-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes)
	openssl req -x509 "${ec[@]}" -keyout "$TLS/ca.key" -out "$TLS/ca.crt" -days 2 -subj /CN=ordertrack-test-ca 2>/dev/null
	openssl req -x509 "${ec[@]}" -keyout "$TLS/other.key" -out "$TLS/other.crt" -days 2 -subj /CN=ordertrack-other-ca 2>/dev/null
	openssl req "${ec[@]}" -keyout "$TLS/server.key" -out "$TLS/server.csr" -subj /CN=127.0.0.1 2>/dev/null
	printf 'subjectAltName=IP:127.0.0.1\n' > "$TLS/san"
	openssl x509 -req -in "$TLS/server.csr" -CA "$TLS/ca.crt" -CAkey "$TLS/ca.key" -CAcreateserial \
		-out "$TLS/server.crt" -days 2 -extfile "$TLS/san" 2>/dev/null
	echo 'not a certificate' > "$TLS/junk.crt"
	# The tools run as 10001: they read the certificates, never the keys.
	chmod 0755 "$TLS"
	chmod 0644 "$TLS"/*.crt
	TLS_PORT=$(free_port)
	redis-server --port 0 --tls-port "$TLS_PORT" --tls-cert-file "$TLS/server.crt" \
		--tls-key-file "$TLS/server.key" --tls-ca-cert-file "$TLS/ca.crt" --tls-auth-clients no \
		--save '' --appendonly no --dir "$TLS" --logfile "$TLS/redis.log" >/dev/null 2>&1 3>&- &
	TLS_PID=$!
	local i
	for i in $(seq 1 50); do
		[ "$(tcli PING 2>/dev/null)" = PONG ] && return 0
		sleep 0.1
	done
	cat "$TLS/redis.log" >&2
	return 1
}

# redis-cli to the TLS Redis, checking its certificate.
tcli() { redis-cli --tls --cacert "$TLS/ca.crt" -p "$TLS_PORT" "$@"; }

@test "image: non-root, labelled, no HEALTHCHECK, each tool starts from its args" {
	run podman image inspect --format '{{.Config.User}}|{{json .Config.Entrypoint}}|{{json .Config.Cmd}}|{{json .Config.Healthcheck}}' "$IMAGE"
	assert_output '10001:10001|null|["ot-serve"]|null'
	run podman image inspect --format '{{index .Labels "org.opencontainers.image.version"}}|{{index .Labels "org.opencontainers.image.revision"}}' "$IMAGE"
	assert_output --regexp "^$VERSION\|$(git -C "$ROOT" rev-parse HEAD)(-dirty)?\$"
	run podman image inspect --format '{{index .Labels "org.opencontainers.image.source"}}' "$IMAGE"
	[ -n "$output" ]
	# When it was built (RFC 3339, UTC: the build's own time, not the base's), and under what
	# licence (an SPDX expression, the Makefile's LICENSE).
	run podman image inspect --format '{{index .Labels "org.opencontainers.image.created"}}' "$IMAGE"
	assert_output --regexp '^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$'
	local created built
	created=$(date -u -d "$output" +%s)
	built=$(podman image inspect --format '{{.Created.Unix}}' "$IMAGE")
	[ "$created" -le "$built" ]
	[ $((built - created)) -lt 3600 ]
	run podman image inspect --format '{{index .Labels "org.opencontainers.image.licenses"}}' "$IMAGE"
	assert_output "$(sed -n 's/^LICENSE *= *//p' "$ROOT/Makefile")"
	[ -n "$output" ]
	# Each tool starts straight from the args, as the Kubernetes manifests run them: every
	# library it loads is there.
	for t in ot-place ot-reserve ot-consume ot-relay ot-cache ot-serve ot-pay; do
		run podman run --rm "$IMAGE" "$t" -V
		assert_success
		assert_output "$VERSION"
	done
	run podman run --rm "$IMAGE" mawk '/^Uid:/ { print $2 }' /proc/self/status
	assert_output 10001
	run podman image inspect --format '{{.Size}}' "$IMAGE"
	echo "# image $IMAGE: $((output / 1000000)) MB" >&3
	[ "$output" -lt 100000000 ]
}

@test "image: no shell, package manager, perl, compiler or setuid file; what is left" {
	image_files "$BATS_TEST_TMPDIR/files"
	local paths="$BATS_TEST_TMPDIR/paths"
	awk '{ print $6 }' "$BATS_TEST_TMPDIR/files" | sed 's|^\./||; s|/$||' > "$paths"
	[ "$(wc -l < "$paths")" -gt 100 ]
	# No shell: the runtime has nothing to run one, and a container asked for one fails.
	run grep -E '^(usr/)?s?bin/(sh|bash|dash|rbash|busybox|ash|zsh|ksh|csh|tcsh)$' "$paths"
	assert_failure
	run -127 podman run --rm "$IMAGE" sh -c true
	assert_failure 127
	run -127 podman run --rm "$IMAGE" /bin/sh -c true
	assert_failure 127
	# No package manager, nor its state or sources (and so no build machine's mirror).
	run grep -E '^(usr/)?s?bin/(apt|apt-get|apt-cache|dpkg|dpkg-query|dpkg-deb)$|^etc/apt(/|$)|^var/lib/apt(/|$)|^var/lib/dpkg/status$|^var/lib/dpkg/info(/|$)' "$paths"
	assert_failure
	# No perl, no compiler, no headers, no sources.
	run grep -E '^(usr/)?bin/perl|/perl5?(/|$)|^usr/(local/)?share/perl|^usr/bin/(gcc|cc|make|ld|as|strip)(-|$)|^usr/include(/|$)|^src(/|$)' "$paths"
	assert_failure
	# No file with the setuid or setgid bit.
	run awk 'substr($1, 4, 1) ~ /[sS]/ || substr($1, 7, 1) ~ /[sS]/' "$BATS_TEST_TMPDIR/files"
	assert_output ''
	# The programs left (regular files with an x bit, libraries aside): the tools and mawk,
	# which runs ot-courier.
	run programs "$BATS_TEST_TMPDIR/files"
	assert_output "$(printf '%s\n' usr/bin/mawk usr/local/bin/ot-cache usr/local/bin/ot-consume usr/local/bin/ot-courier \
		usr/local/bin/ot-pay usr/local/bin/ot-place usr/local/bin/ot-relay usr/local/bin/ot-reserve usr/local/bin/ot-serve)"
	echo "# $(wc -l < "$paths") paths; programs: $(echo $output | sed 's|usr/[a-z/]*bin/||g')" >&3
	echo "# top directories: $(grep -c '^usr/lib/x86_64-linux-gnu/' "$paths") in usr/lib/x86_64-linux-gnu, $(grep -c '^usr/share/doc/' "$paths") in usr/share/doc (licences), $(grep -c '^var/lib/dpkg/status.d/' "$paths") package records" >&3
}

@test "image: its SBOM (SPDX 2.3) lists ordertrack and every Debian package in it, with versions" {
	local sbom="$ROOT/.run/image/ordertrack-$VERSION.spdx.json" c
	[ -s "$sbom" ]
	# The one beside the image is the one inside it.
	c=$(podman create "$IMAGE")
	podman cp "$c:/usr/share/doc/ordertrack/sbom.spdx.json" "$BATS_TEST_TMPDIR/inside.json"
	podman cp "$c:/var/lib/dpkg/status.d" "$BATS_TEST_TMPDIR/status.d"
	podman rm "$c" >/dev/null
	cmp "$sbom" "$BATS_TEST_TMPDIR/inside.json"
	run jq -r '[.spdxVersion, .dataLicense, .SPDXID, (.documentNamespace | test("^[a-z]+:")), (.creationInfo.created | test("Z$"))] | @tsv' "$sbom"
	assert_output "$(printf 'SPDX-2.3\tCC0-1.0\tSPDXRef-DOCUMENT\ttrue\ttrue')"
	# It describes ordertrack, at this version and revision, under the image's licence.
	run jq -r '.documentDescribes[0] as $d | .packages[] | select(.SPDXID == $d) | [.name, .versionInfo, .licenseDeclared, .sourceInfo] | @tsv' "$sbom"
	assert_output "$(printf 'ordertrack\t%s\t%s\trevision %s' "$VERSION" \
		"$(podman image inspect --format '{{index .Labels "org.opencontainers.image.licenses"}}' "$IMAGE")" \
		"$(podman image inspect --format '{{index .Labels "org.opencontainers.image.revision"}}' "$IMAGE")")"
	# Every package whose files are in the image, at the version installed, with its purl; and
	# nothing else but ordertrack and the CA bundle.
	local p v expected=() n=0
	for f in "$BATS_TEST_TMPDIR"/status.d/*; do
		p=$(sed -n 's/^Package: //p' "$f")
		v=$(sed -n 's/^Version: //p' "$f")
		[ "$p" = "$(basename "$f")" ]
		run jq -r --arg p "$p" '.packages[] | select(.name == $p) | [.versionInfo, .supplier, (.externalRefs[0].referenceLocator | startswith("pkg:deb/debian/" + $p + "@"))] | @tsv' "$sbom"
		assert_output "$(printf '%s\tOrganization: Debian\ttrue' "$v")"
		n=$((n + 1))
	done
	[ "$(jq '.packages | length' "$sbom")" = $((n + 2)) ]
	jq -e '.packages[] | select(.name == "ca-certificates")' "$sbom" >/dev/null
	# Among them the libraries the tools load, mawk, and glibc.
	for p in 'librdkafka1' 'libhiredis1\.1\.0' 'libpq5' 'libjansson4' 'libmicrohttpd12(t64)?' 'libnettle8(t64)?' \
		'libcurl4(t64)?' 'libssl3(t64)?' 'mawk' 'libc6'; do
		run jq -r --arg re "^$p\$" '[.packages[] | select(.name | test($re))] | length' "$sbom"
		assert_output 1
	done
	# Every relationship names packages of the document, and ordertrack depends on what it loads.
	run jq -r '[.packages[].SPDXID] as $ids | [.relationships[] | select((.spdxElementId | IN($ids[]) or . == "SPDXRef-DOCUMENT") and (.relatedSpdxElement | IN($ids[])) | not)] | length' "$sbom"
	assert_output 0
	run jq -r '[.relationships[] | select(.spdxElementId == "SPDXRef-Package-ordertrack")] | length' "$sbom"
	[ "$output" -ge 9 ]
	echo "# SBOM: $n Debian packages, $(jq '.relationships | length' "$sbom") relationships" >&3
}

@test "image: the build leaves the base and the image in podman's storage, and no build stage" {
	# Every image there has a name: no stage's or step's image left without one, and none of
	# them holds the compiler.
	run podman images -a --format '{{.Repository}}:{{.Tag}}'
	assert_success
	refute_output --partial '<none>'
	assert_line "$IMAGE"
	assert_line "localhost/debian:trixie-slim"
	local img
	for img in $(podman images -a --format '{{.ID}}'); do
		run podman image inspect --format '{{.RepoTags}}' "$img"
		[ "$output" != '[]' ]
	done
	[ "$(podman images -a -q | sort -u | wc -l)" = "$(podman images -q | sort -u | wc -l)" ]
}

@test "image: ot-courier runs from the image, on mawk" {
	run bash -c "echo 0b6c0000-0000-4000-8000-000000000001 | podman run --rm -i '$IMAGE' ot-courier -n 2"
	assert_success
	[ "${#lines[@]}" = 4 ]
	assert_line --index 3 --partial '"status":"DELIVERED"'
	# Event ids differ from run to run with the image's awk (mawk), or consumers skip them.
	local first=$output
	run bash -c "echo 0b6c0000-0000-4000-8000-000000000001 | podman run --rm -i '$IMAGE' ot-courier -n 2"
	[ "$(printf '%s\n%s\n' "$first" "$output" | sed 's/.*"id":"\([^"]*\)".*/\1/' | sort -u | wc -l)" = 8 ]
}

@test "image: orders placed, confirmed and delivered by the tools in restricted containers, read back over HTTP" {
	common_setup
	local sku="IMG-$RUNID" port=$((24000 + RANDOM % 8000)) id i body n c
	ot ot-relay topics create >/dev/null 2>&1
	printf '{"sku":"%s","qty":10}\n' "$sku" | ot ot-reserve stock 2>/dev/null
	ot_bg relay-orders ot-relay --db orders -O kafka
	ot_bg relay-inventory ot-relay --db inventory -O kafka
	ot_bg reserve ot-reserve -i "kafka:orders.events" -G "r-$RUNID" --http-addr "127.0.0.1:$((port + 1))"
	ot_bg consume ot-consume -i "kafka:inventory.events,delivery.updates" -G "c-$RUNID"
	# A new group starts at the end of each partition: no event goes out before both
	# consumers hold their partitions.
	for c in reserve consume; do
		for i in $(seq 1 150); do
			podman logs "ot-$RUNID-$c" 2>&1 | grep -q '"msg":"kafka: assigned' && break
			sleep 0.2
		done
	done
	sleep 1
	ot_bg serve ot-serve --http-addr "127.0.0.1:$port"
	for i in $(seq 1 3); do request "c-$RUNID-$i" "[{\"sku\":\"$sku\",\"qty\":2}]"; done |
		ot ot-place > "$BATS_TEST_TMPDIR/placed" 2>/dev/null
	[ "$(wc -l < "$BATS_TEST_TMPDIR/placed")" = 3 ]
	wait_sql orders "SELECT count(*) FROM orders WHERE customer_id LIKE 'c-$RUNID-%' AND status = 'CONFIRMED'" 3 90
	ot ot-courier -n 2 < "$BATS_TEST_TMPDIR/placed" | ot ot-relay -i - -O kafka:delivery.updates 2>/dev/null
	n=0
	for id in $(sed -n 's/.*"order_id":"\([^"]*\)".*/\1/p' "$BATS_TEST_TMPDIR/placed"); do
		for i in $(seq 1 300); do
			body=$(curl -s "http://127.0.0.1:$port/orders/$id" || true)
			[[ "$body" != *'"status":"DELIVERED"'* ]] || break
			sleep 0.2
		done
		echo "# GET /orders/$id from the ot-serve container: $body" >&3
		[[ "$body" == *"\"order_id\":\"$id\""* || "$body" == *"\"id\":\"$id\""* ]]
		[[ "$body" == *'"status":"DELIVERED"'* ]]
		n=$((n + 1))
	done
	[ "$n" = 3 ]
	[ "$(sql_inventory "SELECT available, reserved FROM stock WHERE sku = '$sku'")" = "4|6" ]
	# The containerised ot-serve answers its probes on the port it was given.
	[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/readyz")" = 200 ]
	# SIGTERM: every tool drains and exits 0, as a pod does on its grace period.
	for c in "${CONTAINERS[@]}"; do podman stop -t 20 "$c" >/dev/null; done
	for c in "${CONTAINERS[@]}"; do
		run podman inspect --format '{{.State.ExitCode}}' "$c"
		[ "$output" = 0 ] || { podman logs "$c" 2>&1 | tail -5 >&2; false; }
	done
}

@test "image: rediss:// to a Redis with TLS only: an order placed and consumed lands there, ot-serve reads and streams it" {
	common_setup
	tls_redis
	PODMAN_ARGS=(-v "$TLS:/tls:ro")
	local url="rediss://127.0.0.1:$TLS_PORT/0?cacert=/tls/ca.crt" id port i
	id=$(request "c-$RUNID" | OT_REDIS_URL=$url ot ot-place 2>"$BATS_TEST_TMPDIR/place.log" | sed -n 's/.*"order_id":"\([^"]*\)".*/\1/p')
	[ -n "$id" ] || { cat "$BATS_TEST_TMPDIR/place.log" >&2; false; }
	[ "$(tcli HGET "order:{$id}" status)" = PENDING ]
	# ot-serve, subscribed to the changes over TLS, with a live stream of the order open.
	port=$(free_port)
	OT_REDIS_URL=$url ot_bg serve ot-serve --http-addr "127.0.0.1:$port"
	wait_health "$port"
	for i in $(seq 1 50); do
		podman logs "ot-$RUNID-serve" 2>&1 | grep -q 'live streams subscribed' && break
		sleep 0.1
	done
	curl -sN --max-time 30 "http://127.0.0.1:$port/orders/$id/events" > "$BATS_TEST_TMPDIR/stream" 3>&- &
	local stream=$!
	sleep 0.5
	# Confirmed, then carried to the door: ot-consume writes each status through to Redis.
	{ event INVENTORY_RESERVED "$id"; echo "$id" | ot-courier -n 1; } |
		OT_REDIS_URL=$url ot ot-consume 2>"$BATS_TEST_TMPDIR/consume.log"
	[ "$(status_of "$id")" = DELIVERED ]
	[ "$(tcli HGET "order:{$id}" status)" = DELIVERED ]
	[ "$(tcli HGET "order:{$id}" version)" = "$(version_of "$id")" ]
	run grep -c '"level":"\(warn\|error\)"' "$BATS_TEST_TMPDIR/consume.log"
	assert_output 0
	# Each change reached the stream through the subscription.
	for i in $(seq 1 100); do
		grep -q '"status":"DELIVERED"' "$BATS_TEST_TMPDIR/stream" && break
		sleep 0.1
	done
	kill "$stream" 2>/dev/null || true
	run grep -o '"status":"[A-Z_]*"' "$BATS_TEST_TMPDIR/stream"
	assert_line '"status":"CONFIRMED"'
	assert_line '"status":"IN_TRANSIT"'
	assert_line '"status":"DELIVERED"'
	# A read is a hit in the TLS Redis, not the database.
	run curl -s -D "$BATS_TEST_TMPDIR/headers" "http://127.0.0.1:$port/orders/$id"
	assert_output --partial '"status":"DELIVERED"'
	grep -qi '^X-Cache: HIT' "$BATS_TEST_TMPDIR/headers"
	run curl -s "http://127.0.0.1:$port/healthz"
	assert_output --partial '"cache":"ok"'
	echo "# TLS Redis on port $TLS_PORT: order:{$id} $(tcli HGET "order:{$id}" status) v$(tcli HGET "order:{$id}" version)" >&3
}

@test "image: rediss:// refuses a server its CA did not sign (69) or whose certificate names another host, and a CA file it cannot load (78)" {
	common_setup
	tls_redis
	PODMAN_ARGS=(-v "$TLS:/tls:ro")
	local id port
	id=$(place_order "c-$RUNID")
	# Signed by another CA than the one given: no connection, the way an unreachable Redis is
	# none (69), and the log says why.
	OT_REDIS_URL="rediss://127.0.0.1:$TLS_PORT/0?cacert=/tls/other.crt" run --separate-stderr ot ot-cache invalidate "$id"
	assert_failure 69
	[[ "$stderr" == *'"level":"error"'*'Redis TLS handshake with rediss://127.0.0.1:'*'certificate verify failed'* ]]
	# The system's CAs did not sign it either.
	OT_REDIS_URL="rediss://127.0.0.1:$TLS_PORT/0" run --separate-stderr ot ot-cache invalidate "$id"
	assert_failure 69
	[[ "$stderr" == *'certificate verify failed'* ]]
	# The right CA, but the certificate is for 127.0.0.1, not localhost.
	OT_REDIS_URL="rediss://localhost:$TLS_PORT/0?cacert=/tls/ca.crt" run --separate-stderr ot ot-cache invalidate "$id"
	assert_failure 69
	[[ "$stderr" == *'certificate verify failed: hostname mismatch'* ]]
	# ot-consume applies the event to the database and writes nothing to that Redis.
	event INVENTORY_RESERVED "$id" > "$BATS_TEST_TMPDIR/reserved"
	OT_REDIS_URL="rediss://127.0.0.1:$TLS_PORT/0?cacert=/tls/other.crt" run --separate-stderr ot ot-consume < "$BATS_TEST_TMPDIR/reserved"
	assert_success
	[[ "$stderr" == *'"level":"warn"'*'certificate verify failed'* ]]
	[ "$(status_of "$id")" = CONFIRMED ]
	[ "$(tcli EXISTS "order:{$id}")" = 0 ]
	# ot-serve runs degraded, from the database, and says why.
	port=$(free_port)
	OT_REDIS_URL="rediss://127.0.0.1:$TLS_PORT/0?cacert=/tls/other.crt" ot_bg serve ot-serve --http-addr "127.0.0.1:$port"
	wait_health "$port"
	run curl -s "http://127.0.0.1:$port/orders/$id"
	assert_output --partial '"status":"CONFIRMED"'
	run curl -s "http://127.0.0.1:$port/healthz"
	assert_output --partial '"cache":"degraded"'
	run podman logs "ot-$RUNID-serve"
	assert_output --partial 'certificate verify failed'
	[ "$(tcli DBSIZE)" = 0 ]
	# A CA file that is not there, or holds no certificate, is bad configuration: each tool
	# exits 78 at start.
	local ca args
	for ca in missing.crt junk.crt; do
		for args in ot-consume ot-serve "ot-cache invalidate $id"; do
			# shellcheck disable=SC2086 # args is a tool and its arguments
			OT_REDIS_URL="rediss://127.0.0.1:$TLS_PORT/0?cacert=/tls/$ca" run --separate-stderr ot $args < /dev/null
			assert_failure 78
			[[ "$stderr" == *"Redis TLS: "*"/tls/$ca: "* ]]
		done
	done
}
