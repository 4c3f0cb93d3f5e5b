/**
 * What a question states about the person asking, and which products those facts leave open to them. Read by
 * the server (it retrieves the products that fit first) and by the generators (the template says who qualifies
 * and why; the LLM prompt carries the same facts). Only what is stated counts: a number the parser cannot place
 * is left out, and no facts means nothing changes downstream.
 * @module
 */
import type { StatedFacts } from "./contracts.ts";
import type { MetaPredicate } from "./filter.ts";

/** Constraints stated in a question (the shape generators receive as `facts`). */
export type QuestionFacts = StatedFacts;

/** Purpose words → category, most specific first (home equity before mortgage, refinancing a car before auto). */
const PURPOSES: Array<[string, RegExp]> = [
  ["debt-consolidation", /\b(consolidat\w*|debt consolidation|(credit[- ])?card (debt|balances?)|pay (off|down) (my )?(credit )?cards?)\b/],
  ["credit-builder", /\b(build(ing)? (my |up )?credit|rebuild\w* (my )?credit|credit[- ]builder|no credit history|thin (credit )?file)\b/],
  ["home-equity", /\b(home[- ]equity|heloc|remodel\w*|renovat\w*|kitchen|roof)\b/],
  ["student", /\b(student|tuition|college|grad(uate)? school|education)\b/],
  ["small-business", /\b(small[- ]business|business|equipment|inventory)\b/],
  ["auto", /\b(car|auto|vehicle|truck|suv)\b/],
  ["mortgage", /\b(mortgage|buy(ing)? (a |my first )?(home|house)|first[- ]home|home purchase)\b/],
  ["personal", /\b(personal loan|wedding|medical bills?|unexpected expense|vacation)\b/],
];

const WORD_NUM: Record<string, number> = { one: 1, two: 2, three: 3, four: 4, five: 5, six: 6, seven: 7, eight: 8, nine: 9, ten: 10, fifteen: 15, twenty: 20, thirty: 30 };

function amountOf(q: string): number | undefined {
  const unit = (u: string | undefined) => (u === undefined ? 1 : /^k/.test(u) ? 1e3 : /^(m|mm|million)$/.test(u) ? 1e6 : 1);
  // "$15,000", "$15k", "$1.5 million"
  const dollar = /\$\s?(\d[\d,]*(?:\.\d+)?)\s*(k\b|thousand\b|m\b|mm\b|million\b)?/.exec(q);
  if (dollar) return Math.round(Number(dollar[1].replace(/,/g, "")) * unit(dollar[2]?.trim()));
  // "15k", "15 thousand", "15,000 dollars", "borrow 15000"
  const bare = /\b(\d[\d,]*(?:\.\d+)?)\s*(k|thousand|grand)\b/.exec(q) ?? /\b(\d[\d,]*(?:\.\d+)?)\s*(dollars|usd)\b/.exec(q)
    ?? /\b(?:borrow|need|loan of|amount of)\s+(\d{1,3}(?:,\d{3})+|\d{4,})\b/.exec(q);
  if (!bare) return undefined;
  const n = Number(bare[1].replace(/,/g, "")) * (bare[2] && /^(k|thousand|grand)$/.test(bare[2]) ? 1000 : 1);
  return n >= 100 ? Math.round(n) : undefined;
}

function scoreOf(q: string): number | undefined {
  const m = /(?<![$\d.,])\b(\d{3})\s*(?:\+\s*)?(?:credit|fico|score)\b/.exec(q)
    ?? /\b(?:credit(?: score)?|fico(?: score)?|score)\b(?:\s+(?:is|of|at|around|about|near|=|:|was|sits at|of about))*\s*(?:a\s+|an\s+)?(\d{3})\b(?!,\d|\.\d|\s*(?:months?|years?|%|k\b))/.exec(q);
  const s = m ? Number(m[1]) : undefined;
  return s !== undefined && s >= 300 && s <= 850 ? s : undefined;
}

