/**
 * `template` generator (the default): a deterministic, offline answer assembled only from the retrieved
 * documents. Loan products are listed and compared on what the question asks about (rate, term, amount,
 * credit score), a customer profile is summarised and used to check eligibility, and every statement cites
 * its document as `[id]`. Nothing is invented: a field the metadata lacks is simply not mentioned.
 *
 * When the question states constraints (runtime/question.ts: a credit score, an amount, a term, an APR ceiling,
 * a purpose) the answer is about this person: the products open to them, ranked by what they asked for, then
 * those that are not and why; when none is open it says so and shows the nearest. Nothing is called easy to
 * qualify for unless the stated facts meet it.
 * @module
 */
import { z } from "zod";
import { type Advice, definePlugin, type Generator, type RetrievedDoc } from "../../runtime/contracts.ts";
import { checkEligibility, describeFacts, extractFacts, hasFacts, metaNumber as num, type QuestionFacts } from "../../runtime/question.ts";

export const NAME = "template";

export const DEFAULT_DISCLAIMER =
  "This is general information, not financial advice; check current terms with the lender before you decide.";

export interface TemplateOptions {
  /** Most documents the answer uses, in retrieval order. @default 8 */
  max_docs: number;
  /** Documents scoring below this are treated as not relevant. Unset = use every retrieved document. */
  min_score?: number;
  /** Closing line of every answer. @default DEFAULT_DISCLAIMER */
  disclaimer: string;
}

const options = z.strictObject({
  max_docs: z.int().min(1).max(100).default(8).describe("Most documents the answer uses, in retrieval order"),
  min_score: z.number().optional().describe("Documents scoring below this are treated as not relevant"),
  disclaimer: z.string().min(1).default(DEFAULT_DISCLAIMER).describe("Closing line of every answer"),
});

type Aspect = "rate" | "term" | "amount" | "credit" | "fees";
const ASPECTS: Record<Aspect, RegExp> = {
  rate: /\b(rates?|apr|interest|cheap\w*|lowest|cost\w*)\b/,
  term: /\b(terms?|months?|years?|long(er|est)?|short(er|est)?|duration|repay\w*)\b/,
  amount: /\$|\b(amounts?|borrow\w*|much|max(imum)?|limits?|\d+k)\b/,
  credit: /\b(credit|scores?|fico|qualify|eligib\w*|approv\w*)\b/,
  fees: /\bfees?\b/,
};

function pick(meta: Record<string, unknown>, ...keys: string[]): unknown {
  for (const k of keys) if (meta[k] !== undefined && meta[k] !== null && meta[k] !== "") return meta[k];
  return undefined;
}

const money = (n: number, cur?: unknown) =>
  typeof cur === "string" && cur.toUpperCase() !== "USD" ? `${n.toLocaleString("en-US")} ${cur}` : `$${n.toLocaleString("en-US")}`;

/** Plain text for any metadata value; brackets become parentheses so only citations use `[...]`. */
function show(v: unknown, max = 120): string {
  let s = typeof v === "string" ? v
    : typeof v === "number" || typeof v === "boolean" ? String(v)
    : Array.isArray(v) ? v.map((x) => show(x, max)).join(", ")
    : v && typeof v === "object" ? Object.entries(v).map(([k, x]) => `${k.replace(/_/g, " ")} ${show(x, max)}`).join(", ")
    : "";
  s = s.replace(/\s+/g, " ").replace(/\[/g, "(").replace(/\]/g, ")").trim();
  return s.length > max ? s.slice(0, max - 1) + "…" : s;
}

interface Product {
  doc: RetrievedDoc;
  name: string;
  apr?: number;
  termMax?: number;
  maxAmount?: number;
  minScore?: number;
  facts: string[];
}

