import { promises as fs } from 'node:fs';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { ConfigValidationError, ConsoleLogger, createMultimeditron, createProjector, InputError, ModelLoadError, readSafetensors, type Multimeditron } from '@multimeditron/core';
import imagePlugin from '@multimeditron/plugin-image';
import { GenerationError, MultiMeditronModel, UnknownModelTypeError } from '@multimeditron/llm';
import { expectClose, expected, GOLDEN_LLM, IMAGES, rows, tempDir, writeTinyCheckpoint } from './helpers.js';

let mm: Multimeditron;
let dir: string;
let model: MultiMeditronModel;

beforeAll(async () => {
  mm = await createMultimeditron({ plugins: [imagePlugin], backend: 'wasm', resolver: { offline: true }, logger: new ConsoleLogger('silent') });
  dir = path.join(await tempDir(), 'ckpt');
  await writeTinyCheckpoint(dir);
  model = await MultiMeditronModel.fromPretrained(dir, { mm });
});

afterAll(async () => {
  model?.dispose();
  await fs.rm(path.dirname(dir), { recursive: true, force: true });
});

const IMAGE_TEXT = '<|reserved_special_token_0|> Describe the image.';
const TWO_TEXT = '<|reserved_special_token_0|><|reserved_special_token_0|> Describe the two images.';

describe('projector and merge on the stored CLIP features', () => {
  it('the mlp projector reproduces projected (1e-5) and its rectangular variant', async () => {
    const exp = await expected('multimodal.safetensors');
    for (const [file, inKey, outKey, shape] of [
      ['projector-tiny.safetensors', 'image_features', 'projected', [2, 16, 64]],
      ['projector-rect.safetensors', 'rect.input', 'rect.output', [1, 16, 64]],
    ] as const) {
      const w = (await readSafetensors(path.join(GOLDEN_LLM, file))).tensors;
      const outDim = w.get('projector.4.weight')!.shape[0]!;
      const p = createProjector({ type: 'mlp', inputDim: 64, outputDim: outDim });
      const weights = new Map([...w].map(([k, t]) => [k.replace(/^projector\./, 'layers.'), tf.tensor(t.data as Float32Array, t.shape)]));
      p.loadWeights(weights);
      const y = tf.tidy(() => p.apply(tf.tensor3d(exp.get(inKey)!.data as Float32Array, [...shape])));
      expectClose(y.dataSync(), exp.get(outKey)!.data as Float32Array, outKey, 1e-5, 1e-5);
      y.dispose();
      for (const t of weights.values()) t.dispose();
      p.dispose();
    }
  });
});

