// ws-read URL N [LAST_EVENT_ID]: opens a WebSocket (RFC 6455, by hand over node:net, so no
// package is needed), prints the handshake status line, then the first N text messages, one per
// line, and exits 0; exits 1 on a bad handshake or when N messages do not come within 10 s.
import net from "node:net";
import crypto from "node:crypto";

const [url, nArg, last] = process.argv.slice(2);
const want = Number(nArg || 1);
const u = new URL(url);
const key = crypto.randomBytes(16).toString("base64");
const sock = net.connect(Number(u.port || 80), u.hostname);
let buf = Buffer.alloc(0), shook = false, got = 0;
const timer = setTimeout(() => { console.error(`timed out after ${got} messages`); process.exit(1); }, 10000);

sock.on("connect", () => {
	sock.write(`GET ${u.pathname}${u.search} HTTP/1.1\r\nHost: ${u.host}\r\nUpgrade: websocket\r\n` +
		`Connection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n` +
		(last ? `Last-Event-ID: ${last}\r\n` : "") + "\r\n");
});
sock.on("data", (d) => {
	buf = Buffer.concat([buf, d]);
	if (!shook) {
		const end = buf.indexOf("\r\n\r\n");
		if (end < 0) return;
		const head = buf.subarray(0, end).toString();
		console.log(head.split("\r\n")[0]);
		const accept = crypto.createHash("sha1").update(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest("base64");
		if (!/^HTTP\/1\.1 101/.test(head) || !head.includes(`Sec-WebSocket-Accept: ${accept}`)) {
			console.error(head);
			process.exit(1);
		}
		shook = true;
		buf = buf.subarray(end + 4);
	}
	while (buf.length >= 2) {
		let len = buf[1] & 0x7f, off = 2;
		if (len === 126) { if (buf.length < 4) return; len = buf.readUInt16BE(2); off = 4; }
		else if (len === 127) { if (buf.length < 10) return; len = Number(buf.readBigUInt64BE(2)); off = 10; }
		if (buf.length < off + len) return;
		const op = buf[0] & 0x0f, payload = buf.subarray(off, off + len);
		buf = buf.subarray(off + len);
		if (op === 1) {
			console.log(payload.toString());
			if (++got === want) {
				// a masked close frame, as a client must send
				sock.end(Buffer.from([0x88, 0x80, 1, 2, 3, 4]));
				clearTimeout(timer);
				return;
			}
		} else if (op === 8) {
			console.error("closed by the server");
			process.exit(got === want ? 0 : 1);
		}
	}
});
sock.on("error", (e) => { console.error(e.message); process.exit(1); });
