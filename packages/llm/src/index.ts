/**
 * @multimeditron/llm: decoder-only language models (Llama, Qwen3, and families added by plugins) loaded from
 * Hugging Face folders, a KV cache, sampling and streaming generation, and the MultiMeditron model that
 * writes modality embeddings into the decoder's input.
 * @packageDocumentation
 */
import 'reflect-metadata';

export * from './errors.js';
export * from './config.js';
export * from './rope.js';
export * from './cache.js';
export * from './decoder.js';
export * from './registry.js';
export * from './families.js';
export * from './auto.js';
export * from './tokenizer.js';
export * from './generation/config.js';
export * from './generation/rng.js';
export * from './generation/processors.js';
export * from './generation/generate.js';
export * from './multimeditron.js';
