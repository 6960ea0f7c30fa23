// Decoder speed on the wasm backend, for random-weight Llama models of the two shapes of
// ../shared/bench/python_llm_reference.py (SmolLM2-135M, and Llama-3.2-1B with 4 of its 16 layers), measured the
// way that script measures them: prefill tokens/s (one forward of --prompt tokens into a fresh cache, logits of the
// last position only) and KV-cache decode tokens/s (--new single-token greedy steps after that prefill), as medians
// of --runs runs after a warm-up; plus generate() end to end, the per-token decode time at several context lengths
// (it must grow linearly with the context), peak RSS, and the memory-bandwidth bound of decode (every weight is
// read once per token: float32 params * 4 bytes / measured GB/s).
// Each shape runs in its own child process (its own wasm heap and peak RSS; a shape that exhausts the 4 GB wasm32
// heap is reported, not fatal). Prints one JSON object.
// Usage: node bench/llm.mjs [--shape smollm2-135m|llama-1b-4layers|all] [--prompt 256] [--new 32] [--runs 3]
//          [--lengths 64,256,1024] [--steps 16] [--no-generate] [--backend wasm|cpu]
// Imports the built packages (npx tsc -b first).
import 'reflect-metadata';
import { spawnSync } from 'node:child_process';
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import * as tf from '@tensorflow/tfjs-core';
import { selectBackend } from '@multimeditron/core';
import { generate } from '@multimeditron/llm';
import { buildRandomLlama, makeIds as ids } from './random-llama.mjs';

const args = process.argv.slice(2);
const opt = (name, def) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : def;
};
const SHAPES = {
  'smollm2-135m': { hidden: 576, layers: 30, heads: 9, kv: 3, inter: 1536, vocab: 49152, theta: 100000 },
  'llama-1b-4layers': { hidden: 2048, layers: 4, heads: 32, kv: 8, inter: 8192, vocab: 128256, theta: 500000 },
};
const shapeArg = opt('shape', 'all');
const promptLen = Number(opt('prompt', '256'));
const newTokens = Number(opt('new', '32'));
const runs = Number(opt('runs', '3'));
// context lengths of the per-token decode curve (default only for the 135M shape; --lengths applies to every shape)
const lengthsArg = opt('lengths', undefined);
const steps = Number(opt('steps', '16'));
const withGenerate = !args.includes('--no-generate');
// wasm is what we benchmark; --backend cpu (pure JS, no 4 GB heap limit, much slower) is there for shapes wasm cannot hold
const backend = opt('backend', 'wasm');
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const MB = (bytes) => Math.round(bytes / 1e6);

// ---- one shape (child process) -------------------------------------------------------------------------------

let peakRss = 0;
const sample = () => { peakRss = Math.max(peakRss, process.memoryUsage().rss); };
const progress = (stage, extra = {}) => {
  sample();
  process.stderr.write(`${JSON.stringify({ stage, rssMB: MB(process.memoryUsage().rss), wasmHeapMB: wasmHeapMB(), ...extra })}\n`);
};
const wasmHeapMB = () => {
  const b = tf.engine().backendInstance;
  return b?.wasm?.HEAPU8 ? MB(b.wasm.HEAPU8.buffer.byteLength) : undefined;
};

/** One forward of `tokens` (extending `cache`), last-position logits; returns the greedy next id (synchronises). */
function step(model, tokens, cache) {
  const out = model.forward({ inputIds: [tokens], cache, logits: 1 });
  const next = tf.tidy(() => tf.argMax(out.logits, -1));
  const id = next.dataSync()[0];
  tf.dispose([out.hiddenStates, out.logits, next]);
  return id;
}

/** ms of a prefill of n tokens into a fresh cache, and of `decode` greedy single-token steps after it. */
function prefillAndDecode(model, n, decode) {
  const cache = model.createCache(1);
  try {
    let t = performance.now();
    let id = step(model, ids(n, model.config.vocabSize, 1), cache);
    const prefillMs = performance.now() - t;
    t = performance.now();
    for (let i = 0; i < decode; i++) id = step(model, [id], cache);
    return { prefillMs, decodeMs: performance.now() - t };
  } finally {
    cache.dispose();
    sample();
  }
}

/**
 * Per-token decode time at each context length: one cache is prefilled up to each length in turn (chunked
 * prefill), then `steps` single-token steps are timed one by one; their median is the ms/token at that length.
 */
function decodeByContext(model, lengths) {
  const cache = model.createCache(1);
  const out = {};
  try {
    let id = 0;
    for (const n of lengths) {
      const have = cache.length;
      // prefill up to n in chunks of at most 128 tokens (not timed; one long forward would hold every layer's
      // [heads, T, past + T] scores at once, since the forward's tidy keeps all intermediates until it returns)
      for (let at = have; at < n; at += 128) id = step(model, ids(Math.min(128, n - at), model.config.vocabSize, 2 + at), cache);
      id = step(model, [id], cache); // one untimed step first
      const xs = [];
      for (let i = 0; i < steps; i++) {
        const t = performance.now();
        id = step(model, [id], cache);
        xs.push(performance.now() - t);
      }
      out[n] = +median(xs).toFixed(2);
    }
  } finally {
    cache.dispose();
    sample();
  }
  return out;
}

