CREATE TABLE `report_dirty_sims` (
	`sim_sid` text PRIMARY KEY NOT NULL
);
--> statement-breakpoint
CREATE TABLE `sim_fleet_hours` (
	`sim_sid` text NOT NULL,
	`hour` integer NOT NULL,
	`fleet_sid` text NOT NULL,
	PRIMARY KEY(`sim_sid`, `hour`, `fleet_sid`)
);
--> statement-breakpoint
CREATE INDEX `sim_fleet_hours_fleet_idx` ON `sim_fleet_hours` (`fleet_sid`,`sim_sid`);--> statement-breakpoint
ALTER TABLE `meter_reports` ADD `kind` text DEFAULT 'usage' NOT NULL;--> statement-breakpoint
CREATE INDEX `meter_reports_hour_idx` ON `meter_reports` (`hour`,`customer_id`);--> statement-breakpoint
ALTER TABLE `quarantine` ADD `requeued_at` integer;--> statement-breakpoint
ALTER TABLE `quarantine` ADD `requeues` integer DEFAULT 0 NOT NULL;--> statement-breakpoint
-- Fleet history for usage counted before it was recorded: the fleet known then is all there is.
INSERT OR IGNORE INTO `sim_fleet_hours` (`sim_sid`, `hour`, `fleet_sid`)
  SELECT u.`sim_sid`, u.`hour`, s.`fleet_sid` FROM `usage_hourly` u JOIN `sims` s ON s.`sim_sid` = u.`sim_sid` WHERE s.`fleet_sid` IS NOT NULL;
