// node .ci/doctor-ok.mjs DOCTOR.json CHECK... : exits 0 when `simmeter doctor --json` reported each
// named check as ok. It accepts an array of checks or an object holding one (e.g. {checks: [...]}),
// each check an object whose name field (check, name or id) and result field (result, status or
// level) are strings, so the check does not depend on the exact shape of doctor's JSON.
import { readFileSync } from "node:fs";

const [file, ...wanted] = process.argv.slice(2);
const doc = JSON.parse(readFileSync(file, "utf8"));

function* objects(v) {
  if (Array.isArray(v)) for (const x of v) yield* objects(x);
  else if (v && typeof v === "object") {
    yield v;
    for (const x of Object.values(v)) yield* objects(x);
  }
}

const nameOf = (o) => [o.check, o.name, o.id].find((x) => typeof x === "string");
const resultOf = (o) => [o.result, o.status, o.level].find((x) => typeof x === "string");
let bad = 0;
for (const want of wanted) {
  const found = [...objects(doc)].filter((o) => nameOf(o)?.toLowerCase() === want && resultOf(o));
  if (found.length === 0) {
    console.log(`doctor reported no "${want}" check`);
    bad++;
  } else if (!found.every((o) => resultOf(o).toLowerCase() === "ok")) {
    console.log(`doctor's "${want}" check: ${JSON.stringify(found)}`);
    bad++;
  }
}
process.exit(bad > 0 ? 1 : 0);
