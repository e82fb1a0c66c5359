/** `dsv3 forward` end to end: the real CLI in a child process, outputs compared with the fixtures. */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, describe, it } from 'node:test';
import { compareToExpected, fixturePath, type ModelFixtureMeta, modelTolerance, readJson, readTensors } from './helpers/fixtures.js';

const MAIN = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const TOL = modelTolerance();

function dsv3(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [MAIN, ...args], { encoding: 'utf8' });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('dsv3 forward (CLI)', () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'dsv3-forward-'));
  after(() => fs.rmSync(tmp, { recursive: true, force: true }));

  it('tiny-dense-moe, absorbed path, with --prefill, --mtp and --greedy: matches expected.safetensors', () => {
    const name = 'tiny-dense-moe';
    const meta = readJson<ModelFixtureMeta>(fixturePath(`${name}/meta.json`));
    const out = path.join(tmp, 'dense-moe.safetensors');
    const r = dsv3([
      'forward', '--model', fixturePath(name), '--input', fixturePath(`${name}/inputs.safetensors`), '--out', out,
      '--path', 'absorbed', '--prefill', String(meta.decode_prefill), '--mtp',
      '--greedy', `${meta.greedy_prompt_len},${meta.greedy_new_tokens}`,
    ]);
    assert.equal(r.status, 0, r.stderr);
    const got = readTensors(out);
    const expected = readTensors(fixturePath(`${name}/expected.safetensors`));
    const { failures } = compareToExpected(got, expected, TOL);
    assert.deepEqual(failures, [], failures.join('\n'));
    assert.deepEqual(Object.keys(got).sort(), Object.keys(expected).sort());
    assert.deepEqual(fs.readdirSync(tmp), ['dense-moe.safetensors'], 'no temporary file left behind');
  });

  it('tiny-v2-greedy with JSON input ids (naive path, no extras): the main tensors match', () => {
    const name = 'tiny-v2-greedy';
    const meta = readJson<ModelFixtureMeta>(fixturePath(`${name}/meta.json`));
    const input = path.join(tmp, 'ids.json');
    fs.writeFileSync(input, JSON.stringify(meta.input_ids));
    const out = path.join(tmp, 'v2.safetensors');
    const r = dsv3(['forward', '--model', fixturePath(name), '--input', input, '--out', out]);
    assert.equal(r.status, 0, r.stderr);
    const got = readTensors(out);
    const expected = readTensors(fixturePath(`${name}/expected.safetensors`));
    for (const k of Object.keys(expected)) if (k.startsWith('decode.') || k.startsWith('greedy.')) delete expected[k];
    const { failures } = compareToExpected(got, expected, TOL);
    assert.deepEqual(failures, [], failures.join('\n'));
    assert.deepEqual(Object.keys(got).sort(), Object.keys(expected).sort());
  });

  it('--help, and clear errors for a missing model directory, input file or flag', () => {
    const h = dsv3(['forward', '--help']);
    assert.equal(h.status, 0);
    assert.match(h.stdout, /^Usage: dsv3 forward --model DIR --input FILE --out OUT/);
    const ids = fixturePath('tiny-v2-greedy/inputs.safetensors');
    const m = dsv3(['forward', '--model', path.join(tmp, 'nope'), '--input', ids, '--out', path.join(tmp, 'x.safetensors')]);
    assert.equal(m.status, 2);
    assert.match(m.stderr, /nope: model directory not found/);
    const i = dsv3(['forward', '--model', fixturePath('tiny-v2-greedy'), '--input', path.join(tmp, 'none.json'), '--out', path.join(tmp, 'x.safetensors')]);
    assert.equal(i.status, 2);
    assert.match(i.stderr, /none\.json: input file not found/);
    const c = dsv3(['forward', '--model', fixturePath('e4m3'), '--input', ids, '--out', path.join(tmp, 'x.safetensors')]);
    assert.equal(c.status, 2);
    assert.match(c.stderr, /config\.json/);
    const f = dsv3(['forward', '--model', fixturePath('tiny-v2-greedy'), '--input', ids]);
    assert.equal(f.status, 2);
    assert.match(f.stderr, /--out is required/);
    const p = dsv3(['forward', '--model', fixturePath('tiny-v2-greedy'), '--input', ids, '--out', path.join(tmp, 'x.safetensors'), '--path', 'fast']);
    assert.equal(p.status, 2);
    assert.match(p.stderr, /--path must be naive or absorbed/);
    assert.ok(!fs.existsSync(path.join(tmp, 'x.safetensors')));
  });
});
