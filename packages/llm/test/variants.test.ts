/**
 * Loading variants built from llama-tiny (dtypes, shards, MHA/MQA, untied head, biases, config spellings),
 * the KV cache against full recomputation, and the typed errors of bad folders. Each variant is checked
 * against an equivalent model, so a wrong switch changes the logits.
 */
import { promises as fs } from 'node:fs';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { ConfigValidationError, ModelLoadError, readSafetensors, writeSafetensors, type ReadTensor, type SafetensorsDtype } from '@multimeditron/core';
import { AutoLanguageModel, GenerationError, generate, LlamaForCausalLM, UnknownModelTypeError, type DecoderForCausalLM } from '@multimeditron/llm';
import { maxAbsDiff } from '../../../test/helpers/fixtures.js';
import { expectClose, expected, LLAMA_TINY, rows, tempDir, useWasm, zeroPadRows } from './helpers.js';

let root: string;
let base: Map<string, ReadTensor>;
let baseConfig: Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
let ref: DecoderForCausalLM;

type Tensors = Map<string, { data: Float32Array; shape: number[] }>;

beforeAll(async () => {
  await useWasm();
  root = await tempDir();
  base = (await readSafetensors(path.join(LLAMA_TINY, 'model.safetensors'))).tensors;
  baseConfig = JSON.parse(await fs.readFile(path.join(LLAMA_TINY, 'config.json'), 'utf8'));
  ref = await LlamaForCausalLM.fromPretrained(LLAMA_TINY);
});
afterAll(async () => {
  ref.dispose();
  await fs.rm(root, { recursive: true, force: true });
});

function baseTensors(): Tensors {
  return new Map([...base].map(([k, t]) => [k, { data: (t.data as Float32Array).slice(), shape: [...t.shape] }]));
}

/** Writes a model folder; `shards` > 1 splits the weights with an index. */
async function folder(name: string, config: object, tensors: Tensors, dtype: SafetensorsDtype = 'F32', shards = 1): Promise<string> {
  const dir = path.join(root, name);
  await fs.mkdir(dir, { recursive: true });
  await fs.writeFile(path.join(dir, 'config.json'), JSON.stringify(config));
  const entries = [...tensors].map(([k, t]) => [k, { ...t, dtype }] as const);
  if (shards === 1) {
    await writeSafetensors(path.join(dir, 'model.safetensors'), new Map(entries));
  } else {
    const weightMap: Record<string, string> = {};
    const per = Math.ceil(entries.length / shards);
    for (let s = 0; s < shards; s++) {
      const file = `model-0000${s + 1}-of-0000${shards}.safetensors`;
      const part = entries.slice(s * per, (s + 1) * per);
      await writeSafetensors(path.join(dir, file), new Map(part));
      for (const [k] of part) weightMap[k] = file;
    }
    await fs.writeFile(path.join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map: weightMap }));
  }
  return dir;
}

async function lastLogits(model: DecoderForCausalLM, ids: number[][], mask?: number[][]): Promise<Float32Array> {
  const out = model.forward({ inputIds: ids, ...(mask ? { attentionMask: mask } : {}), logits: 4 });
  const d = out.logits!.dataSync() as Float32Array;
  out.hiddenStates.dispose();
  out.logits!.dispose();
  return d;
}

const CHAT = async () => rows((await expected('llama-tiny.safetensors')).get('chat.input_ids')!);

describe('dtypes and shards', () => {
  it.each([['F32', 1], ['F16', 1], ['BF16', 3], ['F32', 2]] as const)('%s in %i file(s) gives the fixture logits', async (dtype, shards) => {
    const dir = await folder(`dtype-${dtype}-${shards}`, baseConfig, baseTensors(), dtype, shards);
    const m = await AutoLanguageModel.fromPretrained(dir);
    try {
      const exp = await expected('llama-tiny.safetensors');
      expectClose(await lastLogits(m, await CHAT()), exp.get('chat.logits_last4')!.data as Float32Array, `${dtype} logits`);
    } finally {
      m.dispose();
    }
  });
});

