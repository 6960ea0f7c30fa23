import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs-core';
import { ConsoleLogger, createMultimeditron, type Multimeditron } from '@multimeditron/core';
import plugin, { ClipForwardPool, ClipVisionEncoder, type ImageModality } from '@multimeditron/plugin-image';
import { CASES, CLIP_DIR, compare, expectedTensors } from './helpers.js';

// Worker threads run JavaScript: the pool's worker script is the compiled one (the test command builds first).
const WORKER = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', 'dist', 'internal', 'forward-worker.js');

let mm: Multimeditron;
let pixels: Float32Array;
beforeAll(async () => {
  mm = await createMultimeditron({ plugins: [plugin], backend: 'wasm', resolver: { offline: true }, logger: new ConsoleLogger('silent') });
  const exp = await expectedTensors();
  pixels = new Float32Array(CASES.length * 3072);
  CASES.forEach((c, i) => pixels.set(exp.get(c.keys['pixel_values']!)!.data as Float32Array, i * 3072));
});

describe('ClipForwardPool (worker threads)', () => {
  test('splits a batch across 2 workers and returns every output in order, matching the fixtures', async () => {
    const pool = await ClipForwardPool.create({ workers: 2, model: CLIP_DIR, workerScript: WORKER });
    try {
      expect(pool.size).toBe(2);
      expect(pool.config.hiddenSize).toBe(64);
      const out = await pool.forward({ data: pixels, shape: [CASES.length, 3, 32, 32] });
      expect(out.last_hidden_state!.shape).toEqual([8, 17, 64]);
      const exp = await expectedTensors();
      CASES.forEach((c, i) => {
        for (const [name, per] of [['last_hidden_state', 1088], ['pooler_output', 64], ['image_embeds', 16]] as const) {
          const got = out[name]!.data.subarray(i * per, (i + 1) * per);
          expect({ c: c.name, name, ok: compare(got, exp.get(c.keys[name]!)!.data as Float32Array, 1e-4, 1e-4).ok }).toEqual({ c: c.name, name, ok: true });
        }
      });
      // an odd batch smaller than the pool
      const one = await pool.forward({ data: pixels.slice(0, 3072), shape: [1, 3, 32, 32] });
      expect(one.pooler_output!.shape).toEqual([1, 64]);
    } finally {
      await pool.close();
    }
  });

  test('a bad checkpoint fails at creation with the worker\'s error', async () => {
    await expect(ClipForwardPool.create({ workers: 1, model: path.join(CLIP_DIR, 'nope'), workerScript: WORKER })).rejects.toThrow(/failed to load/);
  });

  test('random weights: same outputs as the in-process tower with the same seed', async () => {
    const config = { hiddenSize: 32, intermediateSize: 64, numHiddenLayers: 1, numAttentionHeads: 2, numChannels: 3, imageSize: 32, patchSize: 8, hiddenAct: 'quick_gelu' as const, layerNormEps: 1e-5 };
    const pool = await ClipForwardPool.create({ workers: 2, random: { config, seed: 3 }, workerScript: WORKER, outputs: ['pooler_output'] });
    const local = ClipVisionEncoder.random(config, 3);
    try {
      const out = await pool.forward({ data: pixels.slice(0, 3 * 3072), shape: [3, 3, 32, 32] });
      expect(Object.keys(out)).toEqual(['pooler_output']);
      const x = tf.tensor4d(pixels.slice(0, 3 * 3072), [3, 3, 32, 32]);
      const ref = local.forward(x);
      expect(compare(out.pooler_output!.data, ref.poolerOutput!.dataSync(), 1e-5, 1e-5).ok).toBe(true);
      tf.dispose([x, ref.lastHiddenState, ref.poolerOutput!]);
    } finally {
      local.dispose();
      await pool.close();
    }
  });

  test('ImageModality.forwardWithPool equals forward (frozen encoder), chunked by maxBatchSize', async () => {
    const m = (await mm.modalities.fromPretrained('meditron_clip', { clipName: CLIP_DIR, hiddenSize: 32, maxBatchSize: 3 })) as ImageModality;
    const pool = await m.createForwardPool({ workers: 2, workerScript: WORKER });
    try {
      const inputs = CASES.map((_, i) => ({ data: pixels.slice(i * 3072, (i + 1) * 3072), shape: [3, 32, 32] }));
      const before = tf.memory().numTensors;
      const viaPool = await m.forwardWithPool(inputs, pool);
      const direct = m.forward(inputs);
      expect(viaPool.shape).toEqual([8, 16, 32]);
      expect(compare(viaPool.dataSync(), direct.dataSync(), 1e-5, 1e-5).ok).toBe(true);
      tf.dispose([viaPool, direct]);
      expect(tf.memory().numTensors).toBe(before);
      m.unfreezeModalityEmbedder();
      await expect(m.forwardWithPool(inputs, pool)).rejects.toThrow(/frozen encoder/);
    } finally {
      await pool.close();
      m.dispose();
    }
  });
});
