// Decoder speed on the wasm backend: prefill tokens/s and KV-cache decode tokens/s for random-weight Llama models
// of SmolLM2-135M shape and of Llama-3.2-1B shape with 4 layers (the shapes of
// ../shared/bench/python_llm_reference.py), the per-token decode time at several context lengths (linear, not
// quadratic, in the length), peak RSS, and the memory-bandwidth bound of decode (weights read once per token).
// Prints one JSON object. Medians of --runs runs after a warm-up.
// Usage: node bench/llm.mjs [--shape smollm2-135m|llama-1b-4layers|all] [--prompt 256] [--new 32] [--runs 3]
// Imports the built packages (npm run build first).
import 'reflect-metadata';
import os from 'node:os';
import * as tf from '@tensorflow/tfjs-core';
import { selectBackend } from '@multimeditron/core';
import { LlamaForCausalLM, parseDecoderConfig } from '@multimeditron/llm';

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
const shapes = shapeArg === 'all' ? Object.keys(SHAPES) : shapeArg.split(',');
const promptLen = Number(opt('prompt', '256'));
const newTokens = Number(opt('new', '32'));
const runs = Number(opt('runs', '3'));
const lengths = opt('lengths', '64,256,1024').split(',').map(Number);
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

let peakRss = 0;
const sample = () => { peakRss = Math.max(peakRss, process.memoryUsage().rss); };
const sampler = setInterval(sample, 50);

/** A decoder whose weights are drawn in place (normal * 0.02, norms 1): no checkpoint file needed. */
class RandomLlama extends LlamaForCausalLM {
  randomise(seed) {
    for (const s of this.parameterSpecs()) {
      const shape = s.kind === 'linear' ? [s.shape[1], s.shape[0]] : s.shape;
      const init = s.key.endsWith('norm.weight') ? tf.ones(shape) : tf.randomNormal(shape, 0, 0.02, 'float32', seed++);
      this.params.set(s.key, tf.variable(init, false));
      init.dispose();
    }
    this.bindWeights();
  }
}

function build(s) {
  const config = parseDecoderConfig({
    model_type: 'llama', vocab_size: s.vocab, hidden_size: s.hidden, intermediate_size: s.inter, num_hidden_layers: s.layers,
    num_attention_heads: s.heads, num_key_value_heads: s.kv, rms_norm_eps: 1e-5, rope_theta: s.theta,
    max_position_embeddings: 8192, tie_word_embeddings: true,
  }, '<bench>');
  const m = new RandomLlama(config);
  m.randomise(1);
  return m;
}

const ids = (n, vocab, seed) => Array.from({ length: n }, (_, i) => (seed * 7919 + i * 104729) % vocab);

/** ms of a prefill of n tokens into a fresh cache (last-position logits), and of `steps` decode steps after it. */
function prefillAndDecode(model, n, steps) {
  const cache = model.createCache(1);
  const prompt = ids(n, model.config.vocabSize, 1);
  let t = performance.now();
  let out = model.forward({ inputIds: [prompt], cache, logits: 1 });
  let next = tf.tidy(() => tf.argMax(out.logits, -1));
  let id = next.dataSync()[0];
  tf.dispose([out.hiddenStates, out.logits, next]);
  const prefillMs = performance.now() - t;
  t = performance.now();
  for (let i = 0; i < steps; i++) {
    out = model.forward({ inputIds: [[id]], cache, logits: 1 });
    next = tf.tidy(() => tf.argMax(out.logits, -1));
    id = next.dataSync()[0];
    tf.dispose([out.hiddenStates, out.logits, next]);
  }
  const decodeMs = performance.now() - t;
  cache.dispose();
  sample();
  return { prefillMs, decodeMs };
}

/** Memory bandwidth of one thread: a 256 MB copy (TypedArray.set, i.e. memcpy), read + write bytes per second. */
function bandwidth() {
  const a = new Float32Array(64 * 1024 * 1024).fill(1);
  const b = new Float32Array(a.length);
  let best = Infinity;
  for (let r = 0; r < 5; r++) {
    const t = performance.now();
    b.set(a);
    best = Math.min(best, performance.now() - t);
  }
  return (2 * a.byteLength / 1e9) / (best / 1000);
}

const choice = await selectBackend({ backend: 'wasm' });
const gbs = bandwidth();
const result = { backend: choice.backend, cpus: os.cpus().length, node: process.version, prompt: promptLen, newTokens, runs, copyBandwidthGBs: +gbs.toFixed(2), shapes: {} };
for (const name of shapes) {
  const s = SHAPES[name];
  if (!s) throw new Error(`unknown shape ${name}`);
  const t0 = performance.now();
  const model = build(s);
  const buildS = (performance.now() - t0) / 1000;
  const params = model.variables().reduce((n, v) => n + v.size, 0);
  prefillAndDecode(model, 16, 2); // warm-up
  const pre = [];
  const dec = [];
  for (let r = 0; r < runs; r++) {
    const { prefillMs, decodeMs } = prefillAndDecode(model, promptLen, newTokens);
    pre.push(prefillMs);
    dec.push(decodeMs);
  }
  const perLength = {};
  if (name === 'smollm2-135m') {
    for (const n of lengths) {
      const xs = [];
      for (let r = 0; r < Math.max(1, runs - 1); r++) xs.push(prefillAndDecode(model, n, 8).decodeMs / 8);
      perLength[n] = +median(xs).toFixed(2);
    }
  }
  const decodeTps = newTokens / (median(dec) / 1000);
  // weights read once per token: every layer matrix and the LM head (the tied copy), float32
  const bytesPerToken = params * 4;
  const boundTps = (gbs * 1e9) / bytesPerToken;
  result.shapes[name] = {
    params, buildSeconds: +buildS.toFixed(1),
    prefillTokensPerSecond: +(promptLen / (median(pre) / 1000)).toFixed(1),
    decodeTokensPerSecond: +decodeTps.toFixed(2),
    decodeMsPerTokenByContext: perLength,
    bandwidthBoundDecodeTokensPerSecond: +boundTps.toFixed(1),
    decodeFractionOfBound: +(decodeTps / boundTps).toFixed(2),
    runsPrefillMs: pre.map((x) => Math.round(x)), runsDecodeMs: dec.map((x) => Math.round(x)),
  };
  model.dispose();
  if (global.gc) global.gc();
}
clearInterval(sampler);
sample();
result.peakRssMB = Math.round(peakRss / 1e6);
result.numTensorsAfter = tf.memory().numTensors;
process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
