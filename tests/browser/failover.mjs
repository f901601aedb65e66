// Two pages on two federated routers chat; router A is killed; the page on it reconnects to
// router B and the conversation goes on with nothing shown twice; then a direct message. Started
// by tests/end_to_end/browser.rs,
// which starts the routers: node failover.mjs WS_A WS_B PID_A ARTIFACTS
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";

const [wsA, wsB, pidA, artifacts] = process.argv.slice(2);
mkdirSync(artifacts, { recursive: true });
const WAIT = 15000;

function fail(message) {
  console.error("FAIL: " + message);
  process.exitCode = 1;
  throw new Error(message);
}

const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-dev-shm-usage"],
});
try {
  const context = await browser.newContext({ viewport: { width: 1000, height: 700 } });
  const ann = await context.newPage();
  const bea = await (await browser.newContext({ viewport: { width: 390, height: 800 } })).newPage();
  for (const page of [ann, bea]) page.on("pageerror", (e) => fail("page error: " + e.message));
  await ann.goto(`http://${wsA}/?servers=${wsB}&nick=ann`);
  await bea.goto(`http://${wsB}/?nick=bea`);
  for (const page of [ann, bea]) {
    await page.waitForSelector("#status.up", { timeout: WAIT });
  }

  // Both are in Common (the page's default); each says something until the other sees it
  // (the federation's tree forms as the routers exchange joins).
  async function say(page, text) {
    await page.fill("#text", text);
    await page.click("#say button");
  }
  async function sees(page, text, timeout = WAIT) {
    await page.waitForFunction(
      (t) => [...document.querySelectorAll("#log .msg")].some((m) => m.textContent.endsWith(t)),
      text,
      { timeout },
    );
  }
  let carried = false;
  for (let i = 0; i < 50 && !carried; i++) {
    await say(ann, `hello from ann ${i}`);
    try {
      await sees(bea, `hello from ann ${i}`, 300);
      carried = true;
    } catch {}
  }
  if (!carried) fail("the federation never carried ann's message to bea");
  await say(bea, "hello ann, from bea");
  await sees(ann, "hello ann, from bea");
  await ann.screenshot({ path: `${artifacts}/1-before-ann.png` });
  await bea.screenshot({ path: `${artifacts}/1-before-bea.png` });

  // Router A goes away: ann's page reconnects to B and re-joins Common there.
  process.kill(Number(pidA), "SIGKILL");
  await ann.waitForSelector("#status.down", { timeout: WAIT });
  await ann.waitForFunction(
    (b) => document.querySelector("#status.up")?.textContent === "connected to " + b,
    wsB,
    { timeout: WAIT },
  );
  await ann.waitForFunction(
    () => [...document.querySelectorAll("#members li")].some((li) => li.textContent === "ann"),
    null,
    { timeout: WAIT },
  );
  await say(ann, "ann again, after the failover");
  await sees(bea, "ann again, after the failover");
  await say(bea, "welcome back, ann");
  await sees(ann, "welcome back, ann");
  await ann.screenshot({ path: `${artifacts}/2-after-ann.png` });
  await bea.screenshot({ path: `${artifacts}/2-after-bea.png` });

  // A direct message typed as /msg on one page shows, marked, on the other (router B runs a
  // mailbox; neither name is registered, so it is handed over live).
  await say(bea, "/msg ann psst, from bea");
  await ann.waitForFunction(
    () => [...document.querySelectorAll("#log .msg.dm")].some((m) =>
      m.textContent.includes("bea (direct)") && m.textContent.endsWith("psst, from bea")),
    null,
    { timeout: WAIT },
  );
  await bea.waitForFunction(
    () => [...document.querySelectorAll("#log .note")].some((n) => n.textContent === "delivered to ann"),
    null,
    { timeout: WAIT },
  );
  await ann.screenshot({ path: `${artifacts}/3-direct-ann.png` });

  // Nothing shown twice on either page.
  for (const [name, page] of [["ann", ann], ["bea", bea]]) {
    const texts = await page.$$eval("#log .msg", (ms) => ms.map((m) => m.textContent));
    const twice = texts.filter((t, i) => texts.indexOf(t) !== i);
    if (twice.length) fail(`${name}'s page shows twice: ${JSON.stringify(twice)}`);
  }
  console.log("OK: failover, a direct message, and no duplicates");
} finally {
  await browser.close();
}
