/**
 * Image decoding with sharp, converted to 8-bit RGB the way Pillow's `convert("RGB")` does it, so that the
 * pixels equal the ones the Hugging Face (PIL) image processor sees:
 *
 * - no colour management: embedded ICC profiles are ignored (`ignoreIcc: true`), as Pillow ignores them;
 * - no EXIF rotation;
 * - alpha is dropped, never composited or premultiplied (fully transparent pixels keep their stored RGB);
 * - grey is replicated to three channels, palettes are expanded;
 * - 16-bit samples keep their high byte (`v >> 8`). (For 16-bit greyscale Pillow clips to 0..255 instead,
 *   which whitens the image; we keep the high byte on purpose, see docs/image.md.)
 *
 * Decoding always produces the full-resolution raw image; resizing happens afterwards, never inside the
 * same sharp pipeline (libvips would shrink JPEGs in the DCT domain on load and resize RGBA premultiplied).
 * @module
 */
import { promises as fs } from 'node:fs';
import sharp, { type OutputInfo } from 'sharp';
import { InputError } from '@multimeditron/core';

/** A decoded image: interleaved 8-bit RGB, row-major, `height` x `width` x 3. */
export interface RgbImage {
  /** `width * height * 3` bytes, RGB interleaved. */
  data: Uint8Array;
  width: number;
  height: number;
  /** Always 3. */
  channels: 3;
  /** The file or description the image came from (used in error messages). */
  source?: string;
  /** The container format sharp detected (`jpeg`, `png`, `webp`, ...). */
  format?: string;
}

/**
 * Pillow's decompression-bomb limit (`2 * Image.MAX_IMAGE_PIXELS`, where Pillow raises
 * `DecompressionBombError`): 178,956,970 pixels. The default of {@link DecodeOptions.maxPixels}.
 */
export const DEFAULT_MAX_PIXELS = 178_956_970;

/** How strict sharp is about damaged input (sharp's `failOn`). */
export type FailOnLevel = 'none' | 'truncated' | 'error' | 'warning';

/** Options of {@link decodeImage}. */
export interface DecodeOptions {
  /**
   * Largest accepted `width * height` (checked from the header, before any pixel is decoded). Larger images
   * raise an {@link InputError} instead of exhausting memory. Default {@link DEFAULT_MAX_PIXELS}.
   */
  maxPixels?: number;
  /**
   * sharp's `failOn`: the least severe decoder problem that aborts decoding. Default `error`, which rejects
   * truncated files (with `none`, sharp returns a truncated JPEG as a mostly grey image).
   */
  failOn?: FailOnLevel;
}

/** True for an object shaped like {@link RgbImage}. */
export function isRgbImage(x: unknown): x is RgbImage {
  if (typeof x !== 'object' || x === null) return false;
  const o = x as RgbImage;
  return (
    o.data instanceof Uint8Array &&
    Number.isInteger(o.width) &&
    Number.isInteger(o.height) &&
    o.channels === 3 &&
    o.data.length === o.width * o.height * 3
  );
}

function reason(e: unknown): string {
  return (e instanceof Error ? e.message : String(e)).split('\n')[0]!.trim();
}

/**
 * Decodes image bytes (any format sharp reads: JPEG, PNG, WebP, GIF, TIFF, AVIF/HEIF, SVG) into
 * {@link RgbImage}. `name` labels the input in errors. Throws {@link InputError} for empty, truncated,
 * unsupported or oversized input.
 */
