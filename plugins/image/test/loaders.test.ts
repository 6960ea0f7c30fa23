import { promises as fs } from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import sharp from 'sharp';
import { InputError } from '@multimeditron/core';
import { DEFAULT_MAX_PIXELS, decodeImage, FsImageLoader, RawImageLoader, type RgbImage } from '@multimeditron/plugin-image';
import { golden, tempDir } from './helpers.js';

const IMAGES = golden('images');

/** A minimal valid PNG chunk. */
function chunk(type: string, data: Buffer): Buffer {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(data.length);
  const body = Buffer.concat([Buffer.from(type, 'latin1'), data]);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(zlib.crc32(body) >>> 0);
  return Buffer.concat([len, body, crc]);
}

/** A decompression bomb: a 1-bit greyscale PNG of width x height whose pixel data deflates to almost nothing. */
function bombPng(width: number, height: number): Buffer {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 1; // bit depth
  ihdr[9] = 0; // greyscale
  // A few rows of zeros only: a decoder that trusts the header allocates width*height before noticing.
  const idat = zlib.deflateSync(Buffer.alloc((Math.ceil(width / 8) + 1) * 16));
  return Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), chunk('IHDR', ihdr), chunk('IDAT', idat), chunk('IEND', Buffer.alloc(0))]);
}

const px = (img: RgbImage, x: number, y: number) => Array.from(img.data.subarray((y * img.width + x) * 3, (y * img.width + x) * 3 + 3));

describe('raw-image loader', () => {
  const loader = new RawImageLoader();
  let png: Buffer;
  let reference: RgbImage;
  beforeAll(async () => {
    png = await fs.readFile(path.join(IMAGES, 'tiny_12x9.png'));
    reference = await decodeImage(png);
  });

  test('applies option defaults from its schema', () => {
    expect(loader.options.maxPixels).toBe(DEFAULT_MAX_PIXELS);
    expect(loader.options.failOn).toBe('error');
  });

  test.each([
    ['Buffer', () => png],
    ['Uint8Array', () => new Uint8Array(png)],
    ['base64 string', () => png.toString('base64')],
    ['data: URL', () => `data:image/png;base64,${png.toString('base64')}`],
    ['{bytes} (Parquet/Arrow)', () => ({ bytes: new Uint8Array(png) })],
    ['{bytes, path} (HF Image feature)', () => ({ bytes: png, path: 'tiny.png' })],
    ['{bytes: number[]} (JSON)', () => ({ bytes: Array.from(png) })],
  ])('accepts %s', async (_name, value) => {
    const img = await loader.load({ type: 'image', value: value() });
    expect([img.width, img.height, img.channels]).toEqual([12, 9, 3]);
    expect(Buffer.from(img.data).equals(Buffer.from(reference.data))).toBe(true);
    expect(img.format).toBe('png');
  });

  test('an already decoded image passes through', async () => {
    expect(await loader.load({ type: 'image', value: reference })).toBe(reference);
  });

  test('errors name the path of a {bytes, path} value', async () => {
    await expect(loader.load({ type: 'image', value: { bytes: Buffer.from('nope'), path: 'scan_17.png' } })).rejects.toThrow(/scan_17\.png/);
  });

  test('a value that is not bytes is a typed error', async () => {
    await expect(loader.load({ type: 'image', value: 42 })).rejects.toBeInstanceOf(InputError);
    await expect(loader.load({ type: 'image', value: 'not base64 !!' })).rejects.toBeInstanceOf(InputError);
  });
});

