import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DsvError } from '../src/errors.js';
import { Rng } from '../src/data/rng.js';
import {
  BYTE_TO_CHAR,
  BpeModel,
  LLAMA3_PATTERN,
  loadTokenizerJson,
  parsePreTokenizer,
  parseTokenizerJson,
  saveTokenizerJson,
  toByteLevel,
  trainBpe,
  translateOnig,
  type Tokenizer,
} from '../src/data/tokenizer/index.js';

const BOS = '<｜begin▁of▁sentence｜>';
const EOS = '<｜end▁of▁sentence｜>';

/** A small deterministic English-like text with repeated words, digits and punctuation. */
function sampleText(words = 4000, seed = 1): string {
  const vocab = ['the', 'whale', 'ship', 'sea', 'Ahab', 'captain', 'white', 'harpoon', 'and', 'of', 'a', 'to', "it's", 'deep', 'water'];
  const rng = new Rng(seed);
  const out: string[] = [];
  for (let i = 0; i < words; i++) {
    const w = vocab[rng.nextInt(vocab.length)]!;
    out.push(w);
    const r = rng.nextInt(20);
    if (r === 0) out.push('.\n');
    else if (r === 1) out.push(', ');
    else if (r === 2) out.push(` ${rng.nextInt(100000)} `);
    else out.push(' ');
  }
  return out.join('');
}

const UNICODE_SAMPLES = [
  '',
  ' ',
  'Hello, world!',
  'Call me Ishmael. Some years ago—never mind how long precisely',
  '😀👍🏽 👨‍👩‍👧‍👦 🇯🇵 flags',
  '日本語のテキスト、カタカナ。中文字符！한국어',
  'café naïve e\u0301 \u00a0nbsp \ufeffbom \u0085nel',
  '\t\ttabs\r\n\r\nCRLF\n\n\n   trailing   ',
  'ὈΔΥΣΣΕΎΣ Ελληνικά עברית العربية',
  '\u0000\u0001\u001f\u007f control',
  `${BOS}hi${EOS}  ${EOS}x`,
  '1234567890 3.14159 $1,000,000',
  "don't I'M we'LL you're",
  '𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝟙𝟚𝟛 \u{10ffff}',
];

/** Random strings of valid code points (no lone surrogates). */
function randomStrings(count: number, seed: number): string[] {
  const rng = new Rng(seed);
  const pools = [
    [0x20, 0x7e],
    [0x00, 0x20],
    [0xa0, 0x2ff],
    [0x3040, 0x30ff],
    [0x4e00, 0x4fff],
    [0x1f300, 0x1f64f],
    [0x10000, 0x10ffff],
  ] as const;
  const out: string[] = [];
  for (let k = 0; k < count; k++) {
    let s = '';
    const n = rng.nextInt(30);
    for (let i = 0; i < n; i++) {
      const [lo, hi] = pools[rng.nextInt(pools.length)]!;
      let cp = lo + rng.nextInt(hi - lo + 1);
      if (cp >= 0xd800 && cp <= 0xdfff) cp = 0x41;
      s += String.fromCodePoint(cp);
    }
    out.push(s);
  }
  return out;
}

let cached: Tokenizer | undefined;
function smallTokenizer(): Tokenizer {
  cached ??= trainBpe([sampleText()], { vocabSize: 400 });
  return cached;
}

test('byte-level table: 256 distinct printable characters, space is Ġ', () => {
  assert.equal(new Set(BYTE_TO_CHAR).size, 256);
  assert.equal(BYTE_TO_CHAR[0x20], 'Ġ');
  assert.equal(BYTE_TO_CHAR[0x0a], 'Ċ');
  assert.equal(BYTE_TO_CHAR[0x41], 'A');
  assert.equal(toByteLevel(' é😀'), 'ĠÃ©ðŁĺĢ');
  assert.equal(toByteLevel('\ud800x'), 'ï¿½x'); // lone surrogate -> U+FFFD, like TextEncoder
});

