/**
 * The embedding pipeline (streamed, resumable dataset -> embeddings run) (being written).
 * @module
 */
export {};
