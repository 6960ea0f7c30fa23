/**
 * A strict RIFF/WAVE reader: walks the chunks (any `LIST`, `fact`, `cue `... before or after `data` are
 * skipped), reads `fmt ` including `WAVE_FORMAT_EXTENSIBLE`, and decodes PCM 8/16/24/32-bit and IEEE float
 * 32/64-bit to float32 with the usual conventions (`int16 / 32768`, 8-bit unsigned centred on 128).
 *
 * Every problem is an {@link InputError} naming the file: a truncated header, a `data` chunk longer than the
 * file, a codec other than PCM/float, a zero sample rate or channel count, no samples, non-finite samples.
 * @module
 */
import { InputError } from '@multimeditron/core';

/** `WAVE_FORMAT_PCM`: integer samples. */
export const WAVE_FORMAT_PCM = 0x0001;
/** `WAVE_FORMAT_IEEE_FLOAT`: 32- or 64-bit float samples. */
export const WAVE_FORMAT_IEEE_FLOAT = 0x0003;
/** `WAVE_FORMAT_EXTENSIBLE`: the real format is the first two bytes of the sub-format GUID. */
export const WAVE_FORMAT_EXTENSIBLE = 0xfffe;

const KNOWN_TAGS: Record<number, string> = {
  0x0002: 'Microsoft ADPCM',
  0x0006: 'A-law',
  0x0007: 'mu-law',
  0x0011: 'IMA ADPCM',
  0x0031: 'GSM 6.10',
  0x0050: 'MPEG',
  0x0055: 'MPEG Layer 3',
  0x0092: 'Dolby AC3 SPDIF',
  0x00ff: 'AAC',
  0x1610: 'HE-AAC',
  0x2000: 'Dolby AC3',
  0xf1ac: 'FLAC',
};

/** The `fmt ` chunk, resolved (for extensible files `formatTag` is the sub-format's). */
export interface WavFormat {
  /** 1 (PCM) or 3 (IEEE float). */
  formatTag: number;
  /** True when the file used `WAVE_FORMAT_EXTENSIBLE`. */
  extensible: boolean;
  /** Number of interleaved channels. */
  channels: number;
  /** Sample rate, Hz (> 0). */
  sampleRate: number;
  /** Container bits per sample (8, 16, 24, 32, 64). */
  bitsPerSample: number;
  /** Bytes per sample frame, `channels * bitsPerSample / 8`. */
  blockAlign: number;
}

/** A decoded WAV file: interleaved float32 samples. */
export interface DecodedWav {
  format: WavFormat;
  /** Interleaved samples, `frames * channels` values. */
  interleaved: Float32Array;
  /** Number of sample frames. */
  frames: number;
}

function fourcc(b: Uint8Array, o: number): string {
  return String.fromCharCode(b[o]!, b[o + 1]!, b[o + 2]!, b[o + 3]!);
}

/** True when `bytes` starts like a RIFF/WAVE file. */
export function isWav(bytes: Uint8Array): boolean {
  return bytes.length >= 12 && fourcc(bytes, 0) === 'RIFF' && fourcc(bytes, 8) === 'WAVE';
}

function tagName(tag: number): string {
  const hex = `0x${tag.toString(16).padStart(4, '0')}`;
  return KNOWN_TAGS[tag] ? `${hex} (${KNOWN_TAGS[tag]})` : hex;
}

function parseFmt(bytes: Uint8Array, dv: DataView, o: number, size: number, file: string): WavFormat {
  if (size < 16) throw new InputError(file, `WAV "fmt " chunk is ${size} bytes, expected at least 16`);
  let formatTag = dv.getUint16(o, true);
  const channels = dv.getUint16(o + 2, true);
  const sampleRate = dv.getUint32(o + 4, true);
  const blockAlign = dv.getUint16(o + 12, true);
  const bitsPerSample = dv.getUint16(o + 14, true);
  let extensible = false;
  if (formatTag === WAVE_FORMAT_EXTENSIBLE) {
    if (size < 40) throw new InputError(file, `WAVE_FORMAT_EXTENSIBLE "fmt " chunk is ${size} bytes, expected 40`);
    extensible = true;
    // the sub-format GUID starts with the format tag: xxxxxxxx-0000-0010-8000-00aa00389b71
    formatTag = dv.getUint16(o + 24, true);
    const guidTail = Array.from(bytes.subarray(o + 26, o + 40), (b) => b.toString(16).padStart(2, '0')).join('');
    if (guidTail !== '000000001000800000aa00389b71') {
      throw new InputError(file, `unsupported WAV codec: WAVE_FORMAT_EXTENSIBLE with an unknown sub-format GUID`);
    }
  }
  if (formatTag !== WAVE_FORMAT_PCM && formatTag !== WAVE_FORMAT_IEEE_FLOAT) {
    throw new InputError(file, `unsupported WAV codec: format tag ${tagName(formatTag)}; only PCM and IEEE float are decoded`, {
      suggestions: ['Convert the file to PCM WAV or FLAC, e.g. `ffmpeg -i in.wav -c:a pcm_s16le out.wav`.'],
    });
  }
  if (channels === 0) throw new InputError(file, 'WAV header declares 0 channels');
  if (sampleRate === 0) throw new InputError(file, 'WAV header declares a sample rate of 0 Hz');
  const okBits = formatTag === WAVE_FORMAT_PCM ? [8, 16, 24, 32] : [32, 64];
  if (!okBits.includes(bitsPerSample)) {
    throw new InputError(file, `unsupported WAV sample size: ${bitsPerSample}-bit ${formatTag === WAVE_FORMAT_PCM ? 'PCM' : 'float'}`);
  }
  const expectAlign = channels * (bitsPerSample / 8);
  if (blockAlign !== expectAlign) {
    throw new InputError(file, `WAV header is inconsistent: block align ${blockAlign}, expected ${expectAlign} for ${channels} x ${bitsPerSample}-bit`);
  }
  return { formatTag, extensible, channels, sampleRate, bitsPerSample, blockAlign };
}