function termOf(q: string): number | undefined {
  const m = /\b(\d{1,3}|one|two|three|four|five|six|seven|eight|nine|ten|fifteen|twenty|thirty)[\s-]*(months?|mos?|years?|yrs?)\b/.exec(q);
  if (!m) return undefined;
  const n = WORD_NUM[m[1]] ?? Number(m[1]);
  const months = m[2].startsWith("y") ? n * 12 : n;
  return months >= 1 && months <= 600 ? months : undefined;
}

function maxAprOf(q: string): number | undefined {
  const bound = "(?:under|below|less than|lower than|at most|no more than|max(?:imum)?(?: of)?|up to|<=?|not over|not above)";
  const m = new RegExp(`${bound}\\s*(\\d{1,2}(?:\\.\\d+)?)\\s*(?:%|percent)`).exec(q)
    ?? new RegExp(`\\b(?:apr|rate|interest(?: rate)?)\\s*(?:of\\s*)?${bound}\\s*(\\d{1,2}(?:\\.\\d+)?)\\b`).exec(q);
  const n = m ? Number(m[1]) : undefined;
  return n !== undefined && n > 0 && n < 100 ? n : undefined;
}

/** The constraints a question states; fields it does not state (or states unreadably) are absent. */
export function extractFacts(query: string): QuestionFacts {
  const q = query.normalize("NFKC").toLowerCase().replace(/[\u2012-\u2015]/g, "-");
  const facts: QuestionFacts = {};
  const credit_score = scoreOf(q);
  // A 3-digit score written with $ would be an amount; an amount equal to the score is the score misread.
  const amount = amountOf(q);
  const term_months = termOf(q);
  const max_apr = maxAprOf(q);
  const category = PURPOSES.find(([, re]) => re.test(q))?.[0];
  if (credit_score !== undefined) facts.credit_score = credit_score;
  if (amount !== undefined && amount !== credit_score) facts.amount = amount;
  if (term_months !== undefined) facts.term_months = term_months;
  if (max_apr !== undefined) facts.max_apr = max_apr;
  if (category !== undefined) facts.category = category;
  return facts;
}

/** True when the facts hold anything to check products against. */
export function hasFacts(f: QuestionFacts): boolean {
  return Object.values(f).some((v) => v !== undefined);
}

/** A number from metadata that may be written "6.9%", "$40,000" or 40000. */
export function metaNumber(v: unknown): number | undefined {
  if (typeof v === "number") return Number.isFinite(v) ? v : undefined;
  if (typeof v !== "string") return undefined;
  const m = /-?\d[\d,]*(\.\d+)?/.exec(v);
  return m ? Number(m[0].replace(/,/g, "")) : undefined;
}

/** APR in percent, from a fraction (0.069) or a percentage (6.9, "6.9%"). */
export function aprPercent(v: unknown): number | undefined {
  const n = metaNumber(v);
  return n !== undefined && n > 0 && n < 1 ? Math.round(n * 10000) / 100 : n;
}

/** True for a loan product (typed, or untyped with a rate). */
export function isProduct(m: Record<string, unknown>): boolean {
  return m.type === "loan_product" || (m.type === undefined && (m.apr !== undefined || m.interest_rate !== undefined));
}

const usd = (n: number) => `$${n.toLocaleString("en-US")}`;

/** One product checked against the facts: `fails` says why it is not open to this person (empty = open). */
export interface Eligibility {
  fails: string[];
  meets: string[];
  /** How far the product is from open: summed relative shortfalls (0 when open), for "nearest options". */
  gap: number;
}

/** Checks a product's metadata against stated facts. A field the product lacks is not held against it. */
export function checkEligibility(m: Record<string, unknown>, f: QuestionFacts): Eligibility {
  return assess(m, f, true);
}

/**
 * {@link checkEligibility}'s checks; `explain` false skips writing the reasons (a filter over every row of a version
 * only needs whether any check failed, and formatting amounts was most of its cost). `failed` counts failed checks.
 */
