import * as tf from '@tensorflow/tfjs-core';
import { Collator, groupByType, mergeEmbeddings, selectBackend, ShapeError, type Sample } from '@multimeditron/core';
import { LLAMA_DIR } from './helpers.js';

const PH = '<|reserved_special_token_0|>';
const HIDDEN = 3;
let collator: Collator;
let table: tf.Tensor2D;
let vocab: number;

/** Token row i is [i, -i, i / 2]; modality k, row j is [1e6 + 1000k + j, k, j]. */
const tokenRow = (i: number) => [i, -i, i / 2];
const modRow = (k: number, j: number) => [1e6 + 1000 * k + j, k, j];

beforeAll(async () => {
  await selectBackend({ backend: 'wasm' });
  collator = await Collator.fromFolder(LLAMA_DIR, { modalityStartToken: '<|reserved_special_token_1|>', paddingSide: 'left' });
  vocab = collator.tokenizer.get_vocab(true).size;
  const data = new Float32Array(vocab * HIDDEN);
  for (let i = 0; i < vocab; i++) data.set(tokenRow(i), i * HIDDEN);
  table = tf.tensor2d(data, [vocab, HIDDEN]);
});

afterAll(() => table.dispose());

const samples: Sample[] = [
  { text: `One ${PH} and two ${PH}.`, modalities: [{ type: 'image', value: 'a.png' }, { type: 'audio', value: 'a.wav' }] },
  { text: 'No attachment here.', modalities: [] },
  {
    conversations: [{ role: 'user', content: `${PH} What is it?` }, { role: 'assistant', content: 'A cat.' }],
    modalities: [{ type: 'image', value: 'b.png' }],
  },
];

test('mergeEmbeddings: slot by slot, modality rows in the placeholder slots and token rows elsewhere; no leak', () => {
  const batch = collator.collate([
    { sample: samples[0]!, numEmbeddings: [3, 2] },
    { sample: samples[1]!, numEmbeddings: [] },
    { sample: samples[2]!, numEmbeddings: [4] },
  ]);
  expect(batch.modalityRanges.length).toBe(3);
  const mods = batch.modalityRanges.map((r, k) =>
    tf.tensor2d(Array.from({ length: r.end - r.start }, (_, j) => modRow(k, j)), [r.end - r.start, HIDDEN]));
  const before = tf.memory().numTensors;
  const out = mergeEmbeddings(table, batch, mods);
  expect(tf.memory().numTensors).toBe(before + 1);
  expect(out.shape).toEqual([batch.batchSize, batch.seqLength, HIDDEN]);
  const got = out.arraySync();
  out.dispose();
  expect(tf.memory().numTensors).toBe(before);
  mods.forEach((m) => m.dispose());

  const slotOf = new Map<string, [number, number]>();
  batch.modalityRanges.forEach((r, k) => {
    for (let p = r.start; p < r.end; p++) slotOf.set(`${r.batchIndex}:${p}`, [k, p - r.start]);
  });
  let slotsSeen = 0;
  for (let b = 0; b < batch.batchSize; b++) {
    for (let p = 0; p < batch.seqLength; p++) {
      const s = slotOf.get(`${b}:${p}`);
      if (s) slotsSeen++;
      const expected = s ? modRow(s[0], s[1]) : tokenRow(batch.inputIds[b * batch.seqLength + p]!);
      expect(got[b]![p]).toEqual(expected);
    }
  }
  expect(slotsSeen).toBe(3 + 2 + 4);
});

test('mergeEmbeddings checks counts, shapes and ids', () => {
  const batch = collator.collate([{ sample: samples[0]!, numEmbeddings: [2, 2] }]);
  const ok = tf.zeros([2, HIDDEN]) as tf.Tensor2D;
  const wrong = tf.zeros([3, HIDDEN]) as tf.Tensor2D;
  const before = tf.memory().numTensors;
  expect(() => mergeEmbeddings(table, batch, [ok])).toThrow(ShapeError);
  expect(() => mergeEmbeddings(table, batch, [ok, wrong])).toThrow(/modalityEmbeddings\[1\] \(audio, batch 0\) is \[3,3\], expected \[2, 3\]/);
  const small = tf.zeros([100, HIDDEN]) as tf.Tensor2D;
  expect(() => mergeEmbeddings(small, batch, [ok, ok])).toThrow(/outside the embedding table/);
  expect(tf.memory().numTensors).toBe(before + 1);
  [ok, wrong, small].forEach((t) => t.dispose());
});

test('mergeEmbeddings with no modality keeps plain token embeddings', () => {
  const batch = collator.collate([{ sample: samples[1]!, numEmbeddings: [] }]);
  const before = tf.memory().numTensors;
  const out = mergeEmbeddings(table, batch, []);
  const got = out.arraySync();
  out.dispose();
  expect(tf.memory().numTensors).toBe(before);
  expect(got[0]).toEqual(Array.from(batch.inputIds).map(tokenRow));
});

test('groupByType: types in first-appearance order, order kept inside a type, chunks of maxBatchSize, indices scatter back', () => {
  const items = ['image', 'audio', 'image', 'image', 'audio', 'image', 'ecg'].map((type, i) => ({ type, i }));
  const groups = groupByType(items, (t) => (t === 'image' ? 3 : 1));
  expect(groups.map((g) => [g.type, g.indices])).toEqual([
    ['image', [0, 2, 3]], ['image', [5]], ['audio', [1]], ['audio', [4]], ['ecg', [6]],
  ]);
  for (const g of groups) expect(g.items.map((x) => x.i)).toEqual(g.indices);
  const back = new Array(items.length);
  for (const g of groups) g.indices.forEach((i, j) => (back[i] = g.items[j]));
  expect(back).toEqual(items);
  expect(groupByType(items, 10).length).toBe(3);
  expect(() => groupByType(items, 0)).toThrow(RangeError);
});
