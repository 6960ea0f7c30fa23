/**
 * Data pipeline: dataset readers, sample validation, collator and embedding merge (being written).
 * @module
 */
export {};
