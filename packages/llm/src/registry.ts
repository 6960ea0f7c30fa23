/**
 * Decoder families are registered like modalities: `@RegisterLanguageModel("llama")` stores the registration
 * on the class (a `Symbol.for` metadata key, so two copies of this package agree) and adds it to a
 * process-wide catalogue. A {@link LanguageModelRegistry} holds the families one application uses: the
 * built-in ones, those a plugin lists in its manifest (`languageModels`), and those a host adds.
 * @module
 */
import 'reflect-metadata';
import { DuplicateRegistrationError, MultimeditronError, type Multimeditron } from '@multimeditron/core';
import { UnknownModelTypeError } from './errors.js';
import type { DecoderClass } from './decoder.js';

/** Metadata key of a language-model registration on its class. */
export const LANGUAGE_MODEL_METADATA = Symbol.for('multimeditron.languageModel');
const CATALOGUE_KEY = Symbol.for('multimeditron.languageModelCatalogue');

/** A decoder family registration. */
export interface LanguageModelRegistration {
  /** The `model_type` of config.json. */
  modelType: string;
  /** The decoder class. */
  decoder: DecoderClass;
  /** Hugging Face `architectures` names it loads (informational), e.g. `LlamaForCausalLM`. */
  architectures: string[];
}

/** Options of {@link RegisterLanguageModel}. */
export interface RegisterLanguageModelOptions {
  architectures?: string[];
}

/** Every decoder class decorated in this process, by model_type. */
export function languageModelCatalogue(): Map<string, LanguageModelRegistration[]> {
  const g = globalThis as unknown as Record<symbol, Map<string, LanguageModelRegistration[]> | undefined>;
  return (g[CATALOGUE_KEY] ??= new Map());
}

/** Class decorator registering a decoder family under its config.json `model_type`. */
export function RegisterLanguageModel(modelType: string, options: RegisterLanguageModelOptions = {}) {
  return <T extends DecoderClass>(target: T): T => {
    const reg: LanguageModelRegistration = { modelType, decoder: target, architectures: options.architectures ?? [] };
    Reflect.defineMetadata(LANGUAGE_MODEL_METADATA, reg, target);
    const list = languageModelCatalogue().get(modelType) ?? [];
    list.push(reg);
    languageModelCatalogue().set(modelType, list);
    return target;
  };
}

/** The registration stored on a class by {@link RegisterLanguageModel}, if any. */
export function getLanguageModelRegistration(cls: unknown): LanguageModelRegistration | undefined {
  return typeof cls === 'function' ? (Reflect.getOwnMetadata(LANGUAGE_MODEL_METADATA, cls) as LanguageModelRegistration | undefined) : undefined;
}

/** The decoder families one application knows. */
export class LanguageModelRegistry {
  private readonly items = new Map<string, { reg: LanguageModelRegistration; source: string }>();

  /** Adds a decorated class; the same model_type from another class throws {@link DuplicateRegistrationError}. */
  addClass(cls: unknown, source = 'host'): LanguageModelRegistration {
    const reg = getLanguageModelRegistration(cls);
    if (!reg) {
      throw new MultimeditronError('E_REGISTRATION', `${(cls as { name?: string })?.name ?? String(cls)} (from ${source}) is not decorated with @RegisterLanguageModel`);
    }
    const prev = this.items.get(reg.modelType);
    if (prev && prev.reg !== reg) {
      throw new DuplicateRegistrationError('language model', reg.modelType, prev.source, source);
    }
    this.items.set(reg.modelType, { reg, source });
    return reg;
  }

  /**
   * Adds the families listed by the plugins an instance loaded (the `languageModels` field of a plugin
   * manifest). Returns the model types added.
   */
  addFromPlugins(mm: Pick<Multimeditron, 'plugins'>): string[] {
    const added: string[] = [];
    for (const p of mm.plugins.loaded) {
      for (const cls of p.manifest.languageModels ?? []) added.push(this.addClass(cls, p.name).modelType);
    }
    return added;
  }

  /** The registration for `modelType`; throws {@link UnknownModelTypeError} naming the registered ones. */
  get(modelType: string, file?: string): LanguageModelRegistration {
    const it = this.items.get(modelType);
    if (!it) throw new UnknownModelTypeError(modelType, this.modelTypes(), file);
    return it.reg;
  }

  has(modelType: string): boolean {
    return this.items.has(modelType);
  }

  /** Which plugin (or `builtin`/`host`) registered a family. */
  sourceOf(modelType: string): string | undefined {
    return this.items.get(modelType)?.source;
  }

  /** Registered model types, sorted. */
  modelTypes(): string[] {
    return [...this.items.keys()].sort();
  }
}
