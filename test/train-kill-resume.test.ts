/**
 * Kill test: `dsv3 train` with frequent checkpoints is killed with SIGKILL at seeded random
 * moments (during a checkpoint save, mid-step, during start-up and resume) and resumed with
 * --resume each time. Whatever moment each kill lands on, the finished run must equal an
 * uninterrupted one bit for bit: metrics.jsonl (every field but tokens_per_s, one record per
 * step, in order), the final weights and AdamW moments; and only --keep checkpoints and no
 * temporaries may remain. DSV3_KILL_SEED=n picks another kill schedule. Also: the crash states
 * of a re-saved step, and corrupt checkpoint files on --resume (one-line error naming the file).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { Rng } from '../src/data/rng.js';
import { latestCheckpoint, listCheckpoints, loadTrainerState, saveTrainingCheckpoint, tidyRunDir, type CheckpointContents } from '../src/train/run-checkpoints.js';
import { tinyTrainingArgs } from './helpers/tiny-config.js';

const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const STEPS = 30;
const KEEP = 2;

/** The deterministic content of metrics.jsonl: each line re-serialised without tokens_per_s (every line must parse). */
function metricsLines(run: string): string[] {
  return fs.readFileSync(path.join(run, 'metrics.jsonl'), 'utf8').trimEnd().split('\n').map((l) => {
    const r = JSON.parse(l) as Record<string, unknown>;
    delete r['tokens_per_s'];
    return JSON.stringify(r);
  });
}

/** Highest step of a checkpoint process `pid` is writing in `run` (0: none). */
function writing(run: string, pid: number): number {
  const re = new RegExp(`^\\.checkpoint-(\\d+)\\.tmp-${pid}-`);
  return Math.max(0, ...fs.readdirSync(run).map((f) => Number(re.exec(f)?.[1] ?? 0)));
}

const latestStep = (run: string): number => Number(/(\d+)$/.exec(latestCheckpoint(run) ?? '0')![1]);

