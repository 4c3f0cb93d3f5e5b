#!/usr/bin/env node
// Node entry: Node 20 cannot run TypeScript by itself, so tsx's loader is registered first. Deno runs
// runtime/main.ts directly (see deno.json); should it start here (`deno task start` maps `node` to Deno), it
// must skip tsx, whose require hooks break loading .node and .json files under Deno.
if (!("Deno" in globalThis)) {
  const { register } = await import("tsx/esm/api");
  register();
}
const { cli } = await import("../runtime/cli.ts");
process.exitCode = await cli(process.argv.slice(2));
// Long-running commands return after a clean shutdown; anything a plugin left open must not hang the CLI.
setTimeout(() => process.exit(process.exitCode ?? 0), 3000).unref();