describe('decoding follows PIL convert("RGB")', () => {
  test('RGBA: alpha dropped without premultiplying (transparent pixels keep their RGB)', async () => {
    const raw = Buffer.from([10, 20, 30, 0, 200, 100, 50, 128, 1, 2, 3, 255, 255, 255, 255, 7]);
    const png = await sharp(raw, { raw: { width: 2, height: 2, channels: 4 } }).png().toBuffer();
    const img = await decodeImage(png);
    expect([px(img, 0, 0), px(img, 1, 0), px(img, 0, 1), px(img, 1, 1)]).toEqual([[10, 20, 30], [200, 100, 50], [1, 2, 3], [255, 255, 255]]);
  });

  test('grey + alpha: grey replicated, alpha dropped', async () => {
    const raw = Buffer.from([10, 0, 20, 128, 30, 255, 40, 5]);
    const png = await sharp(raw, { raw: { width: 2, height: 2, channels: 2 } }).toColourspace('b-w').png().toBuffer();
    expect((await sharp(png).metadata()).channels).toBe(2);
    const img = await decodeImage(png);
    expect([px(img, 0, 0), px(img, 1, 0), px(img, 0, 1), px(img, 1, 1)]).toEqual([[10, 10, 10], [20, 20, 20], [30, 30, 30], [40, 40, 40]]);
  });

  test('8-bit grey replicated to three channels', async () => {
    const img = await decodeImage(await fs.readFile(path.join(IMAGES, 'gray_gradient.png')));
    for (let i = 0; i < img.data.length; i += 3 * 97) expect(img.data[i]).toBe(img.data[i + 1]);
  });

  test('palette PNG expanded through the palette', async () => {
    const raw = Buffer.from([255, 0, 0, 0, 255, 0, 0, 0, 255, 10, 20, 30]);
    const png = await sharp(raw, { raw: { width: 2, height: 2, channels: 3 } }).png({ palette: true, colours: 4, dither: 0 }).toBuffer();
    expect((await sharp(png).metadata()).isPalette).toBe(true);
    const img = await decodeImage(png);
    expect([px(img, 0, 0), px(img, 1, 0), px(img, 0, 1), px(img, 1, 1)]).toEqual([[255, 0, 0], [0, 255, 0], [0, 0, 255], [10, 20, 30]]);
  });

  test('16-bit RGB and grey keep the high byte (v >> 8, not v / 257)', async () => {
    // values where v >> 8 and round(v / 257) differ
    const rgb = Uint16Array.from([0x80ff, 0x01ff, 0xfe80, 0x7fff, 0x00ff, 0xffff, 0x1234, 0xabcd, 0x4080, 0x0180, 0xc0c0, 0x2222]);
    const png16 = await sharp(rgb, { raw: { width: 2, height: 2, channels: 3 } }).toColourspace('rgb16').png().toBuffer();
    expect((await sharp(png16).metadata()).depth).toBe('ushort');
    const img = await decodeImage(png16);
    expect(Array.from(img.data)).toEqual(Array.from(rgb, (v) => v >> 8));
    expect(Array.from(img.data)).not.toEqual(Array.from(rgb, (v) => Math.round(v / 257)));

    const grey = Uint16Array.from([0x80ff, 0x01ff, 0xfe80, 0x7fff]);
    const pngG = await sharp(grey, { raw: { width: 2, height: 2, channels: 1 } }).toColourspace('grey16').png().toBuffer();
    const g = await decodeImage(pngG);
    expect(Array.from(g.data)).toEqual(Array.from(grey, (v) => v >> 8).flatMap((v) => [v, v, v]));
  });

  test('embedded ICC profiles are ignored (icc_widegamut.jpg decodes to its stored samples)', async () => {
    const file = path.join(IMAGES, 'icc_widegamut.jpg');
    const img = await decodeImage(await fs.readFile(file));
    const managed = await sharp(file).raw().toBuffer(); // sharp's default converts the Adobe RGB profile to sRGB
    const stored = await sharp(file).keepIccProfile().raw().toBuffer(); // no conversion: the stored samples
    expect(Buffer.from(img.data).equals(stored)).toBe(true);
    expect(Buffer.from(img.data).equals(managed)).toBe(false);
  });

  test('other formats sharp reads: WebP, TIFF, GIF', async () => {
    const raw = Buffer.from(Array.from({ length: 4 * 4 * 3 }, (_, i) => (i * 37) % 256));
    const base = sharp(raw, { raw: { width: 4, height: 4, channels: 3 } });
    for (const [fmt, buf] of [
      ['webp', await base.clone().webp({ lossless: true }).toBuffer()],
      ['tiff', await base.clone().tiff({ compression: 'lzw' }).toBuffer()],
    ] as const) {
      const img = await decodeImage(buf);
      expect(img.format).toBe(fmt);
      expect(Buffer.from(img.data).equals(raw)).toBe(true);
    }
    const gif = await decodeImage(await base.clone().gif().toBuffer());
    expect([gif.width, gif.height, gif.format]).toEqual([4, 4, 'gif']);
  });
});

