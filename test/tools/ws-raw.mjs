// ws-raw: WebSocket clients that misbehave on purpose, by hand over node:net.
//   ws-raw.mjs reset URL N        N upgrade requests, each reset (RST) right after it is sent;
//                                 exits 0 when all were sent
//   ws-raw.mjs frame URL HEX [ORIGIN]
//                                 the handshake (with Origin: ORIGIN if given), then the bytes
//                                 HEX; prints the status line, then "close CODE" for the server's
//                                 close frame (or "close none") and "eof" once the server hangs
//                                 up; exits 0 (at once after a status other than 101), or 1
//                                 when nothing ends within 5 s
import net from "node:net";
import crypto from "node:crypto";

const [mode, url, arg, origin] = process.argv.slice(2);
const u = new URL(url);
const port = Number(u.port || 80);

function request() {
	const key = crypto.randomBytes(16).toString("base64");
	return `GET ${u.pathname}${u.search} HTTP/1.1\r\nHost: ${u.host}\r\nUpgrade: websocket\r\n` +
		`Connection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n` +
		(origin ? `Origin: ${origin}\r\n` : "") + "\r\n";
}

function reset(n) {
	let done = 0;
	const one = () => {
		const sock = net.connect(port, u.hostname);
		sock.on("error", () => {});
		sock.on("connect", () => {
			sock.write(request(), () => {
				sock.resetAndDestroy();
				if (++done === n)
					process.exit(0);
				one();
			});
		});
	};
	one();
}

function frame(hex) {
	const sock = net.connect(port, u.hostname);
	let buf = Buffer.alloc(0), shook = false, closeCode = "none";
	const timer = setTimeout(() => { console.log("timeout"); process.exit(1); }, 5000);
	sock.on("connect", () => sock.write(request()));
	sock.on("data", (d) => {
		buf = Buffer.concat([buf, d]);
		if (!shook) {
			const end = buf.indexOf("\r\n\r\n");
			if (end < 0) return;
			const status = buf.subarray(0, end).toString().split("\r\n")[0];
			console.log(status);
			if (!/^HTTP\/1\.1 101/.test(status))
				process.exit(0);
			shook = true;
			buf = buf.subarray(end + 4);
			sock.write(Buffer.from(hex, "hex"));
		}
		while (buf.length >= 2) {
			let len = buf[1] & 0x7f, off = 2;
			if (len === 126) { if (buf.length < 4) return; len = buf.readUInt16BE(2); off = 4; }
			else if (len === 127) { if (buf.length < 10) return; len = Number(buf.readBigUInt64BE(2)); off = 10; }
			if (buf.length < off + len) return;
			const op = buf[0] & 0x0f, payload = buf.subarray(off, off + len);
			buf = buf.subarray(off + len);
			if (op === 8)
				closeCode = payload.length >= 2 ? String(payload.readUInt16BE(0)) : "empty";
			else if (op === 10)
				console.log(`pong ${payload.toString()}`);
		}
	});
	sock.on("error", () => {});
	sock.on("close", () => {
		clearTimeout(timer);
		if (shook) {
			console.log(`close ${closeCode}`);
			console.log("eof");
		}
		process.exit(0);
	});
}

if (mode === "reset")
	reset(Number(arg));
else if (mode === "frame")
	frame(arg);
else {
	console.error("usage: ws-raw.mjs reset URL N | frame URL HEX [ORIGIN]");
	process.exit(64);
}
