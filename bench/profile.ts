/**
 * Summarises V8 CPU profiles (`node --cpu-prof`, or `apfa bench --profile` for the suites' child processes):
 * self and inclusive time per function and self time per package, idle time excluded, so a missed goal can be
 * pinned on a function. `node --import tsx bench/profile.ts <file.cpuprofile | dir> [top]`.
 * @module
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}
interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

export interface ProfileSummary {
  file: string;
  busyMs: number;
  self: Array<[string, number]>;
  inclusive: Array<[string, number]>;
  packages: Array<[string, number]>;
}

const IDLE = new Set(["(idle)", "(program)"]);

function where(url: string): string {
  if (!url) return "";
  const p = url.startsWith("file://") ? fileURLToPath(url) : url;
  const nm = p.lastIndexOf("node_modules/");
  if (nm >= 0) return p.slice(nm + 13);
  return path.relative(process.cwd(), p) || p;
}

function packageOf(url: string, name: string): string {
  if (!url) return name.startsWith("(") ? name : "(native)";
  if (url.startsWith("node:")) return "node internals";
  const w = where(url);
  if (/node_modules\//.test(url) || !w.startsWith(".")) {
    const parts = w.split("/");
    if (url.includes("node_modules/")) return parts[0].startsWith("@") ? `${parts[0]}/${parts[1]}` : parts[0];
  }
  return w.split("/").slice(0, 2).join("/");
}

const top = (m: Map<string, number>, n: number) => [...m].sort((a, b) => b[1] - a[1]).slice(0, n);

export function summarise(file: string, n = 15): ProfileSummary {
  const prof = JSON.parse(fs.readFileSync(file, "utf8")) as CpuProfile;
  const byId = new Map(prof.nodes.map((x) => [x.id, x]));
  const parent = new Map<number, number>();
  for (const x of prof.nodes) for (const c of x.children ?? []) parent.set(c, x.id);
  const key = (x: ProfileNode) => `${x.callFrame.functionName || "(anonymous)"} ${where(x.callFrame.url)}:${x.callFrame.lineNumber + 1}`;
  const self = new Map<string, number>();
  const incl = new Map<string, number>();
  const pkgs = new Map<string, number>();
  let busy = 0;
  prof.samples.forEach((id, i) => {
    const x = byId.get(id)!;
    const ms = (prof.timeDeltas[i] ?? 0) / 1000;
    if (IDLE.has(x.callFrame.functionName)) return;
    busy += ms;
    self.set(key(x), (self.get(key(x)) ?? 0) + ms);
    const pk = packageOf(x.callFrame.url, x.callFrame.functionName);
    pkgs.set(pk, (pkgs.get(pk) ?? 0) + ms);
    const seen = new Set<string>();
    for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
      const k = key(byId.get(cur)!);
      if (seen.has(k) || k.startsWith("(root)")) continue;
      seen.add(k);
      incl.set(k, (incl.get(k) ?? 0) + ms);
    }
  });
  return { file, busyMs: busy, self: top(self, n), inclusive: top(incl, n), packages: top(pkgs, n) };
}

export function printSummary(s: ProfileSummary): void {
  const pct = (ms: number) => `${((ms / s.busyMs) * 100).toFixed(1).padStart(5)}%  ${ms.toFixed(0).padStart(7)} ms`;
  console.log(`\n${path.relative(process.cwd(), s.file)}: ${s.busyMs.toFixed(0)} ms on CPU (idle excluded)`);
  for (const [title, rows] of [["self time by package", s.packages], ["self time by function", s.self], ["inclusive time by function", s.inclusive]] as const) {
    console.log(`  ${title}:`);
    for (const [k, ms] of rows) console.log(`    ${pct(ms)}  ${k}`);
  }
}

/** Every .cpuprofile under `target` (a file or a directory). */
export function profilesIn(target: string): string[] {
  if (!fs.existsSync(target)) return [];
  if (fs.statSync(target).isFile()) return [target];
  return fs.readdirSync(target).filter((f) => f.endsWith(".cpuprofile")).map((f) => path.join(target, f)).sort();
}

if (process.argv[1] && import.meta.url === pathToFileURL(path.resolve(process.argv[1])).href) {
  const files = profilesIn(process.argv[2] ?? ".");
  if (!files.length) {
    console.error("usage: node --import tsx bench/profile.ts <file.cpuprofile | directory> [top]");
    process.exit(2);
  }
  for (const f of files) printSummary(summarise(f, Number(process.argv[3] ?? 15)));
}

/**
 * Profiles the current process with the inspector (the in-process suites: queue, index) until the returned
 * function is called, which writes `<dir>/<name>.cpuprofile`.
 */
export async function profileSelf(dir: string, name: string): Promise<() => Promise<void>> {
  const { Session } = await import("node:inspector");
  const session = new Session();
  session.connect();
  const post = (method: string, params?: object) =>
    new Promise<unknown>((resolve, reject) => session.post(method, params, (err, res) => (err ? reject(err) : resolve(res))));
  await post("Profiler.enable");
  await post("Profiler.start");
  return async () => {
    const { profile } = (await post("Profiler.stop")) as { profile: unknown };
    session.disconnect();
    fs.mkdirSync(dir, { recursive: true });
    fs.writeFileSync(path.join(dir, `${name}.cpuprofile`), JSON.stringify(profile));
  };
}
