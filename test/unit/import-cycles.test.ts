/**
 * Layers point one way: no import circle among the sources (runtime/, plugins/, server/), and the server never
 * imports a CLI module (runtime/cli.ts, runtime/commands/*). Every edge counts — `import type` too (a type
 * that needs the other module is a layering fact even when erased) and `import("./x.ts")` with a literal
 * path (a lazy edge is still an edge); only plugins loaded by computed name at run time are outside the graph.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import ts from "typescript";
import { describe, expect, it } from "vitest";

const ROOT = path.resolve(import.meta.dirname, "../..");
const DIRS = ["runtime", "plugins", "server"];

function sources(dir: string): string[] {
  return fs.readdirSync(path.join(ROOT, dir), { withFileTypes: true, recursive: true })
    .filter((e) => e.isFile() && /\.[cm]?ts$/.test(e.name) && !e.name.endsWith(".d.ts") && !e.name.endsWith(".test.ts"))
    .map((e) => path.relative(ROOT, path.join(e.parentPath, e.name)));
}

/** The relative modules a file imports, statically or through `import("<literal>")`, as root-relative paths. */
export function relativeImports(file: string, text: string): string[] {
  const sf = ts.createSourceFile(file, text, ts.ScriptTarget.Latest);
  const specs: string[] = [];
  const walk = (node: ts.Node): void => {
    if ((ts.isImportDeclaration(node) || ts.isExportDeclaration(node)) && node.moduleSpecifier && ts.isStringLiteral(node.moduleSpecifier)) {
      specs.push(node.moduleSpecifier.text);
    } else if (ts.isCallExpression(node) && node.expression.kind === ts.SyntaxKind.ImportKeyword && node.arguments[0] && ts.isStringLiteralLike(node.arguments[0])) {
      specs.push(node.arguments[0].text);
    }
    ts.forEachChild(node, walk);
  };
  walk(sf);
  return specs.filter((s) => s.startsWith(".")).map((s) => path.posix.join(path.posix.dirname(file), s));
}

/** Circles found by a depth-first walk, each as `a → b → … → a` (every circle shows up as at least one). */
export function findCycles(graph: Map<string, string[]>): string[] {
  const found = new Set<string>();
  const state = new Map<string, "open" | "done">();
  const stack: string[] = [];
  const visit = (f: string): void => {
    state.set(f, "open");
    stack.push(f);
    for (const g of graph.get(f) ?? []) {
      if (state.get(g) === "open") found.add([...stack.slice(stack.indexOf(g)), g].join(" → "));
      else if (!state.has(g)) visit(g);
    }
    stack.pop();
    state.set(f, "done");
  };
  for (const f of [...graph.keys()].sort()) if (!state.has(f)) visit(f);
  return [...found];
}

const files = DIRS.flatMap(sources);
const graph = new Map(files.map((f) => [f, relativeImports(f, fs.readFileSync(path.join(ROOT, f), "utf8"))]));

describe("import graph", () => {
  it("finds a circle when there is one, through type and lazy imports too", () => {
    const g = new Map([
      ["a.ts", relativeImports("a.ts", `import type { B } from "./b.ts";`)],
      ["b.ts", relativeImports("b.ts", `export const load = () => import("./c.ts");`)],
      ["c.ts", relativeImports("c.ts", `export { a } from "./a.ts";`)],
      ["d.ts", relativeImports("d.ts", `import { a } from "./a.ts";`)],
    ]);
    expect(findCycles(g)).toEqual(["a.ts → b.ts → c.ts → a.ts"]);
  });

  it("has no circle among runtime/, plugins/ and server/", () => {
    expect(graph.size).toBeGreaterThan(50);
    expect(findCycles(graph)).toEqual([]);
  });

  it("keeps the server below the CLI: server/ imports neither runtime/cli.ts nor runtime/commands/", () => {
    const upward = files.filter((f) => f.startsWith("server/"))
      .flatMap((f) => graph.get(f)!.filter((g) => /^runtime\/(cli\.ts|commands\/)/.test(g)).map((g) => `${f} imports ${g}`));
    expect(upward).toEqual([]);
  });
});
