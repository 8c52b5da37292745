import { Command, CommanderError } from "commander";
import { DatabaseOpenError } from "../db/client.ts";
import { VERSION } from "../lib/version.ts";
import { registerBillingCommands } from "./billing.ts";
import { UsageError } from "./context.ts";
import { registerCustomerCommands } from "./customers.ts";
import { registerDoctorCommand } from "./doctor.ts";
import { registerMigrateLedgerCommand } from "./migrate-ledger.ts";
import { registerReadCommands } from "./read.ts";
import { registerReconcileCommand } from "./reconcile.ts";
import { registerReplayCommand } from "./replay.ts";
import { registerReportCommands } from "./report.ts";
import { registerRunCommands } from "./run.ts";
import { registerSimulateCommand } from "./simulate.ts";

// Exit codes: 0 success; 1 the command ran and found or hit a problem (a failed check, drift, a
// refused import, nothing counted); 2 it was called wrongly (a bad option or argument, a bad
// environment variable).

// Set when commander prints an error itself (a parse error), so it is not printed twice.
let commanderPrinted = false;

const program = new Command();
program
  .configureOutput({
    outputError: (text, write) => {
      commanderPrinted = true;
      write(text);
    },
  })
  .name("simmeter")
  .description(
    "Super SIM Connection Events → exactly-once per-SIM per-hour usage → Stripe Billing Meters",
  )
  .version(VERSION, "-V, --version", "print the simmeter version")
  .showHelpAfterError()
  .exitOverride();

registerRunCommands(program);
registerReadCommands(program);
registerReplayCommand(program);
registerCustomerCommands(program);
registerReportCommands(program);
registerDoctorCommand(program);
registerReconcileCommand(program);
registerBillingCommands(program);
registerSimulateCommand(program);
registerMigrateLedgerCommand(program);

try {
  await program.parseAsync(process.argv);
} catch (err) {
  if (err instanceof CommanderError) {
    // Commander has printed its message. Help asked for, or the version: its own code (0).
    if (err.exitCode === 0 || err.code === "commander.help") process.exit(err.exitCode);
    // An InvalidArgumentError thrown by an action (not by option parsing) is not printed yet.
    if (!commanderPrinted) process.stderr.write(`simmeter: ${err.message}\n`);
    process.exit(2);
  }
  if (err instanceof UsageError) {
    process.stderr.write(`simmeter: ${err.message}\n`);
    process.exit(2);
  }
  if (err instanceof DatabaseOpenError) {
    process.stderr.write(`simmeter: ${err.message}\n`);
    process.exit(1);
  }
  process.stderr.write(`simmeter: ${(err as Error).message}\n`);
  process.exit(1);
}
