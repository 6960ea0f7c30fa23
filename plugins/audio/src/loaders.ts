/**
 * The audio loaders: `fs-audio` (a path under a base folder) and `raw-audio` (bytes, base64 or `{bytes}`),
 * the names MultiMeditron's Python original uses. Both return {@link RawAudio}: mono float32 at the file's
 * rate (or at `targetSampleRate`).
 * @module
 */
import { promises as fs } from 'node:fs';
import {
  BaseModalityLoader, bytesFromValue, InputError, RegisterLoader, type JSONSchema, type LoaderOptions, type ModalityInput,
} from '@multimeditron/core';
import { decodeAudio, type RawAudio } from './decode.js';

/** Options of the audio loaders. */
export interface AudioLoaderOptions extends LoaderOptions {
  /**
   * Resample every recording to this rate (Hz) at load time, with the torchaudio-equivalent sinc resampler.
   * Default: keep the file's rate (the Whisper processor resamples to its own rate anyway).
   */
  targetSampleRate?: number;
}

const AUDIO_LOADER_SCHEMA: JSONSchema = Object.freeze({
  type: 'object',
  properties: {
    basePath: { type: 'string' },
    allowOutsideBase: { type: 'boolean', default: false },
    targetSampleRate: { type: 'integer', minimum: 1 },
  },
});

/** Loads audio files by path, relative to `basePath` (which they may not leave unless `allowOutsideBase`). */
@RegisterLoader('fs-audio', { modalityType: 'audio' })
export class FsAudioLoader extends BaseModalityLoader<RawAudio, AudioLoaderOptions> {
  static override optionsSchema = AUDIO_LOADER_SCHEMA;

  /** Reads and decodes `modality.value` (a path). Throws {@link InputError} naming the file. */
  async load(modality: ModalityInput): Promise<RawAudio> {
    const value = modality.value;
    if (typeof value !== 'string') {
      throw new InputError(String(value), 'fs-audio expects a path string; use the raw-audio loader for bytes');
    }
    const file = this.resolvePath(value);
    let bytes: Uint8Array;
    try {
      bytes = await fs.readFile(file);
    } catch (e) {
      throw new InputError(file, `cannot read: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, { cause: e });
    }
    return decodeAudio(bytes, file, this.decodeOptions());
  }

  private decodeOptions() {
    return this.options.targetSampleRate !== undefined ? { targetSampleRate: this.options.targetSampleRate } : {};
  }
}

/**
 * Decodes audio given inline: a Buffer/Uint8Array, a base64 string (or `data:` URL), or `{bytes}` as
 * Parquet/Arrow datasets store it. A `{bytes, path}` object (Hugging Face `datasets` Audio) names the file
 * in errors by its `path`.
 */
@RegisterLoader('raw-audio', { modalityType: 'audio' })
export class RawAudioLoader extends BaseModalityLoader<RawAudio, AudioLoaderOptions> {
  static override optionsSchema = AUDIO_LOADER_SCHEMA;

  /** Decodes `modality.value`. Throws {@link InputError} on bad input. */
  async load(modality: ModalityInput): Promise<RawAudio> {
    const value = modality.value;
    const named = value && typeof value === 'object' && !ArrayBuffer.isView(value) && typeof (value as { path?: unknown }).path === 'string'
      ? (value as { path: string }).path
      : '<bytes>';
    const bytes = bytesFromValue(value, named);
    return decodeAudio(bytes, named, this.options.targetSampleRate !== undefined ? { targetSampleRate: this.options.targetSampleRate } : {});
  }
}
