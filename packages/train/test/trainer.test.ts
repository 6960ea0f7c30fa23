/** The trainer end to end on the tiny fixtures: modes, the golden one-step SGD run, checkpoints, bad data. */
import { promises as fs } from 'node:fs';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { createMultimeditron, readSafetensors, type Multimeditron } from '@multimeditron/core';
import { MultiMeditronModel } from '@multimeditron/llm';
import { applyTrainingMode, parseTrainConfig, train, TrainingError, TRAINING_MODES } from '@multimeditron/train';
import { expectClose, expected, LLAMA_TOKENIZER_DIR, tempDir } from '../../llm/test/helpers.js';
import { baseConfig, dataset, GOLDEN_SAMPLE, tinyCheckpoint } from './helpers.js';

let mm: Multimeditron;
let ckpt: string;
const quiet = { debug: () => {}, info: () => {}, warn: () => {}, error: () => {} };

beforeAll(async () => {
  mm = await createMultimeditron({ plugins: ['@multimeditron/plugin-image', '@multimeditron/plugin-audio'], backend: 'wasm', logger: quiet });
  ckpt = await tinyCheckpoint();
});

const num = (t: { data: unknown }) => Array.from(t.data as ArrayLike<number | bigint>, Number);

describe('training modes', () => {
  it('freeze exactly as the original: the trainable variables of each mode', async () => {
    const model = await MultiMeditronModel.fromPretrained(ckpt, { mm });
    try {
      const names: Record<string, string[]> = {};
      for (const mode of TRAINING_MODES) names[mode] = applyTrainingMode(model, mode).map((p) => p.name);
      const projector = [0, 2, 4].flatMap((n) => [`modalities_with_projection.0.projector.projection.${n}.bias`, `modalities_with_projection.0.projector.projection.${n}.weight`]).sort();
      expect([...names['ALIGNMENT']!].sort()).toEqual(projector);
      const llm = names['LM_ONLY']!;
      expect(llm.every((n) => n.startsWith('model.'))).toBe(true);
      expect(llm).toContain('model.model.embed_tokens.weight');
      expect(llm).toContain('model.model.layers.1.mlp.down_proj.weight');
      expect(llm).toHaveLength(2 * 9 + 2); // 9 tensors per layer, the embedding table and the final norm (tied head)
      expect([...names['END2END']!].sort()).toEqual([...llm, ...projector].sort());
      const enc = names['FULL']!.filter((n) => n.includes('feature_extractor'));
      expect(enc.length).toBeGreaterThan(10);
      expect(names['FULL']).toHaveLength(llm.length + projector.length + enc.length);
      expect(names['END2END']!.some((n) => n.includes('feature_extractor'))).toBe(false);
    } finally {
      model.dispose();
    }
  });
});

describe('the golden one-step SGD ALIGNMENT run', () => {
  for (const clip of [0, 1]) {
    it(`logs the golden loss and grad_norm and saves the SGD projector (max_grad_norm ${clip})`, async () => {
      const fx = await expected('alignment_step.safetensors');
      const data = await dataset([GOLDEN_SAMPLE]);
      const out = await tempDir('mm-train-out-');
      const config = parseTrainConfig(baseConfig(ckpt, data, out, {
        optim: 'sgd', learning_rate: 0.1, max_steps: 1, max_grad_norm: clip, lr_scheduler_type: 'constant', save_steps: 1,
      }));
      const n0 = tf.memory().numTensors;
      const r = await train(config, { mm, logger: quiet, plots: false });
      expect(tf.memory().numTensors).toBe(n0);
      const log = r.logHistory[0]!;
      expect(log.step).toBe(1);
      expect(log.epoch).toBe(1);
      expect(log.learning_rate).toBe(0.1);
      expectClose([log.loss!], num(fx.get('loss')!), 'logged loss', 1e-4, 1e-5);
      let sq = 0;
      const grads = new Map<string, Float32Array>();
      for (const k of [...fx.keys()].filter((x) => x.startsWith('grad.'))) {
        const g = fx.get(k)!.data as Float32Array;
        grads.set(k.slice('grad.projector.'.length), g);
        for (const v of g) sq += v * v;
      }
      const norm = Math.sqrt(sq);
      expectClose([log.grad_norm!], [norm], 'grad_norm', 1e-4, 1e-3);
      const saved = (await readSafetensors(path.join(out, 'checkpoint-1', 'model.safetensors'))).tensors;
      const scale = clip && norm > clip ? clip / (norm + 1e-6) : 1;
      for (const [k, g] of grads) {
        const got = saved.get(`modalities_with_projection.0.projector.projection.${k}`)!.data as Float32Array;
        if (scale === 1) {
          expectClose(got, fx.get(`sgd.projector.${k}`)!.data as Float32Array, `sgd.${k}`, 1e-5, 0);
        } else {
          const before = fx.get(`before.projector.${k}`)!.data as Float32Array;
          expectClose(got, before.map((p, i) => p - 0.1 * scale * g[i]!), `clipped sgd.${k}`, 1e-5, 0);
        }
      }
      const state = JSON.parse(await fs.readFile(path.join(out, 'checkpoint-1', 'trainer_state.json'), 'utf8'));
      expect(state.global_step).toBe(1);
      expect(state.log_history[0]).toEqual(expect.objectContaining({ step: 1, loss: log.loss, grad_norm: log.grad_norm, learning_rate: 0.1, epoch: 1 }));
    });
  }
});

