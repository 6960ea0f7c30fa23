// Forward-pass throughput of random-weight CLIP vision towers (ViT-B/16 and ViT-B/32 sized: hidden 768,
// 12 layers, 12 heads, intermediate 3072, 224 px) at batch 8 on the wasm backend. Prints JSON medians.
// Usage: node bench/image-forward.mjs [--runs N] [--models b16,b32] [--workers K]
// Imports the built plugin (npx tsc -b plugins/image first).
import 'reflect-metadata';
import os from 'node:os';
import * as tf from '@tensorflow/tfjs-core';
import { selectBackend } from '@multimeditron/core';
import * as plugin from '../plugins/image/dist/index.js';

const args = process.argv.slice(2);
const opt = (name, def) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : def;
};
const runs = Number(opt('runs', '3'));
const batch = Number(opt('batch', '8'));
const models = opt('models', 'b32,b16').split(',');
const workers = Number(opt('workers', '0'));
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const config = (patch) => ({
  hiddenSize: 768, intermediateSize: 3072, numHiddenLayers: 12, numAttentionHeads: 12, numChannels: 3,
  imageSize: 224, patchSize: patch, hiddenAct: 'quick_gelu', layerNormEps: 1e-5,
});

const choice = await selectBackend({ backend: 'wasm' });
const result = { backend: choice.backend, cpus: os.cpus().length, batch, runs, workers, node: process.version, models: {} };
for (const m of models) {
  const patch = m === 'b16' ? 16 : 32;
  const pixels = tf.randomNormal([batch, 3, 224, 224], 0, 1, 'float32', 1);
  const times = [];
  if (workers > 0) {
    const pool = await plugin.ClipForwardPool.create({ workers, random: { config: config(patch), seed: 0 } });
    const host = { data: await pixels.data(), shape: pixels.shape };
    await pool.forward(host); // warm-up
    for (let r = 0; r < runs; r++) {
      const t = performance.now();
      await pool.forward(host);
      times.push(performance.now() - t);
    }
    await pool.close();
  } else {
    const enc = plugin.ClipVisionEncoder.random(config(patch), 0);
    const once = () => {
      const out = enc.forward(pixels, { pooled: true });
      out.lastHiddenState.dataSync();
      tf.dispose([out.lastHiddenState, out.poolerOutput]);
    };
    once(); // warm-up (XNNPACK packs the weights on first use)
    for (let r = 0; r < runs; r++) {
      const t = performance.now();
      once();
      times.push(performance.now() - t);
    }
    enc.dispose();
  }
  pixels.dispose();
  const ms = median(times);
  result.models[m] = { median_ms_per_batch: Math.round(ms), images_per_s: +(batch / (ms / 1000)).toFixed(3), runs_ms: times.map(Math.round) };
}
console.log(JSON.stringify(result, null, 1));
