// npm run openapi: writes docs/openapi.json from the admin API's route table (src/api/routes.ts).
// test/unit/openapi.test.ts fails when the committed file and the code disagree.
import { writeFileSync } from "node:fs";
import { openApiDocument } from "../src/api/openapi.ts";

export const OPENAPI_FILE = new URL("../docs/openapi.json", import.meta.url);

writeFileSync(OPENAPI_FILE, `${JSON.stringify(openApiDocument(), null, 2)}\n`);
process.stdout.write(`wrote ${OPENAPI_FILE.pathname}\n`);