describe('a short run', () => {
  it('keeps save_total_limit checkpoints in the MultiMeditron layout, logs HF fields, and skips bad samples once each', async () => {
    const data = await dataset([
      GOLDEN_SAMPLE,
      '{"text": broken json',
      { text: 'A deep field <|reserved_special_token_0|> of galaxies.', modalities: [{ type: 'image', value: 'hubble_deep_field.jpg' }] },
      { text: 'Missing <|reserved_special_token_0|> image.', modalities: [{ type: 'image', value: 'nope.jpg' }] },
    ]);
    const out = await tempDir('mm-train-out-');
    const config = parseTrainConfig(baseConfig(ckpt, data, out, { max_steps: 6, save_steps: 2, save_total_limit: 2, warmup_steps: 2, lr_scheduler_type: 'linear' }));
    const r = await train(config, { mm, logger: quiet, plots: false });
    expect(r.globalStep).toBe(6);
    expect(r.checkpoints.map((c) => path.basename(c))).toEqual(['checkpoint-4', 'checkpoint-6']);
    const files = await fs.readdir(r.checkpoints[1]!);
    for (const f of ['config.json', 'model.safetensors', 'tokenizer.json', 'trainer_state.json', 'optimizer.safetensors', 'scheduler.json']) expect(files).toContain(f);
    // 2 valid samples, batch 1: 2 steps per epoch
    expect(r.logHistory.filter((e) => e.loss !== undefined).map((e) => [e.step, e.epoch])).toEqual([[1, 0.5], [2, 1], [3, 1.5], [4, 2], [5, 2.5], [6, 3]]);
    // linear warmup of 2 steps then decay to 0 at step 6, logged as the lr of the step
    expect(r.logHistory.filter((e) => e.loss !== undefined).map((e) => e.learning_rate)).toEqual([0, 5e-4, 1e-3, 7.5e-4, 5e-4, 2.5e-4]);
    expect(r.logHistory[r.logHistory.length - 1]).toEqual(expect.objectContaining({ train_loss: r.trainLoss, step: 6 }));
    const errors = (await fs.readFile(path.join(out, 'errors.jsonl'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l));
    expect(errors.map((e) => e.line).sort()).toEqual([2, 4]);
    expect(r.skippedSamples).toBe(2);
    const metrics = (await fs.readFile(path.join(out, 'metrics.jsonl'), 'utf8')).trim().split('\n');
    expect(metrics).toHaveLength(6);
    // the checkpoint loads as a MultiMeditron model
    const model = await MultiMeditronModel.fromPretrained(r.checkpoints[1]!, { mm });
    model.dispose();
    // frozen encoder: computed once per sample, then cached
    expect(r.featureCache.misses).toBe(2);
    expect(r.featureCache.hits).toBe(4);
  });

  it("uses base_llm's tokenizer when the checkpoint has none, and saves it with the checkpoint", async () => {
    const bare = path.join(await tempDir('mm-train-bare-'), 'bare');
    await fs.mkdir(bare);
    for (const f of await fs.readdir(ckpt)) if (!f.startsWith('tokenizer') && f !== 'chat_template.jinja') await fs.copyFile(path.join(ckpt, f), path.join(bare, f));
    const data = await dataset([GOLDEN_SAMPLE]);
    const out = await tempDir('mm-train-out-');
    const config = parseTrainConfig({ ...baseConfig(bare, data, out, { max_steps: 1, save_steps: 1 }), base_llm: LLAMA_TOKENIZER_DIR });
    const r = await train(config, { mm, logger: quiet, plots: false });
    expect(r.globalStep).toBe(1);
    const files = await fs.readdir(path.join(out, 'checkpoint-1'));
    expect(files).toEqual(expect.arrayContaining(['tokenizer.json', 'tokenizer_config.json']));
  });

  it('stops on a non-finite loss with a TrainingError and keeps the last good checkpoint', async () => {
    const data = await dataset([GOLDEN_SAMPLE]);
    const out = await tempDir('mm-train-out-');
    const config = parseTrainConfig(baseConfig(ckpt, data, out, { optim: 'sgd', learning_rate: 1e30, max_grad_norm: 0, max_steps: 5, save_steps: 1 }));
    await expect(train(config, { mm, logger: quiet, plots: false })).rejects.toThrow(TrainingError);
    await expect(train(config, { mm, logger: quiet, plots: false })).rejects.toThrow(/the loss is (NaN|Infinity|-Infinity) at step/);
    const kept = (await fs.readdir(out)).filter((f) => f.startsWith('checkpoint-'));
    expect(kept).toContain('checkpoint-1');
    const state = JSON.parse(await fs.readFile(path.join(out, 'checkpoint-1', 'trainer_state.json'), 'utf8'));
    expect(Number.isFinite(state.log_history[0].loss)).toBe(true);
  });

  it('stops at a step boundary when its signal aborts, saving a checkpoint first', async () => {
    const data = await dataset([GOLDEN_SAMPLE]);
    const out = await tempDir('mm-train-out-');
    const config = parseTrainConfig(baseConfig(ckpt, data, out, { max_steps: 10, save_steps: 100 }));
    const ac = new AbortController();
    const r = await train(config, { mm, logger: quiet, plots: false, signal: ac.signal, onStep: (p) => { if (p.step === 2) ac.abort(); } });
    expect(r.stopped).toBe(true);
    expect(r.globalStep).toBe(2);
    expect(await fs.readdir(out)).toContain('checkpoint-2');
  });
});