function toProduct(doc: RetrievedDoc): Product {
  const m = doc.metadata;
  const aprRaw = num(pick(m, "apr", "rate", "interest_rate"));
  // Rates stored as fractions (0.069) are shown as percentages; a real APR under 1% is rare enough.
  const apr = aprRaw !== undefined && aprRaw > 0 && aprRaw < 1 ? Math.round(aprRaw * 10000) / 100 : aprRaw;
  const termRaw = pick(m, "term_months", "term", "max_term_months");
  const terms = Array.isArray(termRaw) ? termRaw.map(num) : typeof termRaw === "string" ? (termRaw.match(/\d+/g) ?? []).map(Number) : [num(termRaw)];
  const termNums = terms.filter((t): t is number => t !== undefined);
  const termMax = termNums.length ? Math.max(...termNums) : undefined;
  const maxAmount = num(pick(m, "max_amount", "max_loan", "amount"));
  const minScore = num(pick(m, "min_credit_score", "min_score", "credit_score_min"));
  const fees = pick(m, "fees", "fee", "origination_fee");
  const facts: string[] = [];
  if (apr !== undefined) facts.push(`APR ${apr}%`);
  if (termNums.length) facts.push(termNums.length > 1 ? `term ${Math.min(...termNums)}–${termMax} months` : `term ${termMax} months`);
  if (maxAmount !== undefined) facts.push(`up to ${money(maxAmount, m.currency)}`);
  if (minScore !== undefined) facts.push(`minimum credit score ${minScore}`);
  if (fees !== undefined) facts.push(`fees: ${show(fees, 80)}`);
  if (!facts.length && doc.text.trim()) facts.push(show(doc.text, 160));
  return { doc, name: show(pick(m, "name", "title", "product") ?? doc.id, 80), apr, termMax, maxAmount, minScore, facts };
}

function fits(p: Product, want: { amount?: number; score?: number; term?: number }): string[] {
  const out: string[] = [];
  if (want.score !== undefined && p.minScore !== undefined) {
    out.push(want.score >= p.minScore ? `a credit score of ${want.score} meets its minimum` : `a credit score of ${want.score} is below its minimum`);
  }
  if (want.amount !== undefined && p.maxAmount !== undefined) {
    out.push(want.amount <= p.maxAmount ? `covers ${money(want.amount)}` : `does not reach ${money(want.amount)}`);
  }
  if (want.term !== undefined && p.termMax !== undefined && want.term > p.termMax) out.push(`is shorter than ${want.term} months`);
  return out;
}

const MONEY_KEY = /^(?!.*(ratio|dti|_to_|rate|score|count|months|pct|percent)).*(income|debt|balance|savings|amount|expenses)/;

const cite = (p: Product) => `${p.name} [${p.doc.id}]`;

/** How an eligibility answer orders the open products: by what the question asks for, rate when it names nothing. */
const RANKS: Array<{ re: RegExp; label: string; key: (p: Product) => number | undefined; best: (p: Product) => string }> = [
  { re: /\b(easiest|qualify|eligib\w*|approv\w*)\b/, label: "lowest credit score requirement first", key: (p) => p.minScore,
    best: (p) => `Easiest to qualify for: ${cite(p)} (minimum credit score ${p.minScore}).` },
  { re: /\b(longest|long(er)? terms?|lower (monthly )?payments?|smallest payments?)\b/, label: "longest term first", key: (p) => (p.termMax === undefined ? undefined : -p.termMax),
    best: (p) => `Longest term: ${cite(p)} at up to ${p.termMax} months.` },
  { re: /\b(largest|biggest|most|max(imum)? amount|highest limit)\b/, label: "largest amount first", key: (p) => (p.maxAmount === undefined ? undefined : -p.maxAmount),
    best: (p) => `Largest amount: ${cite(p)} at ${money(p.maxAmount!, p.doc.metadata.currency)}.` },
];
const BY_RATE = { label: "lowest APR first", key: (p: Product) => p.apr, best: (p: Product) => `Lowest APR: ${cite(p)} at ${p.apr}%.` };

