import * as tf from '@tensorflow/tfjs-core';
import {
  AutoLanguageModel, generate, LlamaForCausalLM, Qwen3ForCausalLM, ropeInvFreq, ropeTables, type DecoderForCausalLM,
} from '@multimeditron/llm';
import { expectClose, expected, LLAMA_TINY, QWEN3_TINY, rows, useWasm, zeroPadRows } from './helpers.js';

const FAMILIES = [
  { name: 'llama', dir: LLAMA_TINY, file: 'llama-tiny.safetensors', cls: LlamaForCausalLM },
  { name: 'qwen3', dir: QWEN3_TINY, file: 'qwen3-tiny.safetensors', cls: Qwen3ForCausalLM },
] as const;

beforeAll(async () => {
  await useWasm();
});

describe.each(FAMILIES)('$name-tiny parity', ({ dir, file, cls }) => {
  let model: DecoderForCausalLM;
  beforeAll(async () => {
    model = await AutoLanguageModel.fromPretrained(dir, { resolver: undefined });
  });
  afterAll(() => model.dispose());

  it('is loaded by the family its config.json names', () => {
    expect(model).toBeInstanceOf(cls);
  });

  it.each(['plain', 'chat', 'batch'])('%s: positions, hidden states and last-4 logits', async (c) => {
    const exp = await expected(file);
    const ids = rows(exp.get(`${c}.input_ids`)!);
    const mask = rows(exp.get(`${c}.attention_mask`)!);
    const before = tf.memory().numTensors;
    const out = model.forward({ inputIds: ids, attentionMask: mask, logits: 4 });
    const expPos = rows(exp.get(`${c}.position_ids`)!);
    out.positionIds.forEach((r, b) => r.forEach((p, t) => { if (mask[b]![t]) expect(p).toBe(expPos[b]![t]); }));
    expectClose(zeroPadRows(out.hiddenStates, mask), exp.get(`${c}.hidden_states`)!.data as Float32Array, `${c} hidden_states`);
    expectClose(out.logits!.dataSync() as Float32Array, exp.get(`${c}.logits_last4`)!.data as Float32Array, `${c} logits_last4`);
    out.hiddenStates.dispose();
    out.logits!.dispose();
    expect(tf.memory().numTensors).toBe(before);
  });

  it.each(['plain', 'chat', 'batch'])('%s: greedy ids are exact (KV cache)', async (c) => {
    const exp = await expected(file);
    const ids = rows(exp.get(`${c}.input_ids`)!);
    const mask = rows(exp.get(`${c}.attention_mask`)!);
    const want = rows(exp.get(`${c}.generated_ids`)!);
    const prompts = ids.map((r, b) => r.filter((_, t) => mask[b]![t]));
    const before = tf.memory().numTensors;
    const res = await generate(model, { inputIds: prompts }, { doSample: false, maxNewTokens: want[0]!.length, eosTokenIds: [] });
    expect(res.map((r) => r.ids)).toEqual(want);
    expect(tf.memory().numTensors).toBe(before);
  });
});

describe('rope tables (llama3 scaling)', () => {
  it('inverse frequencies and cos/sin match transformers', async () => {
    const exp = await expected('llama-tiny.safetensors');
    const model = await LlamaForCausalLM.fromPretrained(LLAMA_TINY);
    try {
      const inv = ropeInvFreq(model.config);
      expectClose(inv, exp.get('rope.inv_freq')!.data as Float32Array, 'inv_freq', 0, 1e-6);
      const unscaled = ropeInvFreq({ ...model.config, ropeScaling: null });
      expectClose(unscaled, exp.get('rope.inv_freq_unscaled')!.data as Float32Array, 'inv_freq_unscaled', 0, 1e-6);
      const positions = Array.from(exp.get('rope.positions')!.data as BigInt64Array, Number);
      const { cos, sin } = ropeTables(inv, positions);
      expectClose(cos, exp.get('rope.cos')!.data as Float32Array, 'cos', 1e-6, 0);
      expectClose(sin, exp.get('rope.sin')!.data as Float32Array, 'sin', 1e-6, 0);
    } finally {
      model.dispose();
    }
  });
});
