// An independent gRPC client of ordertrack's services, on Node's @grpc/grpc-js, reading
// proto/ordertrack.proto and proto/health.proto as any client would.
//   node client.mjs track ADDR ORDER_ID [AFTER_VERSION] [--key KEY] [--deadline-ms N]
//        [--cancel-after N]
//   (every command: --traceparent TP sends W3C trace context as metadata)
//     prints each OrderStatus as one JSON line, then "status CODE DETAILS" once the call ends
//     (--cancel-after N: the client cancels after N messages).
//   node client.mjs health ADDR [SERVICE]
//     prints "SERVING" or "NOT_SERVING", or "status CODE DETAILS".
//   node client.mjs report ADDR FILE [--key KEY] [--drop-after N]
//     streams the CourierUpdate objects of FILE (one JSON object a line) on one Report call,
//     then prints the ReportSummary as JSON and "status CODE DETAILS"; --drop-after N cancels
//     the call half a second after its Nth update instead of ending it.
//   node client.mjs payment ADDR ORDER_ID [--key KEY]
//     ordertrack.Payment/GetPayment: prints the PaymentInfo as JSON, then "status CODE DETAILS".
//   node client.mjs refund ADDR ORDER_ID AMOUNT REASON [REQUEST_ID] [--key KEY]
//     ordertrack.Payment/Refund: prints the RefundReceipt as JSON, then "status CODE DETAILS".
//   node client.mjs unknown ADDR
//     calls a method the server does not have; prints "status CODE DETAILS".
//   node client.mjs many ADDR ORDER_ID STREAMS
//     opens STREAMS Track streams on one channel and prints "open N" once all have their first
//     message, then, for each later change, "got VERSION N"; ends when all streams end.
import grpc from '@grpc/grpc-js';
import protoLoader from '@grpc/proto-loader';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import fs from 'node:fs';

const here = path.dirname(fileURLToPath(import.meta.url));
const protoDir = path.join(here, '..', '..', 'proto');
const def = protoLoader.loadSync(['ordertrack.proto', 'health.proto'], {
  includeDirs: [protoDir], keepCase: true, longs: String, enums: String, defaults: true,
});
const pkg = grpc.loadPackageDefinition(def);
const codeName = Object.fromEntries(Object.entries(grpc.status).map(([k, v]) => [v, k]));

const args = process.argv.slice(2);
const opt = (name) => {
  const i = args.indexOf(name);
  if (i < 0) return undefined;
  const v = args[i + 1];
  args.splice(i, 2);
  return v;
};
const key = opt('--key');
const traceparent = opt('--traceparent');
const deadlineMs = opt('--deadline-ms');
const cancelAfter = opt('--cancel-after');
const dropAfter = opt('--drop-after');
const [cmd, addr, ...rest] = args;

function meta() {
  const md = new grpc.Metadata();
  if (key !== undefined) md.set('authorization', `Bearer ${key}`);
  if (traceparent !== undefined) md.set('traceparent', traceparent);
  return md;
}
function callOpts() {
  return deadlineMs ? { deadline: new Date(Date.now() + Number(deadlineMs)) } : {};
}
function ended(err) {
  const code = err ? codeName[err.code] : 'OK';
  console.log(`status ${code} ${err ? err.details : ''}`.trimEnd());
}
// A stream's end, once, whichever way it ended.
function onStatus(call, fn) {
  call.on('error', () => {}); // told by 'status' as well
  call.on('status', (s) => fn(s.code === grpc.status.OK ? null : s));
}

if (cmd === 'track') {
  const client = new pkg.ordertrack.Delivery(addr, grpc.credentials.createInsecure());
  const [orderId, after] = rest;
  const call = client.Track({ order_id: orderId, after_version: after || '0' }, meta(), callOpts());
  let n = 0;
  call.on('data', (m) => {
    console.log(JSON.stringify(m));
    if (cancelAfter && ++n >= Number(cancelAfter)) call.cancel();
  });
  onStatus(call, (err) => { ended(err); client.close(); });
} else if (cmd === 'health') {
  const client = new pkg.grpc.health.v1.Health(addr, grpc.credentials.createInsecure());
  client.Check({ service: rest[0] || '' }, meta(), callOpts(), (err, res) => {
    if (err) ended(err); else console.log(res.status);
    client.close();
  });
} else if (cmd === 'report') {
  const client = new pkg.ordertrack.Delivery(addr, grpc.credentials.createInsecure());
  const lines = fs.readFileSync(rest[0], 'utf8').split('\n').filter((l) => l.trim());
  const call = client.Report(meta(), callOpts(), (err, sum) => {
    if (sum) console.log(JSON.stringify(sum));
    ended(err);
    client.close();
  });
  let i = 0;
  const more = () => {
    while (i < lines.length) {
      if (dropAfter && i >= Number(dropAfter)) { setTimeout(() => call.cancel(), 500); return; }
      if (!call.write(JSON.parse(lines[i++]))) { call.once('drain', more); return; }
    }
    call.end();
  };
  more();
} else if (cmd === 'unknown') {
  const client = new grpc.Client(addr, grpc.credentials.createInsecure());
  client.makeUnaryRequest('/ordertrack.Delivery/Nope', (x) => x, (x) => x, Buffer.alloc(0), meta(), callOpts(),
    (err) => { ended(err); client.close(); });
} else if (cmd === 'many') {
  const [orderId, streams] = rest;
  const client = new pkg.ordertrack.Delivery(addr, grpc.credentials.createInsecure());
  const want = Number(streams);
  const seen = new Map();
  let first = 0, open = want;
  for (let i = 0; i < want; i++) {
    const call = client.Track({ order_id: orderId, after_version: '0' }, meta(), callOpts());
    let got = 0;
    call.on('data', (m) => {
      if (got++ === 0) { if (++first === want) console.log(`open ${want}`); return; }
      const c = (seen.get(m.version) || 0) + 1;
      seen.set(m.version, c);
      if (c === want) console.log(`got ${m.version} ${c}`);
    });
    const done = (err) => {
      if (err) console.log(`stream ${i} status ${codeName[err.code]}`);
      if (--open === 0) client.close();
    };
    onStatus(call, done);
  }
} else if (cmd === 'payment' || cmd === 'refund') {
  const client = new pkg.ordertrack.Payment(addr, grpc.credentials.createInsecure());
  const done = (err, res) => {
    if (res) console.log(JSON.stringify(res));
    ended(err);
    client.close();
  };
  if (cmd === 'payment') client.GetPayment({ order_id: rest[0] }, meta(), callOpts(), done);
  else client.Refund({ order_id: rest[0], amount: rest[1], reason: rest[2], request_id: rest[3] || '' }, meta(),
    callOpts(), done);
} else {
  console.error('usage: client.mjs track|health|report|payment|refund|unknown|many ADDR ...');
  process.exit(64);
}
