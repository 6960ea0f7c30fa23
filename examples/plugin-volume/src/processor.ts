/**
 * `VolumeProcessor`: a raw volume to the encoder input `(1, D, H, W)`, following the original's volume
 * processor: one channel, finite values, trilinear resize to `volumeSize`, min-max scaling to [0, 1].
 * @module
 */
import {
  BaseModalityProcessor, hostTensor, InputError, type HostTensor, type ModalityInput, type ProcessedModality,
} from '@multimeditron/core';
import type { Triple, VolumeConfig } from './config.js';
import { finiteRange, minMaxScale, trilinearResize } from './resize.js';
import { isArrayVolume, type Volume } from './volume.js';

const CHANNEL_SIZES = [1, 3, 4];

/**
 * Reads a stored shape as `(C, D, H, W)`: a 3-D shape gets one channel; a 4-D shape has its channel axis
 * first or last (size 1, 3 or 4; first wins when both could be). Returns undefined for other shapes.
 */
export function channelFirstShape(shape: readonly number[]): [number, number, number, number] | undefined {
  if (shape.length === 3) return [1, shape[0]!, shape[1]!, shape[2]!];
  if (shape.length !== 4) return undefined;
  const first = CHANNEL_SIZES.includes(shape[0]!);
  const last = CHANNEL_SIZES.includes(shape[3]!);
  if (first) return [shape[0]!, shape[1]!, shape[2]!, shape[3]!];
  if (last) return [shape[3]!, shape[0]!, shape[1]!, shape[2]!];
  return undefined;
}

/** Turns volumes into `pixel_values` of shape `(1, D, H, W)` with values in [0, 1]. */
export class VolumeProcessor extends BaseModalityProcessor<Volume | HostTensor, VolumeConfig> {
  /** The encoder input's name, as written by the `features` command. */
  override readonly inputName: string = 'pixel_values';

  /** Processes one volume. Throws an {@link InputError} naming the file for unusable volumes. */
  process(modality: ModalityInput<Volume | HostTensor>): ProcessedModality {
    const raw = modality.value;
    const source = typeof (raw as Volume)?.source === 'string' ? (raw as Volume).source : '<array>';
    if (!isArrayVolume(raw)) throw new InputError(source, 'VolumeProcessor expects a decoded volume ({data, shape}); load it with fs-volume or raw-volume');
    const chw = channelFirstShape(raw.shape);
    if (!chw) {
      throw new InputError(source, `expected a 3-D volume (D, H, W) or a 4-D one with its channel axis first or last (1, 3 or 4 channels), got shape (${raw.shape.join(', ')})`);
    }
    if (chw.some((n) => n === 0)) throw new InputError(source, `empty volume: shape (${raw.shape.join(', ')})`);
    if (chw[0] !== 1) {
      throw new InputError(source, `expected a single-channel volume, got ${chw[0]} channels in shape (${raw.shape.join(', ')})`);
    }
    const data = raw.data instanceof Float32Array ? raw.data : Float32Array.from(raw.data as ArrayLike<number>);
    const range = finiteRange(data);
    if (range.firstBad !== undefined) {
      throw new InputError(source, `volume contains non-finite values (${data[range.firstBad]} at flat index ${range.firstBad})`);
    }
    const inShape: Triple = [chw[1], chw[2], chw[3]];
    const size = this.config.volumeSize;
    const resized = trilinearResize(data, inShape, size);
    return {
      type: modality.type,
      value: hostTensor(minMaxScale(resized), [1, ...size]),
      numEmbeddings: this.config.numEmbeddings(),
    };
  }
}
