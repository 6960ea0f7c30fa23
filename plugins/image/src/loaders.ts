/**
 * The image loaders, named as in the Python original: `raw-image` (bytes) and `fs-image` (a path under a
 * base folder). Both decode with sharp into an {@link RgbImage} (see {@link decodeImage} for the exact
 * conversion rules).
 * @module
 */
import {
  BaseModalityLoader, bytesFromValue, InputError, RegisterLoader, type JSONSchema, type LoaderOptions, type ModalityInput,
} from '@multimeditron/core';
import { DEFAULT_MAX_PIXELS, decodeImage, decodeImageFile, isRgbImage, type FailOnLevel, type RgbImage } from './decode.js';

/** Options of the image loaders. */
export interface ImageLoaderOptions extends LoaderOptions {
  /** Largest accepted `width * height`; larger images raise an InputError. Default {@link DEFAULT_MAX_PIXELS}. */
  maxPixels?: number;
  /** sharp's `failOn` level. Default `error` (truncated files are rejected). */
  failOn?: FailOnLevel;
}

/** JSON Schema of {@link ImageLoaderOptions}, applied with defaults when a loader is constructed. */
export const IMAGE_LOADER_OPTIONS_SCHEMA: JSONSchema = Object.freeze({
  type: 'object',
  properties: {
    basePath: { type: 'string' },
    allowOutsideBase: { type: 'boolean', default: false },
    maxPixels: { type: 'integer', minimum: 1, default: DEFAULT_MAX_PIXELS },
    failOn: { enum: ['none', 'truncated', 'error', 'warning'], default: 'error' },
  },
});

function decodeOptions(o: ImageLoaderOptions) {
  return { ...(o.maxPixels !== undefined ? { maxPixels: o.maxPixels } : {}), ...(o.failOn ? { failOn: o.failOn } : {}) };
}

/**
 * `raw-image`: the value is the encoded image itself: a Buffer/Uint8Array, a base64 string (or `data:` URL),
 * or `{bytes}` as Arrow/Parquet datasets store images (Hugging Face's `Image` feature stores
 * `{bytes, path}`; `path`, when present, names the image in errors). An already decoded {@link RgbImage}
 * passes through unchanged.
 */
@RegisterLoader('raw-image', { modalityType: 'image' })
export class RawImageLoader extends BaseModalityLoader<RgbImage, ImageLoaderOptions> {
  static override optionsSchema = IMAGE_LOADER_OPTIONS_SCHEMA;

  /** Decodes one `{type: 'image', value}` entry. */
  async load(modality: ModalityInput): Promise<RgbImage> {
    const value = modality.value;
    if (isRgbImage(value)) return value;
    const named = value && typeof value === 'object' && typeof (value as { path?: unknown }).path === 'string'
      ? (value as { path: string }).path
      : '<bytes>';
    const bytes = bytesFromValue(value, named);
    return decodeImage(bytes, named, decodeOptions(this.options));
  }
}

/**
 * `fs-image`: the value is a path (or `{path}`), resolved against `options.basePath` (default: the current
 * folder) and refused if it leaves it, unless `allowOutsideBase` is set.
 */
@RegisterLoader('fs-image', { modalityType: 'image' })
export class FsImageLoader extends BaseModalityLoader<RgbImage, ImageLoaderOptions> {
  static override optionsSchema = IMAGE_LOADER_OPTIONS_SCHEMA;

  /** Reads and decodes one `{type: 'image', value: path}` entry. */
  async load(modality: ModalityInput): Promise<RgbImage> {
    const value = modality.value;
    if (isRgbImage(value)) return value;
    const p = value && typeof value === 'object' && typeof (value as { path?: unknown }).path === 'string'
      ? (value as { path: string }).path
      : value;
    if (typeof p !== 'string') throw new InputError(String(p), 'fs-image expects a path string');
    return decodeImageFile(this.resolvePath(p), decodeOptions(this.options));
  }
}
