/**
 * `ImageProcessor`: decoded image -> `pixel_values` [3, crop, crop], as Hugging Face's `CLIPImageProcessor`
 * (PIL backend) computes them, and the number of token slots the image takes.
 * @module
 */
import path from 'node:path';
import { promises as fs } from 'node:fs';
import {
  BaseModalityProcessor, ConfigValidationError, InputError, readJsonFile, hostTensor,
  type HostTensor, type Logger, type ModalityContext, type ModalityInput, type ProcessedModality, type ProjectionType,
} from '@multimeditron/core';
import type { ImageConfig } from './config.js';
import { isRgbImage, type RgbImage } from './decode.js';
import { numPatches, readClipVisionConfig, type ClipVisionConfig } from './clip-vision.js';
import { resizeAndCropExact, resizeAndCropFast } from './image-ops.js';
import { defaultPreprocessorConfig, parsePreprocessorConfig, type ClipPreprocessorConfig } from './preprocessor-config.js';

/** File name of the image-processor configuration in a model folder. */
export const PREPROCESSOR_CONFIG_FILE = 'preprocessor_config.json';

/**
 * Token count after the projector: unchanged for `mlp`/`linear`, divided by `factor^2` for `pixel_shuffle`
 * (the same rule as core's `Projector.outputTokens`). Throws {@link ConfigValidationError} when the patch
 * grid is not divisible by the factor.
 */
export function projectedTokenCount(patches: number, type: ProjectionType, factor: number): number {
  if (type !== 'pixel_shuffle') return patches;
  const g = Math.round(Math.sqrt(patches));
  if (g * g !== patches || g % factor !== 0) {
    throw new ConfigValidationError('ImageConfig', [
      { path: '/pixelShuffleFactor', rule: 'multipleOf', message: `the ${g}x${g} patch grid is not divisible by pixelShuffleFactor ${factor}` },
    ]);
  }
  return patches / (factor * factor);
}

/**
 * The CLIP image processor. `init` reads `preprocessor_config.json` (current or legacy form) and the vision
 * config of `config.clipName`; `process` then maps one decoded {@link RgbImage} to `pixel_values`.
 *
 * Resizing is exact by default (a port of Pillow's bicubic resampler: the uint8 crop is bit-identical to
 * Hugging Face's). {@link processFast} is an opt-in asynchronous variant that resizes with sharp instead.
 */
export class ImageProcessor extends BaseModalityProcessor<RgbImage, ImageConfig> {
  override readonly inputName = 'pixel_values';
  /** The parsed preprocessor configuration (set by `init`/`configure`). */
  preprocessor: ClipPreprocessorConfig = defaultPreprocessorConfig();
  /** Token slots per image, after the projector (set by `init`/`configure`). */
  numEmbeddings = 0;
  private lut: Float32Array | undefined;

  /** Resolves `config.clipName` through the context's resolver and reads its configuration files. */
  override async init(ctx: ModalityContext): Promise<void> {
    const dir = await ctx.resolver.resolve(this.config.clipName);
    await this.initFromFolder(dir, ctx.logger);
  }

  /**
   * Reads `preprocessor_config.json` and the vision config (`config.json`) from a local CLIP folder. When the
   * folder has no preprocessor config, CLIPImageProcessor's defaults at the model's image size are used
   * (with a warning). `vision` skips re-reading `config.json` when the caller already has it.
   */
  async initFromFolder(dir: string, logger?: Logger, vision?: ClipVisionConfig): Promise<void> {
    const file = path.join(dir, PREPROCESSOR_CONFIG_FILE);
    const v = vision ?? (await readClipVisionConfig(dir)).config;
    let pre: ClipPreprocessorConfig;
    if (await fs.access(file).then(() => true, () => false)) {
      pre = parsePreprocessorConfig(await readJsonFile(file), file);
    } else {
      logger?.warn(`${dir}: no ${PREPROCESSOR_CONFIG_FILE}; using CLIPImageProcessor defaults at ${v.imageSize} px`);
      pre = defaultPreprocessorConfig(v.imageSize);
    }
    this.configure(pre, v);
  }

  /** Sets the preprocessor configuration and the token count from the vision config, without any I/O. */
  configure(pre: ClipPreprocessorConfig, vision: Pick<ClipVisionConfig, 'imageSize' | 'patchSize'>): void {
    this.preprocessor = pre;
    this.lut = undefined;
    this.numEmbeddings = projectedTokenCount(numPatches(vision), this.config.projectionType, this.config.pixelShuffleFactor);
  }

  /** The exact resize + centre crop: the uint8 RGB image before rescale/normalize (`resized_cropped_u8`). */
  resizeAndCrop(image: RgbImage): RgbImage {
    return resizeAndCropExact(image, this.preprocessor);
  }

  /**
   * Rescale + normalise a uint8 RGB image into CHW float32 `pixel_values`, with Hugging Face's float
   * arithmetic: `x = float32(u8 * rescale_factor)` (computed in float64), then `(x - mean) / std` in float32.
   */
  toPixelValues(image: RgbImage): HostTensor<Float32Array> {
    const lut = (this.lut ??= this.buildLut());
    const { width: w, height: h, data } = image;
    const plane = w * h;
    const out = new Float32Array(3 * plane);
    for (let i = 0, s = 0; i < plane; i++, s += 3) {
      out[i] = lut[data[s]!]!;
      out[plane + i] = lut[256 + data[s + 1]!]!;
      out[2 * plane + i] = lut[512 + data[s + 2]!]!;
    }
    return hostTensor(out, [3, h, w]);
  }

  private buildLut(): Float32Array {
    const p = this.preprocessor;
    const f = Math.fround;
    const lut = new Float32Array(768);
    for (let c = 0; c < 3; c++) {
      const mean = f(p.imageMean[c]!);
      const std = f(p.imageStd[c]!);
      for (let v = 0; v < 256; v++) {
        let x = p.doRescale ? f(v * p.rescaleFactor) : v;
        if (p.doNormalize) x = f(f(x - mean) / std);
        lut[c * 256 + v] = x;
      }
    }
    return lut;
  }

  private image(modality: ModalityInput<RgbImage>): RgbImage {
    const img = modality.value;
    if (!isRgbImage(img)) {
      throw new InputError('<image>', 'ImageProcessor expects a decoded RGB image; load it with the raw-image or fs-image loader first');
    }
    return img;
  }

  /** Decoded image -> `{ value: pixel_values [3, h, w], numEmbeddings }` (exact, synchronous). */
  process(modality: ModalityInput<RgbImage>): ProcessedModality {
    const pixels = this.toPixelValues(this.resizeAndCrop(this.image(modality)));
    return { type: modality.type, value: pixels, numEmbeddings: this.numEmbeddings };
  }

  /**
   * Like {@link process}, but resizes with sharp's `cubic` kernel (decode-first, on libuv's thread pool).
   * Faster on large images, not bit-exact: see docs/image.md for the measured deviation.
   */
  async processFast(modality: ModalityInput<RgbImage>): Promise<ProcessedModality> {
    const cropped = await resizeAndCropFast(this.image(modality), this.preprocessor);
    return { type: modality.type, value: this.toPixelValues(cropped), numEmbeddings: this.numEmbeddings };
  }
}
