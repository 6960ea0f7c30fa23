/**
 * `preprocessor_config.json` of CLIP checkpoints, in the current Hugging Face form (`CLIPImageProcessor`:
 * `size: {shortest_edge}`, `crop_size: {height, width}`) and the legacy one (`CLIPFeatureExtractor`:
 * `size: 224`, `crop_size: 224`, and no `do_rescale` / `rescale_factor` / `do_convert_rgb`).
 * @module
 */
import { ConfigValidationError, type ConfigIssue } from '@multimeditron/core';
import { isSupportedFilter } from './internal/pillow-resample.js';

/** OpenAI CLIP's normalisation mean (the default when the file has none). */
export const OPENAI_CLIP_MEAN: readonly [number, number, number] = [0.48145466, 0.4578275, 0.40821073];
/** OpenAI CLIP's normalisation std (the default when the file has none). */
export const OPENAI_CLIP_STD: readonly [number, number, number] = [0.26862954, 0.26130258, 0.27577711];

/** Target size of the resize step. */
export type ResizeTarget = { shortestEdge: number } | { height: number; width: number };

/** A normalised CLIP image-processor configuration. */
export interface ClipPreprocessorConfig {
  /** `do_convert_rgb`. The loaders always deliver RGB, so this is informational. */
  doConvertRgb: boolean;
  /** `do_resize`. */
  doResize: boolean;
  /** `{shortestEdge}` keeps the aspect ratio; `{height, width}` resizes to exactly that size. */
  size: ResizeTarget;
  /** Pillow filter code: 0 nearest, 1 lanczos, 2 bilinear, 3 bicubic (CLIP), 4 box, 5 hamming. */
  resample: number;
  /** `do_center_crop`. */
  doCenterCrop: boolean;
  /** `crop_size` (a legacy integer becomes a square). */
  cropSize: { height: number; width: number };
  /** `do_rescale` (legacy files omit it: true). */
  doRescale: boolean;
  /** `rescale_factor` (legacy files omit it: 1/255). */
  rescaleFactor: number;
  /** `do_normalize`. */
  doNormalize: boolean;
  /** `image_mean`, per channel. */
  imageMean: [number, number, number];
  /** `image_std`, per channel. */
  imageStd: [number, number, number];
}

/** The defaults of Hugging Face's `CLIPImageProcessor`. */
export function defaultPreprocessorConfig(imageSize = 224): ClipPreprocessorConfig {
  return {
    doConvertRgb: true,
    doResize: true,
    size: { shortestEdge: imageSize },
    resample: 3,
    doCenterCrop: true,
    cropSize: { height: imageSize, width: imageSize },
    doRescale: true,
    rescaleFactor: 1 / 255,
    doNormalize: true,
    imageMean: [...OPENAI_CLIP_MEAN],
    imageStd: [...OPENAI_CLIP_STD],
  };
}

const isPosInt = (v: unknown): v is number => Number.isInteger(v) && (v as number) > 0;

/**
 * Parses `preprocessor_config.json` (current or legacy form) into a {@link ClipPreprocessorConfig}, with the
 * `CLIPImageProcessor` defaults for missing fields. Throws {@link ConfigValidationError} naming `file` and
 * every invalid field.
 */
export function parsePreprocessorConfig(json: unknown, file = 'preprocessor_config.json'): ClipPreprocessorConfig {
  const issues: ConfigIssue[] = [];
  if (json === null || typeof json !== 'object' || Array.isArray(json)) {
    throw new ConfigValidationError(file, [{ path: '', rule: 'type', message: 'must be an object' }]);
  }
  const o = json as Record<string, unknown>;
  const out = defaultPreprocessorConfig();
  const bool = (key: string, set: (v: boolean) => void) => {
    const v = o[key];
    if (v === undefined || v === null) return;
    if (typeof v !== 'boolean') issues.push({ path: `/${key}`, rule: 'type', message: 'must be boolean' });
    else set(v);
  };
  bool('do_convert_rgb', (v) => (out.doConvertRgb = v));
  bool('do_resize', (v) => (out.doResize = v));
  bool('do_center_crop', (v) => (out.doCenterCrop = v));
  bool('do_rescale', (v) => (out.doRescale = v));
  bool('do_normalize', (v) => (out.doNormalize = v));

  const size = o['size'];
  if (size !== undefined && size !== null) {
    if (isPosInt(size)) out.size = { shortestEdge: size };
    else if (typeof size === 'object' && isPosInt((size as Record<string, unknown>)['shortest_edge'])) {
      out.size = { shortestEdge: (size as Record<string, number>)['shortest_edge']! };
    } else if (typeof size === 'object' && isPosInt((size as Record<string, unknown>)['height']) && isPosInt((size as Record<string, unknown>)['width'])) {
      out.size = { height: (size as Record<string, number>)['height']!, width: (size as Record<string, number>)['width']! };
    } else {
      issues.push({ path: '/size', rule: 'type', message: 'must be a positive integer, {shortest_edge} or {height, width}' });
    }
  }
  const crop = o['crop_size'];
  if (crop !== undefined && crop !== null) {
    if (isPosInt(crop)) out.cropSize = { height: crop, width: crop };
    else if (typeof crop === 'object' && isPosInt((crop as Record<string, unknown>)['height']) && isPosInt((crop as Record<string, unknown>)['width'])) {
      out.cropSize = { height: (crop as Record<string, number>)['height']!, width: (crop as Record<string, number>)['width']! };
    } else {
      issues.push({ path: '/crop_size', rule: 'type', message: 'must be a positive integer or {height, width}' });
    }
  }
  const resample = o['resample'];
  if (resample !== undefined && resample !== null) {
    if (!Number.isInteger(resample) || !isSupportedFilter(resample as number)) {
      issues.push({ path: '/resample', rule: 'enum', message: 'must be a Pillow filter code 0-5' });
    } else out.resample = resample as number;
  }
  const factor = o['rescale_factor'];
  if (factor !== undefined && factor !== null) {
    if (typeof factor !== 'number' || !(factor > 0)) issues.push({ path: '/rescale_factor', rule: 'type', message: 'must be a positive number' });
    else out.rescaleFactor = factor;
  }
  const triple = (key: 'image_mean' | 'image_std', set: (v: [number, number, number]) => void) => {
    const v = o[key];
    if (v === undefined || v === null) return;
    if (typeof v === 'number') set([v, v, v]);
    else if (Array.isArray(v) && v.length === 3 && v.every((x) => typeof x === 'number')) set(v as [number, number, number]);
    else issues.push({ path: `/${key}`, rule: 'type', message: 'must be a number or an array of 3 numbers' });
  };
  triple('image_mean', (v) => (out.imageMean = v));
  triple('image_std', (v) => {
    if (v.some((x) => x === 0)) issues.push({ path: '/image_std', rule: 'exclusiveMinimum', message: 'must not contain 0' });
    out.imageStd = v;
  });
  if (issues.length) throw new ConfigValidationError(file, issues);
  return out;
}
