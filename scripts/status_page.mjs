// The status page in a real browser (Debian's chromium, driven by playwright-core), against a real
// fleet: the simulator, a redis-server of the script's own, two facade replicas sharing it, and the
// load generator calling as two callers. It checks what an operator reads off the page:
//   - both replicas show as live tiles;
//   - the quota panel's numbers are exactly those of the /status answer the page drew them from;
//   - a caller's bar turns active once it calls (and queues);
//   - Redis killed: the store turns red and this replica's tile "fallback" within seconds; Redis
//     back: the store turns green and both replicas live again.
// With --screenshot FILE, it saves the page under load (the book's picture).
//
//   node scripts/status_page.mjs [--bin target/debug] [--chromium /usr/bin/chromium] [--screenshot FILE]
//
// playwright-core is resolved from NODE_PATH (.ci/run installs it under .ci/tools/npm).

import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdtempSync, writeFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const { chromium } = require("playwright-core");

const args = Object.fromEntries(
  process.argv.slice(2).reduce((pairs, arg, i, all) => (arg.startsWith("--") ? [...pairs, [arg.slice(2), all[i + 1]]] : pairs), []),
);
const bin = args.bin ?? "target/debug";
const browserPath = args.chromium ?? "/usr/bin/chromium";
const work = mkdtempSync(join(tmpdir(), "status-page-"));
const children = [];

const freePort = () => new Promise((resolve) => {
  const server = createServer();
  server.listen(0, "127.0.0.1", () => { const { port } = server.address(); server.close(() => resolve(port)); });
});
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const start = (name, command, argv, env = {}) => {
  const child = spawn(command, argv, { env: { ...process.env, ...env }, stdio: ["ignore", "ignore", "pipe"] });
  child.stderr.on("data", () => {});
  child.name = name;
  children.push(child);
  return child;
};
const stop = (child) => { if (child.exitCode === null) child.kill("SIGKILL"); };
async function until(what, seconds, check) {
  const deadline = Date.now() + seconds * 1000;
  let last;
  while (Date.now() < deadline) {
    try { if ((last = await check())) return last; } catch (e) { last = e; }
    await sleep(200);
  }
  throw new Error(`${what}: not within ${seconds}s (last: ${last})`);
}
const reachable = async (url) => (await fetch(url)).ok;
let failures = 0;
const check = (ok, what) => { console.log(`${ok ? "ok  " : "FAIL"} ${what}`); if (!ok) failures += 1; };