export async function decodeImage(bytes: Uint8Array, name = '<bytes>', options: DecodeOptions = {}): Promise<RgbImage> {
  const maxPixels = options.maxPixels ?? DEFAULT_MAX_PIXELS;
  if (bytes.byteLength === 0) throw new InputError(name, 'the image is empty (0 bytes)');
  const input = Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let raw: { data: Buffer; info: OutputInfo };
  try {
    // sequentialRead: a top-to-bottom decode with a smaller window (~12 % faster on the fixture JPEGs, same pixels)
    raw = await sharp(input, { ignoreIcc: true, failOn: options.failOn ?? 'error', limitInputPixels: maxPixels, sequentialRead: true })
      .raw({ depth: 'uchar' })
      .toBuffer({ resolveWithObject: true });
  } catch (e) {
    throw await decodeError(input, name, maxPixels, e);
  }
  const { width, height, channels } = raw.info;
  return { data: toRgb(raw.data, width * height, channels, name), width, height, channels: 3, source: name, format: formatOf(input) };
}

/** Reads and decodes an image file. The error names `file`. */
export async function decodeImageFile(file: string, options: DecodeOptions = {}): Promise<RgbImage> {
  let bytes: Buffer;
  try {
    bytes = await fs.readFile(file);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    const what = code === 'ENOENT' ? 'no such file' : code === 'EISDIR' ? 'is a folder, not an image file' : reason(e);
    throw new InputError(file, what, { cause: e });
  }
  return decodeImage(bytes, file, options);
}

/** The container format from the magic bytes (cheap; no libvips call). */
function formatOf(b: Buffer): string | undefined {
  const ascii = (from: number, to: number) => b.subarray(from, to).toString('latin1');
  if (b[0] === 0xff && b[1] === 0xd8) return 'jpeg';
  if (b[0] === 0x89 && ascii(1, 4) === 'PNG') return 'png';
  if (ascii(0, 4) === 'RIFF' && ascii(8, 12) === 'WEBP') return 'webp';
  if (ascii(0, 3) === 'GIF') return 'gif';
  if (ascii(0, 2) === 'II' || ascii(0, 2) === 'MM') return 'tiff';
  if (ascii(4, 8) === 'ftyp') return 'heif';
  return undefined;
}

async function decodeError(input: Buffer, name: string, maxPixels: number, e: unknown): Promise<InputError> {
  const msg = reason(e);
  if (/pixel limit/i.test(msg)) {
    let dims = '';
    try {
      const m = await sharp(input, { limitInputPixels: false }).metadata();
      dims = ` (${m.width}x${m.height} = ${(m.width ?? 0) * (m.height ?? 0)} pixels)`;
    } catch {
      // the header was readable enough for libvips to refuse it; report without dimensions
    }
    return new InputError(name, `image too large${dims}: more than maxPixels = ${maxPixels} (decompression bomb guard)`, {
      cause: e,
      suggestions: ['Raise the loader option maxPixels if this image is legitimate.'],
    });
  }
  if (/unsupported image format/i.test(msg)) {
    return new InputError(name, `not an image in a format sharp can read (${msg})`, { cause: e });
  }
  if (/premature end|truncated|end of (file|stream)|unexpected end/i.test(msg)) {
    return new InputError(name, `the image is truncated (${msg})`, { cause: e });
  }
  return new InputError(name, `cannot decode the image: ${msg}`, { cause: e });
}

/** Drops alpha and replicates grey: sharp's 1-4 channel uchar output -> RGB. */
function toRgb(src: Buffer, pixels: number, channels: number, name: string): Uint8Array {
  if (channels === 3) return new Uint8Array(src.buffer, src.byteOffset, src.byteLength);
  const out = new Uint8Array(pixels * 3);
  if (channels === 1 || channels === 2) {
    for (let i = 0, s = 0, d = 0; i < pixels; i++, s += channels, d += 3) {
      const v = src[s]!;
      out[d] = v;
      out[d + 1] = v;
      out[d + 2] = v;
    }
    return out;
  }
  if (channels === 4) {
    for (let i = 0, s = 0, d = 0; i < pixels; i++, s += 4, d += 3) {
      out[d] = src[s]!;
      out[d + 1] = src[s + 1]!;
      out[d + 2] = src[s + 2]!;
    }
    return out;
  }
  throw new InputError(name, `unsupported channel count ${channels} after decoding`);
}
