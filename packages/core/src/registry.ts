/**
 * Registration decorators and the per-instance registries.
 *
 * `@RegisterModality` and `@RegisterLoader` store their registration as metadata on the class itself (under
 * `Symbol.for` keys, so two copies of core agree) and add the class to a process-wide catalogue, also under a
 * `Symbol.for` key. They never touch tsyringe's global container. Each `createMultimeditron()` instance then
 * copies the classes its plugins list (or that the host registers programmatically) into its own
 * {@link ModalityRegistry} and {@link LoaderRegistry}, so two instances never see each other's registrations.
 * @module
 */
import 'reflect-metadata';
import type { ConfigClass } from './config.js';
import { DuplicateRegistrationError, MultimeditronError, UnknownRegistrationError } from './errors.js';
import type { LoaderClass } from './loader.js';
import type { ModalityClass } from './modality.js';
import type { ProcessorClass } from './processor.js';

/** Metadata key of a modality registration on its class. */
export const MODALITY_METADATA = Symbol.for('multimeditron.modality');
/** Metadata key of a loader registration on its class. */
export const LOADER_METADATA = Symbol.for('multimeditron.loader');
/** Key of the process-wide catalogue on `globalThis`. */
export const CATALOGUE_KEY = Symbol.for('multimeditron.catalogue');

/** A modality registration: the modality class with its config and processor classes. */
export interface ModalityRegistration {
  /** Registry name (the config's `modelType`). */
  name: string;
  /** The dataset `type` it handles. */
  modalityType: string;
  modality: ModalityClass;
  config: ConfigClass;
  processor: ProcessorClass;
  /** See {@link RegisterModalityOptions.encoderKey}. */
  encoderKey?: string;
  /** See {@link RegisterModalityOptions.encoderModelTypes}. */
  encoderModelTypes: string[];
}

/** A loader registration. */
export interface LoaderRegistration {
  name: string;
  modalityType: string;
  loader: LoaderClass;
}

/** Options of {@link RegisterModality}. */
export interface RegisterModalityOptions {
  config: ConfigClass;
  processor: ProcessorClass;
  /** Defaults to the `const`/`default` of `modalityType` in the config schema. */
  modalityType?: string;
  /**
   * The config field that names the pretrained encoder (e.g. `clipName`), so generic tools such as the
   * `features` command can build a config from a model folder or hub id.
   */
  encoderKey?: string;
  /** Hugging Face `model_type`s (config.json) of the encoder checkpoints this modality loads, e.g. `["clip"]`. */
  encoderModelTypes?: string[];
}

/** Options of {@link RegisterLoader}. */
export interface RegisterLoaderOptions {
  modalityType: string;
}

interface Catalogue {
  modalities: Map<string, ModalityRegistration[]>;
  loaders: Map<string, LoaderRegistration[]>;
}

/** Every class decorated in this process (all copies of core share it). Read-only use. */
export function catalogue(): Catalogue {
  const g = globalThis as unknown as Record<symbol, Catalogue | undefined>;
  return (g[CATALOGUE_KEY] ??= { modalities: new Map(), loaders: new Map() });
}

function schemaConst(config: ConfigClass, key: string): string | undefined {
  const props = (config.schema?.['properties'] ?? {}) as Record<string, Record<string, unknown>>;
  const p = props[key];
  const v = p?.['const'] ?? p?.['default'];
  return typeof v === 'string' ? v : undefined;
}

/**
 * Class decorator registering a modality under `name`, with its config and processor classes.
 * The config schema's `modelType` must default to `name`.
 */
export function RegisterModality(name: string, options: RegisterModalityOptions) {
  return <T extends ModalityClass>(target: T): T => {
    const modalityType = options.modalityType ?? schemaConst(options.config, 'modalityType');
    if (!modalityType) {
      throw new MultimeditronError(
        'E_REGISTRATION',
        `@RegisterModality("${name}"): ${options.config.name}'s schema gives no default modalityType; pass { modalityType }`,
      );
    }
    const modelType = schemaConst(options.config, 'modelType');
    if (modelType !== undefined && modelType !== name) {
      throw new MultimeditronError(
        'E_REGISTRATION',
        `@RegisterModality("${name}"): ${options.config.name}'s modelType defaults to "${modelType}", not "${name}"`,
      );
    }
    const reg: ModalityRegistration = {
      name, modalityType, modality: target, config: options.config, processor: options.processor,
      ...(options.encoderKey ? { encoderKey: options.encoderKey } : {}),
      encoderModelTypes: options.encoderModelTypes ?? [],
    };
    Reflect.defineMetadata(MODALITY_METADATA, reg, target);
    const list = catalogue().modalities.get(name) ?? [];
    list.push(reg);
    catalogue().modalities.set(name, list);
    return target;
  };
}