describe('architecture switches', () => {
  it('without head_dim (hidden / heads) and with the legacy rope_scaling.type key: identical', async () => {
    const { head_dim: _h, ...noHeadDim } = baseConfig;
    const legacy = { ...noHeadDim, rope_scaling: { ...baseConfig.rope_scaling, rope_type: undefined, type: 'llama3' } };
    const m = await AutoLanguageModel.fromPretrained(await folder('legacy', legacy, baseTensors()));
    try {
      expect(m.config.headDim).toBe(16);
      expect(m.config.ropeScaling?.ropeType).toBe('llama3');
      expect(Array.from(await lastLogits(m, await CHAT()))).toEqual(Array.from(await lastLogits(ref, await CHAT())));
    } finally {
      m.dispose();
    }
  });

  it('MHA with repeated kv heads equals the GQA model (query head h reads kv head floor(h / 2))', async () => {
    const t = baseTensors();
    for (let i = 0; i < 2; i++) {
      for (const w of ['k_proj', 'v_proj']) {
        const key = `model.layers.${i}.self_attn.${w}.weight`;
        const src = t.get(key)!.data;
        const out = new Float32Array(4 * 16 * 64);
        for (let h = 0; h < 4; h++) out.set(src.subarray(Math.floor(h / 2) * 16 * 64, (Math.floor(h / 2) + 1) * 16 * 64), h * 16 * 64);
        t.set(key, { data: out, shape: [64, 64] });
      }
    }
    const m = await AutoLanguageModel.fromPretrained(await folder('mha', { ...baseConfig, num_key_value_heads: 4 }, t));
    try {
      expectClose(await lastLogits(m, await CHAT()), await lastLogits(ref, await CHAT()), 'MHA vs GQA', 1e-4, 1e-4);
    } finally {
      m.dispose();
    }
  });

  it('MQA (one kv head) equals MHA with that head repeated', async () => {
    const mqa = baseTensors();
    const mha = baseTensors();
    for (let i = 0; i < 2; i++) {
      for (const w of ['k_proj', 'v_proj']) {
        const key = `model.layers.${i}.self_attn.${w}.weight`;
        const head0 = mqa.get(key)!.data.slice(0, 16 * 64);
        mqa.set(key, { data: head0, shape: [16, 64] });
        const rep = new Float32Array(4 * 16 * 64);
        for (let h = 0; h < 4; h++) rep.set(head0, h * 16 * 64);
        mha.set(key, { data: rep, shape: [64, 64] });
      }
    }
    const a = await AutoLanguageModel.fromPretrained(await folder('mqa', { ...baseConfig, num_key_value_heads: 1 }, mqa));
    const b = await AutoLanguageModel.fromPretrained(await folder('mqa-mha', { ...baseConfig, num_key_value_heads: 4 }, mha));
    try {
      expect(a.config.numKeyValueHeads).toBe(1);
      const la = await lastLogits(a, await CHAT());
      expectClose(la, await lastLogits(b, await CHAT()), 'MQA vs MHA', 1e-4, 1e-4);
      // and it is a different model from the GQA one
      expect(maxAbsDiff(la, await lastLogits(ref, await CHAT()))).toBeGreaterThan(1e-2);
    } finally {
      a.dispose();
      b.dispose();
    }
  });

  it('an untied head reads lm_head.weight (and requires it)', async () => {
    const t = baseTensors();
    const embed = t.get('model.embed_tokens.weight')!;
    // a different head: the embedding rows scaled by 2 doubles the logits
    t.set('lm_head.weight', { data: embed.data.map((v) => v * 2), shape: embed.shape });
    const m = await AutoLanguageModel.fromPretrained(await folder('untied', { ...baseConfig, tie_word_embeddings: false }, t));
    try {
      const l = await lastLogits(m, await CHAT());
      const r = await lastLogits(ref, await CHAT());
      expectClose(l, r.map((v) => 2 * v), 'untied head', 1e-4, 1e-4);
    } finally {
      m.dispose();
    }
    const err = await AutoLanguageModel.fromPretrained(await folder('untied-missing', { ...baseConfig, tie_word_embeddings: false }, baseTensors())).catch((e) => e);
    expect(err).toBeInstanceOf(ModelLoadError);
    expect(err.message).toMatch(/lm_head\.weight.*tie_word_embeddings/);
  });

  it('attention_bias and mlp_bias: zero biases change nothing, a bias is applied', async () => {
    const zero = baseTensors();
    const shifted = baseTensors();
    for (let i = 0; i < 2; i++) {
      const p = `model.layers.${i}.`;
      for (const [k, n] of [['self_attn.q_proj', 64], ['self_attn.k_proj', 32], ['self_attn.v_proj', 32], ['self_attn.o_proj', 64], ['mlp.gate_proj', 128], ['mlp.up_proj', 128], ['mlp.down_proj', 64]] as const) {
        zero.set(`${p}${k}.bias`, { data: new Float32Array(n), shape: [n] });
        shifted.set(`${p}${k}.bias`, { data: new Float32Array(n).fill(k === 'mlp.down_proj' ? 0.5 : 0), shape: [n] });
      }
    }
    const cfg = { ...baseConfig, attention_bias: true, mlp_bias: true };
    const z = await AutoLanguageModel.fromPretrained(await folder('bias0', cfg, zero));
    const s = await AutoLanguageModel.fromPretrained(await folder('bias1', cfg, shifted));
    try {
      const r = await lastLogits(ref, await CHAT());
      expectClose(await lastLogits(z, await CHAT()), r, 'zero biases', 1e-5, 1e-5);
      const d = await lastLogits(s, await CHAT());
      expect(maxAbsDiff(d, r)).toBeGreaterThan(1e-2);
    } finally {
      z.dispose();
      s.dispose();
    }
  });
});

