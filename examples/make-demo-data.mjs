#!/usr/bin/env node
// Makes the demo's media: synthetic "medical-looking" images (drawn pixel by pixel, encoded with sharp as PNG
// and JPEG) and synthesized recordings (16-bit PCM WAV). Everything is generated, deterministic and small;
// the committed files under examples/demo/{images,audio} are its output.
//
// Usage: node examples/make-demo-data.mjs [--if-missing] [--out <dir>]   (default: examples/demo)
import { existsSync, promises as fs } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';
import { mulberry32 } from './seeded-random.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const args = process.argv.slice(2);
const outArg = args.indexOf('--out');
const OUT = path.resolve(outArg >= 0 ? args[outArg + 1] : path.join(HERE, 'demo'));

const clamp = (v) => Math.max(0, Math.min(255, Math.round(v)));

/** Draws an image: `pixel(x, y) -> [r, g, b(, a)]`. */
function draw(width, height, channels, pixel) {
  const buf = Buffer.alloc(width * height * channels);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const px = pixel(x, y);
      for (let c = 0; c < channels; c++) buf[(y * width + x) * channels + c] = clamp(px[c]);
    }
  }
  return sharp(buf, { raw: { width, height, channels } });
}

const IMAGES = {
  // a chest radiograph look-alike: dark field, two lungs, ribs, spine (grayscale PNG)
  'chest_xray.png': () => {
    const rand = mulberry32(1);
    const W = 256, H = 256;
    return draw(W, H, 1, (x, y) => {
      const u = (x - W / 2) / (W / 2), v = (y - H / 2) / (H / 2);
      const body = Math.exp(-((u / 0.85) ** 8 + (v / 0.95) ** 8));
      const lung = (cx) => Math.exp(-((((u - cx) / 0.3) ** 2 + ((v + 0.05) / 0.62) ** 2) ** 2) * 1.5);
      const lungs = lung(-0.4) + lung(0.4);
      const ribs = Math.max(0, Math.sin((v * 6 + Math.abs(u) * 1.6) * Math.PI)) ** 6;
      const spine = Math.exp(-((u / 0.06) ** 2));
      const val = 25 + 185 * body - 140 * lungs + 70 * ribs * lungs + 40 * spine * body;
      return [val + (rand() - 0.5) * 4];
    }).png();
  },
  // a fundus photograph look-alike: orange disc, optic disc, branching vessels (JPEG)
  'retina.jpg': () => {
    const W = 200, H = 200;
    return draw(W, H, 3, (x, y) => {
      const u = (x - W / 2) / (W / 2.2), v = (y - H / 2) / (H / 2.2);
      const r = Math.hypot(u, v);
      if (r > 1) return [8, 4, 4];
      const disc = Math.exp(-(((u - 0.35) / 0.12) ** 2 + (v / 0.14) ** 2));
      const angle = Math.atan2(v, u - 0.35);
      const vessel = Math.exp(-((Math.sin(angle * 3 + Math.hypot(u - 0.35, v) * 4) / 0.08) ** 2)) * (1 - disc);
      const shade = 1 - 0.35 * r * r;
      return [
        (200 * shade + 55 * disc) * (1 - 0.45 * vessel),
        (90 * shade + 150 * disc) * (1 - 0.6 * vessel),
        (40 * shade + 90 * disc) * (1 - 0.6 * vessel),
      ];
    }).jpeg({ quality: 85 });
  },
  // a dermatoscopy look-alike: skin background with an irregular brown lesion (JPEG, not square)
  'skin_lesion.jpg': () => {
    const W = 160, H = 120;
    return draw(W, H, 3, (x, y) => {
      const u = (x - W / 2) / 40, v = (y - H / 2) / 32;
      const a = Math.atan2(v, u);
      const edge = 1 + 0.18 * Math.sin(a * 5) + 0.1 * Math.cos(a * 3 + 1);
      const inside = Math.hypot(u, v) < edge ? 1 : 0;
      const mottle = 0.5 + 0.5 * Math.sin(x * 0.7) * Math.cos(y * 0.5);
      return inside
        ? [110 - 30 * mottle, 70 - 25 * mottle, 45 - 15 * mottle]
        : [225 - 10 * mottle, 180 - 8 * mottle, 160 - 6 * mottle];
    }).jpeg({ quality: 85 });
  },
  // a histology look-alike: pink stroma, purple nuclei, with a transparent margin (RGBA PNG)
  'histology.png': () => {
    const rand = mulberry32(7);
    const W = 128, H = 128;
    const nuclei = Array.from({ length: 40 }, () => [rand() * W, rand() * H, 3 + rand() * 4]);
    return draw(W, H, 4, (x, y) => {
      const n = nuclei.some(([cx, cy, r]) => (x - cx) ** 2 + (y - cy) ** 2 < r * r);
      const margin = x < 8 || y < 8 || x >= W - 8 || y >= H - 8;
      return n ? [95, 40, 140, 255] : [235, 160, 190, margin ? 0 : 255];
    }).png();
  },
};

