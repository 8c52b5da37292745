#!/usr/bin/env node
// The CLI is TypeScript run through tsx, so `npx simmeter` works in a fresh clone
// after `npm install` with no build step that could go stale.
import { register } from "tsx/esm/api";

register();
await import("../src/cli/main.ts");
