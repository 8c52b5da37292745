// Customer assignments behind `simmeter customers …` (list, preview, assign, import): one
// interface, a SQLite and a PostgreSQL implementation (src/ledger/sqlite/assignments.ts,
// src/ledger/pg/assignments.ts).
export type AssignmentsPort = Record<never, never>;
