/**
 * Which loader reads a sample's modality: `fs-<type>` for paths (under the dataset folder), `raw-<type>` for
 * bytes, unless the run config names a loader for the type. Plus a small pool that creates each loader once.
 * @module
 */
import type { AutoModalityLoader } from '../auto.js';
import type { BaseModalityLoader, LoaderOptions, ModalityInput } from '../loader.js';
import { modalityValueKind } from './sample.js';

/** A run-config loader entry, as in the original: `{loaderType, modalityType, ...options}`. */
export interface LoaderSpec {
  /** Registered loader name (`fs-image`, `raw-audio`, ...). */
  loaderType: string;
  /** The dataset `type` it reads. */
  modalityType: string;
  /** Loader options (e.g. `basePath`). */
  [option: string]: unknown;
}

/** Context of {@link chooseLoader}. */
export interface LoaderContext {
  /** The dataset folder: `basePath` of path loaders. */
  baseDir: string;
  /** Let path loaders read outside `baseDir`. Default false. */
  allowOutsideBase?: boolean;
  /** Run-config loader entries; one for a type overrides the automatic choice for every value of that type. */
  loaders?: readonly LoaderSpec[];
}

/** The loader to use for one modality, its options, and the modality to hand it. */
export interface LoaderChoice {
  /** Registered loader name. */
  name: string;
  /** Options to create it with. */
  options: LoaderOptions;
  /**
   * The modality to pass to `load()`: a `{bytes: null, path}` value is replaced by its path string, so that
   * fs loaders receive a plain path; other values are unchanged.
   */
  modality: ModalityInput;
}

/**
 * Picks the loader for a modality: the run config's entry for its type if there is one, else
 * `fs-<type>` (with `basePath` = the dataset folder) for path values and `raw-<type>` for bytes.
 * Throws a TypeError for a value that is neither (validation reports those first).
 */
export function chooseLoader(modality: ModalityInput, ctx: LoaderContext): LoaderChoice {
  const kind = modalityValueKind(modality.value);
  if (!kind) throw new TypeError(`modality of type "${modality.type}" has a value that is neither a path nor bytes`);
  const normalized: ModalityInput = kind.kind === 'path' ? { ...modality, value: kind.path } : modality;
  const spec = ctx.loaders?.find((l) => l.modalityType === modality.type);
  if (spec) {
    const { loaderType, modalityType: _t, ...rest } = spec;
    return {
      name: loaderType,
      options: { basePath: ctx.baseDir, allowOutsideBase: Boolean(ctx.allowOutsideBase), ...rest },
      modality: normalized,
    };
  }
  if (kind.kind === 'path') {
    return {
      name: `fs-${modality.type}`,
      options: { basePath: ctx.baseDir, allowOutsideBase: Boolean(ctx.allowOutsideBase) },
      modality: normalized,
    };
  }
  return { name: `raw-${modality.type}`, options: {}, modality: normalized };
}

/**
 * Creates loaders on demand (through an instance's `mm.loaders`) and reuses them: one loader per name and
 * options. `load()` picks the loader with {@link chooseLoader}.
 */
export class ModalityLoaderPool {
  private readonly cache = new Map<string, BaseModalityLoader>();

  constructor(private readonly loaders: Pick<AutoModalityLoader, 'create'>) {}

  /** The loader for a choice, created the first time. Throws `UnknownRegistrationError` if none is registered. */
  loaderFor(choice: Pick<LoaderChoice, 'name' | 'options'>): BaseModalityLoader {
    const key = `${choice.name}\u0000${JSON.stringify(choice.options)}`;
    let l = this.cache.get(key);
    if (!l) {
      l = this.loaders.create(choice.name, choice.options);
      this.cache.set(key, l);
    }
    return l;
  }

  /** Loads one modality of a sample read from a dataset whose folder is `ctx.baseDir`. */
  async load(modality: ModalityInput, ctx: LoaderContext): Promise<unknown> {
    const choice = chooseLoader(modality, ctx);
    return this.loaderFor(choice).load(choice.modality);
  }
}
