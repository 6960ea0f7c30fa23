/** Shared helpers of the plugin-audio tests. */
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { readSafetensors, type Logger, type ReadTensor } from '@multimeditron/core';
import { golden, manifest } from '../../../test/helpers/fixtures.js';

export { compare, golden, manifest } from '../../../test/helpers/fixtures.js';

/** One `whisper.cases` entry of the manifest. */
export interface WhisperCase {
  name: string;
  audio: string;
  sample_rate: number;
  channels: number;
  num_frames: number;
  needs_resample_or_downmix: boolean;
  keys: Record<string, string>;
}

export const WHISPER_DIR = golden('whisper-tiny');
export const CASES: WhisperCase[] = manifest().whisper.cases;
export const TOL = manifest().whisper.tolerances;
/** This package's own small fixtures (made with sox, flac, lame and oggenc; see fixtures/README.md). */
export const OWN = path.join(path.dirname(fileURLToPath(import.meta.url)), 'fixtures');

let expected: Map<string, ReadTensor> | undefined;
/** The tensors of expected/whisper-tiny.safetensors (read once). */
export async function expectedTensors(): Promise<Map<string, ReadTensor>> {
  expected ??= (await readSafetensors(golden('expected', 'whisper-tiny.safetensors'))).tensors;
  return expected;
}

/** An expected float tensor's data. */
export async function expectedData(key: string): Promise<Float32Array> {
  const t = (await expectedTensors()).get(key);
  if (!t) throw new Error(`no expected tensor ${key}`);
  return t.data as Float32Array;
}

/** A fresh temporary folder. */
export async function tempDir(prefix = 'mm-audio-'): Promise<string> {
  return fs.mkdtemp(path.join(os.tmpdir(), prefix));
}

/** Max and mean |a - b|. */
export function diff(a: ArrayLike<number>, b: ArrayLike<number>): { max: number; mean: number } {
  if (a.length !== b.length) throw new Error(`length ${a.length} != ${b.length}`);
  let max = 0;
  let sum = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i]! - b[i]!);
    if (!(d <= max)) max = Number.isNaN(d) ? Infinity : d;
    sum += d;
  }
  return { max, mean: sum / a.length };
}

/** A logger that records what it is told. */
export class RecordingLogger implements Logger {
  readonly messages: Array<{ level: string; message: string }> = [];
  debug(m: string): void { this.messages.push({ level: 'debug', message: m }); }
  info(m: string): void { this.messages.push({ level: 'info', message: m }); }
  warn(m: string): void { this.messages.push({ level: 'warn', message: m }); }
  error(m: string): void { this.messages.push({ level: 'error', message: m }); }
  get warnings(): string[] {
    return this.messages.filter((m) => m.level === 'warn').map((m) => m.message);
  }
}

/** Options of {@link makeWav}. */
export interface WavSpec {
  formatTag?: number;
  channels?: number;
  sampleRate?: number;
  bits?: number;
  /** Raw sample bytes of the data chunk. */
  data?: Uint8Array;
  /** Override the data chunk's declared size. */
  dataSize?: number;
  /** Extra chunks inserted between "fmt " and "data". */
  extraChunks?: Array<{ id: string; body: Uint8Array }>;
  /** Write WAVE_FORMAT_EXTENSIBLE with this sub-format tag. */
  extensibleSubFormat?: number;
}

/**
 * Writes a WAV file byte by byte (an independent writer for the reader's tests: it follows the RIFF
 * specification, not the reader's code).
 */
export function makeWav(spec: WavSpec): Buffer {
  const channels = spec.channels ?? 1;
  const bits = spec.bits ?? 16;
  const rate = spec.sampleRate ?? 16000;
  const data = spec.data ?? new Uint8Array(0);
  const ext = spec.extensibleSubFormat !== undefined;
  const fmt = Buffer.alloc(ext ? 40 : 16);
  fmt.writeUInt16LE(ext ? 0xfffe : (spec.formatTag ?? 1), 0);
  fmt.writeUInt16LE(channels, 2);
  fmt.writeUInt32LE(rate, 4);
  fmt.writeUInt32LE(rate * channels * (bits / 8), 8);
  fmt.writeUInt16LE(channels * (bits / 8), 12);
  fmt.writeUInt16LE(bits, 14);
  if (ext) {
    fmt.writeUInt16LE(22, 16);
    fmt.writeUInt16LE(bits, 18);
    fmt.writeUInt32LE(channels === 2 ? 3 : 4, 20);
    Buffer.from([spec.extensibleSubFormat! & 0xff, spec.extensibleSubFormat! >> 8, 0, 0, 0, 0, 0x10, 0, 0x80, 0, 0, 0xaa, 0, 0x38, 0x9b, 0x71]).copy(fmt, 24);
  }
  const chunk = (id: string, body: Uint8Array, size = body.length) => {
    const h = Buffer.alloc(8);
    h.write(id, 0, 'latin1');
    h.writeUInt32LE(size >>> 0, 4);
    return Buffer.concat([h, body, body.length & 1 ? Buffer.alloc(1) : Buffer.alloc(0)]);
  };
  const parts = [chunk('fmt ', fmt), ...(spec.extraChunks ?? []).map((c) => chunk(c.id, c.body)), chunk('data', data, spec.dataSize ?? data.length)];
  const body = Buffer.concat([Buffer.from('WAVE', 'latin1'), ...parts]);
  const riff = Buffer.alloc(8);
  riff.write('RIFF', 0, 'latin1');
  riff.writeUInt32LE(body.length, 4);
  return Buffer.concat([riff, body]);
}

/** int16 little-endian bytes of the given values. */
export function int16Bytes(values: number[]): Uint8Array {
  const b = Buffer.alloc(values.length * 2);
  values.forEach((v, i) => b.writeInt16LE(v, 2 * i));
  return b;
}

/** float32 little-endian bytes of the given values. */
export function float32Bytes(values: number[]): Uint8Array {
  const b = Buffer.alloc(values.length * 4);
  values.forEach((v, i) => b.writeFloatLE(v, 4 * i));
  return b;
}
