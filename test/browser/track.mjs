#!/usr/bin/env node
// Drives the ot-serve tracking page in headless Chromium while ot-consume moves a real order
// through its states, and checks what a customer would see.
//
//   node track.mjs BASE_URL ORDER_ID SCREENSHOT [--poll]
//   (or BASE_URL, ORDER_ID, SCREENSHOT in the environment)
//
// The order must be PENDING. ot-consume (OT_CONSUME, else from PATH) needs OT_ORDERS_DB and
// OT_REDIS_URL. One line per check on stdout ("ok ..." / "not ok ..."); exit 1 on the first
// failure, 2 on a usage error. Without --poll it runs the whole journey (checks a-g) on a page
// using Server-Sent Events, with a second, EventSource-less page for the polling fallback;
// with --poll only the polling page, from PENDING to DELIVERED. With PAID_ORDER in the
// environment (an order paid by card, authorised and DELIVERED at version 5), check h: its
// page shows the payment in words and stays live until the capture, which ends it.
import { spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import { mkdirSync } from "node:fs";
import { dirname } from "node:path";
import { performance } from "node:perf_hooks";
import { chromium } from "playwright-core";

const args = process.argv.slice(2).filter((a) => !a.startsWith("--"));
const POLL_ONLY = process.argv.includes("--poll");
const BASE = (args[0] || process.env.BASE_URL || "").replace(/\/+$/, "");
const ORDER = args[1] || process.env.ORDER_ID || "";
const SHOT = args[2] || process.env.SCREENSHOT || "";
const CONSUME = process.env.OT_CONSUME || "ot-consume";
const PAID_ORDER = process.env.PAID_ORDER || "";
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const LIVE_MS = 1000;  // a change must reach a live (SSE) page within this
const POLL_MS = 3000;  // and a polling page (2 s interval) within this

if (!BASE || !ORDER || !SHOT) {
  console.error("usage: track.mjs BASE_URL ORDER_ID SCREENSHOT [--poll]");
  process.exit(2);
}

let browser = null;
const pageErrors = [];

async function fail(msg) {
  console.log(`not ok ${msg}`);
  for (const e of pageErrors) console.log(`#   ${e}`);
  if (browser) await browser.close().catch(() => {});
  process.exit(1);
}
const ok = (msg) => console.log(`ok ${msg}`);

// A whole run must not hang a CI job.
setTimeout(() => fail("the run took over 50 s"), 50000).unref();

// Envelope lines through ot-consume's stdin; resolves with performance.now() at its exit.
function run(line, what) {
  return new Promise((resolve, reject) => {
    const p = spawn(CONSUME, [], { stdio: ["pipe", "ignore", "pipe"] });
    let err = "";
    p.stderr.on("data", (b) => { err += b; });
    p.on("error", (e) => reject(new Error(`cannot run ${CONSUME}: ${e.message}`)));
    p.on("exit", (code) => {
      const t = performance.now();
      if (code === 0) resolve(t);
      else reject(new Error(`${CONSUME} exited ${code} for ${what}: ${err.trim().split("\n").pop()}`));
    });
    p.stdin.end(line + "\n");
  });
}
async function consume(type, data = {}, order = ORDER) {
  const line = JSON.stringify({ id: randomUUID(), type, order_id: order, ts: new Date().toISOString(), source: "track.mjs", data });
  try {
    return { t: await run(line, type), line };
  } catch (e) {
    return fail(e.message);
  }
}
const delivery = (status, extra = {}) => consume("DELIVERY_UPDATED", { status, ...extra });

// What the page shows, read in the page.
const state = (page) => page.evaluate(() => {
  const s = document.getElementById("status"), v = document.getElementById("ver");
  const pts = (document.getElementById("path").getAttribute("points") || "").trim();
  return {
    status: s.dataset.status, label: s.textContent, version: Number(v.dataset.version),
    conn: document.getElementById("conn").className, connText: document.getElementById("conn").textContent.trim(),
    points: pts ? pts.split(/\s+/).length : 0,
    courier: document.getElementById("courier").getAttribute("visibility"),
    eta: document.getElementById("eta").hidden ? "" : document.getElementById("eta").textContent.trim(),
    steps: [...document.querySelectorAll("#steps li")].map((li) => `${li.dataset.step}:${li.className}`).join(" "),
    versions: window.__versions || [], conns: window.__conns || [], url: location.pathname + location.search,
  };
});

// Waits until the page shows `status` at `version` or later; returns ms since `since`.
async function shows(page, status, version, since, limit, what) {
  try {
    await page.waitForFunction(([st, v]) => {
      const s = document.getElementById("status"), ver = Number(document.getElementById("ver").dataset.version);
      return s.dataset.status === st && ver >= v;
    }, [status, version], { timeout: limit + 4000, polling: "raf" });
  } catch (e) {
    const s = await state(page).catch(() => ({}));
    await fail(`${what}: the page did not show ${status} (version ${version}) within ${limit + 4000} ms; it shows ${s.status} version ${s.version}, #conn ${s.conn}`);
  }
  const ms = Math.max(0, Math.round(performance.now() - since));
  if (ms > limit) await fail(`${what}: ${status} showed ${ms} ms after ot-consume exited (limit ${limit} ms)`);
  return ms;
}

async function connIs(page, cls, what, timeout = 5000) {
  try {
    await page.waitForFunction((c) => document.getElementById("conn").className === c, cls, { timeout });
  } catch (e) {
    const s = await state(page);
    await fail(`${what}: #conn has class "${s.conn}" ("${s.connText}"), wanted "${cls}"`);
  }
}

// Records every version and connection state a page ever shows, for the "never backwards" check.
const RECORD = () => {
  window.__versions = []; window.__conns = [];
  document.addEventListener("DOMContentLoaded", () => {
    const ver = document.getElementById("ver"), conn = document.getElementById("conn");
    new MutationObserver(() => {
      const v = Number(ver.dataset.version);
      if (window.__versions[window.__versions.length - 1] !== v) window.__versions.push(v);
    }).observe(ver, { attributes: true, attributeFilter: ["data-version"] });
    new MutationObserver(() => {
      if (window.__conns[window.__conns.length - 1] !== conn.className) window.__conns.push(conn.className);
    }).observe(conn, { attributes: true, attributeFilter: ["class"] });
  });
};
// Keeps a handle on the page's EventSources, so a stale event can be injected into one.
const KEEP_ES = () => {
  if (!window.EventSource) return;
  const ES = window.EventSource;
  window.__es = [];
  window.EventSource = class extends ES { constructor(...a) { super(...a); window.__es.push(this); } };
};
const NO_ES = () => { delete window.EventSource; };

async function open(ctx, url, scripts) {
  const page = await ctx.newPage();
  for (const s of scripts) await page.addInitScript(s);
  page.on("pageerror", (e) => pageErrors.push(`page error: ${e.message}`));
  page.on("console", (m) => {
    if (m.type() === "error" && /Content Security Policy|Refused to/i.test(m.text())) pageErrors.push(`CSP: ${m.text()}`);
  });
  const r = await page.goto(url, { waitUntil: "domcontentloaded" });
  if (!r || r.status() !== 200) await fail(`GET ${url} answered ${r && r.status()}`);
  return page;
}

function monotonic(s, what) {
  for (let i = 1; i < s.versions.length; i++)
    if (s.versions[i] < s.versions[i - 1]) return fail(`${what}: the version went backwards: ${s.versions.join(" → ")}`);
}

async function shoot(page, path) {
  mkdirSync(dirname(path), { recursive: true });
  await page.screenshot({ path, fullPage: true });
}

const soon = (ms) => new Promise((r) => setTimeout(r, ms));
const eta = (min) => new Date(Date.now() + min * 60000).toISOString();
const ROUTE = [[52.5200, 13.4050], [52.5213, 13.4068], [52.5226, 13.4079], [52.5241, 13.4103], [52.5249, 13.4126]];

try {
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ["--no-sandbox"] });
} catch (e) {
  await fail(`cannot start Chromium at ${CHROMIUM}: ${e.message.split("\n")[0]}`);
}
const ctxOpts = { viewport: { width: 1000, height: 900 }, locale: "en-GB" };