describe('KV cache', () => {
  it('prefill then one token at a time gives the logits of full recomputation, for left-padded rows', async () => {
    const exp = await expected('llama-tiny.safetensors');
    const ids = rows(exp.get('batch.input_ids')!);
    const mask = rows(exp.get('batch.attention_mask')!);
    const T = ids[0]!.length;
    const full = ref.forward({ inputIds: ids, attentionMask: mask, logits: 'all' });
    const fullLogits = full.logits!.dataSync() as Float32Array;
    const V = ref.config.vocabSize;
    tf.dispose([full.hiddenStates, full.logits!]);
    const before = tf.memory().numTensors;
    const cache = ref.createCache(2);
    const k = T - 4;
    const pre = ref.forward({ inputIds: ids.map((r) => r.slice(0, k)), attentionMask: mask.map((r) => r.slice(0, k)), cache, logits: 1 });
    const check = (logits: tf.Tensor, t: number) => {
      const got = logits.dataSync() as Float32Array;
      for (let b = 0; b < 2; b++) {
        const want = fullLogits.subarray((b * T + t) * V, (b * T + t + 1) * V);
        expectClose(got.subarray(b * V, (b + 1) * V), want, `row ${b} position ${t}`);
      }
    };
    check(pre.logits!, k - 1);
    tf.dispose([pre.hiddenStates, pre.logits!]);
    for (let t = k; t < T; t++) {
      const step = ref.forward({ inputIds: ids.map((r) => [r[t]!]), cache, logits: 1 });
      expect(step.positionIds.map((r) => r[0])).toEqual(mask.map((m) => m.slice(0, t + 1).reduce((a, b) => a + b, 0) - 1));
      check(step.logits!, t);
      tf.dispose([step.hiddenStates, step.logits!]);
    }
    expect(cache.length).toBe(T);
    cache.dispose();
    expect(tf.memory().numTensors).toBe(before);
  });

  it('batched generation gives each row the ids it gets alone (greedy, and sampling with the row seed)', async () => {
    const exp = await expected('llama-tiny.safetensors');
    const prompts = [...rows(exp.get('plain.input_ids')!), ...rows(exp.get('chat.input_ids')!), [128000, 9906, 11, 1917, 0]];
    for (const opts of [{ doSample: false }, { doSample: true, temperature: 0.9, topK: 20, topP: 0.95, minP: 0.01, repetitionPenalty: 1.2, seed: 7 }]) {
      const batched = await generate(ref, { inputIds: prompts }, { ...opts, maxNewTokens: 8, eosTokenIds: [] });
      for (const [b, p] of prompts.entries()) {
        const alone = await generate(ref, { inputIds: [p] }, { ...opts, ...(opts.doSample ? { seed: 7 + b } : {}), maxNewTokens: 8, eosTokenIds: [] });
        expect(batched[b]!.ids).toEqual(alone[0]!.ids);
      }
    }
  });
});