/**
 * Decodes a RIFF/WAVE file to interleaved float32. `file` names the input in errors.
 *
 * A `data` chunk that claims more bytes than the file holds is an error (the file is truncated), except the
 * size `0xFFFFFFFF` that streaming writers use for "unknown length", which is read to the end of the file.
 */
export function decodeWav(bytes: Uint8Array, file = '<bytes>'): DecodedWav {
  if (bytes.length < 12) throw new InputError(file, `truncated WAV header: ${bytes.length} bytes, a RIFF header needs 12`);
  if (fourcc(bytes, 0) !== 'RIFF' || fourcc(bytes, 8) !== 'WAVE') {
    throw new InputError(file, 'not a RIFF/WAVE file');
  }
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let fmt: WavFormat | undefined;
  let pos = 12;
  for (;;) {
    if (pos + 8 > bytes.length) {
      throw new InputError(file, fmt
        ? 'WAV file has no "data" chunk (truncated?)'
        : `truncated WAV header: no complete "fmt " chunk in ${bytes.length} bytes`);
    }
    const id = fourcc(bytes, pos);
    const size = dv.getUint32(pos + 4, true);
    const body = pos + 8;
    if (id === 'data') {
      if (!fmt) throw new InputError(file, 'WAV "data" chunk comes before any "fmt " chunk');
      const available = bytes.length - body;
      let dataBytes = size;
      if (size === 0xffffffff) dataBytes = available;
      else if (size > available) {
        throw new InputError(file, `WAV "data" chunk declares ${size} bytes but only ${available} follow (the file is truncated)`);
      }
      return decodeSamples(bytes, dv, body, dataBytes, fmt, file);
    }
    if (body + size > bytes.length) {
      const what = fmt ? 'truncated WAV' : 'truncated WAV header';
      throw new InputError(file, `${what}: chunk "${id}" declares ${size} bytes but only ${bytes.length - body} follow`);
    }
    if (id === 'fmt ') fmt = parseFmt(bytes, dv, body, size, file);
    pos = body + size + (size & 1); // chunks are word-aligned
  }
}

function decodeSamples(bytes: Uint8Array, dv: DataView, start: number, size: number, fmt: WavFormat, file: string): DecodedWav {
  const frames = Math.floor(size / fmt.blockAlign);
  if (frames === 0) throw new InputError(file, 'WAV file contains no audio samples');
  const n = frames * fmt.channels;
  const out = new Float32Array(n);
  const { formatTag, bitsPerSample: bits } = fmt;
  if (formatTag === WAVE_FORMAT_PCM) {
    switch (bits) {
      case 8:
        for (let i = 0; i < n; i++) out[i] = (bytes[start + i]! - 128) / 128;
        break;
      case 16:
        for (let i = 0, p = start; i < n; i++, p += 2) out[i] = dv.getInt16(p, true) / 32768;
        break;
      case 24:
        for (let i = 0, p = start; i < n; i++, p += 3) {
          const v = bytes[p]! | (bytes[p + 1]! << 8) | (bytes[p + 2]! << 16);
          out[i] = ((v << 8) >> 8) / 8388608;
        }
        break;
      case 32:
        for (let i = 0, p = start; i < n; i++, p += 4) out[i] = dv.getInt32(p, true) / 2147483648;
        break;
    }
  } else if (bits === 32) {
    for (let i = 0, p = start; i < n; i++, p += 4) out[i] = dv.getFloat32(p, true);
  } else {
    for (let i = 0, p = start; i < n; i++, p += 8) out[i] = dv.getFloat64(p, true);
  }
  if (formatTag === WAVE_FORMAT_IEEE_FLOAT) {
    for (let i = 0; i < n; i++) {
      if (!Number.isFinite(out[i]!)) {
        throw new InputError(file, `non-finite sample (${out[i]}) at frame ${Math.floor(i / fmt.channels)}, channel ${i % fmt.channels}${bits === 64 ? ' (after conversion to float32)' : ''}`);
      }
    }
  }
  return { format: fmt, interleaved: out, frames };
}