/** The answer for a question that states constraints: open products, those that are not and why, the nearest. */
function eligibilityAnswer(q: string, products: Product[], facts: QuestionFacts): string[] {
  const rank = RANKS.find((r) => r.re.test(q)) ?? BY_RATE;
  const order = (a: Product, b: Product) => (rank.key(a) ?? Infinity) - (rank.key(b) ?? Infinity);
  const checked = products.map((p) => ({ p, e: checkEligibility(p.doc.metadata, facts) }));
  const open = checked.filter((c) => !c.e.fails.length).sort((a, b) => order(a.p, b.p));
  const closed = checked.filter((c) => c.e.fails.length).sort((a, b) => a.e.gap - b.e.gap || order(a.p, b.p));
  const out = [`What you told me: ${describeFacts(facts)}.`];
  if (open.length) {
    out.push(`Open to you (${rank.label}):`);
    for (const { p, e } of open) out.push(`- ${cite(p)}: ${p.facts.join(", ") || "no details given"}.${e.meets.length ? ` For you: ${e.meets.join("; ")}.` : ""}`);
  } else {
    out.push("None of the products I found is open to you on what you told me. The nearest options, and what stands in the way:");
  }
  if (closed.length) {
    if (open.length) out.push("", "Not open to you:");
    for (const { p, e } of closed) out.push(`- ${cite(p)}: ${p.facts.join(", ") || "no details given"}. Not open to you: ${e.fails.join("; ")}.`);
  }
  // The best pick is named only among the open products: never a product these facts do not meet.
  if (open.length && rank.key(open[0].p) !== undefined && (open.length > 1 || rank === RANKS[0])) out.push("", rank.best(open[0].p));
  return out;
}