test('dsv3 train killed with SIGKILL at random moments resumes to the uninterrupted run bit for bit', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dsv3-kill-'));
  try {
    const args = [
      'train', ...tinyTrainingArgs(dir), '--steps', String(STEPS), '--batch', '2', '--seq', '16', '--lr', '5e-3',
      '--eval-every', '3', '--eval-batches', '1', '--ckpt-every', '2', '--keep', String(KEEP), '--quiet',
    ];
    const ref = path.join(dir, 'ref');
    const r = spawnSync(process.execPath, [CLI, ...args, '--out', ref], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);

    const run = path.join(dir, 'run');
    fs.mkdirSync(run);
    const rng = new Rng(Number(process.env['DSV3_KILL_SEED'] ?? 7));
    const modes = ['save', 'step', 'start', 'save', 'step', 'save'] as const;
    const log: string[] = [];
    let kills = 0;
    for (const mode of modes) {
      const from = latestStep(run);
      const target = from + 1 + rng.nextInt(6);
      if (target > STEPS - 8) break; // the child must still be running when the trigger fires
      const child = spawn(process.execPath, [CLI, ...args, '--out', run, ...(from ? ['--resume'] : [])], { stdio: ['ignore', 'ignore', 'pipe'] });
      const pid = child.pid!;
      let stderr = '';
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      const exited = new Promise<[number | null, NodeJS.Signals | null]>((res) => child.on('exit', (code, sig) => res([code, sig])));
      if (mode === 'start') await sleep(rng.nextInt(200));
      else {
        // 'save': the moment a checkpoint of step >= target is being written; 'step': a random moment after that
        const fired = (): boolean => writing(run, pid) >= target || (mode === 'step' && Math.max(0, ...listCheckpoints(run)) >= target);
        while (child.exitCode === null && !fired()) await sleep(1);
        if (mode === 'step') await sleep(rng.nextInt(20));
      }
      child.kill('SIGKILL');
      const [code, sig] = await exited;
      if (sig !== 'SIGKILL') assert.equal(code, 0, `attempt (${mode}) exited with ${code}: ${stderr}`);
      else kills++;
      log.push(`${mode}@${target}: ${sig ?? `exit ${code}`}${writing(run, pid) ? `, checkpoint-${writing(run, pid)} half-written` : ''}, resumable from ${latestStep(run)}`);
    }
    t.diagnostic(log.join('; '));
    const fin = spawnSync(process.execPath, [CLI, ...args, '--out', run, ...(latestStep(run) ? ['--resume'] : [])], { encoding: 'utf8' });
    assert.equal(fin.status, 0, fin.stderr);
    assert.ok(kills >= 1, `no kill landed: ${log.join('; ')}`);

    const want = metricsLines(ref);
    assert.equal(want.filter((l) => l.startsWith('{"type":"step"')).length, STEPS);
    assert.deepEqual(metricsLines(run), want, 'metrics.jsonl equals the uninterrupted run (tokens_per_s aside)');
    const last = `checkpoint-${STEPS}`;
    for (const f of ['model.safetensors', 'trainer_state/optimizer.safetensors']) {
      assert.ok(fs.readFileSync(path.join(run, last, f)).equals(fs.readFileSync(path.join(ref, last, f))), `${last}/${f} equals the uninterrupted run's`);
    }
    assert.deepEqual(listCheckpoints(run), [STEPS - 2, STEPS], `--keep ${KEEP} checkpoints remain`);
    assert.deepEqual(fs.readdirSync(run).filter((f) => f.startsWith('.')), [], 'no temporaries remain');
    assert.equal(fs.readFileSync(path.join(run, 'latest'), 'utf8').trim(), last);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

function contents(step: number, x: number): CheckpointContents {
  const w = new Float32Array([x, x]);
  return {
    config: {}, tensors: { w: { dtype: 'f32', shape: [2], data: w } }, generationConfig: {}, trainerState: { step },
    optimizer: { step, momentDtype: 'f32', m: { w }, v: { w } },
  };
}

test('checkpoint saves: latest names a complete checkpoint in every crash state of a re-save; temporaries and extra checkpoints go', () => {
  const run = fs.mkdtempSync(path.join(os.tmpdir(), 'dsv3-ckpt-'));
  try {
    for (const s of [1, 2, 3]) saveTrainingCheckpoint(run, s, contents(s, s), 0);
    const at = (n: string): string => path.join(run, n);
    const stepOf = (dir: string | null): unknown => loadTrainerState(dir!).optimizer.m['w']![0];
    // a re-save of step 3 killed after `latest` names the new copy and the old one is gone ...
    const tmp = '.checkpoint-3.tmp-4242-abc';
    fs.renameSync(at('checkpoint-3'), at(tmp));
    fs.writeFileSync(at('latest'), tmp + '\n');
    assert.equal(latestCheckpoint(run), at(tmp));
    // ... or after the copy is renamed into place: `latest` dangles, the step it names is taken
    fs.renameSync(at(tmp), at('checkpoint-3'));
    assert.equal(latestCheckpoint(run), at('checkpoint-3'));
    fs.writeFileSync(at('latest'), 'checkpoint-9\n');
    assert.equal(latestCheckpoint(run), at('checkpoint-3'), 'a dangling latest falls back to the newest complete checkpoint');
    fs.mkdirSync(at('checkpoint-4')); // incomplete (no trainer_state/state.json): never taken
    fs.writeFileSync(at('latest'), 'checkpoint-4\n');
    assert.equal(latestCheckpoint(run), at('checkpoint-3'));
    fs.rmSync(at('checkpoint-4'), { recursive: true });
    // what a killed run leaves: temporaries of saves, removals and atomic writes
    for (const d of ['.checkpoint-4.tmp-77-x1', '.checkpoint-1.old-77-y2']) fs.mkdirSync(at(d));
    fs.writeFileSync(at('.latest.tmp-77-z3'), 'checkpoint-4');
    tidyRunDir(run, 2);
    assert.deepEqual(fs.readdirSync(run).sort(), ['checkpoint-2', 'checkpoint-3', 'latest']);
    saveTrainingCheckpoint(run, 3, contents(3, 30), 2); // a re-save replaces step 3
    assert.equal(stepOf(latestCheckpoint(run)), 30);
    assert.deepEqual(fs.readdirSync(run).sort(), ['checkpoint-2', 'checkpoint-3', 'latest']);
    saveTrainingCheckpoint(run, 4, contents(4, 4), 1);
    assert.deepEqual(fs.readdirSync(run).sort(), ['checkpoint-4', 'latest']);
  } finally {
    fs.rmSync(run, { recursive: true, force: true });
  }
});

test('dsv3 train --resume on a corrupt checkpoint: exit code 2, one line naming the file, the run left as it was', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dsv3-corrupt-'));
  try {
    const args = ['train', ...tinyTrainingArgs(dir), '--batch', '2', '--seq', '16', '--eval-every', '0', '--quiet', '--out', path.join(dir, 'run')];
    const r = spawnSync(process.execPath, [CLI, ...args, '--steps', '2'], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    const ck = path.join(dir, 'run', 'checkpoint-2');
    const metrics = fs.readFileSync(path.join(dir, 'run', 'metrics.jsonl'));
    const cases: Array<[string, (f: string) => void, RegExp]> = [
      ['trainer_state/state.json', (f) => fs.truncateSync(f, 25), /state\.json: not a readable JSON file \(.*JSON.*\)$/],
      ['trainer_state/state.json', (f) => fs.writeFileSync(f, '{"step": -1}'), /state\.json: "step" must be a non-negative integer, got -1$/],
      ['trainer_state/state.json', (f) => fs.writeFileSync(f, '[]'), /state\.json: expected a JSON object$/],
      ['trainer_state/optimizer.safetensors', (f) => fs.truncateSync(f, fs.statSync(f).size - 100), /optimizer\.safetensors: .*truncated/],
      ['model.safetensors', (f) => fs.rmSync(f), /checkpoint-2: no model\.safetensors/],
    ];
    for (const [file, corrupt, msg] of cases) {
      const f = path.join(ck, file);
      const good = fs.readFileSync(f);
      corrupt(f);
      const t = spawnSync(process.execPath, [CLI, ...args, '--steps', '3', '--resume'], { encoding: 'utf8' });
      assert.equal(t.status, 2, `${file}: ${t.stderr}`);
      const lines = t.stderr.trimEnd().split('\n');
      assert.equal(lines.length, 1, t.stderr);
      assert.match(lines[0]!, /^dsv3 train: /);
      assert.match(lines[0]!, msg);
      assert.ok(lines[0]!.includes(file === 'model.safetensors' ? ck : f), lines[0]);
      assert.ok(fs.readFileSync(path.join(dir, 'run', 'metrics.jsonl')).equals(metrics), 'metrics.jsonl untouched');
      fs.writeFileSync(f, good);
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
