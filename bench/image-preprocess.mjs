// Preprocessing throughput (decode + resize + centre crop + normalise) to the real CLIP size
// (shortest_edge 224, crop 224, bicubic) on the fixture JPEGs (bad inputs excluded). Prints JSON medians.
// Modes: exact (Pillow-resample port; bit-exact) and fast (sharp 'cubic' after decoding), each run
//   serial      one image at a time on the main thread;
//   concurrent  up to 4 images in flight: sharp decodes on libuv's pool while the main thread resizes;
//   workers     N worker threads, each running the concurrent loop on its share of the images.
// Usage: node bench/image-preprocess.mjs [--runs N] [--seconds S] [--workers N]   (npx tsc -b plugins/image first)
import 'reflect-metadata';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { decodeImageFile, defaultPreprocessorConfig, ImageConfig, ImageProcessor } from '../plugins/image/dist/index.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const FIX = process.env.FIX ?? path.join(HERE, '..', 'test', 'fixtures', 'golden');

function makeProcessor() {
  const p = new ImageProcessor(new ImageConfig({ clipName: 'unused', hiddenSize: 8 }));
  p.configure(defaultPreprocessorConfig(224), { imageSize: 224, patchSize: 14 });
  return p;
}

/** Processes `files` round-robin for `seconds`; returns images/s. */
async function loop(files, mode, inflight, seconds) {
  const proc = makeProcessor();
  const one = async (f) => {
    const img = await decodeImageFile(f);
    return mode === 'fast' ? proc.processFast({ type: 'image', value: img }) : proc.process({ type: 'image', value: img });
  };
  for (const f of files) await one(f); // warm-up
  let n = 0;
  let next = 0;
  const t0 = performance.now();
  const until = t0 + seconds * 1000;
  const lane = async () => {
    while (performance.now() < until) {
      const f = files[next++ % files.length];
      await one(f);
      n++;
    }
  };
  await Promise.all(Array.from({ length: inflight }, lane));
  return n / ((performance.now() - t0) / 1000);
}

if (!isMainThread) {
  const { files, mode, seconds } = workerData;
  parentPort.postMessage(await loop(files, mode, 4, seconds));
} else {
  const args = process.argv.slice(2);
  const opt = (k, d) => (args.includes(`--${k}`) ? args[args.indexOf(`--${k}`) + 1] : d);
  const runs = Number(opt('runs', '3'));
  const seconds = Number(opt('seconds', '2'));
  const workers = Number(opt('workers', String(os.availableParallelism?.() ?? os.cpus().length)));
  const manifest = JSON.parse(fs.readFileSync(path.join(FIX, 'expected', 'manifest.json'), 'utf8'));
  const bad = new Set((manifest.bad_inputs ?? []).map((b) => path.basename(b.file)));
  const files = fs.readdirSync(path.join(FIX, 'images')).filter((f) => f.endsWith('.jpg') && !bad.has(f)).sort().map((f) => path.join(FIX, 'images', f));
  const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  const inWorkers = (mode) =>
    Promise.all(Array.from({ length: workers }, (_, i) =>
      new Promise((resolve, reject) => {
        const w = new Worker(fileURLToPath(import.meta.url), { workerData: { files: files.slice(i % files.length).concat(files.slice(0, i % files.length)), mode, seconds } });
        w.once('message', resolve);
        w.once('error', reject);
      }))).then((r) => r.reduce((a, b) => a + b, 0));
  const result = { images: files.map((f) => path.basename(f)), cpus: os.cpus().length, workers, runs, seconds_per_run: seconds, images_per_s: {} };
  for (const mode of ['exact', 'fast']) {
    for (const [name, fn] of [
      ['serial', () => loop(files, mode, 1, seconds)],
      ['concurrent', () => loop(files, mode, 4, seconds)],
      [`workers_${workers}`, () => inWorkers(mode)],
    ]) {
      const xs = [];
      for (let r = 0; r < runs; r++) xs.push(await fn());
      result.images_per_s[`${mode}_${name}`] = +median(xs).toFixed(1);
    }
  }
  console.log(JSON.stringify(result, null, 1));
}
