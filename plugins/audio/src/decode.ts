/**
 * Audio decoding to the raw form every audio processor takes: mono float32 PCM at the file's rate.
 *
 * Containers are recognised by their magic bytes, not by file extension. WAV goes through our own strict
 * RIFF reader ({@link decodeWav}); FLAC, MP3 and Ogg Vorbis go through the maintained WebAssembly decoders of
 * the `wasm-audio-decoders` family (`@wasm-audio-decoders/flac` = libFLAC, `mpg123-decoder` = libmpg123,
 * `@wasm-audio-decoders/ogg-vorbis` = libvorbis), loaded on first use.
 * @module
 */
import { InputError } from '@multimeditron/core';
import { decodeWav, isWav } from './wav.js';
import { resample, type SincResampleOptions } from './resample.js';

/** The containers {@link decodeAudio} reads. */
export type AudioFormat = 'wav' | 'flac' | 'mp3' | 'ogg-vorbis';

/** A loaded recording: the output of the `fs-audio` and `raw-audio` loaders. */
export interface RawAudio {
  /** Mono samples (channels averaged), float32, nominally in [-1, 1]. */
  samples: Float32Array;
  /** Sampling rate of {@link samples}, Hz. */
  sampleRate: number;
  /** Number of channels in the source, before downmixing. */
  channels: number;
  /** Where it came from (a path, or `<bytes>`), used in error messages. */
  source: string;
  /** The container it was decoded from. */
  format?: AudioFormat;
}

/** Options of {@link decodeAudio}. */
export interface DecodeAudioOptions {
  /** Resample to this rate (Hz) after decoding; default: keep the file's rate. */
  targetSampleRate?: number;
  /** Resampler options used with `targetSampleRate`. */
  resampler?: SincResampleOptions;
}

/** Identifies the container from the first bytes; `undefined` when unknown. */
export function sniffAudioFormat(bytes: Uint8Array): AudioFormat | 'ogg-other' | undefined {
  const s = (o: number, n: number) => String.fromCharCode(...bytes.subarray(o, o + n));
  if (isWav(bytes)) return 'wav';
  if (bytes.length >= 4 && s(0, 4) === 'fLaC') return 'flac';
  if (bytes.length >= 4 && s(0, 4) === 'OggS') {
    // the first page carries the codec's identification header
    if (bytes.length >= 28) {
      const nseg = bytes[26]!;
      const body = 27 + nseg;
      if (bytes.length >= body + 7 && bytes[body] === 1 && s(body + 1, 6) === 'vorbis') return 'ogg-vorbis';
    }
    return 'ogg-other';
  }
  const o = id3Skip(bytes);
  if (o > 0 && s(o, 4) === 'fLaC') return 'flac';
  if (mpegHeaderAt(bytes, o)) return 'mp3';
  return undefined;
}

/** Length of a leading ID3v2 tag (0 if none): 10-byte header + syncsafe size (+ 10-byte footer when flagged). */
function id3Skip(bytes: Uint8Array): number {
  if (bytes.length < 10 || bytes[0] !== 0x49 || bytes[1] !== 0x44 || bytes[2] !== 0x33) return 0;
  const size = ((bytes[6]! & 0x7f) << 21) | ((bytes[7]! & 0x7f) << 14) | ((bytes[8]! & 0x7f) << 7) | (bytes[9]! & 0x7f);
  return 10 + size + (bytes[5]! & 0x10 ? 10 : 0);
}

/**
 * True when an MPEG audio frame header starts at `o`: 11 set sync bits, a valid version, layer, bitrate
 * and sample-rate index.
 */
function mpegHeaderAt(bytes: Uint8Array, o: number): boolean {
  if (bytes.length < o + 4 || bytes[o] !== 0xff || (bytes[o + 1]! & 0xe0) !== 0xe0) return false;
  const version = (bytes[o + 1]! >> 3) & 3;
  const layer = (bytes[o + 1]! >> 1) & 3;
  const bitrate = bytes[o + 2]! >> 4;
  const rate = (bytes[o + 2]! >> 2) & 3;
  return version !== 1 && layer !== 0 && bitrate !== 15 && rate !== 3;
}

