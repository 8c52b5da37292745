import { Command, CommanderError } from "commander";
import { configureSimulateCommand } from "../src/cli/simulate.ts";

// Standalone entry for `npx tsx scripts/simulate.ts ...`; the same command is `simmeter simulate`.
const program = configureSimulateCommand(new Command("simulate"))
  .showHelpAfterError()
  .exitOverride();

try {
  await program.parseAsync(process.argv);
} catch (err) {
  if (err instanceof CommanderError) process.exit(err.exitCode);
  process.stderr.write(`simulate: ${(err as Error).message}\n`);
  process.exit(1);
}
