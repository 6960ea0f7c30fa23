/**
 * The geometric steps of CLIP preprocessing on decoded {@link RgbImage}s: output size, resize, centre crop.
 *
 * Two resizers:
 * - exact (default): a port of Pillow's resampler, bit-exact with what Hugging Face's PIL image processor
 *   produces (`resized_cropped_u8` of the golden fixtures);
 * - fast (opt-in): libvips' `cubic` kernel through sharp, on the already decoded pixels. It is not exact:
 *   see docs/image.md for its measured deviation.
 * @module
 */
import sharp from 'sharp';
import type { RgbImage } from './decode.js';
import { resampleRgb, type OutputWindow } from './internal/pillow-resample.js';

export { setResampleEngine, simdAvailable, type ResampleEngine } from './internal/pillow-resample.js';
import type { ClipPreprocessorConfig, ResizeTarget } from './preprocessor-config.js';

/**
 * The resize output size, as Hugging Face computes it (`get_resize_output_image_size`,
 * `default_to_square=False`): the short side becomes `shortestEdge`, the long side
 * `floor(shortestEdge * long / short)`. `{height, width}` targets are returned as they are.
 */
export function resizeOutputSize(height: number, width: number, target: ResizeTarget): { height: number; width: number } {
  if (!('shortestEdge' in target)) return { height: target.height, width: target.width };
  const s = target.shortestEdge;
  const short = Math.min(width, height);
  const long = Math.max(width, height);
  const newLong = Math.floor((s * long) / short);
  return width <= height ? { height: newLong, width: s } : { height: s, width: newLong };
}

/** Hugging Face's centre-crop offsets: `top = floor((H - h) / 2)`, `left = floor((W - w) / 2)` (may be negative). */
export function centerCropOffsets(height: number, width: number, crop: { height: number; width: number }): { top: number; left: number } {
  return { top: Math.floor((height - crop.height) / 2), left: Math.floor((width - crop.width) / 2) };
}

/**
 * Resizes with Pillow's algorithm. `filter` is the Pillow code (3 = bicubic). Bit-exact with
 * `PIL.Image.resize(..., reducing_gap=None)` for the convolution filters (1-5); NEAREST (0) follows the same
 * pixel-centre rule.
 */
export function resizeRgb(image: RgbImage, width: number, height: number, filter = 3): RgbImage {
  const data = resampleRgb(image.data, image.width, image.height, width, height, filter);
  return { data, width, height, channels: 3, ...(image.source ? { source: image.source } : {}) };
}

function pasteWindow(
  fill: (win: OutputWindow) => Uint8Array,
  resized: { height: number; width: number },
  crop: { height: number; width: number },
): Uint8Array {
  // Hugging Face's center_crop when the crop is larger than the image: pad with zeros (centred, ceil), then
  // crop. Compute where the resized image lands in the crop and fill only that part.
  const padH = Math.max(crop.height, resized.height);
  const padW = Math.max(crop.width, resized.width);
  const tp = Math.ceil((padH - resized.height) / 2);
  const lp = Math.ceil((padW - resized.width) / 2);
  const { top, left } = centerCropOffsets(resized.height, resized.width, crop);
  const cropTop = top + tp; // crop origin in padded coordinates
  const cropLeft = left + lp;
  const out = new Uint8Array(crop.height * crop.width * 3);
  const y0 = Math.max(cropTop, tp);
  const y1 = Math.min(cropTop + crop.height, tp + resized.height);
  const x0 = Math.max(cropLeft, lp);
  const x1 = Math.min(cropLeft + crop.width, lp + resized.width);
  if (y1 <= y0 || x1 <= x0) return out;
  const win = { x0: x0 - lp, y0: y0 - tp, w: x1 - x0, h: y1 - y0 };
  const part = fill(win);
  for (let y = 0; y < win.h; y++) {
    const d = ((y0 - cropTop + y) * crop.width + (x0 - cropLeft)) * 3;
    out.set(part.subarray(y * win.w * 3, (y + 1) * win.w * 3), d);
  }
  return out;
}

/** The crop geometry of one image under a preprocessor config. */
export interface CropPlan {
  /** Size after the resize step. */
  resized: { height: number; width: number };
  /** Size of the final image. */
  output: { height: number; width: number };
  /** True when the crop lies inside the resized image (no zero padding). */
  inside: boolean;
  /** The crop as a window of the resized image, when `inside`. */
  window: OutputWindow;
}

/** Works out resize and crop sizes for an image of `height` x `width`. */
export function planResizeCrop(height: number, width: number, pre: ClipPreprocessorConfig): CropPlan {
  const resized = pre.doResize ? resizeOutputSize(height, width, pre.size) : { height, width };
  if (!pre.doCenterCrop) {
    return { resized, output: resized, inside: true, window: { x0: 0, y0: 0, w: resized.width, h: resized.height } };
  }
  const crop = pre.cropSize;
  const { top, left } = centerCropOffsets(resized.height, resized.width, crop);
  const inside = top >= 0 && left >= 0;
  return { resized, output: { ...crop }, inside, window: { x0: left, y0: top, w: crop.width, h: crop.height } };
}

/**
 * Resize + centre crop exactly as Hugging Face's `CLIPImageProcessor` (PIL backend) does, computing only
 * the pixels that survive the crop. Returns the uint8 RGB crop (`resized_cropped_u8`).
 */
export function resizeAndCropExact(image: RgbImage, pre: ClipPreprocessorConfig): RgbImage {
  const plan = planResizeCrop(image.height, image.width, pre);
  const { resized } = plan;
  const run = (win: OutputWindow) =>
    resampleRgb(image.data, image.width, image.height, resized.width, resized.height, pre.resample, win);
  const data = plan.inside ? run(plan.window) : pasteWindow(run, resized, plan.output);
  return { data, width: plan.output.width, height: plan.output.height, channels: 3, ...(image.source ? { source: image.source } : {}) };
}

/**
 * The fast variant of {@link resizeAndCropExact}: sharp's `cubic` (Catmull-Rom) resize of the already
 * decoded pixels, then the same crop. Not bit-exact with Pillow (see docs/image.md for the measured
 * deviation); runs on libuv's thread pool.
 */
export async function resizeAndCropFast(image: RgbImage, pre: ClipPreprocessorConfig): Promise<RgbImage> {
  const plan = planResizeCrop(image.height, image.width, pre);
  const { resized } = plan;
  const input = Buffer.from(image.data.buffer, image.data.byteOffset, image.data.byteLength);
  const raw = { width: image.width, height: image.height, channels: 3 as const };
  let pipeline = sharp(input, { raw });
  if (resized.width !== image.width || resized.height !== image.height) {
    pipeline = pipeline.resize(resized.width, resized.height, { kernel: 'cubic', fit: 'fill' });
  }
  const full = await pipeline.raw().toBuffer();
  const whole = new Uint8Array(full.buffer, full.byteOffset, full.byteLength);
  const cut = (win: OutputWindow) => {
    const out = new Uint8Array(win.w * win.h * 3);
    for (let y = 0; y < win.h; y++) {
      const s = ((win.y0 + y) * resized.width + win.x0) * 3;
      out.set(whole.subarray(s, s + win.w * 3), y * win.w * 3);
    }
    return out;
  };
  const data = plan.inside ? cut(plan.window) : pasteWindow(cut, resized, plan.output);
  return { data, width: plan.output.width, height: plan.output.height, channels: 3, ...(image.source ? { source: image.source } : {}) };
}
