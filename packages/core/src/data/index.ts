/**
 * Data pipeline: dataset readers and sample validation, loader choice, the collator and the embedding merge.
 * @module
 */
export * from './sample.js';
export * from './dataset.js';
export * from './loading.js';
export * from './collator.js';
export * from './merge.js';
export * from './group.js';
