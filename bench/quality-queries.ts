/**
 * The labelled query set of `apfa bench quality`, generated from the sample corpus's structured metadata, so
 * each query's relevant documents are known from fields rather than judged by hand:
 * - eligibility questions ("I have a 650 credit score and want to consolidate card debt; I need $15,000"):
 *   relevant = loan products of that category whose minimum score, amount range and term admit the person;
 * - lookups by exact name and lender, or by document id: relevant = the documents carrying them.
 * Also the metrics: recall@10 (against min(10, |relevant|)) and binary nDCG@10.
 * @module
 */
import { mulberry32, type CorpusDoc } from "../examples/corpus.ts";

export interface LabelledQuery {
  kind: "eligibility" | "name" | "id";
  text: string;
  relevant: Set<string>;
  /** Eligibility queries: the constraints the text states (ground truth for "ineligible"). */
  person?: { score: number; category: string; amount?: number; term?: number };
}

/** How each category's purpose is said in a question (the words differ from the category name on purpose). */
const PURPOSE: Record<string, string[]> = {
  "debt-consolidation": ["consolidate card debt", "pay off my credit cards with one loan"],
  auto: ["finance a used car", "buy a new car"],
  mortgage: ["get a mortgage to buy my first home", "take out a mortgage on a house"],
  student: ["refinance my student loans", "pay for grad school tuition"],
  "home-equity": ["borrow against my home equity for a kitchen remodel", "fund a roof replacement with home equity"],
  "small-business": ["get a loan for my small business", "buy equipment for my business"],
  "credit-builder": ["rebuild my credit", "build credit with a credit builder loan"],
  personal: ["take out a personal loan for a wedding", "cover medical bills with a personal loan"],
};

const usd = (n: number) => "$" + n.toLocaleString("en-US");

type Meta = { type?: string; category?: string; min_credit_score?: number; min_amount?: number; max_amount?: number; term_months?: number; name?: string; lender?: string };

/** Whether a product admits the person (the ground truth the answers are scored against). */
export function admits(m: Meta, p: NonNullable<LabelledQuery["person"]>): boolean {
  return m.type === "loan_product" && m.category === p.category && (m.min_credit_score ?? 0) <= p.score &&
    (p.amount === undefined || ((m.min_amount ?? 0) <= p.amount && p.amount <= (m.max_amount ?? Infinity))) &&
    (p.term === undefined || (m.term_months ?? Infinity) >= p.term);
}

/** `count` queries: 70% eligibility questions, 20% name + lender lookups, 10% id lookups; deterministic. */
export function labelledQueries(corpus: CorpusDoc[], count: number, seed = 14): LabelledQuery[] {
  const r = mulberry32(seed);
  const pick = <T>(xs: T[]): T => xs[Math.floor(r() * xs.length)];
  const products = corpus.filter((d) => d.metadata.type === "loan_product");
  const out: LabelledQuery[] = [];
  const want = { eligibility: Math.round(count * 0.7), name: Math.round(count * 0.2) };
  while (out.filter((q) => q.kind === "eligibility").length < want.eligibility) {
    const anchor = pick(products).metadata as Meta; // a real product's fields, so most questions have answers
    const category = anchor.category!;
    const score = Math.min(850, Math.max(300, (anchor.min_credit_score ?? 600) + pick([-40, -20, 0, 10, 30, 60])));
    const withAmount = r() < 0.5;
    const amount = withAmount ? Math.round(((anchor.min_amount ?? 1000) + r() * ((anchor.max_amount ?? 10000) - (anchor.min_amount ?? 1000))) / 500) * 500 : undefined;
    const term = r() < 0.3 ? pick([24, 36, 60]) : undefined;
    const person = { score, category, amount, term };
    const relevant = new Set(products.filter((d) => admits(d.metadata as Meta, person)).map((d) => d.id));
    if (!relevant.size) continue;
    const purpose = pick(PURPOSE[category]);
    const money = amount === undefined ? "" : pick([`, and I need ${usd(amount)}`, ` — about ${amount / 1000}k`, `; the amount is ${usd(amount)}`]);
    const over = term === undefined ? "" : pick([` over ${term} months`, term % 12 === 0 ? ` over ${term / 12} years` : ` over ${term} months`]);
    const text = pick([
      `I have a ${score} credit score and want to ${purpose}${money}${over}`,
      `My credit score is ${score}. I'd like to ${purpose}${money}${over}.`,
      `With a FICO of ${score}, can I ${purpose}${money}${over}?`,
    ]);
    out.push({ kind: "eligibility", text, relevant, person });
  }
  for (let i = 0; i < want.name; i++) {
    const t = pick(products).metadata as Meta;
    const relevant = new Set(products.filter((d) => d.metadata.name === t.name && d.metadata.lender === t.lender).map((d) => d.id));
    out.push({ kind: "name", text: pick([`Tell me about the ${t.name} from ${t.lender}`, `${t.lender} ${t.name} terms`, `What does ${t.lender}'s ${t.name} cost?`]), relevant });
  }
  while (out.length < count) {
    const d = pick(corpus);
    out.push({ kind: "id", text: pick([`What are the details of ${d.id}?`, `show ${d.id}`, `Summarise document ${d.id}`]), relevant: new Set([d.id]) });
  }
  return out;
}

/** Share of the relevant documents in the top 10, against the most the top 10 can hold. */
export function recallAt10(ids: string[], relevant: Set<string>): number {
  return ids.slice(0, 10).filter((id) => relevant.has(id)).length / Math.min(10, relevant.size);
}

/** Binary-relevance nDCG@10. */
export function ndcgAt10(ids: string[], relevant: Set<string>): number {
  let dcg = 0;
  ids.slice(0, 10).forEach((id, i) => (dcg += relevant.has(id) ? 1 / Math.log2(i + 2) : 0));
  let ideal = 0;
  for (let i = 0; i < Math.min(10, relevant.size); i++) ideal += 1 / Math.log2(i + 2);
  return dcg / ideal;
}

/** The products an answer recommends: the ids in its "Open to you" list and in the best-pick line under it. */
export function recommended(advice: string): string[] {
  const at = advice.indexOf("Open to you");
  if (at < 0) return [];
  const rest = advice.slice(at).split("\n\nNot open to you:")[0];
  return [...rest.matchAll(/\[([^\]]+)\]/g)].map((m) => m[1]);
}
