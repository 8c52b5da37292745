// The ledger's read side behind `simmeter usage|events|anomalies|quarantine` (and their views,
// shared with /api and the console): one interface, a SQLite and a PostgreSQL implementation
// (src/ledger/sqlite/reads.ts, src/ledger/pg/reads.ts).
export type ReadsPort = Record<never, never>;
