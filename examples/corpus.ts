// Deterministic sample corpus for apfa: loan products and customer profiles as JSON Lines.
// Usage: node --import tsx examples/corpus.ts [out=examples/data/corpus.jsonl] [count=1000]
//        deno run -A examples/corpus.ts [out] [count]
import * as fs from "node:fs";
import * as path from "node:path";
import { argv } from "node:process";
import { fileURLToPath, pathToFileURL } from "node:url";

export interface CorpusDoc { id: string; text: string; metadata: Record<string, unknown> }
export interface CorpusOptions { count?: number; seed?: number }

type Rng = () => number;
/** mulberry32: small, fast, and identical on every runtime. */
export function mulberry32(seed: number): Rng {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const int = (r: Rng, lo: number, hi: number): number => lo + Math.floor(r() * (hi - lo + 1));
const pick = <T>(r: Rng, xs: readonly T[]): T => xs[Math.floor(r() * xs.length)];
const chance = (r: Rng, p: number): boolean => r() < p;
function shuffle<T>(r: Rng, xs: T[]): T[] {
  for (let i = xs.length - 1; i > 0; i--) { const j = Math.floor(r() * (i + 1)); [xs[i], xs[j]] = [xs[j], xs[i]]; }
  return xs;
}
const sample = <T>(r: Rng, xs: readonly T[], n: number): T[] => shuffle(r, [...xs]).slice(0, n);
const roundTo = (n: number, step: number): number => Math.round(n / step) * step;
const usd = (n: number): string => "$" + String(Math.round(n)).replace(/\B(?=(\d{3})+(?!\d))/g, ",");
const pct = (x: number, digits = 2): string => `${(x * 100).toFixed(digits)}%`;
const an = (w: string): string => (/^[aeiou]/i.test(w) ? `an ${w}` : `a ${w}`);
const list = (xs: string[]): string => (xs.length < 2 ? xs.join("") : `${xs.slice(0, -1).join(", ")} and ${xs[xs.length - 1]}`);
const cap = (s: string): string => s.charAt(0).toUpperCase() + s.slice(1);

// ---------------------------------------------------------------- loan products
type Category = "personal" | "auto" | "mortgage" | "student" | "home-equity" | "debt-consolidation" | "small-business" | "credit-builder";
interface CatSpec {
  weight: number; apr: [number, number]; score: [number, number]; terms: number[];
  min: [number, number, number]; max: [number, number, number]; orig: [number, number];
  names: string[]; what: string[]; purpose: string[]; suits: string[]; features: string[];
}
const CATS: Record<Category, CatSpec> = {
  personal: { weight: 18, apr: [0.079, 0.299], score: [580, 760], terms: [24, 36, 48, 60, 72], min: [1000, 5000, 500], max: [20000, 50000, 5000], orig: [0, 0.08],
    names: ["Personal Loan", "Signature Loan", "Personal Installment Loan"], what: ["unsecured personal loan", "fixed-rate installment loan"],
    purpose: ["cover a major purchase", "handle an unexpected expense", "pay for a wedding or move"], suits: ["borrowers with steady income who want one predictable payment", "anyone who'd rather not tap a credit card for a large, one-time cost"],
    features: ["same-day funding decisions", "rate discount for autopay", "choose your payment date", "soft-pull rate check"] },
  auto: { weight: 15, apr: [0.049, 0.189], score: [560, 720], terms: [36, 48, 60, 72, 84], min: [5000, 10000, 1000], max: [50000, 100000, 5000], orig: [0, 0],
    names: ["Auto Loan", "Auto Refinance Loan", "New & Used Vehicle Loan"], what: ["secured auto loan", "vehicle loan"],
    purpose: ["buy a new or used car", "refinance an existing car loan into a lower payment"], suits: ["drivers shopping at a dealership who want pre-approval in hand", "car owners whose credit has improved since they bought"],
    features: ["pre-approval valid for 60 days", "no payments for the first 60 days", "GAP coverage available", "private-party purchases allowed"] },
  mortgage: { weight: 12, apr: [0.0575, 0.0775], score: [580, 700], terms: [180, 240, 360], min: [50000, 100000, 25000], max: [450000, 1500000, 50000], orig: [0, 0.01],
    names: ["30-Year Fixed Mortgage", "15-Year Fixed Mortgage", "FHA Home Loan", "First-Time Buyer Mortgage"], what: ["fixed-rate mortgage", "home purchase loan"],
    purpose: ["buy a primary residence", "refinance into a fixed rate"], suits: ["first-time buyers with a modest down payment", "homeowners planning to stay put for many years"],
    features: ["down payments from 3%", "rate lock for up to 60 days", "closing-cost assistance for eligible buyers", "digital document upload"] },
  student: { weight: 10, apr: [0.044, 0.139], score: [640, 720], terms: [60, 120, 180, 240], min: [1000, 5000, 1000], max: [100000, 200000, 10000], orig: [0, 0],
    names: ["Student Loan", "Student Loan Refinance", "Graduate Student Loan"], what: ["private student loan", "education refinance loan"],
    purpose: ["pay for tuition and living costs", "refinance federal and private student debt"], suits: ["graduates with a stable job and high-rate private loans", "students who've maxed out federal aid and have a cosigner"],
    features: ["cosigner release after 24 on-time payments", "up to 12 months of forbearance", "interest-only payments while in school", "0.25% autopay discount"] },
  "home-equity": { weight: 10, apr: [0.0749, 0.1099], score: [640, 720], terms: [60, 120, 180, 240], min: [10000, 25000, 5000], max: [150000, 500000, 25000], orig: [0, 0.02],
    names: ["Home Equity Loan", "Home Equity Line of Credit", "Fixed-Rate HELOC"], what: ["home equity loan", "home-secured loan"],
    purpose: ["fund a renovation", "tap home equity for large expenses"], suits: ["homeowners with at least 20% equity planning a remodel", "owners who want a lower rate than an unsecured loan and accept using the home as collateral"],
    features: ["borrow up to 85% of home value", "interest-only draw period", "no closing costs on lines under $250,000", "option to lock a fixed rate on draws"] },
  "debt-consolidation": { weight: 15, apr: [0.0849, 0.2799], score: [600, 740], terms: [24, 36, 48, 60], min: [2000, 5000, 1000], max: [25000, 50000, 5000], orig: [0, 0.06],
    names: ["Debt Consolidation Loan", "Card Payoff Loan", "Consolidation Installment Loan"], what: ["debt consolidation loan", "fixed-rate card payoff loan"],
    purpose: ["roll high-interest credit card balances into one payment", "pay off several cards at once"], suits: ["borrowers carrying balances across several credit cards", "people who want a fixed payoff date instead of revolving debt"],
    features: ["direct payment to your creditors", "rate discount when we pay creditors directly", "free credit score monitoring", "hardship program"] },
  "small-business": { weight: 12, apr: [0.0799, 0.2499], score: [620, 700], terms: [12, 24, 36, 60, 120], min: [5000, 25000, 5000], max: [100000, 500000, 25000], orig: [0.005, 0.035],
    names: ["Small Business Term Loan", "SBA 7(a) Loan", "Business Line of Credit", "Equipment Loan"], what: ["small business term loan", "business loan"],
    purpose: ["buy equipment or inventory", "expand into a new location", "smooth out seasonal cash flow"], suits: ["businesses with at least two years of revenue history", "owners financing equipment that pays for itself"],
    features: ["dedicated relationship manager", "funding in as little as 3 business days", "no prepayment penalty after year one", "seasonal payment schedules"] },
  "credit-builder": { weight: 8, apr: [0.059, 0.159], score: [300, 300], terms: [6, 12, 24], min: [300, 500, 100], max: [1000, 3000, 500], orig: [0, 0],
    names: ["Credit Builder Loan", "Share-Secured Loan", "Fresh Start Loan"], what: ["credit builder loan", "savings-secured installment loan"],
    purpose: ["establish or rebuild a credit history", "build savings while reporting on-time payments"], suits: ["people with no credit file or a recent bankruptcy", "young adults building credit for the first time"],
    features: ["payments reported to all three bureaus", "funds released into savings at payoff", "no hard credit pull", "free financial coaching"] },
};
const CAT_KEYS = Object.keys(CATS) as Category[];
const LENDERS = ["Harbor Federal Credit Union", "Northwind Bank", "Summit Ridge Savings", "Prairie State Bank", "Bluewater Lending", "Cascade Community Bank", "Lakeshore Credit Union",
  "Keystone Trust", "Evergreen Financial", "Pioneer Valley Bank", "Redwood Capital Lending", "Granite Peak Credit Union", "Meridian Savings & Loan", "Copperfield Bank", "Tidewater Federal"];
const BRANDS = ["Clear", "Flex", "Bright", "Anchor", "Horizon", "Pathway", "Milestone", "Keystone", "True North", "Steady", "Compass", "Open Road", "Cornerstone", "Momentum", "Key", "Simple"];

function loanProduct(r: Rng, n: number): CorpusDoc {
  const total = CAT_KEYS.reduce((s, k) => s + CATS[k].weight, 0);
  let roll = r() * total, category: Category = CAT_KEYS[0];
  for (const k of CAT_KEYS) { if ((roll -= CATS[k].weight) < 0) { category = k; break; } }
  const c = CATS[category];
  const lender = pick(r, LENDERS);
  const name = `${pick(r, BRANDS)} ${pick(r, c.names)}`;
  const refi = /Refinance/.test(name);
  const fit = c.purpose.filter((p) => /refinanc/i.test(p) === refi);
  const purposes = fit.length > 0 ? fit : c.purpose;
  const what = /Line of Credit|HELOC/.test(name) ? ["revolving line of credit", "flexible credit line"] : c.what;
  const tier = r(); // 0 = prime-only product, 1 = serves the deepest subprime band the category allows
  const min_credit_score = c.score[0] === c.score[1] ? c.score[0] : roundTo(c.score[1] - tier * (c.score[1] - c.score[0]), 10);
  const apr = Math.round((c.apr[0] + (c.apr[1] - c.apr[0]) * Math.min(1, Math.max(0, tier * 0.8 + r() * 0.25))) * 10000) / 10000;
  const term_months = name.includes("15-Year") ? 180 : name.includes("30-Year") ? 360 : pick(r, c.terms);
  const min_amount = roundTo(int(r, c.min[0], c.min[1]), c.min[2]);
  const max_amount = Math.max(min_amount * 2, roundTo(int(r, c.max[0], c.max[1]), c.max[2]));
  const origination_pct = c.orig[1] === 0 || chance(r, 0.35) ? 0 : Math.round((c.orig[0] + r() * (c.orig[1] - c.orig[0])) * 1000) / 1000;
  const fees = { origination_pct, late_fee: pick(r, [0, 15, 25, 29, 35, 39]), prepayment_penalty: category === "small-business" && chance(r, 0.3) };
  const features = sample(r, c.features, int(r, 2, 3));
  const fixed = category === "home-equity" && name.includes("Line") ? "variable" : "fixed";
  const years = term_months % 12 === 0 && term_months >= 24 ? `${term_months / 12} years` : `${term_months} months`;
  const intro = pick(r, [
    `The ${name} from ${lender} is ${an(what[0])} for amounts from ${usd(min_amount)} to ${usd(max_amount)}.`,
    `Borrow between ${usd(min_amount)} and ${usd(max_amount)} with the ${name} from ${lender}.`,
    `Need to ${pick(r, purposes)}? ${lender}'s ${name} lends up to ${usd(max_amount)}.`,
    `${lender} designed the ${name} to help you ${pick(r, purposes)}.`,
    `${lender} offers the ${name}, ${an(what[1])} that can help you ${pick(r, purposes)}.`,
  ]);
  const rate = pick(r, [
    `Rates start at ${pct(apr)} APR for well-qualified applicants, with terms up to ${term_months} months.`,
    `${cap(fixed)} rates from ${pct(apr)} APR and repayment over ${years} keep budgeting simple.`,
    `Expect an APR from ${pct(apr)} on terms of ${term_months} months; your final rate depends on credit and income.`,
    `Pricing begins at ${pct(apr)} APR, and you can stretch repayment to ${years}.`,
  ]);
  const elig = min_credit_score <= 300
    ? pick(r, ["There's no minimum credit score, so a thin or damaged file won't disqualify you.", "No credit history is required to apply."])
    : pick(r, [`Applicants generally need a credit score of ${min_credit_score} or higher.`, `You'll need a FICO score of at least ${min_credit_score} plus verifiable income.`,
      `Approval typically requires a ${min_credit_score}+ credit score and a debt-to-income ratio under ${pick(r, [36, 40, 43, 45, 50])}%.`]);
  const fee = origination_pct === 0
    ? pick(r, [`There's no origination fee${fees.late_fee ? `, though a ${usd(fees.late_fee)} late fee applies` : " and no late fee"}.`, "You won't pay an origination fee or a prepayment penalty.", "No application or origination fees."])
    : pick(r, [`A one-time origination fee of ${pct(origination_pct, 1)} is deducted from the proceeds.`, `Origination fees run up to ${pct(origination_pct, 1)} of the loan amount${fees.prepayment_penalty ? ", and early payoff may carry a penalty" : ""}.`]);
  const feat = pick(r, [`Perks include ${list(features)}.`, `Other features: ${features.join(", ")}.`, `Highlights: ${features.join("; ")}.`]);
  const suits = pick(r, [`It's a good fit for ${pick(r, c.suits)}.`, `Best for ${pick(r, c.suits)}.`, `We built it for ${pick(r, c.suits)}.`]);
  const extras = sample(r, [elig, fee, feat, suits], int(r, 0, 3));
  const sentences = chance(r, 0.25) ? [rate, intro, ...extras] : [intro, rate, ...extras];
  return { id: `loan-${String(n).padStart(4, "0")}`, text: sentences.join(" "),
    metadata: { type: "loan_product", name, lender, category, apr, term_months, min_credit_score, max_amount, min_amount, fees, features } };
}

// ------------------------------------------------------------ customer profiles
const FIRST = ["Maria", "James", "Aisha", "Daniel", "Priya", "Marcus", "Elena", "Kevin", "Sofia", "Andre", "Mei", "Tyler", "Fatima", "Luis", "Hannah", "Omar", "Grace", "Diego",
  "Nora", "Samuel", "Keisha", "Ethan", "Yuki", "Rafael", "Chloe", "Darnell", "Ingrid", "Victor", "Leah", "Malik", "Rosa", "Brandon", "Anika", "Connor", "Imani", "Trevor", "Lucia", "Hiro"];
const LAST = ["Alvarez", "Bennett", "Chen", "Dubois", "Okafor", "Fischer", "Garcia", "Haddad", "Ivanova", "Jackson", "Kowalski", "Lindqvist", "Morales", "Nguyen", "O'Brien",
  "Patel", "Quinn", "Russo", "Sato", "Thompson", "Usman", "Vargas", "Whitaker", "Yilmaz", "Zimmerman", "Brooks", "Castillo", "Delgado", "Ferreira", "Hughes"];
const JOBS: Array<[string, number, number]> = [["nurse", 62000, 98000], ["teacher", 45000, 72000], ["software engineer", 95000, 185000], ["electrician", 52000, 90000],
  ["retail manager", 42000, 68000], ["truck driver", 48000, 80000], ["accountant", 58000, 105000], ["graphic designer", 40000, 78000], ["pharmacist", 115000, 150000],
  ["line cook", 29000, 42000], ["police officer", 55000, 92000], ["dental hygienist", 64000, 90000], ["freelance photographer", 25000, 70000], ["HVAC technician", 45000, 78000],
  ["marketing coordinator", 44000, 66000], ["physician assistant", 105000, 135000], ["warehouse associate", 31000, 44000], ["real estate agent", 35000, 120000],
  ["bakery owner", 38000, 95000], ["retired machinist", 28000, 52000], ["graduate student", 18000, 32000], ["paralegal", 45000, 70000]];
const STATES = ["Ohio", "Texas", "California", "Florida", "Georgia", "Michigan", "Arizona", "Colorado", "Oregon", "Pennsylvania", "North Carolina", "Illinois", "Minnesota",
  "Tennessee", "Washington", "New York", "Nevada", "Wisconsin", "Virginia", "Missouri", "Utah", "Kentucky", "New Mexico", "Maine"];

function goalPool(r: Rng, income: number, monthlyDebt: number, score: number, employment: string): string[] {
  const g = [
    `consolidate ${usd(Math.max(2000, roundTo(Math.min(income * 0.45, monthlyDebt * (6 + r() * 14)), 500)))} of credit card debt`,
    `buy a first home around ${usd(roundTo(income * (3 + r() * 2.5), 5000))}`,
    `finance a ${pick(r, ["used", "new", "certified pre-owned"])} car for about ${usd(roundTo(12000 + r() * 30000, 1000))}`,
    `refinance ${usd(roundTo(15000 + r() * 70000, 1000))} in student loans`,
    `fund a ${pick(r, ["kitchen remodel", "roof replacement", "basement finish", "bathroom renovation"])} with home equity`,
    `build a ${pick(r, [3, 6])}-month emergency fund`,
    `lower monthly payments`,
    `borrow ${usd(roundTo(20000 + r() * 150000, 5000))} to expand a small business`,
  ];
  if (employment === "retired") g.splice(1, 1); // no first-home purchase
  if (employment === "retired" || employment === "student") g.pop(); // no business expansion
  if (employment === "student") g.splice(4, 1); // no home equity
  if (score < 640) g.push("rebuild credit after missed payments", "qualify for a credit builder loan");
  return g;
}

function customerProfile(r: Rng, n: number): CorpusDoc {
  const [job, lo, hi] = pick(r, JOBS);
  const age = job.startsWith("retired") ? int(r, 62, 74) : job === "graduate student" ? int(r, 23, 31) : int(r, 22, 64);
  const employment = job.startsWith("retired") ? "retired" : job.startsWith("freelance") || job.endsWith("owner") || job === "real estate agent" ? "self-employed"
    : job === "graduate student" ? "student" : chance(r, 0.1) ? "part-time" : "full-time";
  const annual_income = roundTo((lo + (hi - lo) * Math.min(1, r() * 0.7 + (age - 22) / 90)) * (employment === "part-time" ? 0.55 : 1), 500);
  const zish = (r() + r() + r() - 1.5) * 2; // roughly normal, sd ~1
  const credit_score = Math.max(480, Math.min(845, Math.round(690 + zish * 65 + (age - 40) * 1.2 + (annual_income - 60000) / 4000)));
  const dtiTarget = Math.max(0.03, Math.min(0.62, 0.28 + (r() - 0.5) * 0.4 + (700 - credit_score) / 800));
  const monthly_debt = roundTo((annual_income / 12) * dtiTarget, 25);
  const debt_to_income = Math.round((monthly_debt * 12 / annual_income) * 100) / 100;
  const first = pick(r, FIRST), last = pick(r, LAST), state = pick(r, STATES);
  const goals = sample(r, goalPool(r, annual_income, monthly_debt, credit_score, employment), int(r, 1, 3))
    .filter((g, _, all) => !(g.includes("home equity") && all.some((o) => o.includes("first home"))));
  const lead = pick(r, [
    `${first}, ${age}, ${an(job)} in ${state} with a ${credit_score} credit score, wants to ${goals[0]}.`,
    `${first} ${last} (${age}) works as ${an(job)} in ${state} and hopes to ${goals[0]}.`,
    `Client ${first} ${last}, ${age}, ${state}: ${employment} ${job}, FICO ${credit_score}; primary goal is to ${goals[0]}.`,
    `Met with ${first}, ${an(job)} from ${state}, who is ${age} and looking to ${goals[0]}.`,
  ]);
  const money = pick(r, [
    `Earns about ${usd(annual_income)} a year and pays ${usd(monthly_debt)} a month toward debt (DTI ${Math.round(debt_to_income * 100)}%).`,
    `Household income is roughly ${usd(annual_income)}; existing obligations run ${usd(monthly_debt)}/month, a ${Math.round(debt_to_income * 100)}% debt-to-income ratio.`,
    `Income ${usd(annual_income)}/yr, monthly debt ${usd(monthly_debt)}, so DTI sits near ${Math.round(debt_to_income * 100)}%.`,
  ]);
  const more = goals.length > 1 ? pick(r, [`Also wants to ${list(goals.slice(1))}.`, `Secondary goals: ${goals.slice(1).join("; ")}.`]) : "";
  const flag = debt_to_income > 0.43 ? pick(r, ["High DTI will limit new unsecured credit; start by paying down revolving balances.", "DTI above 43% rules out most conventional mortgages for now."])
    : credit_score < 620 ? pick(r, ["Score is subprime, so secured or credit-builder products are the realistic first step.", "Expect high APR offers until the score recovers."])
    : credit_score >= 760 ? pick(r, ["Excellent credit should qualify for the best advertised rates.", "Strong score; shop lenders for top-tier pricing."])
    : chance(r, 0.5) ? pick(r, ["Profile is solid; compare fixed-rate offers.", "Note: prefers a predictable monthly payment."]) : "";
  const text = [lead, ...(lead.includes(String(credit_score)) || chance(r, 0.3) ? [] : [pick(r, [`Credit score is ${credit_score}.`, `Pulled a ${credit_score} FICO.`])]), money, more, flag].filter(Boolean).join(" ");
  return { id: `cust-${String(n).padStart(4, "0")}`, text,
    metadata: { type: "customer_profile", name: `${first} ${last}`, age, credit_score, annual_income, monthly_debt, debt_to_income, employment, goals, state } };
}

// ------------------------------------------------------------------------ API
/** Deterministic corpus: same {count, seed} gives byte-identical output on Node and Deno. ~60% loans, ~40% customers, interleaved. */
export function generateCorpus(opts: CorpusOptions = {}): CorpusDoc[] {
  const count = opts.count ?? 1000;
  const r = mulberry32(opts.seed ?? 42);
  const out: CorpusDoc[] = [];
  let loans = 0, custs = 0;
  for (let i = 0; i < count; i++) {
    const isLoan = Math.floor((i + 1) * 0.6) > Math.floor(i * 0.6);
    out.push(isLoan ? loanProduct(r, ++loans) : customerProfile(r, ++custs));
  }
  return out;
}

/** Write the corpus as JSON Lines ({id, text, metadata} per line), creating the parent directory. Returns the number of lines. */
export function writeCorpus(file: string, opts: CorpusOptions = {}): number {
  const docs = generateCorpus(opts);
  fs.mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
  fs.writeFileSync(file, docs.map((d) => JSON.stringify({ id: d.id, text: d.text, metadata: d.metadata })).join("\n") + "\n");
  return docs.length;
}

const isMain = (import.meta as ImportMeta & { main?: boolean }).main === true
  || (argv[1] !== undefined && import.meta.url === pathToFileURL(path.resolve(argv[1])).href);
if (isMain) {
  const out = argv[2] ?? path.join(path.dirname(fileURLToPath(import.meta.url)), "data", "corpus.jsonl");
  const count = argv[3] !== undefined ? Number(argv[3]) : 1000;
  if (!Number.isInteger(count) || count < 0) throw new Error(`count must be a non-negative integer, got ${argv[3]}`);
  console.log(`wrote ${writeCorpus(out, { count })} documents to ${out}`);
}