/** The template answer; also the fallback of the LLM generators. */
export function renderAdvice(query: string, docs: RetrievedDoc[], opts: Partial<TemplateOptions> = {}, stated: QuestionFacts = extractFacts(query)): string {
  const disclaimer = opts.disclaimer ?? DEFAULT_DISCLAIMER;
  const seen = new Set<string>();
  const used = docs
    .filter((d) => opts.min_score === undefined || d.score >= opts.min_score)
    .filter((d) => !seen.has(d.id) && seen.add(d.id))
    .slice(0, opts.max_docs ?? 8);
  if (!used.length) {
    return "I could not find any loan products or customer information relevant to this question, so I cannot give a grounded answer. " +
      "Try rephrasing it or naming the kind of loan you are interested in.\n\n" + disclaimer;
  }
  const q = query.normalize("NFKC").toLowerCase();
  const aspects = (Object.keys(ASPECTS) as Aspect[]).filter((a) => ASPECTS[a].test(q));
  const isProduct = (d: RetrievedDoc) => d.metadata.type === "loan_product" || (d.metadata.type === undefined && pick(d.metadata, "apr", "interest_rate") !== undefined);
  const isProfile = (d: RetrievedDoc) => d.metadata.type === "customer_profile" || (d.metadata.type === undefined && d.metadata.credit_score !== undefined && !isProduct(d));
  const profiles = used.filter(isProfile);
  const products = used.filter(isProduct).map(toProduct);
  const others = used.filter((d) => !isProduct(d) && !isProfile(d));
  const want: { amount?: number; score?: number; term?: number } = { amount: stated.amount, score: stated.credit_score, term: stated.term_months };
  const out: string[] = [];
  // Constraints stated in the question: answer for this person (a retrieved profile may be someone else).
  const personal = hasFacts(stated) && products.length > 0;

  for (const d of profiles) {
    const skip = new Set(["type", "id", "name", "customer_id"]);
    const facts = Object.entries(d.metadata).filter(([k, v]) => !skip.has(k) && v !== null && v !== undefined).slice(0, 8)
      .map(([k, v]) => `${k.replace(/_/g, " ")} ${MONEY_KEY.test(k) && num(v) !== undefined ? money(num(v)!) : show(v, 60)}`);
    out.push(`Customer profile [${d.id}]: ${facts.length ? facts.join(", ") : show(d.text, 160)}.`);
    if (!personal) want.score ??= num(d.metadata.credit_score);
  }

  if (personal) out.push(...eligibilityAnswer(q, products, stated));
  else if (products.length) {
    // Order by what the question is about; rate when it names nothing or several things (the usual first question).
    const primary = aspects.find((a) => a !== "fees") ?? "rate";
    const keyOf: Record<Aspect, (p: Product) => number | undefined> = {
      rate: (p) => p.apr, term: (p) => p.termMax === undefined ? undefined : -p.termMax,
      amount: (p) => p.maxAmount === undefined ? undefined : -p.maxAmount, credit: (p) => p.minScore, fees: () => undefined,
    };
    const key = keyOf[primary];
    const sorted = [...products].sort((a, b) => (key(a) ?? Infinity) - (key(b) ?? Infinity));
    const label = { rate: "lowest APR first", term: "longest term first", amount: "largest amount first", credit: "lowest credit score requirement first", fees: "" }[primary];
    out.push(products.length > 1 ? `Loan products found (${label}):` : "Loan product found:");
    for (const p of sorted) {
      const fit = fits(p, want);
      out.push(`- ${cite(p)}: ${p.facts.join(", ") || "no details given"}.${fit.length ? ` For you: ${fit.join("; ")}.` : ""}`);
    }
    if (products.length > 1) {
      const best = (f: (p: Product) => number | undefined, dir: 1 | -1) => {
        const have = products.filter((p) => f(p) !== undefined);
        return have.length > 1 ? have.reduce((a, b) => (dir * f(b)! < dir * f(a)! ? b : a)) : undefined;
      };
      const lines: string[] = [];
      const cheap = best((p) => p.apr, 1);
      if (cheap && (aspects.includes("rate") || !aspects.length)) lines.push(`Lowest APR: ${cite(cheap)} at ${cheap.apr}%.`);
      const long = best((p) => p.termMax, -1);
      if (long && aspects.includes("term")) lines.push(`Longest term: ${cite(long)} at up to ${long.termMax} months.`);
      const big = best((p) => p.maxAmount, -1);
      if (big && aspects.includes("amount")) lines.push(`Largest amount: ${cite(big)} at ${money(big.maxAmount!, big.doc.metadata.currency)}.`);
      const easy = best((p) => p.minScore, 1);
      if (easy && aspects.includes("credit")) lines.push(`Easiest to qualify for: ${cite(easy)} (minimum credit score ${easy.minScore}).`);
      const eligible = sorted.filter((p) => key(p) !== undefined && !fits(p, want).some((f) => /below|not reach|shorter/.test(f)));
      if ((want.score !== undefined || want.amount !== undefined) && eligible.length && eligible.length < products.length) {
        const what = { rate: "the lowest APR", term: "the longest term", amount: "the largest amount", credit: "the lowest credit score requirement", fees: "" }[primary];
        lines.push(`Of the products that fit your situation, ${cite(eligible[0])} has ${what}.`);
      }
      if (lines.length) out.push("", ...lines);
    }
  }

  if (others.length) {
    out.push("", products.length || profiles.length ? "Other retrieved information:" : "Retrieved information:");
    for (const d of others) {
      const title = pick(d.metadata, "name", "title");
      out.push(`- ${title !== undefined ? show(title, 80) + " " : ""}[${d.id}]: ${show(d.text, 200) || "(no text)"}`);
    }
  }
  out.push("", disclaimer);
  return out.join("\n").replace(/^\n+/, "");
}

export default definePlugin({
  kind: "generator",
  name: NAME,
  description: "Deterministic offline answer built only from the retrieved documents, citing each as [id]",
  options,
  create(opts: TemplateOptions): Generator {
    return {
      async generate({ query, docs, facts }): Promise<Advice> {
        return { advice: renderAdvice(query, docs, opts, facts ?? extractFacts(query)), generator: NAME };
      },
    };
  },
});