async function main() {
  const [redisPort, simPort] = [await freePort(), await freePort()];
  const redisArgs = ["--port", String(redisPort), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"];
  let redis = start("redis", "redis-server", redisArgs);
  start("simulator", `${bin}/connect-facade`, ["simulate", "--listen", `127.0.0.1:${simPort}`,
    "--fixtures", "fixtures/bench.yaml"]);
  const token = (name) => `token-${name}`;
  const auth = join(work, "callers.yaml");
  writeFileSync(auth, "callers:\n" + [["billing", 3], ["reporting", 1]].map(([name, weight]) =>
    `  - name: ${name}\n    token_sha256: "${createHash("sha256").update(token(name)).digest("hex")}"\n    instances: ["*"]\n    weight: ${weight}\n`).join(""));
  const replicas = [];
  for (let i = 0; i < 2; i += 1) {
    const [grpc, admin] = [await freePort(), await freePort()];
    start(`facade-${i}`, `${bin}/connect-facade`, ["serve", "--listen", `127.0.0.1:${grpc}`,
      "--admin-listen", `127.0.0.1:${admin}`, "--region", "us-east-1",
      "--endpoint-url", `http://127.0.0.1:${simPort}`, "--quota-store", `redis://127.0.0.1:${redisPort}`,
      "--rate-limit", "10", "--rate-burst", "2", "--max-queue-wait", "5s", "--replay-window", "0s",
      "--auth-file", auth, "--log-format", "json"],
      { AWS_ACCESS_KEY_ID: "AKIDSTATUSPAGE", AWS_SECRET_ACCESS_KEY: "status-page-secret", AWS_EC2_METADATA_DISABLED: "true" });
    replicas.push({ grpc: `http://127.0.0.1:${grpc}`, admin: `http://127.0.0.1:${admin}` });
  }
  for (const r of replicas) await until(`${r.admin} answers`, 30, () => reachable(`${r.admin}/status`));
  const load = (caller, seconds) => start(`loadgen-${caller}`, `${bin}/loadgen`, ["run", "--url",
    replicas.map((r) => r.grpc).join(","), "--rate", "30", "--duration", `${seconds}s`, "--warmup", "0s",
    "--quiet", "--bearer", token(caller)]);
  load("billing", 90);

  const browser = await chromium.launch({ executablePath: browserPath, args: ["--no-sandbox"] });
  const page = await browser.newPage({ viewport: { width: 1366, height: 900 } });
  const statusOf = async () => (await fetch(`${replicas[0].admin}/status`)).json();
  await page.goto(`${replicas[0].admin}/`);
  await page.waitForSelector("body[data-refreshed]");

  // Both replicas, live.
  await until("two live replica tiles", 15, async () =>
    (await page.locator('[data-testid="replica"][data-state="live"]').count()) === 2);
  check(true, "the page shows both replicas live");

  // The quota panel shows exactly the /status answer it was drawn from: the answer and the panel
  // are read in one turn of the page's event loop, so no refresh comes between them.
  const { drawn, shown } = await page.evaluate(() => ({
    drawn: window.lastStatus,
    shown: Object.fromEntries(["rate", "used", "waiting", "predicted-wait"].map((id) =>
      [id, document.querySelector(`[data-testid="route"] [data-testid="${id}"]`).textContent])),
  }));
  const served = await statusOf();
  check(drawn.version === served.version && drawn.config_hash === served.config_hash
    && drawn.routes[0].rate_per_second === served.routes[0].rate_per_second,
    "the page draws this replica's /status");
  const route = drawn.routes[0];
  const used = (route.last_minute.ok + route.last_minute.throttled + route.last_minute.failed) / 60;
  const expected = {
    rate: `${route.rate_per_second.toFixed(2)}/s (burst ${route.burst})`,
    used: `${used.toFixed(2)}/s`,
    waiting: String(route.waiting),
    "predicted-wait": `${route.predicted_wait_ms.toFixed(0)} ms`,
  };
  check(JSON.stringify(shown) === JSON.stringify(expected),
    `the quota panel equals /status: ${JSON.stringify(shown)}`);

  // A caller's bar turns active once it calls.
  const active = (name) => page.locator(`[data-testid="caller"][data-caller="${name}"][data-active="true"]`).count();
  await until("billing's bar active", 15, async () => (await active("billing")) === 1);
  check((await active("reporting")) === 0, "reporting, which has not called, has no active bar");
  load("reporting", 60);
  await until("reporting's bar active once it calls", 15, async () => (await active("reporting")) === 1);
  check(true, "a caller's bar appears when it calls");
  // For the book's picture, a minute of history; for the checks, a few seconds.
  const points = args.screenshot ? 60 : 5;
  await until("the chart has points", points + 20, async () =>
    Number(await page.locator("#chart").getAttribute("data-points")) >= points);
  check(true, `the chart draws ${points}+ seconds of attempts`);
  if (args.screenshot) {
    await page.screenshot({ path: args.screenshot, fullPage: true });
    console.log(`saved ${args.screenshot}`);
  }

  // Redis killed: the store red, this replica on its fallback; Redis back: green, both live.
  stop(redis);
  const downAt = Date.now();
  await until("the store shown down", 10, async () =>
    (await page.locator('[data-testid="store"][data-up="false"]').count()) === 1);
  await until("this replica's tile on its fallback", 10, async () =>
    (await page.locator('[data-testid="replica"][data-this="true"][data-state="fallback"]').count()) === 1);
  check(true, `Redis killed: store red and this replica "fallback" within ${((Date.now() - downAt) / 1000).toFixed(1)}s`);
  check((await statusOf()).store.up === false, "/status agrees: the store is down");
  redis = start("redis", "redis-server", redisArgs);
  const backAt = Date.now();
  await until("the store shown up", 15, async () =>
    (await page.locator('[data-testid="store"][data-up="true"]').count()) === 1);
  await until("both replicas live again", 15, async () =>
    (await page.locator('[data-testid="replica"][data-state="live"]').count()) === 2);
  check(true, `Redis back: store green and both replicas live within ${((Date.now() - backAt) / 1000).toFixed(1)}s`);
  await browser.close();
}

try {
  await main();
} catch (error) {
  console.log(`FAIL ${error.message}`);
  failures += 1;
} finally {
  children.forEach(stop);
  rmSync(work, { recursive: true, force: true });
}
console.log(failures ? `status page: ${failures} check(s) failed` : "status page: all checks passed");
process.exit(failures ? 1 : 0);