/** Class decorator registering a loader under `name` for one modality type. */
export function RegisterLoader(name: string, options: RegisterLoaderOptions) {
  return <T extends LoaderClass>(target: T): T => {
    const reg: LoaderRegistration = { name, modalityType: options.modalityType, loader: target };
    Reflect.defineMetadata(LOADER_METADATA, reg, target);
    const list = catalogue().loaders.get(name) ?? [];
    list.push(reg);
    catalogue().loaders.set(name, list);
    return target;
  };
}

/** The modality registration stored on a class by {@link RegisterModality}, if any. */
export function getModalityRegistration(cls: unknown): ModalityRegistration | undefined {
  return typeof cls === 'function' ? (Reflect.getOwnMetadata(MODALITY_METADATA, cls) as ModalityRegistration | undefined) : undefined;
}

/** The loader registration stored on a class by {@link RegisterLoader}, if any. */
export function getLoaderRegistration(cls: unknown): LoaderRegistration | undefined {
  return typeof cls === 'function' ? (Reflect.getOwnMetadata(LOADER_METADATA, cls) as LoaderRegistration | undefined) : undefined;
}

class Registry<R extends { name: string }> {
  private readonly items = new Map<string, { reg: R; source: string }>();

  constructor(private readonly kind: 'modality' | 'loader') {}

  /** Adds a registration; the same name twice throws {@link DuplicateRegistrationError}. */
  add(reg: R, source: string): void {
    const prev = this.items.get(reg.name);
    if (prev) {
      if (prev.reg === reg) return;
      throw new DuplicateRegistrationError(this.kind, reg.name, prev.source, source);
    }
    this.items.set(reg.name, { reg, source });
  }

  /** The registration of `name`; throws {@link UnknownRegistrationError} listing the known names. */
  get(name: string): R {
    const it = this.items.get(name);
    if (!it) throw new UnknownRegistrationError(this.kind, name, this.names());
    return it.reg;
  }

  /** Whether `name` is registered. */
  has(name: string): boolean {
    return this.items.has(name);
  }

  /** Which plugin (or `host`) registered `name`. */
  sourceOf(name: string): string | undefined {
    return this.items.get(name)?.source;
  }

  /** Registered names, sorted. */
  names(): string[] {
    return [...this.items.keys()].sort();
  }

  /** Every registration, in registration order. */
  all(): R[] {
    return [...this.items.values()].map((i) => i.reg);
  }
}

/** The modalities one instance knows. */
export class ModalityRegistry extends Registry<ModalityRegistration> {
  constructor() {
    super('modality');
  }

  /** Registers a decorated modality class. */
  addClass(cls: unknown, source: string): ModalityRegistration {
    const reg = getModalityRegistration(cls);
    if (!reg) {
      throw new MultimeditronError('E_REGISTRATION', `${(cls as { name?: string })?.name ?? String(cls)} (from ${source}) is not decorated with @RegisterModality`);
    }
    this.add(reg, source);
    return reg;
  }

  /** The registration handling a dataset `type`. */
  forModalityType(type: string): ModalityRegistration[] {
    return this.all().filter((r) => r.modalityType === type);
  }
}

/** The loaders one instance knows. */
export class LoaderRegistry extends Registry<LoaderRegistration> {
  constructor() {
    super('loader');
  }

  /** Registers a decorated loader class. */
  addClass(cls: unknown, source: string): LoaderRegistration {
    const reg = getLoaderRegistration(cls);
    if (!reg) {
      throw new MultimeditronError('E_REGISTRATION', `${(cls as { name?: string })?.name ?? String(cls)} (from ${source}) is not decorated with @RegisterLoader`);
    }
    this.add(reg, source);
    return reg;
  }

  /** The loaders registered for a dataset `type`. */
  forModalityType(type: string): LoaderRegistration[] {
    return this.all().filter((r) => r.modalityType === type);
  }
}
