import * as tf from '@tensorflow/tfjs-core';
import {
  applyRepetitionPenalty, argmax, generate, generateStream, LlamaForCausalLM, Qwen3ForCausalLM, resolveGenerationOptions,
  samplingDistribution, SeededRandom, StreamingDecoder, TextTokenizer, type DecoderForCausalLM,
} from '@multimeditron/llm';
import { ConfigValidationError } from '@multimeditron/core';
import { expected, LLAMA_TINY, LLAMA_TOKENIZER_DIR, QWEN3_TINY, rows, useWasm } from './helpers.js';

let llama: DecoderForCausalLM;
let llamaTok: TextTokenizer;

beforeAll(async () => {
  await useWasm();
  llama = await LlamaForCausalLM.fromPretrained(LLAMA_TINY);
  llamaTok = await TextTokenizer.fromFolder(LLAMA_TOKENIZER_DIR);
});
afterAll(() => llama.dispose());

describe('logits processors (transformers semantics)', () => {
  it('repetition penalty divides positive and multiplies negative scores of seen tokens, once each', () => {
    const s = Float32Array.from([2, -2, 1, 0.5]);
    applyRepetitionPenalty(s, [0, 1, 1, 3], 2);
    expect(Array.from(s)).toEqual([1, -4, 1, 0.25]);
  });

  it('argmax takes the first of equal maxima', () => {
    expect(argmax([1, 3, 3, 2])).toBe(1);
  });

  it('temperature, top-k, top-p and min-p keep what transformers keeps', () => {
    const logits = Float32Array.from([Math.log(0.5), Math.log(0.3), Math.log(0.15), Math.log(0.05)]);
    const base = { temperature: 1, topK: 0, topP: 1, minP: 0 };
    const all = samplingDistribution(logits, base);
    expect(Array.from(all.ids)).toEqual([0, 1, 2, 3]);
    expect(all.probs[0]).toBeCloseTo(0.5, 6);
    expect(Array.from(samplingDistribution(logits, { ...base, topK: 2 }).ids)).toEqual([0, 1]);
    // top_p 0.8: the mass above token 2 is 0.8 >= 0.8, so it goes; 0.81 keeps it
    expect(Array.from(samplingDistribution(logits, { ...base, topP: 0.8 }).ids)).toEqual([0, 1]);
    expect(Array.from(samplingDistribution(logits, { ...base, topP: 0.81 }).ids)).toEqual([0, 1, 2]);
    // min_p 0.35: drop tokens below 0.35 * 0.5 = 0.175
    const mp = samplingDistribution(logits, { ...base, minP: 0.35 });
    expect(Array.from(mp.ids)).toEqual([0, 1]);
    expect(mp.probs[0]! + mp.probs[1]!).toBeCloseTo(1, 12);
    expect(mp.probs[0]).toBeCloseTo(0.625, 6);
    // temperature 0.5 sharpens: p ~ p^2
    const t = samplingDistribution(logits, { ...base, temperature: 0.5 });
    expect(t.probs[0]! / t.probs[1]!).toBeCloseTo((0.5 / 0.3) ** 2, 4);
    // top-k ties at the boundary are kept
    expect(Array.from(samplingDistribution(Float32Array.from([1, 2, 2, 0]), { ...base, topK: 1 }).ids)).toEqual([1, 2]);
  });

  it('the seeded RNG reproduces a stream and differs across seeds', () => {
    const a = new SeededRandom(42);
    const b = new SeededRandom(42);
    const c = new SeededRandom(43);
    const xa = Array.from({ length: 5 }, () => a.next());
    expect(Array.from({ length: 5 }, () => b.next())).toEqual(xa);
    expect(Array.from({ length: 5 }, () => c.next())).not.toEqual(xa);
    expect(xa.every((x) => x >= 0 && x < 1)).toBe(true);
  });
});