describe('bad folders', () => {
  it('an unregistered model_type names it and the registered families', async () => {
    const err = await AutoLanguageModel.fromPretrained(await folder('apertus', { ...baseConfig, model_type: 'apertus' }, baseTensors())).catch((e) => e);
    expect(err).toBeInstanceOf(UnknownModelTypeError);
    expect(err.modelType).toBe('apertus');
    expect(err.known).toEqual(['llama', 'qwen3']);
    expect(err.message).toContain('config.json');
  });

  it('a shape that disagrees with config.json names the file and the key; nothing is allocated', async () => {
    const before = tf.memory().numTensors;
    const err = await AutoLanguageModel.fromPretrained(await folder('shape', { ...baseConfig, intermediate_size: 256 }, baseTensors())).catch((e) => e);
    expect(err).toBeInstanceOf(ModelLoadError);
    expect(err.message).toMatch(/model\.safetensors: model\.layers\.0\.mlp\.gate_proj\.weight: shape \[128,64\] disagrees.*\[256,64\]/);
    expect(tf.memory().numTensors).toBe(before);
  });

  it('a missing shard is a typed error naming the shard', async () => {
    const dir = await folder('missing-shard', baseConfig, baseTensors(), 'F32', 2);
    await fs.rm(path.join(dir, 'model-00002-of-00002.safetensors'));
    const err = await AutoLanguageModel.fromPretrained(dir).catch((e) => e);
    expect(err).toBeInstanceOf(ModelLoadError);
    expect(err.message).toContain('model-00002-of-00002.safetensors');
  });

  it('invalid config values are ConfigValidationErrors naming the key', async () => {
    for (const [edit, p] of [
      [{ num_key_value_heads: 3 }, '/num_key_value_heads'],
      [{ num_hidden_layers: 1e9 }, '/num_hidden_layers'],
      [{ rope_scaling: { rope_type: 'yarn', factor: 2 } }, '/rope_scaling/rope_type'],
      [{ hidden_size: 'wide' }, '/hidden_size'],
    ] as const) {
      const err = await AutoLanguageModel.fromPretrained(await folder(`cfg-${p.replace(/\W/g, '')}`, { ...baseConfig, ...edit }, baseTensors())).catch((e) => e);
      expect(err).toBeInstanceOf(ConfigValidationError);
      expect(err.issues.map((i: { path: string }) => i.path)).toContain(p);
      expect(err.message).toContain('config.json');
    }
  });

  it('a prompt longer than max_position_embeddings is refused before any compute', async () => {
    const m = await AutoLanguageModel.fromPretrained(await folder('short', { ...baseConfig, max_position_embeddings: 16 }, baseTensors()));
    try {
      const before = tf.memory().numTensors;
      const err = await generate(m, { inputIds: [new Array(20).fill(791)] }, { doSample: false, maxNewTokens: 2 }).catch((e) => e);
      expect(err).toBeInstanceOf(GenerationError);
      expect(err.message).toMatch(/20 tokens.*max_position_embeddings is 16/);
      expect(tf.memory().numTensors).toBe(before);
      // a prompt that fits stops at the limit with finishReason "length"
      const res = await generate(m, { inputIds: [new Array(12).fill(791)] }, { doSample: false, maxNewTokens: 50, eosTokenIds: [] });
      expect(res[0]!.ids).toHaveLength(4);
      expect(res[0]!.finishReason).toBe('length');
    } finally {
      m.dispose();
    }
  });
});

it('pad rows are zeroed by the helper only (sanity of the comparison)', async () => {
  const exp = await expected('llama-tiny.safetensors');
  const out = ref.forward({ inputIds: rows(exp.get('batch.input_ids')!), attentionMask: rows(exp.get('batch.attention_mask')!), logits: 'none' });
  const z = zeroPadRows(out.hiddenStates, rows(exp.get('batch.attention_mask')!));
  expect(z.subarray(0, 64).every((v) => v === 0)).toBe(true);
  out.hiddenStates.dispose();
});
