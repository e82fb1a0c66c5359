// A built dsv3 (its dist/) loaded for the speculative-decoding scripts: the model of a run or
// checkpoint directory (mapped, with its MTP modules), its tokenizer, and the decoders to compare.
//   const b = await loadSpeculativeBuild(distDir, modelPath);
import * as path from 'node:path';

export async function loadSpeculativeBuild(dist, modelPath) {
  const d = path.resolve(dist);
  const imp = (p) => import(path.join(d, p));
  const { DeepseekV3 } = await imp('src/model/model.js');
  const { DecodeSession } = await imp('src/inference/decode-session.js');
  const { generate } = await imp('src/inference/generate.js');
  const { SpeculativeDecoder } = await imp('src/inference/speculative.js');
  const { resolveCheckpointDir } = await imp('src/train/run-checkpoints.js');
  const { loadTokenizer } = await imp('src/cli/commands/decoding.js');
  const dir = resolveCheckpointDir(path.resolve(modelPath));
  const model = DeepseekV3.load(dir, { mtp: true, map: true });
  const tok = loadTokenizer(dir, model.cfg.vocab_size);
  return { imp, DeepseekV3, DecodeSession, generate, SpeculativeDecoder, model, tok };
}

/** CPU time of this process in ms (user + system). */
export const cpuMs = () => {
  const c = process.cpuUsage();
  return (c.user + c.system) / 1000;
};
