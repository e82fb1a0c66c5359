import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { resolveCheckpointDir } from '../../src/train/run-checkpoints.js';
import { tinyTrainingArgs } from './tiny-config.js';

export const CLI = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));

/**
 * A tiny checkpoint for the `dsv3 serve` tests, trained a few steps by the CLI (so it has the
 * tokenizer and the plain chat template dsv3 train writes): returns the temporary directory
 * (remove it after) and the checkpoint directory.
 */
export function tinyServeCheckpoint(maxPositions = 2048): { tmp: string; dir: string } {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'dsv3-serve-'));
  const run = path.join(tmp, 'tiny');
  const args = [CLI, 'train', ...tinyTrainingArgs(tmp, { max_position_embeddings: maxPositions }), '--steps', '4', '--batch', '2', '--seq', '16', '--eval-every', '0', '--lr', '1e-2', '--out', run];
  const t = spawnSync(process.execPath, args, { encoding: 'utf8' });
  if (t.status !== 0) throw new Error(`dsv3 train failed: ${t.stderr}`);
  return { tmp, dir: resolveCheckpointDir(run) };
}