describe('MultiMeditron checkpoint (original layout)', () => {
  it('loads the decoder, the CLIP modality and the projector from the keys of the original', () => {
    expect(model.modalities.map((m) => m.config.modelType)).toEqual(['meditron_clip']);
    expect(model.llm.config.modelType).toBe('llama');
    expect(model.attachmentTokenId).toBe(128002);
  });

  it.each([
    ['batch row 0 (retina)', IMAGE_TEXT, ['retina.jpg'], 'batch', 0],
    ['batch row 1 (hubble)', IMAGE_TEXT, ['hubble_deep_field.jpg'], 'batch', 1],
    ['two_images', TWO_TEXT, ['retina.jpg', 'hubble_deep_field.jpg'], 'two_images', 0],
  ] as const)('%s from the image files: expanded ids, inputs_embeds, hidden states, logits', async (_n, text, images, c, row) => {
    const exp = await expected('multimodal.safetensors');
    const before = tf.memory().numTensors;
    const prep = await model.prepare({ text, modalities: images.map((f) => ({ type: 'image', value: path.join(IMAGES, f) })) });
    expect(prep.promptIds).toEqual(rows(exp.get(`${c}.input_ids_unexpanded`)!)[row]);
    expect(prep.inputIds).toEqual(rows(exp.get(`${c}.input_ids`)!)[row]);
    const T = prep.inputIds.length;
    const sl = (k: string, n: number) => (exp.get(k)!.data as Float32Array).subarray(row * n, (row + 1) * n);
    // CLIP is recomputed from the image files here, so the first-stage CLIP tolerance applies (README)
    expectClose(prep.inputsEmbeds.dataSync(), sl(`${c}.inputs_embeds`, T * 64), 'inputs_embeds');
    const out = model.llm.forward({ inputsEmbeds: prep.inputsEmbeds, logits: c === 'batch' ? 4 : 'none' });
    expectClose(out.hiddenStates.dataSync(), sl(`${c}.hidden_states`, T * 64), 'hidden_states');
    if (out.logits) expectClose(out.logits.dataSync(), sl(`${c}.logits_last4`, 4 * 128256), 'logits_last4');
    prep.inputsEmbeds.dispose();
    out.hiddenStates.dispose();
    out.logits?.dispose();
    expect(tf.memory().numTensors).toBe(before);
  });

  it('the stored inputs_embeds give the stored logits (decoder from inputsEmbeds)', async () => {
    const exp = await expected('multimodal.safetensors');
    const e = tf.tensor3d(exp.get('batch.inputs_embeds')!.data as Float32Array, [2, 21, 64]);
    const out = model.llm.forward({ inputsEmbeds: e, attentionMask: rows(exp.get('batch.attention_mask')!), logits: 4 });
    expectClose(out.hiddenStates.dataSync(), exp.get('batch.hidden_states')!.data as Float32Array, 'hidden_states');
    expectClose(out.logits!.dataSync(), exp.get('batch.logits_last4')!.data as Float32Array, 'logits_last4');
    tf.dispose([e, out.hiddenStates, out.logits!]);
  });

  it('generate() runs load, process, embed, merge and decode, and leaks no tensor across calls', async () => {
    const req = { messages: [{ role: 'user', content: '<|reserved_special_token_0|>\nWhat is shown in this image?' }], modalities: [{ type: 'image', value: path.join(IMAGES, 'retina.jpg') }], doSample: false, maxNewTokens: 6 };
    const before = tf.memory().numTensors;
    const a = await model.generate(req);
    const mid = tf.memory().numTensors;
    const b = await model.generate(req);
    expect(tf.memory().numTensors).toBe(before);
    expect(mid).toBe(before);
    expect(a.ids.length).toBeGreaterThan(0);
    expect(a.ids.length).toBeLessThanOrEqual(6);
    expect(b).toEqual(a);
    expect(a.promptIds[0]).toBe(128000);
    expect(a.promptIds.filter((x) => x === 128002)).toHaveLength(1);
    // streaming gives the same tokens and text
    const it = model.stream(req);
    const ids: number[] = [];
    let text = '';
    for (;;) {
      const r = await it.next();
      if (r.done) {
        expect(r.value.ids).toEqual(a.ids);
        break;
      }
      ids.push(r.value.tokenId);
      text += r.value.text;
    }
    expect(ids).toEqual(a.ids);
    expect(text).toBe(a.text);
    expect(tf.memory().numTensors).toBe(before);
  });

  it('a consumer that stops the stream early frees everything', async () => {
    const before = tf.memory().numTensors;
    const it = model.stream({ text: IMAGE_TEXT, modalities: [{ type: 'image', value: path.join(IMAGES, 'retina.jpg') }], doSample: false, maxNewTokens: 20, eosTokenIds: [] });
    await it.next();
    await it.return(undefined as never);
    expect(tf.memory().numTensors).toBe(before);
  });

  it('placeholders and attachments must match, before any compute', async () => {
    const before = tf.memory().numTensors;
    await expect(model.generate({ text: IMAGE_TEXT, modalities: [] })).rejects.toBeInstanceOf(GenerationError);
    await expect(model.generate({ text: IMAGE_TEXT, modalities: [{ type: 'image', value: path.join(IMAGES, 'retina.jpg') }, { type: 'image', value: path.join(IMAGES, 'retina.jpg') }] }))
      .rejects.toThrow(/1 placeholder\(s\).*2 attachment/);
    await expect(model.generate({ text: IMAGE_TEXT, modalities: [{ type: 'audio', value: 'x.wav' }] })).rejects.toThrow(/no modality of this model handles "audio"/);
    expect(tf.memory().numTensors).toBe(before);
  });

  it('an unreadable image is a typed error naming the file, with nothing leaked', async () => {
    const before = tf.memory().numTensors;
    const bad = path.join(IMAGES, 'truncated.jpg');
    const err = await model.generate({ text: IMAGE_TEXT, modalities: [{ type: 'image', value: bad }] }).catch((e) => e);
    expect(err).toBeInstanceOf(InputError);
    expect(String(err.message)).toContain('truncated.jpg');
    const missing = await model.generate({ text: IMAGE_TEXT, modalities: [{ type: 'image', value: path.join(IMAGES, 'nope.png') }] }).catch((e) => e);
    expect(missing).toBeInstanceOf(InputError);
    expect(tf.memory().numTensors).toBe(before);
  });

  it('savePretrained writes the original layout, sharded or not, and loads back to the same outputs', async () => {
    for (const maxShardBytes of [undefined, 4_000_000]) {
      const out = path.join(path.dirname(dir), `saved-${maxShardBytes ?? 'single'}`);
      await model.savePretrained(out, maxShardBytes ? { maxShardBytes } : {});
      const files = await fs.readdir(out);
      expect(files).toEqual(expect.arrayContaining(['config.json', 'generation_config.json', 'tokenizer.json', 'tokenizer_config.json']));
      const config = JSON.parse(await fs.readFile(path.join(out, 'config.json'), 'utf8'));
      expect(config.model_type).toBe('multimodal');
      expect(config.modalities[0]).toMatchObject({ model_type: 'meditron_clip', modality_type: 'image', hidden_size: 64, projection_type: 'mlp' });
      let keys: string[];
      if (maxShardBytes) {
        const index = JSON.parse(await fs.readFile(path.join(out, 'model.safetensors.index.json'), 'utf8'));
        keys = Object.keys(index.weight_map);
        expect(new Set(Object.values(index.weight_map)).size).toBeGreaterThan(1);
      } else {
        keys = [...(await readSafetensors(path.join(out, 'model.safetensors'))).tensors.keys()];
      }
      expect(keys).toContain('model.model.embed_tokens.weight');
      expect(keys).toContain('model.model.layers.1.self_attn.q_proj.weight');
      expect(keys).toContain('modalities_with_projection.0.projector.projection.4.bias');
      expect(keys).toContain('modalities_with_projection.0.feature_extractor.vision_model.embeddings.patch_embedding.weight');
      expect(keys.some((k) => k.includes('layers.0.weight') && k.includes('projector'))).toBe(false);
      // the checkpoint's own generation_config.json wins over llm_path's
      await fs.writeFile(path.join(out, 'generation_config.json'), JSON.stringify({ do_sample: false, max_new_tokens: 7 }));
      const again = await MultiMeditronModel.fromPretrained(out, { mm });
      try {
        expect(again.llm.generationConfig).toEqual({ do_sample: false, max_new_tokens: 7 });
        const req = { text: IMAGE_TEXT, modalities: [{ type: 'image', value: path.join(IMAGES, 'retina.jpg') }] };
        const [p1, p2] = [await model.prepare(req), await again.prepare(req)];
        const [o1, o2] = [model.llm.forward({ inputsEmbeds: p1.inputsEmbeds, logits: 1 }), again.llm.forward({ inputsEmbeds: p2.inputsEmbeds, logits: 1 })];
        expect(Array.from(o2.logits!.dataSync())).toEqual(Array.from(o1.logits!.dataSync()));
        tf.dispose([p1.inputsEmbeds, p2.inputsEmbeds, o1.hiddenStates, o1.logits!, o2.hiddenStates, o2.logits!]);
      } finally {
        again.dispose();
      }
    }
  });

  it('the projector.projection.N form is read too', async () => {
    const d = path.join(path.dirname(dir), 'projection-form');
    await writeTinyCheckpoint(d, { projectorForm: 'projection' });
    const m = await MultiMeditronModel.fromPretrained(d, { mm });
    const w1 = m.modalities[0]!.projector.namedWeights().get('layers.2.weight')!.dataSync();
    const w0 = model.modalities[0]!.projector.namedWeights().get('layers.2.weight')!.dataSync();
    expect(Array.from(w1)).toEqual(Array.from(w0));
    m.dispose();
  });
});