/** A 16-bit PCM WAV file. `channels` arrays of float samples in [-1, 1]. */
function wav(sampleRate, channels) {
  const n = channels[0].length;
  const c = channels.length;
  const data = Buffer.alloc(n * c * 2);
  for (let i = 0; i < n; i++) {
    for (let k = 0; k < c; k++) data.writeInt16LE(Math.round(Math.max(-1, Math.min(1, channels[k][i])) * 32767), (i * c + k) * 2);
  }
  const h = Buffer.alloc(44);
  h.write('RIFF', 0);
  h.writeUInt32LE(36 + data.length, 4);
  h.write('WAVE', 8);
  h.write('fmt ', 12);
  h.writeUInt32LE(16, 16);
  h.writeUInt16LE(1, 20);
  h.writeUInt16LE(c, 22);
  h.writeUInt32LE(sampleRate, 24);
  h.writeUInt32LE(sampleRate * c * 2, 28);
  h.writeUInt16LE(c * 2, 32);
  h.writeUInt16LE(16, 34);
  h.write('data', 36);
  h.writeUInt32LE(data.length, 40);
  return Buffer.concat([h, data]);
}

const AUDIO = {
  // heart sounds: "lub-dub" low-frequency bursts at 72 beats per minute, 2 s, 16 kHz mono
  'heartbeat_16k.wav': () => {
    const sr = 16000, n = sr * 2;
    const x = new Float32Array(n);
    const beat = 60 / 72;
    for (let i = 0; i < n; i++) {
      const t = i / sr;
      const p = t % beat;
      const burst = (t0, f, a) => (p >= t0 ? a * Math.exp(-(p - t0) * 35) * Math.sin(2 * Math.PI * f * (p - t0)) : 0);
      x[i] = burst(0, 55, 0.8) + burst(0.3, 75, 0.5);
    }
    return wav(sr, [x]);
  },
  // a rising tone (auscultation-app test signal), 1.5 s, 16 kHz mono
  'tone_sweep_16k.wav': () => {
    const sr = 16000, n = Math.round(sr * 1.5);
    const x = new Float32Array(n);
    let phase = 0;
    for (let i = 0; i < n; i++) {
      const f = 200 + (1800 * i) / n;
      phase += (2 * Math.PI * f) / sr;
      x[i] = 0.4 * Math.sin(phase) * Math.min(1, i / 800, (n - i) / 800);
    }
    return wav(sr, [x]);
  },
  // breathing noise: band-limited noise with an inhale/exhale envelope, 1 s, 22.05 kHz stereo (resampled by the loader)
  'breath_22k_stereo.wav': () => {
    const sr = 22050, n = sr;
    const rand = mulberry32(3);
    const l = new Float32Array(n), r = new Float32Array(n);
    let a = 0, b = 0;
    for (let i = 0; i < n; i++) {
      a = 0.97 * a + 0.03 * (rand() * 2 - 1);
      b = 0.97 * b + 0.03 * (rand() * 2 - 1);
      const env = Math.sin((Math.PI * i) / n) ** 2;
      l[i] = 4 * a * env;
      r[i] = 4 * (0.7 * a + 0.3 * b) * env;
    }
    return wav(sr, [l, r]);
  },
};

const files = [...Object.keys(IMAGES).map((f) => path.join(OUT, 'images', f)), ...Object.keys(AUDIO).map((f) => path.join(OUT, 'audio', f))];
if (args.includes('--if-missing') && files.every((f) => existsSync(f))) process.exit(0);
await fs.mkdir(path.join(OUT, 'images'), { recursive: true });
await fs.mkdir(path.join(OUT, 'audio'), { recursive: true });
for (const [name, make] of Object.entries(IMAGES)) await make().toFile(path.join(OUT, 'images', name));
for (const [name, make] of Object.entries(AUDIO)) await fs.writeFile(path.join(OUT, 'audio', name), make());
process.stderr.write(`wrote ${files.length} demo media files under ${path.relative(process.cwd(), OUT) || OUT}\n`);
