/**
 * `AutoModality` and `AutoModalityLoader`: build modalities, processors and loaders by registry name,
 * from one instance's registries.
 * @module
 */
import path from 'node:path';
import { BaseModalityConfig, readJsonFile, type ModalityConfigJSON } from './config.js';
import type { ModalityContext } from './context.js';
import { ConfigValidationError, MultimeditronError } from './errors.js';
import type { BaseModalityLoader, LoaderOptions } from './loader.js';
import type { BaseModality } from './modality.js';
import type { BaseModalityProcessor } from './processor.js';
import type { LoaderRegistry, ModalityRegistration, ModalityRegistry } from './registry.js';

/** Builds modalities by name (the config's `modelType`). */
export class AutoModality {
  constructor(
    readonly registry: ModalityRegistry,
    private readonly ctx: ModalityContext,
  ) {}

  /** Registered modality names. */
  names(): string[] {
    return this.registry.names();
  }

  /** The registration of `name`. */
  registration(name: string): ModalityRegistration {
    return this.registry.get(name);
  }

  /**
   * Builds and validates a config: from a config instance (returned as is), or from JSON whose `modelType`
   * names the modality (or `name` given separately). `modalityType` is checked against the registration.
   */
  createConfig(json: Partial<ModalityConfigJSON> | BaseModalityConfig, name?: string): BaseModalityConfig {
    const modelType = name ?? (json as { modelType?: unknown }).modelType;
    if (typeof modelType !== 'string') {
      throw new ConfigValidationError('modality config', [{ path: '/modelType', rule: 'required', message: 'must name a registered modality' }]);
    }
    const reg = this.registry.get(modelType);
    const config = json instanceof reg.config ? json : reg.config.fromJSON({ ...json, modelType });
    if (config.modelType !== reg.name) {
      throw new ConfigValidationError(reg.config.name, [{ path: '/modelType', rule: 'const', message: `must be "${reg.name}"` }]);
    }
    if (config.modalityType !== reg.modalityType) {
      throw new ConfigValidationError(reg.config.name, [
        { path: '/modalityType', rule: 'const', message: `must be "${reg.modalityType}" for modality ${reg.name}` },
      ]);
    }
    return config;
  }

  /** Builds a modality (encoder weights, processor, projector) from a config or its JSON. */
  async fromConfig(json: Partial<ModalityConfigJSON> | BaseModalityConfig, name?: string): Promise<BaseModality> {
    const config = this.createConfig(json, name);
    return this.registry.get(config.modelType).modality.fromConfig(config, this.ctx);
  }

  /**
   * `fromPretrained('meditron_clip', {clipName, hiddenSize})` builds a fresh modality of that registered name;
   * `fromPretrained(dirOrHubId)` loads one saved with `savePretrained` (config.json + model.safetensors),
   * resolved through the model resolver.
   */
  async fromPretrained(nameOrDir: string, overrides: Partial<ModalityConfigJSON> = {}): Promise<BaseModality> {
    if (this.registry.has(nameOrDir)) return this.fromConfig({ ...overrides, modelType: nameOrDir });
    const dir = await this.ctx.resolver.resolve(nameOrDir);
    const json = (await readJsonFile(path.join(dir, 'config.json'))) as Partial<ModalityConfigJSON>;
    const modality = await this.fromConfig({ ...json, ...overrides });
    try {
      await modality.loadSavedWeights(dir);
    } catch (e) {
      modality.dispose();
      throw e;
    }
    return modality;
  }

  /** Builds and initialises only the processor of a config (no weights): for worker threads and `check-dataset`. */
  async processorFor(json: Partial<ModalityConfigJSON> | BaseModalityConfig, name?: string): Promise<BaseModalityProcessor> {
    const config = this.createConfig(json, name);
    const processor = new (this.registry.get(config.modelType).processor)(config);
    await processor.init(this.ctx);
    return processor;
  }
}

/** Builds loaders by name. */
export class AutoModalityLoader {
  constructor(readonly registry: LoaderRegistry) {}

  /** Registered loader names, sorted. */
  names(): string[] {
    return this.registry.names();
  }

  /** A new loader of the registered `name` with `options` (validated if the loader declares a schema). */
  create(name: string, options: LoaderOptions = {}): BaseModalityLoader {
    return new (this.registry.get(name).loader)(options);
  }

  /** The names of the loaders registered for a modality type. */
  forModalityType(type: string): string[] {
    return this.registry.forModalityType(type).map((r) => r.name);
  }

  /** Checks that the loader `name` handles `modalityType`. */
  check(name: string, modalityType: string): void {
    const reg = this.registry.get(name);
    if (reg.modalityType !== modalityType) {
      throw new MultimeditronError('E_CONFIG', `loader "${name}" handles "${reg.modalityType}", not "${modalityType}"`);
    }
  }
}
