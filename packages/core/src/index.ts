/**
 * @multimeditron/core: the modality pipeline's abstractions, registries, DI, plugin discovery, config
 * validation, safetensors and model-folder I/O, and backend selection.
 * @packageDocumentation
 */
import 'reflect-metadata';

export * from './constants.js';
export * from './errors.js';
export * from './config.js';
export * from './tensor.js';
export * from './context.js';
export * from './loader.js';
export * from './processor.js';
export * from './modality.js';
export * from './projectors.js';
export * from './registry.js';
export * from './plugins.js';
export * from './auto.js';
export * from './backend.js';
export * from './gradients.js';
export * from './hub.js';
export * from './safetensors.js';
export * from './multimeditron.js';
export type { DuplicateCopy } from './internal/duplicates.js';
export * from './data/index.js';
export * from './pipeline/index.js';