function assess(m: Record<string, unknown>, f: QuestionFacts, explain: boolean): Eligibility & { failed: number } {
  const fails: string[] = [];
  const meets: string[] = [];
  let gap = 0;
  let failed = 0;
  const fail = (shortfall: number, why: () => string) => {
    failed++;
    gap += shortfall;
    if (explain) fails.push(why());
  };
  const meet = (why: () => string) => {
    if (explain) meets.push(why());
  };
  const minScore = metaNumber(m.min_credit_score ?? m.min_score ?? m.credit_score_min);
  if (f.credit_score !== undefined && minScore !== undefined) {
    const score = f.credit_score;
    if (score >= minScore) meet(() => `a credit score of ${score} meets its minimum of ${minScore}`);
    else fail((minScore - score) / 100, () => `a credit score of ${score} is below its minimum of ${minScore}`);
  }
  const max = metaNumber(m.max_amount ?? m.max_loan);
  const min = metaNumber(m.min_amount);
  if (f.amount !== undefined) {
    const amount = f.amount;
    if (max !== undefined && amount > max) fail((amount - max) / amount, () => `it lends at most ${usd(max)}, less than ${usd(amount)}`);
    else if (min !== undefined && amount < min) fail((min - amount) / min, () => `it lends at least ${usd(min)}, more than ${usd(amount)}`);
    else if (max !== undefined) meet(() => `covers ${usd(amount)}`);
  }
  const termRaw = m.term_months ?? m.term ?? m.max_term_months;
  const terms = (Array.isArray(termRaw) ? termRaw.map(metaNumber) : typeof termRaw === "string" ? (termRaw.match(/\d+/g) ?? []).map(Number) : [metaNumber(termRaw)])
    .filter((t): t is number => t !== undefined);
  if (f.term_months !== undefined && terms.length) {
    const term = f.term_months;
    const longest = Math.max(...terms);
    if (term > longest) fail((term - longest) / term, () => `its longest term is ${longest} months, shorter than ${term}`);
    else meet(() => `repays over ${term} months`);
  }
  const apr = aprPercent(m.apr ?? m.rate ?? m.interest_rate);
  if (f.max_apr !== undefined && apr !== undefined) {
    const ceiling = f.max_apr;
    if (apr > ceiling) fail((apr - ceiling) / ceiling, () => `its APR of ${apr}% is above your ${ceiling}%`);
    else meet(() => `APR ${apr}% is within your ${ceiling}%`);
  }
  const category = m.category;
  if (f.category !== undefined && typeof category === "string" && category !== f.category) {
    const wanted = f.category;
    fail(10, () => `it is ${category.replace(/-/g, " ")} lending, not ${wanted.replace(/-/g, " ")}`); // another purpose is never a "near" option
  }
  return { fails, meets, gap, failed };
}

/** Products open to a person with these facts (loan products that fail no check). */
export function eligibilityPredicate(f: QuestionFacts): MetaPredicate {
  return (m) => isProduct(m) && assess(m, f, false).failed === 0;
}

/** Products for the stated purpose whatever the numbers (where the "nearest options" come from). */
export function purposePredicate(f: QuestionFacts): MetaPredicate {
  return (m) => isProduct(m) && (f.category === undefined || m.category === undefined || m.category === f.category);
}

/** The facts as one line for an answer or a prompt ("credit score 650; borrow $15,000; purpose: debt consolidation"). */
export function describeFacts(f: QuestionFacts): string {
  const parts: string[] = [];
  if (f.credit_score !== undefined) parts.push(`credit score ${f.credit_score}`);
  if (f.amount !== undefined) parts.push(`borrow ${usd(f.amount)}`);
  if (f.term_months !== undefined) parts.push(`repay over ${f.term_months} months`);
  if (f.max_apr !== undefined) parts.push(`APR at most ${f.max_apr}%`);
  if (f.category !== undefined) parts.push(`purpose: ${f.category.replace(/-/g, " ")}`);
  return parts.join("; ");
}
