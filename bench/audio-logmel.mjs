// Whisper log-mel throughput: 30 s windows (480000 samples at 16 kHz, real speech from the golden long_35s.wav,
// so no frame is skipped as silence) -> input_features [80, 3000], with the built plugin (plugins/audio/dist).
//
// Reports, as one JSON object of medians:
//   singleThread.windowsPerSecond   one extractor on the main thread
//   workers.windowsPerSecond        N worker_threads (default: os.availableParallelism()), one extractor each,
//                                   windows handed out round-robin (how a pipeline would parallelise)
//   resample44k.secondsPer30s       the sinc resampler, 30 s of 44.1 kHz audio -> 16 kHz (the processor's extra
//                                   work for 44.1 kHz files)
// Reference on this machine (fixtures README / shared bench): torch 79.5 windows/s, numpy 38.5 windows/s.
// Usage: node bench/audio-logmel.mjs [--windows 40] [--runs 5] [--workers N]
import 'reflect-metadata';
import { readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import { decodeAudio, resample, WhisperFeatureExtractor } from '../plugins/audio/dist/index.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const arg = (name, dflt) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : dflt;
};

async function speechWindow() {
  const raw = await decodeAudio(readFileSync(path.join(ROOT, 'test/fixtures/golden/audio/long_35s.wav')), 'long_35s.wav');
  return raw.samples.slice(0, 480000);
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

if (!isMainThread) {
  // worker: build an extractor, say ready, then run `count` windows on "go" and report the time
  const fe = await WhisperFeatureExtractor.create({});
  const x = await speechWindow();
  const out = new Float32Array(80 * 3000);
  for (let i = 0; i < 3; i++) fe.extract(x, out); // warm-up (JIT)
  parentPort.on('message', (msg) => {
    if (msg.type !== 'go') return;
    const t0 = performance.now();
    for (let i = 0; i < msg.count; i++) fe.extract(x, out);
    parentPort.postMessage({ type: 'done', ms: performance.now() - t0 });
  });
  parentPort.postMessage({ type: 'ready', worker: workerData.index });
} else {
  const windows = arg('windows', 40);
  const runs = arg('runs', 5);
  const nWorkers = arg('workers', os.availableParallelism());

  // single thread
  const fe = await WhisperFeatureExtractor.create({});
  const x = await speechWindow();
  const out = new Float32Array(80 * 3000);
  for (let i = 0; i < 3; i++) fe.extract(x, out);
  const single = [];
  for (let r = 0; r < runs; r++) {
    const t0 = performance.now();
    for (let i = 0; i < windows; i++) fe.extract(x, out);
    single.push((windows * 1000) / (performance.now() - t0));
  }

  // worker threads
  const workers = await Promise.all(Array.from({ length: nWorkers }, (_, index) => new Promise((resolve, reject) => {
    const w = new Worker(fileURLToPath(import.meta.url), { workerData: { index } });
    w.once('message', (m) => (m.type === 'ready' ? resolve(w) : reject(new Error('unexpected message'))));
    w.once('error', reject);
  })));
  const parallel = [];
  for (let r = 0; r < runs; r++) {
    const per = Math.ceil(windows / nWorkers);
    const t0 = performance.now();
    await Promise.all(workers.map((w) => new Promise((resolve) => {
      w.once('message', resolve);
      w.postMessage({ type: 'go', count: per });
    })));
    parallel.push((per * nWorkers * 1000) / (performance.now() - t0));
  }
  await Promise.all(workers.map((w) => w.terminate()));

  // resampling 30 s of 44.1 kHz audio
  const x44 = resample(x, 16000, 44100);
  resample(x44, 44100, 16000);
  const rs = [];
  for (let r = 0; r < runs; r++) {
    const t0 = performance.now();
    resample(x44, 44100, 16000);
    rs.push((performance.now() - t0) / 1000);
  }

  console.log(JSON.stringify({
    bench: 'audio-logmel',
    window: '30 s at 16 kHz -> [80, 3000] (speech, no silent frames)',
    runs,
    windowsPerRun: windows,
    singleThread: { windowsPerSecond: Number(median(single).toFixed(1)), all: single.map((v) => Number(v.toFixed(1))) },
    workers: { threads: nWorkers, windowsPerSecond: Number(median(parallel).toFixed(1)), all: parallel.map((v) => Number(v.toFixed(1))) },
    resample44k: { secondsPer30s: Number(median(rs).toFixed(4)) },
    reference: { torchWindowsPerSecond: 79.5, numpyWindowsPerSecond: 38.5 },
  }));
  fe.dispose();
}
