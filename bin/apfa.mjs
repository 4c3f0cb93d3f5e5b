#!/usr/bin/env node
// Node entry: Node 20 cannot run TypeScript by itself, so tsx's loader is registered first. Deno runs
// runtime/main.ts directly (see deno.json).
import { register } from "tsx/esm/api";

register();
const { cli } = await import("../runtime/cli.ts");
process.exitCode = await cli(process.argv.slice(2));
// Long-running commands return after a clean shutdown; anything a plugin left open must not hang the CLI.
setTimeout(() => process.exit(process.exitCode ?? 0), 3000).unref();
