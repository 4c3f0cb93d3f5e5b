/**
 * Cron expressions in exactly the dialect graphile-worker's crontab accepts (five numeric fields, UTC: `*`,
 * `*\/n`, `n`, `a-b` with b > a, and comma lists of those; day-of-week 7 is Sunday): what `apfa lint` passes,
 * `apfa worker` runs (test/unit/cron-dialect.test.ts holds the two against each other). Problems name the field,
 * so `apfa lint` can say "hour: 25 is out of range 0-23" rather than "invalid cron". Next fire times come from
 * cron-parser.
 * @module
 */
import { CronExpressionParser } from "cron-parser";

const FIELDS = [
  { name: "minute", min: 0, max: 59 },
  { name: "hour", min: 0, max: 23 },
  { name: "day-of-month", min: 1, max: 31 },
  { name: "month", min: 1, max: 12 },
  { name: "day-of-week", min: 0, max: 7 },
] as const;

function partProblem(part: string, f: (typeof FIELDS)[number]): string | undefined {
  const range = `${f.min}-${f.max}`;
  const num = (s: string) => (/^\d+$/.test(s) ? Number(s) : NaN);
  let m: RegExpExecArray | null;
  if (part === "*") return undefined;
  if ((m = /^\*\/(.*)$/.exec(part))) {
    const step = num(m[1]);
    if (!(step >= 1)) return `${f.name}: step "${m[1]}" in "${part}" must be a whole number of at least 1`;
    return undefined;
  }
  if ((m = /^(\w+)-(\w+)$/.exec(part))) {
    const a = num(m[1]);
    const b = num(m[2]);
    if (Number.isNaN(a) || Number.isNaN(b)) return `${f.name}: "${part}" must be numeric (names like MON/JAN are not supported)`;
    if (a < f.min || b > f.max) return `${f.name}: range ${part} is outside ${range}`;
    // graphile-worker refuses a range whose end is not larger than its start ("1-1" too): write "1".
    if (a >= b) return a === b ? `${f.name}: range ${part} has one value; write ${a}` : `${f.name}: range ${part} runs backwards`;
    return undefined;
  }
  const n = num(part);
  if (Number.isNaN(n)) {
    if (part.includes("/")) return `${f.name}: "${part}" is not supported (only */n steps)`;
    return `${f.name}: "${part}" is not a number, range (a-b), step (*/n) or *`;
  }
  if (n < f.min || n > f.max) return `${f.name}: ${n} is out of range ${range}`;
  return undefined;
}

/** Returns a message naming the bad field, or undefined when the expression is valid. */
export function cronProblem(expr: string): string | undefined {
  const fields = expr.trim().split(/\s+/);
  if (expr.trim() === "") return "cron expression is empty; expected 5 fields: minute hour day-of-month month day-of-week";
  if (fields.length !== 5) {
    return `cron expression has ${fields.length} field${fields.length === 1 ? "" : "s"}; expected 5: minute hour day-of-month month day-of-week`;
  }
  for (let i = 0; i < 5; i++) {
    for (const part of fields[i].split(",")) {
      const p = partProblem(part, FIELDS[i]);
      if (p) return p;
    }
  }
  return undefined;
}

/** The next `n` fire times after `from`, in UTC. */
export function nextFires(expr: string, n: number, from = new Date()): Date[] {
  const it = CronExpressionParser.parse(expr, { tz: "UTC", currentDate: from });
  const out: Date[] = [];
  for (let i = 0; i < n; i++) out.push(it.next().toDate());
  return out;
}
