import { Command, CommanderError } from "commander";
import { registerBillingCommands } from "./billing.ts";
import { registerCustomerCommands } from "./customers.ts";
import { registerReadCommands } from "./read.ts";
import { registerReplayCommand } from "./replay.ts";
import { registerReportCommands } from "./report.ts";
import { registerRunCommands } from "./run.ts";
import { registerSimulateCommand } from "./simulate.ts";

const program = new Command();
program
  .name("simmeter")
  .description(
    "Super SIM Connection Events → exactly-once per-SIM per-hour usage → Stripe Billing Meters",
  )
  .showHelpAfterError()
  .exitOverride();

registerRunCommands(program);
registerReadCommands(program);
registerReplayCommand(program);
registerCustomerCommands(program);
registerReportCommands(program);
registerBillingCommands(program);
registerSimulateCommand(program);

try {
  await program.parseAsync(process.argv);
} catch (err) {
  if (err instanceof CommanderError) process.exit(err.exitCode);
  process.stderr.write(`simmeter: ${(err as Error).message}\n`);
  process.exit(1);
}
