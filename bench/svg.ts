/**
 * Hand-written SVG charts for BENCHMARKS.md: a line chart (optionally log-scaled x, for batch sizes and
 * concurrency) and a grouped bar chart, both with axes, ticks, axis labels and a legend. No dependencies; the
 * output is deterministic for the same data, so regenerated charts diff cleanly.
 * @module
 */

export interface Series {
  name: string;
  /** Line charts: [x, y] points. */
  points?: Array<[number, number]>;
  /** Bar charts: one value per category (NaN = no bar). */
  values?: number[];
}

export interface ChartSpec {
  title: string;
  xLabel: string;
  yLabel: string;
  series: Series[];
  /** Bar charts: the category labels along x. */
  categories?: string[];
  /** Line charts: log2-scaled x axis with a tick at each data x. */
  logX?: boolean;
  /** A dashed horizontal reference line (e.g. a goal ratio). */
  refLine?: { y: number; label: string };
}

const W = 640;
const H = 360;
const M = { top: 40, right: 170, bottom: 52, left: 70 };
const COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"];

const esc = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
const r1 = (x: number) => Math.round(x * 10) / 10;

/** A "nice" tick step (1, 2 or 5 × 10^k) giving about `n` ticks up to `max`. */
function niceStep(max: number, n = 5): number {
  if (!(max > 0)) return 1;
  const raw = max / n;
  const p = 10 ** Math.floor(Math.log10(raw));
  return [1, 2, 5, 10].map((m) => m * p).find((s) => s >= raw) ?? 10 * p;
}

function tickLabel(v: number): string {
  if (v === 0) return "0";
  if (Math.abs(v) >= 1e6) return `${r1(v / 1e6)}M`;
  if (Math.abs(v) >= 1e4) return `${r1(v / 1e3)}k`;
  return Number.isInteger(v) ? String(v) : String(Number(v.toPrecision(3)));
}

/** Frame, y ticks/grid, axis labels, title and legend shared by both chart kinds. Returns the y mapper. */
function frame(spec: ChartSpec, yMax: number, parts: string[]): (y: number) => number {
  const ih = H - M.top - M.bottom;
  const step = niceStep(yMax);
  const top = Math.max(step, Math.ceil(yMax / step) * step);
  const y = (v: number) => r1(M.top + ih - (v / top) * ih);
  parts.push(`<text x="${W / 2 - M.right / 2 + M.left / 2}" y="22" text-anchor="middle" font-size="15" font-weight="bold">${esc(spec.title)}</text>`);
  for (let v = 0; v <= top + step / 2; v += step) {
    parts.push(`<line x1="${M.left}" x2="${W - M.right}" y1="${y(v)}" y2="${y(v)}" stroke="#e5e5e5"/>`);
    parts.push(`<text x="${M.left - 6}" y="${y(v) + 4}" text-anchor="end" font-size="11">${tickLabel(v)}</text>`);
  }
  parts.push(`<line x1="${M.left}" x2="${M.left}" y1="${M.top}" y2="${H - M.bottom}" stroke="#333"/>`);
  parts.push(`<line x1="${M.left}" x2="${W - M.right}" y1="${H - M.bottom}" y2="${H - M.bottom}" stroke="#333"/>`);
  parts.push(`<text x="${(M.left + W - M.right) / 2}" y="${H - 12}" text-anchor="middle" font-size="12">${esc(spec.xLabel)}</text>`);
  parts.push(`<text transform="translate(16 ${(M.top + H - M.bottom) / 2}) rotate(-90)" text-anchor="middle" font-size="12">${esc(spec.yLabel)}</text>`);
  spec.series.forEach((s, i) => {
    const ly = M.top + 8 + i * 18;
    parts.push(`<rect x="${W - M.right + 14}" y="${ly - 8}" width="12" height="12" fill="${COLORS[i % COLORS.length]}"/>`);
    parts.push(`<text x="${W - M.right + 32}" y="${ly + 2}" font-size="11">${esc(s.name)}</text>`);
  });
  if (spec.refLine && spec.refLine.y <= top) {
    const ry = y(spec.refLine.y);
    parts.push(`<line x1="${M.left}" x2="${W - M.right}" y1="${ry}" y2="${ry}" stroke="#d62728" stroke-dasharray="6 4"/>`);
    parts.push(`<text x="${W - M.right - 4}" y="${ry - 4}" text-anchor="end" font-size="10" fill="#d62728">${esc(spec.refLine.label)}</text>`);
  }
  return y;
}