describe('fs-image loader', () => {
  test('resolves paths against basePath', async () => {
    const loader = new FsImageLoader({ basePath: IMAGES });
    const img = await loader.load({ type: 'image', value: 'rgba_alpha.png' });
    expect([img.width, img.height]).toEqual([200, 160]);
    expect(img.source).toBe(path.join(IMAGES, 'rgba_alpha.png'));
    const again = await loader.load({ type: 'image', value: { path: 'rgba_alpha.png' } });
    expect(Buffer.from(again.data).equals(Buffer.from(img.data))).toBe(true);
  });

  test('refuses paths outside the base folder unless allowed', async () => {
    const loader = new FsImageLoader({ basePath: IMAGES });
    await expect(loader.load({ type: 'image', value: '../clip-tiny/config.json' })).rejects.toThrow(/outside the base folder/);
    const open = new FsImageLoader({ basePath: IMAGES, allowOutsideBase: true });
    await expect(open.load({ type: 'image', value: '../images/tiny_12x9.png' })).resolves.toMatchObject({ width: 12 });
  });

  test('a missing file is an InputError naming it', async () => {
    const loader = new FsImageLoader({ basePath: IMAGES });
    await expect(loader.load({ type: 'image', value: 'nope.png' })).rejects.toThrow(/nope\.png: no such file/);
  });
});

describe('bad inputs: typed errors naming the file; the rest of a batch completes', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await tempDir();
    await fs.writeFile(path.join(dir, 'empty.jpg'), Buffer.alloc(0));
    await fs.copyFile(path.join(IMAGES, 'truncated.jpg'), path.join(dir, 'truncated.jpg'));
    await fs.writeFile(path.join(dir, 'notes.png'), 'this is a text file, not a PNG\n');
    // BMP: a real image format that sharp's prebuilt libvips does not read
    const bmp = Buffer.alloc(58);
    bmp.write('BM', 0, 'latin1');
    bmp.writeUInt32LE(58, 2);
    bmp.writeUInt32LE(54, 10);
    bmp.writeUInt32LE(40, 14);
    bmp.writeInt32LE(1, 18);
    bmp.writeInt32LE(1, 22);
    bmp.writeUInt16LE(1, 26);
    bmp.writeUInt16LE(24, 28);
    await fs.writeFile(path.join(dir, 'pixel.bmp'), bmp);
    await fs.writeFile(path.join(dir, 'bomb.png'), bombPng(30000, 30000));
    await fs.copyFile(path.join(IMAGES, 'tiny_12x9.png'), path.join(dir, 'good1.png'));
    await fs.copyFile(path.join(IMAGES, 'progressive.jpg'), path.join(dir, 'good2.jpg'));
  });
  afterAll(async () => {
    await fs.rm(dir, { recursive: true, force: true });
  });

  test.each([
    ['empty.jpg', /empty \(0 bytes\)/],
    ['truncated.jpg', /truncated/],
    ['notes.png', /not an image in a format sharp can read/],
    ['pixel.bmp', /not an image in a format sharp can read/],
    ['bomb.png', /too large \(30000x30000 = 900000000 pixels\).*decompression bomb/],
  ])('%s', async (name, message) => {
    const loader = new FsImageLoader({ basePath: dir });
    const err = await loader.load({ type: 'image', value: name }).then(() => undefined, (e: unknown) => e);
    expect(err).toBeInstanceOf(InputError);
    expect((err as InputError).file).toBe(path.join(dir, name));
    expect((err as Error).message).toContain(name);
    expect((err as Error).message).toMatch(message);
  });

  test('truncated.jpg fails also through raw-image, and sharp alone would have returned a grey image', async () => {
    const bytes = await fs.readFile(path.join(IMAGES, 'truncated.jpg'));
    await expect(new RawImageLoader().load({ type: 'image', value: bytes })).rejects.toThrow(/<bytes>: the image is truncated/);
    const lenient = await decodeImage(bytes, 'truncated.jpg', { failOn: 'none' });
    expect([lenient.width, lenient.height]).toEqual([1411, 1411]);
  });

  test('maxPixels is an option', async () => {
    const loader = new FsImageLoader({ basePath: golden('images'), maxPixels: 1000 });
    await expect(loader.load({ type: 'image', value: 'retina.jpg' })).rejects.toThrow(/1411x1411.*maxPixels = 1000/);
    await expect(loader.load({ type: 'image', value: 'tiny_12x9.png' })).resolves.toMatchObject({ width: 12 });
  });

  test('a batch with every kind of bad file still loads the good ones', async () => {
    const loader = new FsImageLoader({ basePath: dir });
    const names = ['good1.png', 'empty.jpg', 'truncated.jpg', 'notes.png', 'pixel.bmp', 'bomb.png', 'good2.jpg'];
    const results = await Promise.allSettled(names.map((n) => loader.load({ type: 'image', value: n })));
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'rejected', 'rejected', 'rejected', 'rejected', 'fulfilled']);
    for (const r of results) if (r.status === 'rejected') expect(r.reason).toBeInstanceOf(InputError);
    expect((results[6] as PromiseFulfilledResult<RgbImage>).value.width).toBe(199);
  });
});
