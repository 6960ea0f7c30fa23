/**
 * `AutoLanguageModel`: loads a decoder folder with the family its config.json names.
 * @module
 */
import path from 'node:path';
import { ModelResolver, readJsonFile, ConfigValidationError } from '@multimeditron/core';
import type { DecoderForCausalLM, DecoderLoadOptions } from './decoder.js';
import { LlamaForCausalLM, Qwen3ForCausalLM } from './families.js';
import { LanguageModelRegistry } from './registry.js';

/** A registry holding the built-in families (llama, qwen3). */
export function defaultLanguageModelRegistry(): LanguageModelRegistry {
  const r = new LanguageModelRegistry();
  r.addClass(LlamaForCausalLM, 'builtin');
  r.addClass(Qwen3ForCausalLM, 'builtin');
  return r;
}

/** Options of {@link AutoLanguageModel.fromPretrained}. */
export interface AutoLoadOptions extends DecoderLoadOptions {
  /** Families to choose from. Default: the built-in ones. */
  registry?: LanguageModelRegistry;
}

/** Loads decoders by their config.json `model_type`. */
export const AutoLanguageModel = {
  /**
   * Resolves `nameOrDir` (local folder, Hugging Face cache, hub), reads config.json and loads it with the
   * registered family. An unregistered `model_type` is an `UnknownModelTypeError` naming the registered ones.
   */
  async fromPretrained(nameOrDir: string, options: AutoLoadOptions = {}): Promise<DecoderForCausalLM> {
    const resolver = options.resolver ?? new ModelResolver();
    const registry = options.registry ?? defaultLanguageModelRegistry();
    const dir = await resolver.resolve(nameOrDir);
    const file = path.join(dir, 'config.json');
    const json = (await readJsonFile(file)) as Record<string, unknown>;
    const modelType = json?.['model_type'];
    if (typeof modelType !== 'string') {
      throw new ConfigValidationError(file, [{ path: '/model_type', rule: 'required', message: 'must name the model family' }]);
    }
    const family = registry.get(modelType, file).decoder;
    return family.fromPretrained(dir, { ...options, resolver });
  },
};
