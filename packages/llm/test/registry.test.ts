import { promises as fs } from 'node:fs';
import path from 'node:path';
import { ConsoleLogger, createMultimeditron, DuplicateRegistrationError, PluginLoadError, readSafetensors, writeSafetensors } from '@multimeditron/core';
import {
  AutoLanguageModel, DecoderForCausalLM, defaultLanguageModelRegistry, getLanguageModelRegistration, LanguageModelRegistry,
  languageModelCatalogue, LlamaForCausalLM, RegisterLanguageModel, type LayerKeys,
} from '@multimeditron/llm';
import { LLAMA_TINY, tempDir, useWasm } from './helpers.js';

/** A plugin family: Llama's block with another checkpoint naming (as a Meta-style export would have). */
@RegisterLanguageModel('toy_llama', { architectures: ['ToyLlamaForCausalLM'] })
class ToyLlama extends DecoderForCausalLM {
  protected override layerKeys(i: number): LayerKeys {
    const p = `layers.${i}.`;
    return {
      inputNorm: `${p}attention_norm`, postNorm: `${p}ffn_norm`,
      q: `${p}attention.wq`, k: `${p}attention.wk`, v: `${p}attention.wv`, o: `${p}attention.wo`,
      qNorm: `${p}attention.q_norm`, kNorm: `${p}attention.k_norm`,
      gate: `${p}feed_forward.w1`, up: `${p}feed_forward.w3`, down: `${p}feed_forward.w2`,
    };
  }

  protected override modelKeys() {
    return { embed: 'tok_embeddings.weight', norm: 'norm.weight', lmHead: 'output.weight' };
  }
}

const RENAME: Array<[RegExp, string]> = [
  [/^model\.embed_tokens\./, 'tok_embeddings.'], [/^model\.norm\./, 'norm.'], [/^model\.layers\./, 'layers.'],
  [/input_layernorm/, 'attention_norm'], [/post_attention_layernorm/, 'ffn_norm'],
  [/self_attn\.q_proj/, 'attention.wq'], [/self_attn\.k_proj/, 'attention.wk'], [/self_attn\.v_proj/, 'attention.wv'], [/self_attn\.o_proj/, 'attention.wo'],
  [/mlp\.gate_proj/, 'feed_forward.w1'], [/mlp\.up_proj/, 'feed_forward.w3'], [/mlp\.down_proj/, 'feed_forward.w2'],
];

beforeAll(useWasm);

describe('decoder family registry', () => {
  it('the built-in families are llama and qwen3, registered by decorator', () => {
    expect(defaultLanguageModelRegistry().modelTypes()).toEqual(['llama', 'qwen3']);
    expect(getLanguageModelRegistration(LlamaForCausalLM)).toMatchObject({ modelType: 'llama', architectures: ['LlamaForCausalLM'] });
    expect(languageModelCatalogue().get('toy_llama')?.[0]?.decoder).toBe(ToyLlama);
  });

  it('a plugin adds a family through its manifest, and it loads its own checkpoint naming', async () => {
    const mm = await createMultimeditron({
      plugins: [{ name: 'toy-llm-plugin', apiVersion: 1, languageModels: [ToyLlama] }],
      backend: false, resolver: { offline: true }, logger: new ConsoleLogger('silent'), strict: true,
    });
    const registry = defaultLanguageModelRegistry();
    expect(registry.addFromPlugins(mm)).toEqual(['toy_llama']);
    expect(registry.sourceOf('toy_llama')).toBe('toy-llm-plugin');
    const dir = await tempDir();
    try {
      const config = JSON.parse(await fs.readFile(path.join(LLAMA_TINY, 'config.json'), 'utf8'));
      await fs.writeFile(path.join(dir, 'config.json'), JSON.stringify({ ...config, model_type: 'toy_llama' }));
      const t = (await readSafetensors(path.join(LLAMA_TINY, 'model.safetensors'))).tensors;
      const renamed = new Map([...t].map(([k, v]) => [RENAME.reduce((s, [a, b]) => s.replace(a, b), k), { data: v.data as Float32Array, shape: v.shape }]));
      await writeSafetensors(path.join(dir, 'model.safetensors'), renamed);
      const toy = await AutoLanguageModel.fromPretrained(dir, { registry });
      const ref = await LlamaForCausalLM.fromPretrained(LLAMA_TINY);
      try {
        expect(toy).toBeInstanceOf(ToyLlama);
        const ids = [[128000, 791, 4062, 14198]];
        const a = toy.forward({ inputIds: ids, logits: 1 });
        const b = ref.forward({ inputIds: ids, logits: 1 });
        expect(Array.from(a.logits!.dataSync())).toEqual(Array.from(b.logits!.dataSync()));
        for (const o of [a, b]) { o.hiddenStates.dispose(); o.logits!.dispose(); }
      } finally {
        toy.dispose();
        ref.dispose();
      }
      // without the plugin, the model_type is unknown
      await expect(AutoLanguageModel.fromPretrained(dir)).rejects.toThrow(/toy_llama.*Registered: llama, qwen3/);
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
  });

  it('a second class for a taken model_type, an undecorated class, and a bad manifest are refused', async () => {
    @RegisterLanguageModel('llama')
    class OtherLlama extends DecoderForCausalLM {}
    const r = defaultLanguageModelRegistry();
    expect(() => r.addClass(OtherLlama, 'other-plugin')).toThrow(DuplicateRegistrationError);
    class Plain extends DecoderForCausalLM {}
    expect(() => new LanguageModelRegistry().addClass(Plain)).toThrow(/not decorated with @RegisterLanguageModel/);
    const bad = await createMultimeditron({
      plugins: [{ name: 'bad', apiVersion: 1, languageModels: ['nope' as never] }], backend: false, logger: new ConsoleLogger('silent'),
    });
    expect(bad.plugins.errors[0]).toBeInstanceOf(PluginLoadError);
    expect(bad.plugins.errors[0]!.message).toMatch(/languageModels must be an array of classes/);
  });
});
