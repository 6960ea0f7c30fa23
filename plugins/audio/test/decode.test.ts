import { promises as fs } from 'node:fs';
import path from 'node:path';
import { InputError } from '@multimeditron/core';
import { decodeAudio, decodeWav, downmixInterleaved, sniffAudioFormat } from '@multimeditron/plugin-audio';
import { CASES, diff, float32Bytes, golden, int16Bytes, makeWav, OWN } from './helpers.js';

const read = (f: string) => fs.readFile(path.join(OWN, f));

/** Reads 16-bit PCM by hand from a canonical 44-byte-header file (independent of the reader). */
function naiveS16(buf: Buffer): Float32Array {
  const n = (buf.length - 44) / 2;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = buf.readInt16LE(44 + 2 * i) / 32768;
  return out;
}

describe('WAV reader', () => {
  test('16-bit PCM equals int16 / 32768, read independently', async () => {
    const buf = await read('src_s16.wav');
    const wav = decodeWav(buf, 'src_s16.wav');
    expect(wav.format).toMatchObject({ formatTag: 1, channels: 2, sampleRate: 16000, bitsPerSample: 16, extensible: false });
    expect(wav.frames).toBe(3200);
    expect(Array.from(wav.interleaved)).toEqual(Array.from(naiveS16(buf)));
  });

  test.each([
    ['s24.wav', 24, true, 1],
    ['s32.wav', 32, true, 1],
    ['f32.wav', 32, false, 3],
    ['f64.wav', 64, false, 3],
  ])('%s (sox: %i-bit, extensible %s) decodes to exactly the 16-bit values', async (file, bits, ext, tag) => {
    const ref = decodeWav(await read('src_s16.wav'));
    const wav = decodeWav(await read(file), file);
    expect(wav.format).toMatchObject({ bitsPerSample: bits, extensible: ext, formatTag: tag, channels: 2, sampleRate: 16000 });
    expect(diff(wav.interleaved, ref.interleaved).max).toBe(0);
  });

  test('8-bit unsigned PCM is centred on 128 (sox dithered it: within 1.5 levels)', async () => {
    const ref = decodeWav(await read('src_s16.wav'));
    const wav = decodeWav(await read('u8.wav'), 'u8.wav');
    expect(wav.format.bitsPerSample).toBe(8);
    expect(diff(wav.interleaved, ref.interleaved).max).toBeLessThanOrEqual(1.5 / 128);
    const exact = decodeWav(makeWav({ bits: 8, data: Uint8Array.from([0, 64, 128, 192, 255]) }));
    expect(Array.from(exact.interleaved)).toEqual([-1, -0.5, 0, 0.5, 127 / 128]);
  });

  test('24-bit and 32-bit full-scale values', () => {
    const d24 = Uint8Array.from([0x00, 0x00, 0x80, 0xff, 0xff, 0x7f, 0x00, 0x00, 0xc0]);
    expect(Array.from(decodeWav(makeWav({ bits: 24, data: d24 })).interleaved)).toEqual([-1, 8388607 / 8388608, -0.5]);
    const d32 = Buffer.alloc(8);
    d32.writeInt32LE(-2147483648, 0);
    d32.writeInt32LE(1073741824, 4);
    expect(Array.from(decodeWav(makeWav({ bits: 32, data: d32, extensibleSubFormat: 1 })).interleaved)).toEqual([-1, 0.5]);
  });

  test('walks past chunks before data (LIST in speech_6s.wav, fact, odd-sized chunks)', async () => {
    const buf = await fs.readFile(golden('audio', 'speech_6s.wav'));
    const wav = decodeWav(buf, 'speech_6s.wav');
    expect(wav.frames).toBe(CASES.find((c) => c.name === 'speech_6s')!.num_frames);
    const odd = makeWav({ data: int16Bytes([1000, -1000]), extraChunks: [{ id: 'LIST', body: Buffer.from('INFOabc') }, { id: 'junk', body: Buffer.alloc(3) }] });
    expect(Array.from(decodeWav(odd).interleaved)).toEqual([1000 / 32768, -1000 / 32768]);
  });

  test('a data size of 0xFFFFFFFF (streamed WAV) is read to the end of the file', () => {
    const wav = decodeWav(makeWav({ data: int16Bytes([1, 2, 3]), dataSize: 0xffffffff }));
    expect(wav.frames).toBe(3);
  });

  test('downmix averages channels in float32', () => {
    const x = Float32Array.from([0.1, 0.3, -1, 1, 0.25, 0.5]);
    expect(Array.from(downmixInterleaved(x, 2))).toEqual([Math.fround(0.2), 0, 0.375]);
  });
});