if (POLL_ONLY) {
  // The fallback on its own: no EventSource at all, the order's whole journey by polling.
  const ctx = await browser.newContext(ctxOpts);
  const page = await open(ctx, `${BASE}/#${ORDER}`, [RECORD, NO_ES]);
  await shows(page, "PENDING", 1, performance.now(), 5000, "a");
  await connIs(page, "poll", "a");
  let s = await state(page);
  if (s.url !== `/?order=${ORDER}`) await fail(`a: the URL is ${s.url}, wanted /?order=${ORDER}`);
  ok(`a: without EventSource, #${ORDER.slice(0, 8)}… shows PENDING (version 1), #conn "poll" (${s.connText}), URL ${s.url}`);
  const ms = [];
  let v = 1;
  for (const [st, send] of [["CONFIRMED", () => consume("INVENTORY_RESERVED")], ["PREPARING", () => delivery("PREPARING")],
    ["IN_TRANSIT", () => delivery("IN_TRANSIT", { lat: ROUTE[0][0], lon: ROUTE[0][1], eta: eta(20) })]]) {
    const { t } = await send();
    ms.push(`${st} ${await shows(page, st, ++v, t, POLL_MS, "b")} ms`);
  }
  ok(`b: each change showed by polling within ${POLL_MS} ms of ot-consume's exit: ${ms.join(", ")}`);
  // A stale answer (an older version, as from a lagging replica or cache) must not win.
  let served = 0;
  await page.route(`**/orders/${ORDER}`, (r) => {
    served++;
    r.fulfill({ status: 200, contentType: "application/json", headers: { "Cache-Control": "no-store" },
      body: JSON.stringify({ order_id: ORDER, status: "CONFIRMED", version: 2, updated_at: new Date().toISOString() }) });
  });
  for (let i = 0; i < 70 && served < 2; i++) await soon(100);
  await page.unroute(`**/orders/${ORDER}`);
  s = await state(page);
  if (served < 2) await fail(`d: the page did not poll while a stale answer was served (${served} requests in 7 s)`);
  if (s.status !== "IN_TRANSIT" || s.version !== 4) await fail(`d: after ${served} stale answers (CONFIRMED, version 2) the page shows ${s.status} version ${s.version}`);
  ok(`d: ${served} stale poll answers (CONFIRMED, version 2) left the page at IN_TRANSIT version 4`);
  const { t } = await delivery("DELIVERED");
  const d = await shows(page, "DELIVERED", 5, t, POLL_MS, "f");
  await connIs(page, "done", "f");
  s = await state(page);
  await monotonic(s, "f");
  ok(`f: DELIVERED showed by polling ${d} ms after ot-consume's exit, #conn "done"; versions shown ${s.versions.join(" → ")}`);
  await shoot(page, SHOT);
  ok(`g: screenshot saved to ${SHOT}`);
} else {
  // a. A customer opens the link: current state, live.
  const ctx = await browser.newContext(ctxOpts);
  const page = await open(ctx, `${BASE}/?order=${ORDER}`, [RECORD, KEEP_ES]);
  await shows(page, "PENDING", 1, performance.now(), 5000, "a");
  await connIs(page, "live", "a");
  let s = await state(page);
  ok(`a: the page shows PENDING ("${s.label}", version ${s.version}) and #conn is "live" (${s.connText})`);

  // b. One change, timed from ot-consume's exit to the page showing it.
  let r = await consume("INVENTORY_RESERVED");
  const first = await shows(page, "CONFIRMED", 2, r.t, LIVE_MS, "b");
  ok(`b: CONFIRMED showed ${first} ms after ot-consume exited (limit ${LIVE_MS} ms)`);

  // c. Preparing, then the courier: three positions, a path of three points, the ETA.
  const lat = [];
  r = await delivery("PREPARING");
  lat.push(`PREPARING ${await shows(page, "PREPARING", 3, r.t, LIVE_MS, "c")} ms`);
  for (let i = 0; i < 3; i++) {
    r = await delivery("IN_TRANSIT", { lat: ROUTE[i][0], lon: ROUTE[i][1], eta: eta(25 - 2 * i) });
    lat.push(`IN_TRANSIT#${i + 1} ${await shows(page, "IN_TRANSIT", 4 + i, r.t, LIVE_MS, "c")} ms`);
  }
  try {
    await page.waitForFunction(() => (document.getElementById("path").getAttribute("points") || "").trim().split(/\s+/).length === 3 &&
      document.getElementById("courier").getAttribute("visibility") === "visible" && !document.getElementById("eta").hidden, null, { timeout: 2000 });
  } catch (e) {
    s = await state(page);
    await fail(`c: wanted a 3-point path, a visible courier and an ETA; got ${s.points} points, courier ${s.courier}, ETA "${s.eta}"`);
  }
  s = await state(page);
  if (!/in \d+ min/.test(s.eta)) await fail(`c: the ETA reads "${s.eta}", wanted a time and "in N min"`);
  ok(`c: ${lat.join(", ")}; path of ${s.points} points, courier shown, ETA "${s.eta}"`);
  await shoot(page, SHOT.replace(/(\.png)?$/, "-in-transit.png"));

  // d. Nothing stale moves the page back: a duplicate envelope, a late one for a passed state,
  //    and an old event replayed into the page's own stream.
  await run(r.line, "the duplicate").catch((e) => fail(`d: ${e.message}`));
  await consume("INVENTORY_RESERVED");
  const replayed = await page.evaluate((id) => {
    const es = (window.__es || []).filter((e) => e.readyState === 1).pop();
    if (!es) return false;
    for (const [status, version] of [["PENDING", 1], ["CONFIRMED", 2], ["IN_TRANSIT", 6]])
      es.dispatchEvent(new MessageEvent("status", { data: JSON.stringify({ order_id: id, status, version, updated_at: new Date().toISOString() }), lastEventId: String(version) }));
    return true;
  }, ORDER);
  if (!replayed) await fail("d: the page has no open EventSource to replay old events into");
  await soon(700);
  s = await state(page);
  if (s.status !== "IN_TRANSIT" || s.version !== 6 || s.points !== 3)
    await fail(`d: after a duplicate, a late event and replayed old ones the page shows ${s.status} version ${s.version} with ${s.points} points`);
  await monotonic(s, "d");
  ok(`d: a duplicate envelope, a late INVENTORY_RESERVED and replayed versions 1, 2, 6 left it at IN_TRANSIT version 6 (3 points)`);

  // e. The polling fallback: a second customer whose browser has no EventSource, opened by #ID.
  const ctx2 = await browser.newContext(ctxOpts);
  const poller = await open(ctx2, `${BASE}/#${ORDER}`, [RECORD, NO_ES]);
  await shows(poller, "IN_TRANSIT", 6, performance.now(), 5000, "e");
  await connIs(poller, "poll", "e");
  s = await state(poller);
  if (s.url !== `/?order=${ORDER}`) await fail(`e: the URL is ${s.url}, wanted /?order=${ORDER}`);
  r = await delivery("IN_TRANSIT", { lat: ROUTE[3][0], lon: ROUTE[3][1], eta: eta(19) });
  const [polled, live7] = await Promise.all([shows(poller, "IN_TRANSIT", 7, r.t, POLL_MS, "e"),
    shows(page, "IN_TRANSIT", 7, r.t, LIVE_MS, "e (live page)")]);
  s = await state(poller);
  if (s.conn !== "poll") await fail(`e: the polling page's #conn is "${s.conn}", wanted "poll"`);
  ok(`e: without EventSource the next position showed in ${polled} ms by polling (#conn "poll", URL ${s.url}); the live page took ${live7} ms`);

  // f. Delivered: final on both pages, streams closed.
  r = await delivery("DELIVERED");
  const [done, donePoll] = await Promise.all([shows(page, "DELIVERED", 8, r.t, LIVE_MS, "f"),
    shows(poller, "DELIVERED", 8, r.t, POLL_MS, "f (polling page)")]);
  await connIs(page, "done", "f");
  await connIs(poller, "done", "f (polling page)");
  s = await state(page);
  await monotonic(s, "f");
  await monotonic(await state(poller), "f (polling page)");
  if (s.conns.includes("poll") || s.conns.includes("retry")) await fail(`f: the live page left SSE on the way: #conn went ${s.conns.join(" → ")}`);
  if (!/DELIVERED:done$/.test(s.steps)) await fail(`f: the steps read ${s.steps}`);
  ok(`f: DELIVERED showed in ${done} ms (polling page ${donePoll} ms), #conn "done" on both; versions shown ${s.versions.join(" → ")}; #conn went ${s.conns.join(" → ")}`);

  // g. What it looks like.
  await page.evaluate(() => { document.getElementById("updates").open = true; });
  await shoot(page, SHOT);
  ok(`g: screenshot saved to ${SHOT}`);

  // h. An order paid by card: delivered, its payment authorised, then captured.
  if (PAID_ORDER) {
    const payText = (p) => p.evaluate(() => document.getElementById("pay").hidden ? "" : document.getElementById("pay").textContent);
    const paid = await open(ctx, `${BASE}/?order=${PAID_ORDER}`, []);
    await shows(paid, "DELIVERED", 5, performance.now(), 5000, "h");
    await connIs(paid, "live", "h (a capture to come)");
    const before = await payText(paid);
    if (!/^Paid by card: authorised \$25\.00/.test(before)) await fail(`h: the payment reads "${before}"`);
    r = await consume("PAYMENT_CAPTURED", { amount: 2500, currency: "usd" }, PAID_ORDER);
    await shows(paid, "DELIVERED", 6, r.t, LIVE_MS, "h");
    await connIs(paid, "done", "h");
    const after = await payText(paid);
    if (!/^Paid by card: captured \$25\.00/.test(after)) await fail(`h: after the capture the payment reads "${after}"`);
    ok(`h: "${before}" while live, then "${after}" and #conn "done"`);
  }
}

if (pageErrors.length) await fail(`no page errors: ${pageErrors.join("; ")}`);
ok("no page errors or CSP violations");
await browser.close();
