/**
 * @multimeditron/plugin-audio: audio loaders (`fs-audio`, `raw-audio`: WAV, FLAC, MP3, Ogg Vorbis), a
 * torchaudio-equivalent sinc resampler, Whisper's log-mel feature extractor, and the `meditron_whisper`
 * modality (Whisper encoder + projector).
 * @packageDocumentation
 */
import 'reflect-metadata';
import { definePlugin } from '@multimeditron/core';
import { FsAudioLoader, RawAudioLoader } from './loaders.js';
import { AudioModality } from './modality.js';

export * from './config.js';
export * from './decode.js';
export * from './encoder.js';
export * from './features.js';
export * from './loaders.js';
export * from './mel.js';
export * from './modality.js';
export * from './processor.js';
export * from './resample.js';
export * from './wav.js';

/** The plugin manifest: one modality, two loaders. */
export default definePlugin({
  name: '@multimeditron/plugin-audio',
  version: '0.1.0',
  apiVersion: 1,
  modalities: [AudioModality],
  loaders: [FsAudioLoader, RawAudioLoader],
});