/** Channel count from the first MPEG frame header (libmpg123's wrapper always returns two channels). */
function mpegChannels(bytes: Uint8Array): number | undefined {
  const o = id3Skip(bytes);
  return mpegHeaderAt(bytes, o) ? ((bytes[o + 3]! >> 6) === 3 ? 1 : 2) : undefined;
}

function hexStart(bytes: Uint8Array): string {
  return Array.from(bytes.subarray(0, 8), (b) => b.toString(16).padStart(2, '0')).join(' ');
}

/** Averages planar channels into one float32 channel (sum in float64, then divide). */
export function downmixPlanar(channels: Float32Array[], frames: number): Float32Array {
  if (channels.length === 1) return channels[0]!.length === frames ? channels[0]! : channels[0]!.slice(0, frames);
  const out = new Float32Array(frames);
  const c = channels.length;
  for (let i = 0; i < frames; i++) {
    let s = 0;
    for (let k = 0; k < c; k++) s += channels[k]![i]!;
    out[i] = s / c;
  }
  return out;
}

/** Averages interleaved channels into one float32 channel (sum in float64, then divide). */
export function downmixInterleaved(x: Float32Array, channels: number): Float32Array {
  if (channels === 1) return x;
  const frames = Math.floor(x.length / channels);
  const out = new Float32Array(frames);
  for (let i = 0, p = 0; i < frames; i++) {
    let s = 0;
    for (let k = 0; k < channels; k++, p++) s += x[p]!;
    out[i] = s / channels;
  }
  return out;
}

function checkFinite(x: Float32Array, file: string): void {
  for (let i = 0; i < x.length; i++) {
    if (!Number.isFinite(x[i]!)) throw new InputError(file, `non-finite sample (${x[i]}) at frame ${i}`);
  }
}

/** Total samples from a FLAC STREAMINFO block (0 = unknown). */
function flacTotalSamples(bytes: Uint8Array): { total: number; sampleRate: number } | undefined {
  // "fLaC", block header (type 0 = STREAMINFO, 34 bytes), then the block
  if (bytes.length < 8 + 34 || (bytes[4]! & 0x7f) !== 0) return undefined;
  const b = 8;
  const sampleRate = (bytes[b + 10]! << 12) | (bytes[b + 11]! << 4) | (bytes[b + 12]! >> 4);
  const total = (bytes[b + 13]! & 0x0f) * 2 ** 32 + ((bytes[b + 14]! << 24) >>> 0) + (bytes[b + 15]! << 16) + (bytes[b + 16]! << 8) + bytes[b + 17]!;
  return { total, sampleRate };
}

/** Walks the Ogg pages; returns a reason if the stream is cut short. */
function oggTruncation(bytes: Uint8Array): string | undefined {
  let pos = 0;
  let lastType = 0;
  while (pos < bytes.length) {
    if (pos + 27 > bytes.length || String.fromCharCode(...bytes.subarray(pos, pos + 4)) !== 'OggS') {
      return `Ogg page at byte ${pos} is incomplete or damaged`;
    }
    const nseg = bytes[pos + 26]!;
    if (pos + 27 + nseg > bytes.length) return `Ogg page at byte ${pos} is incomplete`;
    let body = 0;
    for (let i = 0; i < nseg; i++) body += bytes[pos + 27 + i]!;
    const next = pos + 27 + nseg + body;
    if (next > bytes.length) return `Ogg page at byte ${pos} is cut short (the file is truncated)`;
    lastType = bytes[pos + 5]!;
    pos = next;
  }
  return lastType & 0x04 ? undefined : 'the Ogg stream has no end-of-stream page (the file is truncated)';
}

interface Decoded {
  channelData: Float32Array[];
  samplesDecoded: number;
  sampleRate: number;
  errors: Array<{ message: string }>;
  bitDepth?: number;
}

