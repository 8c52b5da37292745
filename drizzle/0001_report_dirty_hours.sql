CREATE TABLE `report_dirty_hours` (
	`hour` integer PRIMARY KEY NOT NULL
);
