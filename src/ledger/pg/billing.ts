import type pg from "pg";
import type { CustomerBilling } from "../../billing/periods.ts";
import { billingFromRow } from "../../billing/subscriptions.ts";
import { installInt8Parser } from "../../db/pg/client.ts";
import type { BillingCustomer } from "../../db/schema.ts";
import { withTx } from "./tx.ts";

// Billing state and the billed customers on PostgreSQL: loadBilling, storeBilling
// (src/billing/subscriptions.ts) and assignmentCustomers (src/customers/customers.ts), with the
// same mapping and the same results.

installInt8Parser();

const BILLING_COLUMNS = `customer_id as "customerId", state, detail,
  subscription_id as "subscriptionId", item_id as "itemId", price_id as "priceId",
  period_start as "periodStart", period_end as "periodEnd", prev_start as "prevStart",
  prev_end as "prevEnd", prev_invoice_id as "prevInvoiceId",
  prev_invoice_status as "prevInvoiceStatus", prev_finalizes_at as "prevFinalizesAt",
  prev_finalized_at as "prevFinalizedAt", refreshed_at as "refreshedAt"`;

export function pgBilling(pool: pg.Pool): {
  load(): Promise<Map<string, CustomerBilling>>;
  store(rows: readonly CustomerBilling[]): Promise<void>;
} {
  return {
    /** every customer's stored billing state, by customer id */
    async load() {
      const r = await pool.query<BillingCustomer>(
        `select ${BILLING_COLUMNS} from billing_customers order by customer_id collate "C"`,
      );
      return new Map(r.rows.map((row) => [row.customerId, billingFromRow(row)]));
    },

    /**
     * Replaces the stored state of these customers in one transaction: one upsert whatever the
     * count. A customer given twice keeps its last row (as storeBilling's upserts in turn); rows go
     * in key order, so two concurrent stores lock in the same order and cannot deadlock.
     */
    async store(rows) {
      const last = new Map<string, CustomerBilling>();
      for (const b of rows) last.set(b.customerId, b);
      const list = [...last.values()].sort((a, b) =>
        a.customerId < b.customerId ? -1 : a.customerId > b.customerId ? 1 : 0,
      );
      if (list.length === 0) return;
      const col = <T>(f: (b: CustomerBilling) => T) => list.map(f);
      await withTx(
        pool,
        async (c) => {
          await c.query(
            `insert into billing_customers (customer_id, state, detail, subscription_id, item_id,
                price_id, period_start, period_end, prev_start, prev_end, prev_invoice_id,
                prev_invoice_status, prev_finalizes_at, prev_finalized_at, refreshed_at)
             select * from unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                $6::text[], $7::bigint[], $8::bigint[], $9::bigint[], $10::bigint[], $11::text[],
                $12::text[], $13::bigint[], $14::bigint[], $15::bigint[])
             on conflict (customer_id) do update set
               state = excluded.state, detail = excluded.detail,
               subscription_id = excluded.subscription_id, item_id = excluded.item_id,
               price_id = excluded.price_id, period_start = excluded.period_start,
               period_end = excluded.period_end, prev_start = excluded.prev_start,
               prev_end = excluded.prev_end, prev_invoice_id = excluded.prev_invoice_id,
               prev_invoice_status = excluded.prev_invoice_status,
               prev_finalizes_at = excluded.prev_finalizes_at,
               prev_finalized_at = excluded.prev_finalized_at, refreshed_at = excluded.refreshed_at`,
            [
              col((b) => b.customerId),
              col((b) => b.state),
              col((b) => b.detail),
              col((b) => b.subscriptionId),
              col((b) => b.itemId),
              col((b) => b.priceId),
              col((b) => b.periodStart),
              col((b) => b.periodEnd),
              col((b) => b.previous?.start ?? null),
              col((b) => b.previous?.end ?? null),
              col((b) => b.previous?.invoiceId ?? null),
              col((b) => b.previous?.status ?? null),
              col((b) => b.previous?.finalizesAt ?? null),
              col((b) => b.previous?.finalizedAt ?? null),
              col((b) => b.refreshedAt),
            ],
          );
        },
        { barrier: "none", retry: true },
      );
    },
  };
}

/**
 * Every customer some assignment names, once, in the order assignmentCustomers gives them: SQLite
 * scans assignments by id and drops repeats, so each customer comes at its first assignment.
 */
export async function pgBilledCustomers(pool: pg.Pool): Promise<string[]> {
  const r = await pool.query<{ c: string }>(
    "select customer_id as c from assignments group by customer_id order by min(id)",
  );
  return r.rows.map((x) => x.c);
}
