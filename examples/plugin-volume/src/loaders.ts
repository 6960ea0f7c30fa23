/**
 * Loaders for the `image_3d` modality type: `fs-volume` reads files under a base folder, `raw-volume` takes
 * bytes (`Buffer`, base64, `{bytes}` as in Parquet datasets) or an in-memory `{data, shape}` array.
 * @module
 */
import { promises as fs } from 'node:fs';
import {
  BaseModalityLoader, bytesFromValue, InputError, RegisterLoader, type ModalityInput,
} from '@multimeditron/core';
import { decodeVolume, formatFromName, isArrayVolume, volumeFromArray, type Volume } from './volume.js';

/** The dataset `type` of volumes, as in the original (`image_3d`). */
export const VOLUME_MODALITY_TYPE = 'image_3d';

/**
 * Reads `.npy`, `.nii` and `.nii.gz` volumes from disk. `value` is a path relative to `basePath`
 * (which it may not leave unless `allowOutsideBase` is set).
 */
@RegisterLoader('fs-volume', { modalityType: VOLUME_MODALITY_TYPE })
export class FsVolumeLoader extends BaseModalityLoader<Volume> {
  /** Reads and decodes one file. */
  async load(modality: ModalityInput): Promise<Volume> {
    const value = modality.value;
    if (typeof value !== 'string') {
      throw new InputError(String(value), 'fs-volume expects a path string as value');
    }
    const file = this.resolvePath(value);
    let bytes: Uint8Array;
    try {
      bytes = await fs.readFile(file);
    } catch (e) {
      throw new InputError(value, `cannot read: ${(e as Error).message}`, { cause: e });
    }
    return decodeVolume(bytes, value, formatFromName(value));
  }
}

/**
 * Decodes volumes held in memory: `.npy`/NIfTI bytes in any form core's `bytesFromValue` accepts, or an
 * already decoded `{data, shape}` array (passed through, converted to float32).
 */
@RegisterLoader('raw-volume', { modalityType: VOLUME_MODALITY_TYPE })
export class RawVolumeLoader extends BaseModalityLoader<Volume> {
  /** Decodes one in-memory value. */
  async load(modality: ModalityInput): Promise<Volume> {
    const value = modality.value;
    if (isArrayVolume(value)) return volumeFromArray(value, '<array>');
    return decodeVolume(bytesFromValue(value, '<bytes>'), '<bytes>');
  }
}