test('trainBpe: vocabulary size, special tokens, deterministic merges', () => {
  const tok = smallTokenizer();
  assert.equal(tok.vocabSize, 400);
  assert.equal(tok.bosId, 0);
  assert.equal(tok.eosId, 1);
  assert.equal(tok.tokenToId(BOS), 0);
  assert.equal(tok.idToToken(2 + 0x41), 'A');
  assert.ok(tok.tokenToId('Ġwhale') !== undefined, 'frequent word became one token');
  const progress: number[] = [];
  const again = trainBpe([sampleText()], { vocabSize: 400, onProgress: (done, total) => progress.push(done, total) });
  assert.deepEqual(progress.slice(-2), [400 - 258, 400 - 258]);
  assert.deepEqual(again.parts.model.merges, tok.parts.model.merges);
  const ids = tok.encode(' the whale');
  assert.deepEqual(ids.map((i) => tok.idToToken(i)), ['Ġthe', 'Ġwhale']);
});

test('trainBpe: matches a naive trainer that recounts every pair each step', () => {
  const texts = [sampleText(600, 3), 'aaaa aaaaa abab ababab 1111 222222'];
  const tok = trainBpe(texts, { vocabSize: 330, specialTokens: [] });
  // naive reference over the same pre-tokenised words
  const pre = parsePreTokenizer({
    type: 'Sequence',
    pretokenizers: [
      { type: 'Split', pattern: { Regex: LLAMA3_PATTERN }, behavior: 'Isolated', invert: false },
      { type: 'ByteLevel', add_prefix_space: false, use_regex: false },
    ],
  })!;
  const counts = new Map<string, number>();
  for (const t of texts) for (const w of pre.splitPieces([t])) counts.set(w, (counts.get(w) ?? 0) + 1);
  const id = new Map<string, number>(BYTE_TO_CHAR.map((c, b) => [c, b]));
  const names = [...BYTE_TO_CHAR];
  let words = [...counts].map(([w, c]) => ({ s: Array.from(w, (ch) => id.get(ch)!), c }));
  const merges: [string, string][] = [];
  while (names.length < 330) {
    const pc = new Map<number, number>();
    for (const { s, c } of words) for (let i = 0; i + 1 < s.length; i++) pc.set(s[i]! * 4096 + s[i + 1]!, (pc.get(s[i]! * 4096 + s[i + 1]!) ?? 0) + c);
    let best = -1;
    let bestCount = 0;
    for (const [k, c] of pc) if (c > bestCount || (c === bestCount && k < best)) [best, bestCount] = [k, c];
    if (bestCount < 2) break;
    const a = Math.floor(best / 4096);
    const b = best % 4096;
    const merged = names[a]! + names[b]!;
    let cid = names.indexOf(merged);
    if (cid < 0) cid = names.push(merged) - 1;
    merges.push([names[a]!, names[b]!]);
    words = words.map(({ s, c }) => {
      const o: number[] = [];
      for (let i = 0; i < s.length; i++) {
        if (i + 1 < s.length && s[i] === a && s[i + 1] === b) {
          o.push(cid);
          i++;
        } else o.push(s[i]!);
      }
      return { s: o, c };
    });
  }
  assert.deepEqual(tok.parts.model.merges, merges);
});

test('BPE encoding matches a naive lowest-rank-first merge loop', () => {
  const tok = smallTokenizer();
  const model = tok.parts.model;
  const naive = (word: string): number[] => {
    const s = Array.from(word, (ch) => model.vocab.get(ch)!);
    for (;;) {
      let best = -1;
      let bestRank = Infinity;
      for (let i = 0; i + 1 < s.length; i++) {
        const r = model.rankOf(s[i]!, s[i + 1]!);
        if (r >= 0 && r < bestRank) [best, bestRank] = [i, r];
      }
      if (best < 0) return s;
      const [a, b] = model.merges[bestRank]!;
      s.splice(best, 2, model.vocab.get(a + b)!);
    }
  };
  const rng = new Rng(5);
  const letters = ['t', 'h', 'e', 'a', 'w', 'l', 'Ġ', 's', 'i', 'p'];
  for (let k = 0; k < 500; k++) {
    let w = '';
    const n = 1 + rng.nextInt(k < 490 ? 12 : 400);
    for (let i = 0; i < n; i++) w += letters[rng.nextInt(letters.length)];
    const out: number[] = [];
    model.encodeWord(w, out);
    assert.deepEqual(out, naive(w), w);
  }
});

