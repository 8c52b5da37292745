// node .ci/wait-healthz.mjs TIMEOUT_MS URL... : exits 0 as soon as one URL answers 200, 1 at the
// deadline (the admin listener serves /healthz on ADMIN_PORT; older builds served it on PORT).
const [timeoutText, ...urls] = process.argv.slice(2);
const deadline = Date.now() + Number(timeoutText);
while (Date.now() < deadline) {
  for (const url of urls) {
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(1000) });
      if (res.status === 200) {
        console.log(`${url}: 200`);
        process.exit(0);
      }
    } catch {
      // not listening yet
    }
  }
  await new Promise((r) => setTimeout(r, 200));
}
console.log(`no 200 from ${urls.join(" or ")} within ${timeoutText} ms`);
process.exit(1);
