/**
 * The embedding pipeline: a streamed, resumable dataset -> embeddings run ({@link runEmbedding}), its run config
 * ({@link loadRunConfig}) and its output format ({@link ShardWriter}, {@link readShards}).
 * @module
 */
export * from './run-config.js';
export * from './shards.js';
export * from './run.js';
