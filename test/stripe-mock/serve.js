// serve.js: stripe-stateful-mock on 127.0.0.1 only (its own cli.js listens on every address).
//   node test/stripe-mock/serve.js PORT
"use strict";
const log = require("loglevel");
const { createExpressApp } = require("stripe-stateful-mock");

const port = +process.argv[2];
if (!(port > 0 && port < 65536)) {
	console.error("usage: node serve.js PORT");
	process.exit(64);
}
log.setDefaultLevel(process.env.LOG_LEVEL || "warn");
const server = createExpressApp().listen(port, "127.0.0.1", () => {
	console.error(`stripe-stateful-mock on 127.0.0.1:${port}`);
});
server.on("error", (e) => {
	console.error(`stripe-stateful-mock: ${e.message}`);
	process.exit(69);
});
// Its state is in memory only: nothing to flush.
process.on("SIGTERM", () => process.exit(0));
