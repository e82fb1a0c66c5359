/**
 * Incremental detokenization (inference/text-stream.ts): CJK and emoji text through a byte-level
 * BPE whose tokens split multi-byte characters comes out chunk by chunk without a broken
 * character and equals the text; stop strings that span several tokens cut the text before
 * them; held-back text is released when it cannot start a stop string or at the end.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { trainBpe } from '../src/data/tokenizer/index.js';
import { TextStream } from '../src/inference/text-stream.js';

const TEXT = '鲸鱼在大海里游泳。The whale 🐋 swims; 白鯨は海を泳ぐ 🌊🐳! 한국어 고래 — café';
const tok = trainBpe([TEXT.repeat(3), 'The whale swims in the sea. '.repeat(20)], { vocabSize: 300, minFrequency: 2 });

/** A stream over pieces of text: token id i stands for the UTF-8 bytes of pieces[i]. */
function pieces(p: string[], stops: string[] = []): TextStream {
  const enc = new TextEncoder();
  return new TextStream((id) => enc.encode(p[id]!), stops);
}

test('CJK and emoji through the byte-level BPE: every chunk whole, the text exact', () => {
  const ids = tok.encode(TEXT);
  const dec = new TextDecoder('utf-8', { fatal: true });
  const broken = ids.filter((id) => {
    try {
      dec.decode(tok.decodeBytes([id]));
      return false;
    } catch {
      return true;
    }
  });
  assert.ok(broken.length > 5, `the test needs tokens that end inside a character (${broken.length})`);
  const s = new TextStream((id) => tok.decodeBytes([id]));
  const chunks = ids.map((id) => s.push(id));
  chunks.push(s.finish());
  for (const c of chunks) {
    assert.ok(!c.includes('\ufffd'), `a broken character was emitted: ${JSON.stringify(c)}`);
    assert.ok(!/[\ud800-\udbff]$/.test(c), 'a chunk ends inside a surrogate pair');
  }
  assert.equal(chunks.join(''), TEXT);
  assert.equal(s.text, TEXT);
  assert.ok(chunks.filter((c) => c === '').length > 0, 'some bytes were held back');
});

test('an incomplete character at the end is one U+FFFD; an invalid byte is U+FFFD in place', () => {
  const bytes = [Uint8Array.of(0x61, 0xe9, 0xb2), Uint8Array.of(0xff, 0x62)];
  const s = new TextStream((id) => bytes[id]!);
  assert.equal(s.push(0), 'a');
  assert.equal(s.push(1), '\ufffd\ufffdb');
  const t = new TextStream((id) => bytes[id]!);
  t.push(0);
  assert.equal(t.finish(), '\ufffd');
  assert.equal(t.text, 'a\ufffd');
});

test('stop strings: across tokens, earliest first, text before it only', () => {
  const s = pieces(['Hel', 'lo wo', 'rld', '!'], ['o wor']);
  assert.deepEqual([s.push(0), s.push(1), s.push(2), s.push(3), s.finish()], ['Hel', 'l', '', '', '']);
  assert.equal(s.text, 'Hell');
  assert.equal(s.stopped, 'o wor');
  // a stop string spanning four tokens, and two stop strings: the earliest wins
  const t = pieces(['a', 'b', 'c', 'd', 'e'], ['de', 'bcd']);
  assert.deepEqual([t.push(0), t.push(1), t.push(2), t.push(3)], ['a', '', '', '']);
  assert.equal(t.stopped, 'bcd');
  assert.equal(t.push(4), '');
  // a possible start that turns out not to be one is released
  const u = pieces(['x<', 'y', '<e', 'nd'], ['<end>']);
  assert.deepEqual([u.push(0), u.push(1), u.push(2), u.push(3), u.finish()], ['x', '<y', '', '', '<end']);
  assert.equal(u.stopped, null);
  // the stop string inside one token; text after it is dropped
  const v = pieces(['one\n\ntwo'], ['\n\n']);
  assert.equal(v.push(0), 'one');
  // a stop string of CJK characters whose bytes span BPE tokens
  const ids = tok.encode(TEXT);
  const w = new TextStream((id) => tok.decodeBytes([id]), ['白鯨']);
  let out = '';
  for (const id of ids) out += w.push(id);
  out += w.finish();
  assert.equal(out, TEXT.slice(0, TEXT.indexOf('白鯨')));
  assert.throws(() => pieces([], ['']), /empty/);
});
