/**
 * The import graph of src/: every relative import of every TypeScript file (static imports,
 * `import type`, `export ... from` and dynamic `import()`), resolved to files, with the checks
 * the structure test applies — cycles, and imports against the layer order of ARCHITECTURE.md.
 */
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';

/** file (relative to the root, '/'-separated) → the files it imports. */
export type ImportGraph = Map<string, string[]>;

function walk(dir: string): string[] {
  const out: string[] = [];
  for (const f of readdirSync(dir).sort()) {
    const p = join(dir, f);
    if (statSync(p).isDirectory()) out.push(...walk(p));
    else if (f.endsWith('.ts') && !f.endsWith('.d.ts')) out.push(p);
  }
  return out;
}

const IMPORT = /(?:^|[\s;])(?:import|export)\s+(?:type\s+)?(?:[\w*{}\s,$]*?\s+from\s+)?['"]([^'"]+)['"]|import\(\s*['"]([^'"]+)['"]\s*\)/g;

/** Relative module specifiers of a source text (comments removed first). */
export function importSpecifiers(source: string): string[] {
  const code = source.replace(/\/\*[\s\S]*?\*\//g, '').replace(/(^|[^:'"`])\/\/.*$/gm, '$1');
  const out: string[] = [];
  for (const m of code.matchAll(IMPORT)) {
    const spec = m[1] ?? m[2]!;
    if (spec.startsWith('.')) out.push(spec);
  }
  return out;
}

/** The graph of every .ts file under root/dir; throws on an import that resolves to no file. */
export function importGraph(root: string, dir = 'src'): ImportGraph {
  const g: ImportGraph = new Map();
  for (const abs of walk(join(root, dir))) {
    const file = relative(root, abs).split('\\').join('/');
    const deps: string[] = [];
    for (const spec of importSpecifiers(readFileSync(abs, 'utf8'))) {
      const target = resolve(dirname(abs), spec).replace(/\.js$/, '.ts');
      if (!existsSync(target)) throw new Error(`${file}: import '${spec}' resolves to no file`);
      deps.push(relative(root, target).split('\\').join('/'));
    }
    g.set(file, deps);
  }
  return g;
}

/** Every cycle's files (strongly connected components of more than one file, or a self-import). */
export function importCycles(g: ImportGraph): string[][] {
  let next = 0;
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const out: string[][] = [];
  const visit = (v: string): void => {
    index.set(v, next);
    low.set(v, next++);
    stack.push(v);
    onStack.add(v);
    for (const w of g.get(v) ?? []) {
      if (!g.has(w)) continue;
      if (!index.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) low.set(v, Math.min(low.get(v)!, index.get(w)!));
    }
    if (low.get(v) === index.get(v)) {
      const scc: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        onStack.delete(w);
        scc.push(w);
      } while (w !== v);
      if (scc.length > 1 || (g.get(v) ?? []).includes(v)) out.push(scc.sort());
    }
  };
  for (const v of g.keys()) if (!index.has(v)) visit(v);
  return out;
}

/**
 * The layer order from its line in ARCHITECTURE.md, `Layer order (bottom to top): a < b, c < d`:
 * layer name → rank (layers separated by commas share a rank and may not import each other).
 */
export function parseLayerOrder(markdown: string): Map<string, number> {
  const m = /^Layer order \(bottom to top\):\s*`([^`]+)`/m.exec(markdown);
  if (!m) throw new Error('ARCHITECTURE.md has no "Layer order (bottom to top): `...`" line');
  const ranks = new Map<string, number>();
  m[1]!.split('<').forEach((group, rank) => {
    for (const name of group.split(',')) ranks.set(name.trim(), rank);
  });
  return ranks;
}

/** The layer of a file: its folder under src/, or the file's own name for src/*.ts. */
export function layerOf(file: string): string {
  const parts = file.split('/');
  return parts.length > 2 ? parts[1]! : parts[1]!.replace(/\.ts$/, '');
}

/** Imports that go up the order or sideways between two layers of one rank, and unplaced layers. */
export function layerViolations(g: ImportGraph, ranks: ReadonlyMap<string, number>): string[] {
  const out: string[] = [];
  for (const [file, deps] of g) {
    const a = layerOf(file);
    const ra = ranks.get(a);
    if (ra === undefined) {
      out.push(`${file}: layer "${a}" is not in the layer order`);
      continue;
    }
    for (const dep of deps) {
      const b = layerOf(dep);
      if (a === b) continue;
      const rb = ranks.get(b);
      if (rb === undefined || rb >= ra) out.push(`${file} imports ${dep}: ${a} may not import ${b}${rb === ra ? ' (same rank)' : rb === undefined ? '' : ' (a higher layer)'}`);
    }
  }
  return [...new Set(out)];
}