describe('WAV bad input: typed InputError naming the file', () => {
  const bad: Array<[string, Uint8Array, RegExp]> = [
    ['truncated header (20 bytes)', makeWav({ data: int16Bytes([1, 2]) }).subarray(0, 20), /truncated WAV header/],
    ['header cut before data', makeWav({ data: int16Bytes([1, 2]) }).subarray(0, 36), /no "data" chunk/],
    ['data chunk longer than the file', makeWav({ data: int16Bytes([1, 2, 3, 4]), dataSize: 4000 }), /declares 4000 bytes but only 8 follow/],
    ['zero samples', makeWav({ data: new Uint8Array(0) }), /no audio samples/],
    ['format tag 0x55 (MP3 in WAV)', makeWav({ formatTag: 0x55, data: int16Bytes([1, 2]) }), /unsupported WAV codec: format tag 0x0055 \(MPEG Layer 3\)/],
    ['extensible with an ADPCM sub-format', makeWav({ extensibleSubFormat: 2, data: int16Bytes([1, 2]) }), /format tag 0x0002/],
    ['NaN float sample', makeWav({ formatTag: 3, bits: 32, data: float32Bytes([0.5, NaN]) }), /non-finite sample \(NaN\) at frame 1/],
    ['Inf float sample', makeWav({ formatTag: 3, bits: 32, channels: 2, data: float32Bytes([0, 0, Infinity, 0]) }), /non-finite sample \(Infinity\) at frame 1, channel 0/],
    ['sample rate 0', makeWav({ sampleRate: 0, data: int16Bytes([1, 2]) }), /sample rate of 0 Hz/],
    ['0 channels', makeWav({ channels: 0, data: int16Bytes([1, 2]) }), /0 channels/],
    ['12-bit PCM', makeWav({ bits: 12, data: int16Bytes([1, 2]) }), /unsupported WAV sample size/],
  ];
  test.each(bad)('%s', async (_name, bytes, message) => {
    const err = await decodeAudio(bytes, 'bad.wav').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InputError);
    expect((err as InputError).file).toBe('bad.wav');
    expect((err as InputError).code).toBe('E_INPUT');
    expect((err as Error).message).toMatch(message);
    expect((err as Error).message.startsWith('bad.wav: ')).toBe(true);
  });

  test('an unknown container is rejected, naming the file', async () => {
    const err = await decodeAudio(Buffer.from('this is not audio, just some text bytes'), 'notes.txt').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InputError);
    expect((err as Error).message).toMatch(/notes\.txt: unrecognised audio format \(first bytes 74 68 69 73/);
    await expect(decodeAudio(new Uint8Array(0), 'empty.wav')).rejects.toThrow(/empty\.wav: empty file/);
  });
});

describe('compressed formats', () => {
  test('sniffing by content, not by name', async () => {
    expect(sniffAudioFormat(await read('src44.flac'))).toBe('flac');
    expect(sniffAudioFormat(await read('src44.mp3'))).toBe('mp3');
    expect(sniffAudioFormat(await read('src44.ogg'))).toBe('ogg-vorbis');
    expect(sniffAudioFormat(await read('src44_s16.wav'))).toBe('wav');
  });

  test('FLAC decodes to exactly the WAV it was encoded from (int / 32768 convention)', async () => {
    const wav = await decodeAudio(await read('src44_s16.wav'), 'w');
    const flac = await decodeAudio(await read('src44.flac'), 'src44.flac');
    expect(flac).toMatchObject({ format: 'flac', sampleRate: 44100, channels: 2 });
    expect(flac.samples.length).toBe(22050);
    expect(diff(flac.samples, wav.samples).max).toBe(0);
  });

  test.each([
    ['src44.mp3', 'mp3', 2],
    ['mono44.mp3', 'mp3', 1],
    ['src44.ogg', 'ogg-vorbis', 2],
  ])('%s: lossy, same length, close to the source', async (file, format, channels) => {
    const wav = await decodeAudio(await read('src44_s16.wav'), 'w');
    const x = await decodeAudio(await read(file), file);
    expect(x).toMatchObject({ format, sampleRate: 44100, channels });
    expect(x.samples.length).toBe(22050);
    if (channels === 2) {
      let dot = 0;
      let na = 0;
      let nb = 0;
      for (let i = 0; i < x.samples.length; i++) {
        dot += x.samples[i]! * wav.samples[i]!;
        na += x.samples[i]! ** 2;
        nb += wav.samples[i]! ** 2;
      }
      expect(dot / Math.sqrt(na * nb)).toBeGreaterThan(0.9999);
      expect(diff(x.samples, wav.samples).max).toBeLessThan(0.05);
    }
  });

  test('targetSampleRate resamples after decoding', async () => {
    const x = await decodeAudio(await read('src44.flac'), 'src44.flac', { targetSampleRate: 16000 });
    expect(x.sampleRate).toBe(16000);
    expect(x.samples.length).toBe(Math.ceil((22050 * 16000) / 44100));
  });

  test.each([
    ['truncated FLAC', 'src44.flac', 3000, /src44\.flac: (truncated FLAC|no audio samples)/],
    ['truncated Ogg Vorbis', 'src44.ogg', 5000, /src44\.ogg: .*(truncated|incomplete)/],
    ['Ogg cut inside its headers', 'src44.ogg', 2000, /src44\.ogg: /],
  ])('%s is an InputError', async (_n, file, keep, message) => {
    const bytes = (await read(file)).subarray(0, keep);
    const err = await decodeAudio(bytes, file).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InputError);
    expect((err as Error).message).toMatch(message);
  });

  test('FLAC, MP3 and Ogg with garbage after the magic bytes are InputErrors', async () => {
    const junk = Buffer.alloc(400, 0x5a);
    for (const [magic, name] of [['fLaC', 'x.flac'], ['ID3\u0003\u0000\u0000\u0000\u0000\u0000\u0000', 'x.mp3']] as const) {
      const err = await decodeAudio(Buffer.concat([Buffer.from(magic, 'latin1'), junk]), name).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(InputError);
      expect((err as InputError).file).toBe(name);
    }
    const opus = Buffer.concat([Buffer.from('OggS', 'latin1'), Buffer.alloc(22), Buffer.from([1, 19]), Buffer.from('OpusHead'), Buffer.alloc(11)]);
    await expect(decodeAudio(opus, 'voice.opus')).rejects.toThrow(/voice\.opus: unsupported codec in Ogg container/);
  });
});
