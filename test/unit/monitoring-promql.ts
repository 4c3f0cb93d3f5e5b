/**
 * Helpers of the monitoring tests: the metric names a PromQL expression references, and the queries of a
 * Grafana dashboard. A few regular expressions suffice because the inputs are our own alert and panel queries.
 * @module
 */
import * as fs from "node:fs";
import * as path from "node:path";

const KEYWORDS = new Set(["and", "or", "unless", "bool", "offset", "inf", "nan", "Inf", "NaN"]);

/** Metric names referenced by a PromQL expression (functions, labels, keywords and durations removed). */
export function promqlMetricNames(expr: string): string[] {
  const s = expr
    .replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`/g, '""') // string literals
    .replace(/\{[^}]*\}/g, " ") // label matchers
    .replace(/\[[^\]]*\]/g, " ") // ranges and subqueries ($__rate_interval lives here)
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, " ")
    .replace(/\boffset\s+-?[\w$]+/g, " ")
    .replace(/@\s*[\w.()]+/g, " ");
  const names = new Set<string>();
  // The lookahead also refuses a partial identifier, so `rate(` never matches as `rat`.
  for (const m of s.matchAll(/(?<![\w.$])[a-zA-Z_:][\w:]*(?![\w:]|\s*\()/g)) {
    if (!KEYWORDS.has(m[0])) names.add(m[0]);
  }
  return [...names].sort();
}

/** Every target expression of a dashboard file (rows' nested panels included). */
export function dashboardExprs(root: string, file: string): string[] {
  const out: string[] = [];
  type Panel = { targets?: Array<{ expr?: string }>; panels?: Panel[] };
  const walk = (panels: Panel[]) => {
    for (const p of panels) {
      for (const t of p.targets ?? []) if (t.expr) out.push(t.expr);
      if (p.panels) walk(p.panels);
    }
  };
  walk((JSON.parse(fs.readFileSync(path.join(root, file), "utf8")) as { panels: Panel[] }).panels);
  return out;
}