test('decode(encode(s)) === s for arbitrary unicode; partial byte sequences decode to U+FFFD', () => {
  const tok = smallTokenizer();
  for (const s of [...UNICODE_SAMPLES, ...randomStrings(300, 9)]) {
    assert.equal(tok.decode(tok.encode(s)), s, JSON.stringify(s));
  }
  const ids = tok.encode('😀');
  assert.equal(ids.length, 4); // four bytes, no merges learned for them
  assert.equal(tok.decode(ids.slice(0, 2)), '\ufffd');
  assert.deepEqual([...tok.decodeBytes(ids)], [0xf0, 0x9f, 0x98, 0x80]);
  assert.equal(tok.decode(tok.encode(`${BOS}x${EOS}`), { skipSpecialTokens: true }), 'x');
  assert.deepEqual(tok.encode('x', { addBos: true, addEos: true }), [0, tok.tokenToId('x')!, 1]);
});

test('saveTokenizerJson / loadTokenizerJson round trip gives the same ids', () => {
  const tok = smallTokenizer();
  const dir = mkdtempSync(join(tmpdir(), 'dsv3-tok-'));
  try {
    const path = join(dir, 'tokenizer.json');
    saveTokenizerJson(tok, path);
    assert.deepEqual(readdirSync(dir), ['tokenizer.json'], 'no temporary files left');
    const json = JSON.parse(readFileSync(path, 'utf8'));
    assert.equal(json.model.type, 'BPE');
    assert.equal(typeof json.model.merges[0], 'string');
    assert.equal(json.pre_tokenizer.type, 'Sequence');
    assert.equal(json.decoder.type, 'ByteLevel');
    const back = loadTokenizerJson(path);
    assert.equal(back.vocabSize, tok.vocabSize);
    assert.equal(back.bosId, tok.bosId);
    assert.equal(back.eosId, tok.eosId);
    for (const s of [sampleText(300, 4), ...UNICODE_SAMPLES]) assert.deepEqual(back.encode(s), tok.encode(s));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

/** A hand-written DeepSeek-V3-style tokenizer.json: 256 bytes, a few merges, added tokens. */
function handWritten(pairs: boolean): Record<string, unknown> {
  const vocab: Record<string, number> = {};
  BYTE_TO_CHAR.forEach((c, b) => (vocab[c] = b));
  const merges = [['Ġ', 't'], ['h', 'e'], ['Ġt', 'he'], ['l', 'l'], ['he', 'll'], ['hell', 'o'], ['1', '2']];
  merges.forEach(([a, b], k) => (vocab[a! + b!] = 256 + k));
  return {
    version: '1.0',
    added_tokens: [
      { id: 263, content: BOS, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true },
      { id: 264, content: EOS, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true },
    ],
    normalizer: { type: 'Sequence', normalizers: [] },
    pre_tokenizer: {
      type: 'Sequence',
      pretokenizers: [
        { type: 'Split', pattern: { Regex: '\\p{N}{1,3}' }, behavior: 'Isolated', invert: false },
        { type: 'Split', pattern: { Regex: '[一-龥\u3040-ゟ゠-ヿ]+' }, behavior: 'Isolated', invert: false },
        {
          type: 'Split',
          pattern: {
            Regex:
              "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+",
          },
          behavior: 'Isolated',
          invert: false,
        },
        { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: false },
      ],
    },
    post_processor: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: false, use_regex: true },
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      vocab,
      merges: pairs ? merges : merges.map((m) => m.join(' ')),
    },
  };
}

test('loads a hand-written Hugging Face tokenizer.json (both merges formats, added tokens)', () => {
  const text = `${BOS}hello the 12345 日本語!${EOS}`;
  // ids checked against Hugging Face tokenizers 0.23
  const expected = [263, 261, 258, 32, 262, 51, 52, 53, 32, 230, 151, 165, 230, 156, 172, 232, 170, 158, 33, 264];
  for (const pairs of [false, true]) {
    const dir = mkdtempSync(join(tmpdir(), 'dsv3-hf-'));
    try {
      writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify(handWritten(pairs)));
      const tok = loadTokenizerJson(join(dir, 'tokenizer.json'));
      assert.equal(tok.vocabSize, 265);
      assert.equal(tok.bosId, 263);
      assert.equal(tok.eosId, 264);
      const ids = tok.encode(text);
      assert.deepEqual(ids, expected);
      assert.deepEqual(ids.slice(1, 6).map((i) => tok.idToToken(i)), ['hello', 'Ġthe', 'Ġ', '12', '3']);
      assert.equal(tok.decode(ids), text);
      // tokenizer_config.json beside the file names BOS/EOS
      assert.equal(tok.addBosByDefault, false);
      writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify({ bos_token: { content: EOS }, eos_token: BOS, add_bos_token: true }));
      const swapped = loadTokenizerJson(join(dir, 'tokenizer.json'));
      assert.equal(swapped.bosId, 264);
      assert.equal(swapped.eosId, 263);
      assert.deepEqual(swapped.encode('hello'), [264, 261]);
      assert.deepEqual(swapped.encode('hello', { addBos: false }), [261]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }
});

test('Oniguruma patterns: (?i:...), possessive quantifiers, identity escapes', () => {
  assert.equal(translateOnig("(?i:'s)", 'x'), "(?:'[sS])");
  const poss = new RegExp(translateOnig('a?+ab|x*+', 'x'), 'u');
  assert.equal(poss.exec('ab')?.[0], '', 'a?+ never gives the a back, so "ab" fails and x*+ matches empty');
  assert.equal(new RegExp(translateOnig("[\\'\\\"]+", 'x'), 'u').exec(`x'"y`)?.[0], `'"`);
  assert.equal(new RegExp(translateOnig('\\x{1F600}\\u3040', 'x'), 'u').test('😀\u3040'), true);
  assert.throws(() => translateOnig('(a)\\1', 'pre_tokenizer.pattern.Regex'), /pre_tokenizer\.pattern\.Regex: unsupported regex.*back-references/);
});

test('clear errors for unsupported or broken tokenizer.json files', () => {
  const base = handWritten(false);
  const bad = (patch: Record<string, unknown>): Record<string, unknown> => ({ ...base, ...patch });
  const model = base.model as Record<string, unknown>;
  assert.throws(() => parseTokenizerJson(bad({ model: { ...model, type: 'Unigram' } })), (e: unknown) => {
    assert.ok(e instanceof DsvError);
    assert.match(e.message, /model\.type: model type "Unigram" is not supported \(expected "BPE"\)/);
    return true;
  });
  assert.throws(
    () => parseTokenizerJson(bad({ pre_tokenizer: { type: 'Sequence', pretokenizers: [{ type: 'Metaspace' }] } })),
    /pre_tokenizer\.pretokenizers\[0\]\.type: pre-tokenizer "Metaspace" is not supported/,
  );
  assert.throws(() => parseTokenizerJson(bad({ model: { ...model, merges: ['Ġ zz'] } })), /model\.merges\[0\] \("Ġ zz"\): token "zz" is not in the vocabulary/);
  assert.throws(() => parseTokenizerJson(bad({ model: { ...model, merges: ['a b c'] } })), /model\.merges\[0\]: expected "left right"/);
  assert.throws(() => parseTokenizerJson(bad({ decoder: { type: 'WordPiece' } })), /decoder\.type: decoder "WordPiece" is not supported/);
  assert.throws(() => parseTokenizerJson(bad({ normalizer: { type: 'BertNormalizer' } })), /normalizer\.type: normalizer "BertNormalizer"/);
  assert.throws(() => loadTokenizerJson('/nonexistent/tokenizer.json'), /\/nonexistent\/tokenizer\.json: tokenizer file not found/);
  const template = { type: 'TemplateProcessing', single: [{ SpecialToken: { id: BOS, type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }] };
  assert.deepEqual(parseTokenizerJson(bad({ post_processor: template })).encode('hello'), [263, 261]);
  assert.throws(() => parseTokenizerJson(bad({ post_processor: { type: 'Mystery' } })), /post_processor\.type: post-processor "Mystery" is not supported/);
  const tok = parseTokenizerJson(base);
  assert.throws(() => tok.decode([5, 99999]), /decode: id 99999 \(position 1\) is not a token/);
  assert.throws(() => trainBpe(['x'], { vocabSize: 100 }), /vocabSize: expected an integer from 258/);
  assert.throws(() => new BpeModel(new Map([['a', 0]]), [['a', 'a']]), /model\.merges\[0\] \("a a"\): token "aa" is not in the vocabulary/);
});

test('trains 4096 tokens on 200 kB of text in a few seconds', () => {
  const text = sampleText(40000, 11) + randomStrings(2000, 12).join(' ');
  const t0 = Date.now();
  const tok = trainBpe([text], { vocabSize: 4096, minFrequency: 1 });
  const ms = Date.now() - t0;
  assert.ok(tok.vocabSize > 1000, `vocab ${tok.vocabSize}`);
  assert.ok(ms < 10000, `training took ${ms} ms`);
  assert.equal(tok.decode(tok.encode(text)), text);
});