describe('bad checkpoints', () => {
  const variant = async (name: string, edit: (config: Record<string, any>) => void) => { // eslint-disable-line @typescript-eslint/no-explicit-any
    const d = path.join(path.dirname(dir), name);
    await fs.mkdir(d, { recursive: true });
    for (const f of await fs.readdir(dir)) await fs.copyFile(path.join(dir, f), path.join(d, f));
    const config = JSON.parse(await fs.readFile(path.join(d, 'config.json'), 'utf8'));
    edit(config);
    await fs.writeFile(path.join(d, 'config.json'), JSON.stringify(config));
    return d;
  };

  it('an unknown modality, a wrong hidden size or a missing llm_path are typed errors naming the field', async () => {
    const before = tf.memory().numTensors;
    const d1 = await variant('bad-modality', (c) => { c.modalities[0].model_type = 'meditron_ecg'; });
    await expect(MultiMeditronModel.fromPretrained(d1, { mm })).rejects.toThrow(/meditron_ecg/);
    const d2 = await variant('bad-hidden', (c) => { c.modalities[0].hidden_size = 4096; });
    const e2 = await MultiMeditronModel.fromPretrained(d2, { mm }).catch((e) => e);
    expect(e2).toBeInstanceOf(ConfigValidationError);
    expect(e2.path).toBe('/modalities/0/hidden_size');
    const d3 = await variant('bad-llm', (c) => { delete c.llm_path; });
    const e3 = await MultiMeditronModel.fromPretrained(d3, { mm }).catch((e) => e);
    expect(e3.path).toBe('/llm_path');
    expect(tf.memory().numTensors).toBe(before);
  });

  it('a missing projector weight is a ModelLoadError naming the key, and frees what was built', async () => {
    const d = await variant('no-projector', () => {});
    const { writeSafetensors } = await import('@multimeditron/core');
    const t = (await readSafetensors(path.join(d, 'model.safetensors'))).tensors;
    t.delete('modalities_with_projection.0.projector.2.bias');
    await writeSafetensors(path.join(d, 'model.safetensors'), new Map([...t].map(([k, v]) => [k, { data: v.data as Float32Array, shape: v.shape }])));
    const before = tf.memory().numTensors;
    const err = await MultiMeditronModel.fromPretrained(d, { mm }).catch((e) => e);
    expect(err).toBeInstanceOf(ModelLoadError);
    expect(err.message).toContain('modalities_with_projection.0.projector.projection.2.bias');
    expect(tf.memory().numTensors).toBe(before);
  });

  it('an llm_path whose model_type is not registered names it and the registered families', async () => {
    const llm = path.join(path.dirname(dir), 'llm-unknown');
    await fs.mkdir(llm, { recursive: true });
    const cfg = JSON.parse(await fs.readFile(path.join(GOLDEN_LLM, 'llama-tiny', 'config.json'), 'utf8'));
    await fs.writeFile(path.join(llm, 'config.json'), JSON.stringify({ ...cfg, model_type: 'apertus' }));
    const d = await variant('unknown-family', (c) => { c.llm_path = llm; });
    const err = await MultiMeditronModel.fromPretrained(d, { mm }).catch((e) => e);
    expect(err).toBeInstanceOf(UnknownModelTypeError);
    expect(err.message).toMatch(/apertus.*llama, qwen3/);
  });
});