async function decodeCompressed(format: 'flac' | 'mp3' | 'ogg-vorbis', bytes: Uint8Array, file: string): Promise<Decoded> {
  const what = format === 'ogg-vorbis' ? 'Ogg Vorbis' : format.toUpperCase();
  try {
    if (format === 'flac') {
      const { FLACDecoder } = await import('@wasm-audio-decoders/flac');
      const d = new FLACDecoder();
      await d.ready;
      try {
        return await d.decodeFile(bytes);
      } finally {
        d.free();
      }
    }
    if (format === 'ogg-vorbis') {
      const { OggVorbisDecoder } = await import('@wasm-audio-decoders/ogg-vorbis');
      const d = new OggVorbisDecoder();
      await d.ready;
      try {
        return await d.decodeFile(bytes);
      } finally {
        d.free();
      }
    }
    const { MPEGDecoder } = await import('mpg123-decoder');
    const d = new MPEGDecoder();
    await d.ready;
    try {
      return d.decode(bytes);
    } finally {
      d.free();
    }
  } catch (e) {
    throw new InputError(file, `${what} decoder failed: ${(e as Error)?.message ?? String(e)}`, { cause: e });
  }
}

/**
 * Decodes a WAV, FLAC, MP3 or Ogg Vorbis file (recognised by content) to {@link RawAudio}: mono (channels
 * averaged in float32) at the file's rate, or at `options.targetSampleRate` if given.
 * Throws {@link InputError} naming `file` on anything it cannot decode faithfully.
 */
export async function decodeAudio(bytes: Uint8Array, file = '<bytes>', options: DecodeAudioOptions = {}): Promise<RawAudio> {
  if (bytes.length === 0) throw new InputError(file, 'empty file');
  const format = sniffAudioFormat(bytes);
  let samples: Float32Array;
  let sampleRate: number;
  let channels: number;
  if (format === 'wav') {
    const wav = decodeWav(bytes, file);
    samples = downmixInterleaved(wav.interleaved, wav.format.channels);
    sampleRate = wav.format.sampleRate;
    channels = wav.format.channels;
  } else if (format === 'flac' || format === 'mp3' || format === 'ogg-vorbis') {
    const r = await decodeCompressed(format, bytes, file);
    if (r.errors?.length) throw new InputError(file, `corrupt ${format} data: ${r.errors[0]!.message}`);
    if (!r.samplesDecoded || r.channelData.length === 0) {
      throw new InputError(file, `no audio samples could be decoded (corrupt or truncated ${format} file)`);
    }
    if (!(r.sampleRate > 0)) throw new InputError(file, `the ${format} stream declares a sample rate of ${r.sampleRate} Hz`);
    if (format === 'flac') {
      const info = flacTotalSamples(bytes);
      if (info && info.total > 0 && r.samplesDecoded < info.total) {
        throw new InputError(file, `truncated FLAC: decoded ${r.samplesDecoded} of the ${info.total} samples its header declares`);
      }
      // libFLAC's wrapper scales by 1 / (2^(b-1) - 1); recover the integers and use the int / 2^(b-1)
      // convention of WAV (and of libsndfile / soundfile / torchaudio for FLAC).
      const b = r.bitDepth ?? 16;
      const up = 2 ** (b - 1) - 1;
      const down = 2 ** (b - 1);
      for (const ch of r.channelData) for (let i = 0; i < r.samplesDecoded; i++) ch[i] = Math.round(ch[i]! * up) / down;
    } else if (format === 'ogg-vorbis') {
      const cut = oggTruncation(bytes);
      if (cut) throw new InputError(file, cut);
    }
    // mono MP3 comes back as two identical channels
    const planes = format === 'mp3' && mpegChannels(bytes) === 1 ? r.channelData.slice(0, 1) : r.channelData;
    samples = downmixPlanar(planes, r.samplesDecoded);
    sampleRate = r.sampleRate;
    channels = planes.length;
  } else if (format === 'ogg-other') {
    throw new InputError(file, 'unsupported codec in Ogg container (only Vorbis is decoded; Opus and Ogg FLAC are not)');
  } else {
    throw new InputError(file, `unrecognised audio format (first bytes ${hexStart(bytes)}); supported: WAV (PCM/float), FLAC, MP3, Ogg Vorbis`);
  }
  if (samples.length === 0) throw new InputError(file, 'no audio samples');
  checkFinite(samples, file);
  if (options.targetSampleRate !== undefined && options.targetSampleRate !== sampleRate) {
    samples = resample(samples, sampleRate, options.targetSampleRate, options.resampler);
    sampleRate = options.targetSampleRate;
  }
  return { samples, sampleRate, channels, source: file, format: format === 'ogg-vorbis' ? 'ogg-vorbis' : format };
}
