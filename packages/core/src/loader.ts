/**
 * Step 1 of the pipeline: a loader turns a sample's modality entry (`{type, value}`) into a raw modality
 * (decoded image, PCM waveform, ...). Loaders are model-agnostic.
 * @module
 */
import path from 'node:path';
import type { JSONSchema } from './config.js';
import { validateWithSchema } from './config.js';
import { InputError } from './errors.js';

/** One entry of a sample's `modalities` list. */
export interface ModalityInput<V = unknown> {
  /** The modality type (`image`, `audio`, ...). */
  type: string;
  /** The value: a path, bytes, `{bytes}`, or an already loaded raw modality. */
  value: V;
  [key: string]: unknown;
}

/** Options every loader accepts. */
export interface LoaderOptions {
  /** Folder that relative paths resolve against (fs-* loaders). */
  basePath?: string;
  /** Allow paths that resolve outside `basePath`. Default false. */
  allowOutsideBase?: boolean;
  [key: string]: unknown;
}

/** Constructor type of a loader class. */
export interface LoaderClass<L extends BaseModalityLoader = BaseModalityLoader> {
  // `any`: a subclass may narrow its options type (BaseModalityLoader<Raw, { scale: number }>).
  new (options?: any): L; // eslint-disable-line @typescript-eslint/no-explicit-any
  /** Optional JSON Schema for the options, validated with defaults on construction. */
  readonly optionsSchema?: JSONSchema;
  readonly name: string;
}

/** Base class of loaders. Register subclasses with `@RegisterLoader(name, { modalityType })`. */
export abstract class BaseModalityLoader<Raw = unknown, O extends LoaderOptions = LoaderOptions> {
  /** Schema of the options; subclasses may override. */
  static optionsSchema?: JSONSchema;
  readonly options: O;

  constructor(options: O = {} as O) {
    const ctor = new.target as unknown as LoaderClass;
    const data = structuredClone(options ?? {}) as O;
    this.options = ctor.optionsSchema ? validateWithSchema<O>(ctor.optionsSchema, data, `${ctor.name} options`) : data;
  }

  /** Loads one modality entry into its raw form. Throws an {@link InputError} naming the file on bad input. */
  abstract load(modality: ModalityInput): Promise<Raw>;

  /**
   * Resolves `p` against `options.basePath`, refusing paths that escape it unless `allowOutsideBase`.
   * Shared by the fs-* loaders.
   */
  protected resolvePath(p: string): string {
    if (typeof p !== 'string' || p.length === 0) throw new InputError(String(p), 'expected a non-empty path string');
    const base = path.resolve(this.options.basePath ?? process.cwd());
    const full = path.resolve(base, p);
    if (!this.options.allowOutsideBase) {
      const rel = path.relative(base, full);
      if (rel.startsWith('..') || path.isAbsolute(rel)) {
        throw new InputError(p, `path resolves outside the base folder ${base}`, {
          suggestions: ['Pass allowOutsideBase: true to the loader if this is intended.'],
        });
      }
    }
    return full;
  }
}

/**
 * Decodes the byte forms a raw-* loader accepts: a Buffer/Uint8Array, a base64 string (optionally a
 * `data:` URL), or `{bytes}` as stored in Arrow/Parquet datasets (bytes may itself be any of these, or a
 * plain number array from JSON).
 */
export function bytesFromValue(value: unknown, what = '<bytes>'): Uint8Array {
  if (value instanceof Uint8Array) return value;
  if (ArrayBuffer.isView(value)) return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
  if (value instanceof ArrayBuffer) return new Uint8Array(value);
  if (typeof value === 'string') {
    const b64 = value.startsWith('data:') ? value.slice(value.indexOf(',') + 1) : value;
    if (!/^[A-Za-z0-9+/=_\-\s]*$/.test(b64)) throw new InputError(what, 'string value is not base64');
    return new Uint8Array(Buffer.from(b64, 'base64'));
  }
  if (Array.isArray(value) && value.every((v) => Number.isInteger(v) && v >= 0 && v < 256)) {
    return Uint8Array.from(value as number[]);
  }
  if (value && typeof value === 'object' && 'bytes' in value) {
    return bytesFromValue((value as { bytes: unknown }).bytes, what);
  }
  throw new InputError(what, 'expected bytes (Buffer/Uint8Array), a base64 string, or {bytes}');
}
