#!/usr/bin/env node
// Copies one chart of an experiment's page (DIR/index.html, written by `dsv3 experiment`) into a
// standalone SVG file, byte for byte as the page draws it (src/experiments/page.ts and the
// experiments' own figures, all from src/train/svg.ts), for docs/EXPERIMENTS.md:
//
//   node scripts/experiment-svg.mjs runs/experiments/mtp/index.html "Depth-1 draft acceptance" docs/experiments/mtp-acceptance.svg
//
// The chart is the first <svg> whose title (its first <text>) contains the given words.
import * as fs from 'node:fs';

const [page, words, out] = process.argv.slice(2);
if (!page || !words || !out) {
  process.stderr.write('usage: node scripts/experiment-svg.mjs PAGE.html "TITLE WORDS" OUT.svg\n');
  process.exit(2);
}
const html = fs.readFileSync(page, 'utf8');
const svgs = html.match(/<svg [\s\S]*?<\/svg>/g) ?? [];
const unescape = (s) => s.replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&quot;/g, '"').replace(/&#39;/g, "'").replace(/&amp;/g, '&');
const found = svgs.find((s) => unescape(/<text[^>]*>([^<]*)<\/text>/.exec(s)?.[1] ?? '').includes(words));
if (!found) {
  process.stderr.write(`${page}: no chart whose title contains '${words}' (${svgs.length} charts)\n`);
  process.exit(2);
}
const tmp = `${out}.tmp-${process.pid}`;
fs.writeFileSync(tmp, `<?xml version="1.0" encoding="UTF-8"?>\n${found}\n`);
fs.renameSync(tmp, out);
process.stdout.write(`${out}\n`);
