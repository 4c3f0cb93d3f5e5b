/**
 * Deno entry (`deno task apfa …`, see deno.json). Node starts from bin/apfa.mjs instead, which registers tsx first.
 * @module
 */
import { cli } from "./cli.ts";

declare const Deno: { args: string[]; exit(code: number): never };

const code = await cli(Deno.args);
// Long-running commands return after a clean shutdown; a handle a plugin left open must not hang the CLI.
Deno.exit(code);
