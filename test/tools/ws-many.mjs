// ws-many URL N MARK: opens N WebSockets to URL at once (RFC 6455 by hand over node:net, as
// ws-read does), prints "open N" once every one has its 101 and a first text message, then
// "got N" once every one has had a text message containing MARK, closes them all with a masked
// close frame and exits 0. Exits 1, saying how far it got, when that takes over 20 s.
import net from "node:net";
import crypto from "node:crypto";

const [url, nArg, mark] = process.argv.slice(2);
const n = Number(nArg);
const u = new URL(url);
let open = 0, got = 0, closed = 0;
const socks = [];
const timer = setTimeout(() => { console.log(`timed out: open ${open} got ${got} of ${n}`); process.exit(1); }, 20000);

function stream() {
	const key = crypto.randomBytes(16).toString("base64");
	const sock = net.connect(Number(u.port || 80), u.hostname);
	let buf = Buffer.alloc(0), shook = false, first = false, hit = false;
	socks.push(sock);
	sock.on("connect", () => sock.write(`GET ${u.pathname} HTTP/1.1\r\nHost: ${u.host}\r\nUpgrade: websocket\r\n` +
		`Connection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`));
	sock.on("data", (d) => {
		buf = Buffer.concat([buf, d]);
		if (!shook) {
			const end = buf.indexOf("\r\n\r\n");
			if (end < 0) return;
			const head = buf.subarray(0, end).toString();
			if (!/^HTTP\/1\.1 101/.test(head)) { console.log(head.split("\r\n")[0]); process.exit(1); }
			shook = true;
			buf = buf.subarray(end + 4);
		}
		while (buf.length >= 2) {
			let len = buf[1] & 0x7f, off = 2;
			if (len === 126) { if (buf.length < 4) return; len = buf.readUInt16BE(2); off = 4; }
			if (buf.length < off + len) return;
			const op = buf[0] & 0x0f, text = buf.subarray(off, off + len).toString();
			buf = buf.subarray(off + len);
			if (op !== 1) continue;
			if (!first && (first = true) && ++open === n) console.log(`open ${n}`);
			if (!hit && text.includes(mark) && (hit = true) && ++got === n) {
				console.log(`got ${n}`);
				for (const s of socks) s.end(Buffer.from([0x88, 0x80, 1, 2, 3, 4]));
			}
		}
	});
	sock.on("close", () => { if (++closed === n) { clearTimeout(timer); process.exit(got === n ? 0 : 1); } });
	sock.on("error", () => {});
}
for (let i = 0; i < n; i++) stream();