async function runShape(name) {
  const s = SHAPES[name];
  if (!s) throw new Error(`unknown shape ${name} (one of ${Object.keys(SHAPES).join(', ')}, all)`);
  const sampler = setInterval(sample, 50);
  const choice = await selectBackend({ backend });
  const t0 = performance.now();
  const model = buildRandomLlama(s);
  const buildSeconds = (performance.now() - t0) / 1000;
  const params = model.variables().reduce((n, v) => n + v.size, 0);
  const r = { shape: name, backend: choice.backend, params, buildSeconds: +buildSeconds.toFixed(1) };
  progress('built', { params });
  const rssAfterBuild = process.memoryUsage().rss;
  // warm-up at full length: XNNPACK packs each weight matrix on its first use, and the first long prefill grows the
  // wasm heap (the forward's tidy keeps every layer's intermediates until it returns)
  prefillAndDecode(model, promptLen, 2);
  r.rssAfterWarmupMB = MB(process.memoryUsage().rss);
  r.wasmHeapAfterWarmupMB = wasmHeapMB();
  progress('warm');
  const pre = [];
  const dec = [];
  for (let i = 0; i < runs; i++) {
    const { prefillMs, decodeMs } = prefillAndDecode(model, promptLen, newTokens);
    pre.push(prefillMs);
    dec.push(decodeMs);
    progress('run', { run: i, prefillMs: Math.round(prefillMs), decodeMs: Math.round(decodeMs) });
  }
  r.prefillTokensPerSecond = +(promptLen / (median(pre) / 1000)).toFixed(2);
  r.decodeTokensPerSecond = +(newTokens / (median(dec) / 1000)).toFixed(2);
  r.decodeMsPerToken = +(median(dec) / newTokens).toFixed(2);
  r.runsPrefillMs = pre.map(Math.round);
  r.runsDecodeMs = dec.map(Math.round);
  if (withGenerate) {
    const prompt = ids(promptLen, s.vocab, 1);
    const gen = [];
    for (let i = 0; i < runs; i++) {
      const t = performance.now();
      const [res] = await generate(model, { inputIds: [prompt] }, { doSample: false, maxNewTokens: newTokens, eosTokenIds: [] });
      gen.push(performance.now() - t);
      if (res.ids.length !== newTokens) throw new Error(`generate returned ${res.ids.length} tokens, expected ${newTokens}`);
    }
    r.generateMs = Math.round(median(gen));
    r.generateNewTokensPerSecond = +(newTokens / (median(gen) / 1000)).toFixed(2);
    r.runsGenerateMs = gen.map(Math.round);
    progress('generate', { ms: r.generateMs });
  }
  sample();
  // peak so far: build, warm-up, the timed prefill/decode runs and generate (not the context curve's longer caches)
  r.peakRssPrefillDecodeMB = MB(Math.max(peakRss, process.resourceUsage().maxRSS * 1024));
  const lengths = (lengthsArg ?? (name === 'smollm2-135m' ? '64,256,1024' : '')).split(',').filter(Boolean).map(Number).sort((a, b) => a - b);
  if (lengths.length) {
    r.decodeMsPerTokenByContext = decodeByContext(model, lengths);
    r.decodeStepsPerLength = steps;
    progress('context', r.decodeMsPerTokenByContext);
  }
  model.dispose();
  clearInterval(sampler);
  sample();
  r.rssAfterBuildMB = MB(rssAfterBuild);
  r.peakRssMB = MB(Math.max(peakRss, process.resourceUsage().maxRSS * 1024));
  r.wasmHeapMB = wasmHeapMB();
  r.numTensorsAfter = tf.memory().numTensors;
  return r;
}

// ---- memory bandwidth (parent process) -----------------------------------------------------------------------

/** Best-of-n wall time (ms) of f. */
function best(n, f) {
  let b = Infinity;
  for (let i = 0; i < n; i++) {
    const t = performance.now();
    f();
    b = Math.min(b, performance.now() - t);
  }
  return b;
}

/** Code of a worker that copies a 128 MB Float32Array `reps` times once the shared flag flips. */
const copyWorker = `
const { parentPort, workerData } = require('node:worker_threads');
const a = new Float32Array(workerData.n).fill(1), b = new Float32Array(workerData.n).fill(2);
const flag = new Int32Array(workerData.flag);
parentPort.postMessage('ready');
Atomics.wait(flag, 0, 0);
for (let r = 0; r < workerData.reps; r++) b.set(a);
parentPort.postMessage('done');`;

