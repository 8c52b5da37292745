CREATE TABLE `anomalies` (
	`id` integer PRIMARY KEY AUTOINCREMENT NOT NULL,
	`session_sid` text NOT NULL,
	`event_sid` text NOT NULL,
	`kind` text NOT NULL,
	`detail` text NOT NULL,
	`detected_at` integer NOT NULL
);
--> statement-breakpoint
CREATE UNIQUE INDEX `anomalies_unique_idx` ON `anomalies` (`session_sid`,`event_sid`,`kind`);--> statement-breakpoint
CREATE TABLE `assignments` (
	`id` integer PRIMARY KEY AUTOINCREMENT NOT NULL,
	`target_type` text NOT NULL,
	`target_id` text NOT NULL,
	`customer_id` text NOT NULL,
	`effective_from` integer NOT NULL,
	`created_at` integer NOT NULL
);
--> statement-breakpoint
CREATE INDEX `assignments_target_idx` ON `assignments` (`target_type`,`target_id`,`effective_from`);--> statement-breakpoint
CREATE TABLE `event_counts` (
	`sim_sid` text NOT NULL,
	`day` integer NOT NULL,
	`kind` text NOT NULL,
	`count` integer NOT NULL,
	PRIMARY KEY(`sim_sid`, `day`, `kind`)
);
--> statement-breakpoint
CREATE TABLE `meta` (
	`key` text PRIMARY KEY NOT NULL,
	`value` integer NOT NULL
);
--> statement-breakpoint
CREATE TABLE `meter_reports` (
	`identifier` text PRIMARY KEY NOT NULL,
	`customer_id` text NOT NULL,
	`hour` integer NOT NULL,
	`seq` integer NOT NULL,
	`value` integer NOT NULL,
	`timestamp` integer NOT NULL,
	`late` integer NOT NULL,
	`state` text NOT NULL,
	`attempts` integer DEFAULT 0 NOT NULL,
	`last_error` text,
	`created_at` integer NOT NULL,
	`sent_at` integer
);
--> statement-breakpoint
CREATE UNIQUE INDEX `meter_reports_customer_hour_seq_idx` ON `meter_reports` (`customer_id`,`hour`,`seq`);--> statement-breakpoint
CREATE INDEX `meter_reports_state_idx` ON `meter_reports` (`state`);--> statement-breakpoint
CREATE TABLE `quarantine` (
	`id` integer PRIMARY KEY AUTOINCREMENT NOT NULL,
	`received_at` integer NOT NULL,
	`source` text NOT NULL,
	`delivery_id` text NOT NULL,
	`position` integer NOT NULL,
	`event_sid` text,
	`reason` text NOT NULL,
	`raw` text NOT NULL
);
--> statement-breakpoint
CREATE UNIQUE INDEX `quarantine_delivery_pos_idx` ON `quarantine` (`delivery_id`,`position`);--> statement-breakpoint
CREATE TABLE `readings` (
	`session_sid` text NOT NULL,
	`t` integer NOT NULL,
	`event_sid` text NOT NULL,
	`cumulative` integer,
	`window_bytes` integer,
	`window_start` integer,
	`ended` integer NOT NULL,
	PRIMARY KEY(`session_sid`, `t`, `event_sid`)
);
--> statement-breakpoint
CREATE TABLE `report_dirty_hours` (
	`hour` integer PRIMARY KEY NOT NULL
);
--> statement-breakpoint
CREATE TABLE `seen_events` (
	`event_sid` text PRIMARY KEY NOT NULL,
	`event_ts` integer NOT NULL,
	`kind` text NOT NULL,
	`received_at` integer NOT NULL
);
--> statement-breakpoint
CREATE INDEX `seen_events_event_ts_idx` ON `seen_events` (`event_ts`);--> statement-breakpoint
CREATE TABLE `sessions` (
	`session_sid` text PRIMARY KEY NOT NULL,
	`sim_sid` text NOT NULL,
	`start_time` integer,
	`end_time` integer,
	`total_bytes` integer DEFAULT 0 NOT NULL,
	`window_sum_bytes` integer DEFAULT 0 NOT NULL,
	`basis` text DEFAULT 'cumulative' NOT NULL,
	`reading_count` integer DEFAULT 0 NOT NULL,
	`buckets` text DEFAULT '{}' NOT NULL,
	`last_reading_at` integer NOT NULL,
	`updated_at` integer NOT NULL
);
--> statement-breakpoint
CREATE INDEX `sessions_last_reading_at_idx` ON `sessions` (`last_reading_at`);--> statement-breakpoint
CREATE TABLE `sims` (
	`sim_sid` text PRIMARY KEY NOT NULL,
	`iccid` text NOT NULL,
	`fleet_sid` text,
	`account_sid` text NOT NULL,
	`first_seen_at` integer NOT NULL,
	`last_event_at` integer NOT NULL
);
--> statement-breakpoint
CREATE TABLE `usage_hourly` (
	`hour` integer NOT NULL,
	`sim_sid` text NOT NULL,
	`bytes` integer NOT NULL,
	PRIMARY KEY(`hour`, `sim_sid`)
);