const wrap = (parts: string[]) =>
  `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="Helvetica, Arial, sans-serif">\n` +
  `<rect width="${W}" height="${H}" fill="#fff"/>\n${parts.join("\n")}\n</svg>\n`;

/** A line chart with markers; x is linear or log2. */
export function lineChart(spec: ChartSpec): string {
  const pts = spec.series.flatMap((s) => s.points ?? []).filter(([, v]) => Number.isFinite(v));
  const parts: string[] = [];
  const y = frame(spec, Math.max(...pts.map(([, v]) => v), spec.refLine?.y ?? 0), parts);
  const xs = [...new Set(pts.map(([x]) => x))].sort((a, b) => a - b);
  const f = (x: number) => (spec.logX ? Math.log2(x) : x);
  const lo = f(xs[0] ?? 0);
  const hi = f(xs.at(-1) ?? 1);
  const iw = W - M.left - M.right - 30;
  const x = (v: number) => r1(M.left + 15 + (hi === lo ? iw / 2 : ((f(v) - lo) / (hi - lo)) * iw));
  const ticks = spec.logX || xs.length <= 8 ? xs : Array.from({ length: 6 }, (_, i) => xs[0] + ((xs.at(-1)! - xs[0]) * i) / 5);
  for (const t of ticks) {
    parts.push(`<line x1="${x(t)}" x2="${x(t)}" y1="${H - M.bottom}" y2="${H - M.bottom + 5}" stroke="#333"/>`);
    parts.push(`<text x="${x(t)}" y="${H - M.bottom + 18}" text-anchor="middle" font-size="11">${tickLabel(t)}</text>`);
  }
  spec.series.forEach((s, i) => {
    const c = COLORS[i % COLORS.length];
    const ok = (s.points ?? []).filter(([, v]) => Number.isFinite(v));
    if (ok.length > 1) parts.push(`<polyline fill="none" stroke="${c}" stroke-width="2" points="${ok.map(([a, b]) => `${x(a)},${y(b)}`).join(" ")}"/>`);
    for (const [a, b] of ok) parts.push(`<circle cx="${x(a)}" cy="${y(b)}" r="3.5" fill="${c}"><title>${esc(`${s.name}: ${tickLabel(a)} → ${Number(b.toPrecision(4))}`)}</title></circle>`);
  });
  return wrap(parts);
}

/** Grouped vertical bars: one group per category, one bar per series, value printed above each bar. */
export function barChart(spec: ChartSpec): string {
  const cats = spec.categories ?? [];
  const vals = spec.series.flatMap((s) => s.values ?? []).filter((v) => Number.isFinite(v));
  const parts: string[] = [];
  const y = frame(spec, Math.max(...vals, spec.refLine?.y ?? 0) * 1.08, parts);
  const iw = W - M.left - M.right;
  const gw = iw / Math.max(cats.length, 1);
  const bw = Math.min(40, (gw * 0.8) / Math.max(spec.series.length, 1));
  cats.forEach((cat, ci) => {
    const gx = M.left + ci * gw + (gw - bw * spec.series.length) / 2;
    parts.push(`<text x="${r1(M.left + ci * gw + gw / 2)}" y="${H - M.bottom + 18}" text-anchor="middle" font-size="11">${esc(cat)}</text>`);
    spec.series.forEach((s, si) => {
      const v = s.values?.[ci];
      if (v === undefined || !Number.isFinite(v)) return;
      const bx = r1(gx + si * bw);
      parts.push(`<rect x="${bx}" y="${y(v)}" width="${r1(bw - 2)}" height="${r1(H - M.bottom - y(v))}" fill="${COLORS[si % COLORS.length]}"><title>${esc(`${s.name} · ${cat}: ${Number(v.toPrecision(4))}`)}</title></rect>`);
      parts.push(`<text x="${r1(bx + (bw - 2) / 2)}" y="${y(v) - 3}" text-anchor="middle" font-size="9">${tickLabel(Number(v.toPrecision(3)))}</text>`);
    });
  });
  return wrap(parts);
}