describe('generation options', () => {
  it('generation_config.json gives the defaults and a call overrides them', () => {
    const g = { do_sample: true, temperature: 0.6, top_p: 0.9, eos_token_id: [128001, 128008, 128009] };
    const d = resolveGenerationOptions({}, g, { eosTokenIds: [], promptLength: 5 });
    expect(d).toMatchObject({ doSample: true, temperature: 0.6, topP: 0.9, topK: 50, minP: 0, repetitionPenalty: 1, eosTokenIds: [128001, 128008, 128009], maxNewTokens: 256 });
    const o = resolveGenerationOptions({ doSample: false, topP: 0.5, maxNewTokens: 3 }, g, { eosTokenIds: [], promptLength: 5 });
    expect(o).toMatchObject({ doSample: false, topP: 0.5, maxNewTokens: 3, temperature: 0.6 });
    expect(resolveGenerationOptions({}, { max_length: 20 }, { eosTokenIds: [1], promptLength: 5 }).maxNewTokens).toBe(15);
    expect(() => resolveGenerationOptions({ topP: 2 }, {}, { eosTokenIds: [], promptLength: 1 })).toThrow(ConfigValidationError);
    expect(() => resolveGenerationOptions({ maxNewTokens: 0 }, {}, { eosTokenIds: [], promptLength: 1 })).toThrow(/maxNewTokens/);
  });

  it('a seed reproduces a sample; another seed gives another', async () => {
    const exp = await expected('llama-tiny.safetensors');
    const prompt = rows(exp.get('chat.input_ids')!);
    const opts = { doSample: true, temperature: 1.5, topK: 0, topP: 1, maxNewTokens: 10, eosTokenIds: [] };
    const a = await generate(llama, { inputIds: prompt }, { ...opts, seed: 1 });
    const b = await generate(llama, { inputIds: prompt }, { ...opts, seed: 1 });
    const c = await generate(llama, { inputIds: prompt }, { ...opts, seed: 2 });
    expect(b[0]!.ids).toEqual(a[0]!.ids);
    expect(c[0]!.ids).not.toEqual(a[0]!.ids);
  });

  it('stops on an eos id (kept in ids) and on max_new_tokens', async () => {
    const exp = await expected('llama-tiny.safetensors');
    const prompt = rows(exp.get('plain.input_ids')!);
    const want = rows(exp.get('plain.generated_ids')!)[0]!;
    const r = await generate(llama, { inputIds: prompt }, { doSample: false, maxNewTokens: 8, eosTokenIds: [want[2]!] }, llamaTok);
    expect(r[0]!.ids).toEqual(want.slice(0, 3));
    expect(r[0]!.finishReason).toBe('eos');
    const l = await generate(llama, { inputIds: prompt }, { doSample: false, maxNewTokens: 5, eosTokenIds: [] });
    expect(l[0]!.ids).toEqual(want.slice(0, 5));
    expect(l[0]!.finishReason).toBe('length');
  });
});

describe('tokenizer folders', () => {
  it('a chat_template.json (newer transformers) gives the template when tokenizer_config.json has none', async () => {
    const { promises: fs } = await import('node:fs');
    const path = await import('node:path');
    const { tempDir } = await import('./helpers.js');
    const dir = await tempDir();
    try {
      const cfg = JSON.parse(await fs.readFile(path.join(QWEN3_TINY, 'tokenizer_config.json'), 'utf8'));
      const template = cfg.chat_template;
      delete cfg.chat_template;
      await fs.copyFile(path.join(QWEN3_TINY, 'tokenizer.json'), path.join(dir, 'tokenizer.json'));
      await fs.writeFile(path.join(dir, 'tokenizer_config.json'), JSON.stringify(cfg));
      expect((await TextTokenizer.fromFolder(dir)).hasChatTemplate).toBe(false);
      await fs.writeFile(path.join(dir, 'chat_template.json'), JSON.stringify({ chat_template: template }));
      const tok = await TextTokenizer.fromFolder(dir);
      const ref = await TextTokenizer.fromFolder(QWEN3_TINY);
      const msgs = [{ role: 'user', content: 'hi' }];
      expect(tok.applyChatTemplate(msgs, { enableThinking: false })).toBe(ref.applyChatTemplate(msgs, { enableThinking: false }));
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
  });
});

describe('streaming text', () => {
  it('never splits a UTF-8 character across deltas', () => {
    const ids = llamaTok.encode('Fièvre 🙂 漢字', false);
    const d = new StreamingDecoder(llamaTok);
    const deltas = ids.map((id) => d.push(id));
    expect(deltas.join('') + d.flush()).toBe('Fièvre 🙂 漢字');
    expect(deltas.some((x) => x.includes('\uFFFD'))).toBe(false);
    // 漢 spans two byte-level tokens: the first gives no text
    expect(deltas).toContain('');
  });

  it('stop strings cut the text and end the row; streamed deltas add up to the text', async () => {
    const qwen = await Qwen3ForCausalLM.fromPretrained(QWEN3_TINY);
    const tok = await TextTokenizer.fromFolder(QWEN3_TINY);
    try {
      const exp = await expected('qwen3-tiny.safetensors');
      const prompt = rows(exp.get('plain.input_ids')!);
      const free = await generate(qwen, { inputIds: prompt }, { doSample: false, maxNewTokens: 12, eosTokenIds: [] }, tok);
      expect(free[0]!.ids).toEqual(rows(exp.get('plain.generated_ids')!)[0]);
      const text = free[0]!.text;
      expect(text.length).toBeGreaterThan(4);
      const stop = text.slice(Math.floor(text.length / 2), Math.floor(text.length / 2) + 3);
      const cut = text.indexOf(stop);
      const before = tf.memory().numTensors;
      const it = generateStream(qwen, { inputIds: prompt }, { doSample: false, maxNewTokens: 12, eosTokenIds: [], stopStrings: [stop] }, tok);
      let streamed = '';
      let last;
      for (;;) {
        const r = await it.next();
        if (r.done) {
          last = r.value[0]!;
          break;
        }
        streamed += r.value.text;
      }
      expect(last.finishReason).toBe('stop');
      expect(last.text).toBe(text.slice(0, cut));
      expect(streamed).toBe(last.text);
      expect(last.ids).toEqual(free[0]!.ids.slice(0, last.ids.length));
      expect(tf.memory().numTensors).toBe(before);
    } finally {
      qwen.dispose();
    }
  });
});
