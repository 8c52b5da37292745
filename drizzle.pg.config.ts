import { defineConfig } from "drizzle-kit";

// The PostgreSQL ledger's migrations (docs/design/postgres-ledger.md §5.1). drizzle.config.ts keeps
// the SQLite history in ./drizzle; `npm run db:generate` runs both configs.
export default defineConfig({
  dialect: "postgresql",
  schema: "./src/db/pg/schema.ts",
  out: "./drizzle/pg",
});
