/**
 * The structure of src/ (issue #9): no import cycle anywhere, and every import goes down the
 * layer order written in docs/ARCHITECTURE.md, so the document and the code cannot disagree.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { importCycles, importGraph, importSpecifiers, layerViolations, parseLayerOrder, type ImportGraph } from './helpers/import-graph.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const graph = importGraph(ROOT);
const ranks = parseLayerOrder(readFileSync(ROOT + 'docs/ARCHITECTURE.md', 'utf8'));

test('src/ has no import cycle (type-only imports included)', () => {
  assert.ok(graph.size > 100, `read ${graph.size} files`);
  assert.deepEqual(importCycles(graph), []);
});

test('every import in src/ goes down the layer order of docs/ARCHITECTURE.md', () => {
  assert.deepEqual(layerViolations(graph, ranks), []);
});

test('the checks catch what they are for', () => {
  assert.deepEqual(
    importSpecifiers(`import { a } from './a.js';\nimport type { B } from "../b.js";\nexport * from './c.js';\n// import { d } from './d.js';\nconst e = await import('./e.js');\nimport x from 'node:fs';`),
    ['./a.js', '../b.js', './c.js', './e.js'],
  );
  const g: ImportGraph = new Map([
    ['src/model/a.ts', ['src/model/b.ts', 'src/engine/t.ts']],
    ['src/model/b.ts', ['src/model/a.ts']],
    ['src/engine/t.ts', ['src/model/a.ts', 'src/io/x.ts']],
    ['src/io/x.ts', ['src/data/y.ts']],
    ['src/data/y.ts', []],
    ['src/extra/z.ts', []],
  ]);
  assert.deepEqual(importCycles(g), [['src/engine/t.ts', 'src/model/a.ts', 'src/model/b.ts']]);
  const order = parseLayerOrder('Layer order (bottom to top): `engine < io, data < model`');
  assert.deepEqual(layerViolations(g, order), [
    'src/engine/t.ts imports src/model/a.ts: engine may not import model (a higher layer)',
    'src/engine/t.ts imports src/io/x.ts: engine may not import io (a higher layer)',
    'src/io/x.ts imports src/data/y.ts: io may not import data (same rank)',
    'src/extra/z.ts: layer "extra" is not in the layer order',
  ]);
});