/** Aggregate copy bandwidth of k threads copying at once (read + write bytes / s). */
async function parallelCopy(k, n, reps) {
  const flag = new SharedArrayBuffer(4);
  const ws = Array.from({ length: k }, () => new Worker(copyWorker, { eval: true, workerData: { n, reps, flag } }));
  const msg = (w) => new Promise((res) => w.once('message', res));
  await Promise.all(ws.map(msg));
  const done = Promise.all(ws.map(msg));
  const t = performance.now();
  Atomics.store(new Int32Array(flag), 0, 1);
  Atomics.notify(new Int32Array(flag), 0);
  await done;
  const ms = performance.now() - t;
  await Promise.all(ws.map((w) => w.terminate()));
  return (k * reps * 2 * n * 4) / 1e9 / (ms / 1000);
}

/**
 * Memory bandwidth estimates on 256 MB arrays (far beyond the caches), GB/s: memcpy (TypedArray.set, counted as read +
 * write bytes, the STREAM convention), a JS read-only sum, the wasm backend's own sum (tf.sum reads once), and the
 * aggregate copy bandwidth of one thread per core. Our decode runs on one thread (tfjs-wasm in Node is not threaded),
 * so the bound uses the best single-thread figure.
 */
async function bandwidth() {
  const n = 64 * 1024 * 1024;
  const a = new Float32Array(n).fill(1);
  const b = new Float32Array(n).fill(2);
  const copy = (2 * n * 4) / 1e9 / (best(5, () => b.set(a)) / 1000);
  let sink = 0;
  const jsRead = (n * 4) / 1e9 / (best(3, () => {
    let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    for (let i = 0; i < n; i += 4) { s0 += a[i]; s1 += a[i + 1]; s2 += a[i + 2]; s3 += a[i + 3]; }
    sink += s0 + s1 + s2 + s3;
  }) / 1000);
  await selectBackend({ backend: 'wasm' });
  const t = tf.tensor1d(a);
  const wasmRead = (n * 4) / 1e9 / (best(5, () => tf.tidy(() => tf.sum(t).dataSync())) / 1000);
  t.dispose();
  const k = os.cpus().length;
  const parallel = k > 1 ? await parallelCopy(k, n / 2, 5) : undefined;
  const singleThread = Math.max(copy, jsRead, wasmRead);
  return {
    copyGBs: +copy.toFixed(2), jsReadGBs: +jsRead.toFixed(2), wasmSumReadGBs: +wasmRead.toFixed(2),
    ...(parallel ? { [`copyGBs${k}Threads`]: +parallel.toFixed(2) } : {}),
    boundUsesGBs: +singleThread.toFixed(2), sink: sink > 0,
  };
}

// ---- main --------------------------------------------------------------------------------------------------

if (args.includes('--child')) {
  const r = await runShape(shapeArg);
  process.stdout.write(`${JSON.stringify(r)}\n`);
} else {
  const names = shapeArg === 'all' ? Object.keys(SHAPES) : shapeArg.split(',');
  for (const n of names) if (!SHAPES[n]) throw new Error(`unknown shape ${n} (one of ${Object.keys(SHAPES).join(', ')}, all)`);
  const bw = await bandwidth();
  const result = { backend, cpus: os.cpus().length, node: process.version, prompt: promptLen, newTokens, runs, bandwidth: bw, shapes: {} };
  const self = fileURLToPath(import.meta.url);
  const passOn = args.filter((_, i) => !['--shape'].includes(args[i]) && !['--shape'].includes(args[i - 1]));
  for (const name of names) {
    process.stderr.write(`llm bench: ${name}...\n`);
    const t0 = Date.now();
    const c = spawnSync(process.execPath, [self, '--child', '--shape', name, ...passOn], { encoding: 'utf8', maxBuffer: 64 << 20, stdio: ['ignore', 'pipe', 'pipe'] });
    const stderrLines = (c.stderr ?? '').trim().split('\n');
    let r;
    try {
      r = JSON.parse((c.stdout ?? '').trim().split('\n').pop());
    } catch {
      // the child died (e.g. out of wasm memory): report how far it got
      const stages = stderrLines.filter((l) => l.startsWith('{"stage"')).map((l) => JSON.parse(l));
      r = { shape: name, failed: true, exitCode: c.status, signal: c.signal, lastStage: stages.at(-1) ?? null,
        error: stderrLines.filter((l) => !l.startsWith('{"stage"')).slice(0, 3).join('\n').slice(0, 1000) };
    }
    r.seconds = (Date.now() - t0) / 1000;
    if (!r.failed) {
      // decode reads every weight once per token: the layers and the tied LM head (the embedding table, as its
      // transposed copy), float32; the one embedding row gathered and the KV cache are left out (small at these lengths)
      const bytesPerToken = r.params * 4;
      const boundTps = (bw.boundUsesGBs * 1e9) / bytesPerToken;
      r.weightBytesPerTokenMB = MB(bytesPerToken);
      r.bandwidthBoundDecodeTokensPerSecond = +boundTps.toFixed(2);
      r.decodeFractionOfBound = +(r.decodeTokensPerSecond / boundTps).toFixed(3);
      r.decodeEffectiveGBs = +((r.decodeTokensPerSecond * bytesPerToken) / 1e9).toFixed(2);
    }
    result.shapes[name] = r;
  }
  process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
}
