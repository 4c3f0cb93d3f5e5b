/**
 * CLI start-up, part of the serve suite: `apfa --help` and `apfa token` from process start to exit, each against
 * a bare `node -e 0` run alternately in the same loop (so drift in the machine's load hits both alike). They
 * measure what the package ships: bin/apfa.mjs runs the compiled dist/ when it is current (the table says
 * which code ran), and the commands load only the modules they use. The warm-up run of `apfa token` validates
 * the file in full and stamps it, so the counted runs measure the quick path a developer sees (the note says
 * how many did).
 * @module
 */
import { spawnSync } from "node:child_process";
import * as path from "node:path";
import { median, num, ROOT, type Ratio, type Table } from "../lib.ts";

function wallMs(args: string[]): { ms: number; stderr: string } {
  const t0 = performance.now();
  const r = spawnSync(process.execPath, args, { cwd: ROOT, encoding: "utf8", env: { ...process.env, APFA_DEBUG: "1" } });
  const ms = performance.now() - t0;
  if (r.status !== 0) throw new Error(`[apfa] [bench:cli] node ${args.join(" ")} exited ${r.status}: ${r.stderr.slice(0, 400)}`);
  return { ms, stderr: r.stderr };
}

/** Medians of `runs` alternating runs; `yaml` is a pipeline with a JWT secret for `apfa token`. */
export function cliStartup(yaml: string, runs: number): { table: Table; ratios: Ratio[] } {
  const bin = path.join(ROOT, "bin/apfa.mjs");
  const cmds = { node: ["-e", "0"], help: [bin, "--help"], token: [bin, "token", "-c", yaml] };
  const times = { node: [] as number[], help: [] as number[], token: [] as number[] };
  let ran = "";
  let quick = 0;
  for (const k of Object.keys(cmds) as Array<keyof typeof cmds>) wallMs(cmds[k]); // warm the file cache
  for (let i = 0; i < runs; i++) {
    for (const k of Object.keys(cmds) as Array<keyof typeof cmds>) {
      const r = wallMs(cmds[k]);
      times[k].push(r.ms);
      ran ||= /\[apfa\] running (\S+)/.exec(r.stderr)?.[1] ?? "";
      if (k === "token" && r.stderr.includes("[apfa] token: quick path")) quick++;
    }
  }
  const [node, help, token] = [median(times.node), median(times.help), median(times.token)];
  const compiled = ran.includes("/dist/");
  return {
    table: {
      title: `CLI start-up: process start → exit (median of ${runs}, alternating)`,
      columns: ["command", "ms", "÷ node -e 0", "goal"],
      rows: [
        ["node -e 0", num(node, 0), "1.00×", ""],
        ["apfa --help", num(help, 0), `${(help / node).toFixed(2)}×`, "≤ 1.5×"],
        ["apfa token", num(token, 0), `${(token / node).toFixed(2)}×`, "≤ 1.5×"],
      ],
      note: `apfa ran ${compiled ? "the compiled dist/ (no TypeScript loader)" : "the TypeScript sources through tsx (dist/ missing or older than a source)"}; \`apfa token\` took the quick path (no yaml, zod or jose: the file was stamped valid by the warm-up run, see .apfa/token-check.json) in ${quick} of ${runs} runs, the full path (validate with yaml + zod, sign with jose) in the others`,
    },
    ratios: [
      { id: "serve/cli_help_vs_node", label: "apfa --help ÷ node -e 0", value: help / node, better: "lower", goal: 1.5 },
      { id: "serve/cli_token_vs_node", label: "apfa token ÷ node -e 0", value: token / node, better: "lower", goal: 1.5 },
    ],
  };
}
