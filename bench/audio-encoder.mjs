// Whisper encoder forward time for a random-weight whisper-base-sized encoder (d_model 512, 6 layers, 8 heads,
// ffn 2048, 80 mels) on the tfjs backend chosen by @multimeditron/core (wasm here), batch 4 by default.
// Usage: node bench/audio-encoder.mjs [--batch 4] [--runs 3] [--layers 6]
// Prints one JSON object: median seconds per forward, per example, and examples per second.
import 'reflect-metadata';
import * as tf from '@tensorflow/tfjs-core';
import { selectBackend } from '@multimeditron/core';
import { WhisperEncoder } from '../plugins/audio/dist/index.js';

const arg = (name, dflt) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : dflt;
};
const batch = arg('batch', 4);
const runs = arg('runs', 3);
const layers = arg('layers', 6);

const backend = await selectBackend(process.env.MULTIMEDITRON_BACKEND ? {} : { backend: 'wasm' });
const config = { dModel: 512, layers, heads: 8, ffnDim: 2048, numMelBins: 80, maxSourcePositions: 1500, activation: 'gelu' };
const encoder = WhisperEncoder.randomInit(config, 1);
const x = tf.randomUniform([batch, 80, 3000], -1.5, 1.5, 'float32', 2);

const times = [];
for (let r = 0; r < runs + 1; r++) {
  const t0 = performance.now();
  const out = encoder.forward(x);
  await out.lastHiddenState.data();
  const dt = (performance.now() - t0) / 1000;
  out.lastHiddenState.dispose();
  if (r > 0) times.push(dt); // the first run warms up (kernel compilation, allocations)
}
times.sort((a, b) => a - b);
const median = times[Math.floor(times.length / 2)];
console.log(JSON.stringify({
  bench: 'audio-encoder',
  model: 'whisper-base-sized (random weights)',
  config,
  backend: backend.backend,
  batch,
  runs,
  secondsPerForward: Number(median.toFixed(3)),
  secondsPerExample: Number((median / batch).toFixed(3)),
  examplesPerSecond: Number((batch / median).toFixed(3)),
  allSeconds: times.map((t) => Number(t.toFixed(3))),
}));
x.dispose();
encoder.dispose();
