CREATE TABLE `billing_customers` (
	`customer_id` text PRIMARY KEY NOT NULL,
	`state` text NOT NULL,
	`detail` text,
	`subscription_id` text,
	`item_id` text,
	`price_id` text,
	`period_start` integer,
	`period_end` integer,
	`prev_start` integer,
	`prev_end` integer,
	`prev_invoice_id` text,
	`prev_invoice_status` text,
	`prev_finalizes_at` integer,
	`prev_finalized_at` integer,
	`refreshed_at` integer NOT NULL
);
--> statement-breakpoint
ALTER TABLE `sims` ADD `unique_name` text;