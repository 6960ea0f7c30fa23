/**
 * Hugging Face `datasets` folders (`Dataset.save_to_disk` / `DatasetDict.save_to_disk`) and `.arrow` files.
 *
 * Folders are built here the way `datasets` writes them: Arrow IPC streams (apache-arrow's `tableToIPC(...,
 * 'stream')`) with the `huggingface` schema metadata, `state.json` (indent 2, sorted keys) listing the shards in
 * order, `dataset_info.json`, and `dataset_dict.json` + one folder per split for a DatasetDict. The committed
 * fixture `fixtures/hf-dataset/` is a genuine DatasetDict written by `datasets` 5.0.1 (see its generate.py).
 */
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  Binary, CompressionType, compressionRegistry, Dictionary, Field, Int32, Int64, List, makeData, Map_, RecordBatch, RecordBatchStreamWriter,
  Schema, Struct, Table, tableToIPC, Utf8, vectorFromArray, type DataType,
} from 'apache-arrow';
import {
  countArrowRows, datasetFormat, InputError, openDataset, readArrowRows, resolveHfDataset, SampleError,
  type DatasetOptions, type DatasetRecord, type RecordBatchInfo,
} from '@multimeditron/core';
import { REPO_ROOT } from '../../../test/helpers/fixtures.js';

const PH = '<|reserved_special_token_0|>';
const FIXTURE = path.join(REPO_ROOT, 'packages', 'core', 'test', 'fixtures', 'hf-dataset');
let tmp: string;
let n = 0;

async function collect(it: AsyncIterable<DatasetRecord>): Promise<DatasetRecord[]> {
  const out: DatasetRecord[] = [];
  for await (const r of it) out.push(r);
  return out;
}

/** A fresh folder under the test's tmp dir. */
async function freshDir(name = 'ds'): Promise<string> {
  const d = path.join(tmp, `${name}-${n++}`);
  await fs.mkdir(d, { recursive: true });
  return d;
}

async function thrown(p: Promise<unknown>): Promise<InputError> {
  try {
    await p;
  } catch (e) {
    expect(e).toBeInstanceOf(InputError);
    return e as InputError;
  }
  throw new Error('expected an InputError');
}

// --- building save_to_disk folders --------------------------------------------------------------------------

const str = () => new Utf8();
const VALUE = new Struct([new Field('bytes', new Binary(), true), new Field('path', str(), true)]);
/** The Arrow schema `datasets` infers for MultiMeditron samples (see fixtures/hf-dataset). */
const FIELDS = [
  new Field('id', new Int64(), true),
  new Field('text', str(), true),
  new Field('conversations', new List(new Field('item', new Struct([new Field('role', str(), true), new Field('content', str(), true)]), true)), true),
  new Field('modalities', new List(new Field('item', new Struct([new Field('type', str(), true), new Field('value', VALUE, true)]), true)), true),
];
/** `dataset_info.json` "features" as `datasets` writes them for {@link FIELDS}. */
const FEATURES = {
  id: { dtype: 'int64', _type: 'Value' },
  text: { dtype: 'string', _type: 'Value' },
  conversations: { feature: { role: { dtype: 'string', _type: 'Value' }, content: { dtype: 'string', _type: 'Value' } }, _type: 'List' },
  modalities: {
    feature: { type: { dtype: 'string', _type: 'Value' }, value: { bytes: { dtype: 'binary', _type: 'Value' }, path: { dtype: 'string', _type: 'Value' } } },
    _type: 'List',
  },
};

type Row = Record<string, unknown>;

function hfSchema(fields: Field[] = FIELDS, features: unknown = FEATURES): Schema {
  return new Schema(fields, new Map([['huggingface', JSON.stringify({ info: { features } })]]));
}

/** One record batch holding `rows` (missing keys are nulls). */
function batchOf(schema: Schema, rows: Row[]): RecordBatch {
  const children = schema.fields.map((f) => vectorFromArray(rows.map((r) => r[f.name] ?? null), f.type as DataType).data[0]!);
  return new RecordBatch(schema, makeData({ type: new Struct(schema.fields), length: rows.length, nullCount: 0, children }));
}

/** An Arrow IPC stream with one record batch per entry of `batches`. */
function arrowStream(batches: Row[][], schema: Schema = hfSchema(), format: 'stream' | 'file' = 'stream'): Uint8Array {
  return tableToIPC(new Table(batches.map((rows) => batchOf(schema, rows))), format);
}

/** `json.dump(obj, indent=2, sort_keys=True)`, as `datasets` writes `state.json`. */
function pythonJson(obj: unknown): string {
  const sort = (v: unknown): unknown => (v && typeof v === 'object' && !Array.isArray(v)
    ? Object.fromEntries(Object.keys(v).sort().map((k) => [k, sort((v as Row)[k])]))
    : Array.isArray(v) ? v.map(sort) : v);
  return JSON.stringify(sort(obj), null, 2);
}

/**
 * Writes a `Dataset.save_to_disk` folder: one `data-0000i-of-0000n.arrow` per shard (each a list of record
 * batches), `state.json` and `dataset_info.json`. `names` overrides the shard file names (in state.json order).
 */
async function saveToDisk(dir: string, shards: Row[][][], opts: { split?: string | null; names?: string[]; schema?: Schema; features?: unknown } = {}): Promise<string[]> {
  await fs.mkdir(dir, { recursive: true });
  const names = opts.names ?? shards.map((_, i) => `data-${String(i).padStart(5, '0')}-of-${String(shards.length).padStart(5, '0')}.arrow`);
  for (let i = 0; i < shards.length; i++) await fs.writeFile(path.join(dir, names[i]!), arrowStream(shards[i]!, opts.schema));
  const state = {
    _data_files: names.map((filename) => ({ filename })),
    _fingerprint: 'b1e4c5f0a2d3e6f7',
    _format_columns: null,
    _format_kwargs: {},
    _format_type: null,
    _output_all_columns: false,
    _split: opts.split ?? null,
  };
  await fs.writeFile(path.join(dir, 'state.json'), pythonJson(state));
  const info = { citation: '', description: '', features: opts.features ?? FEATURES, homepage: '', license: '' };
  await fs.writeFile(path.join(dir, 'dataset_info.json'), JSON.stringify(info, null, 2));
  return names.map((f) => path.join(dir, f));
}

/** Writes a `DatasetDict.save_to_disk` folder. */
async function saveDictToDisk(root: string, splits: Record<string, Row[][][]>): Promise<void> {
  await fs.mkdir(root, { recursive: true });
  await fs.writeFile(path.join(root, 'dataset_dict.json'), JSON.stringify({ splits: Object.keys(splits) }));
  for (const [name, shards] of Object.entries(splits)) await saveToDisk(path.join(root, name), shards, { split: name });
}

const IMG = Uint8Array.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0xff, 0x80, 0x7f]);
const textRow = (i: number): Row => ({ id: BigInt(i), text: `row ${i}` });

beforeAll(async () => {
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'mm-arrow-'));
});

afterAll(async () => {
  await fs.rm(tmp, { recursive: true, force: true });
});

// --- a genuine folder written by `datasets` --------------------------------------------------------------------

describe('a DatasetDict saved by Hugging Face datasets (committed fixture)', () => {
  test('reads the train split across its two shards, with rows numbered across them', async () => {
    expect(datasetFormat(FIXTURE)).toBe('hf-arrow');
    const recs = await collect(openDataset(FIXTURE, { modalityTypes: ['image'] }));
    const shard0 = path.join(FIXTURE, 'train', 'data-00000-of-00002.arrow');
    const shard1 = path.join(FIXTURE, 'train', 'data-00001-of-00002.arrow');
    expect(recs.map((r) => [r.index, r.line, r.file])).toEqual([
      [0, 1, shard0], [1, 2, shard0], [2, 3, shard0], [3, 4, shard1], [4, 5, shard1],
    ]);
    // paths resolve against the folder given (the DatasetDict root), not the split's subfolder
    expect(new Set(recs.map((r) => r.baseDir))).toEqual(new Set([FIXTURE]));

    expect(recs[0]!.sample).toEqual({
      id: 0, text: `Frontal chest X-ray: ${PH} No acute findings.`,
      modalities: [{ type: 'image', value: { bytes: null, path: 'images/dot.png' } }],
    });
    const png = new Uint8Array(await fs.readFile(path.join(FIXTURE, 'images', 'dot.png')));
    const conv = recs[1]!.sample!;
    expect(conv.text).toBeUndefined();
    expect(conv.conversations).toEqual([{ role: 'user', content: `${PH}\nWhat does this show?` }, { role: 'assistant', content: 'A red dot.' }]);
    const value = conv.modalities[0]!.value as { bytes: Uint8Array; path: null };
    expect(value.bytes).toBeInstanceOf(Uint8Array);
    expect(Array.from(value.bytes)).toEqual(Array.from(png));
    expect(value.path).toBeNull();
    expect(recs[2]!.sample).toEqual({ id: 2, text: 'A text-only sample.', modalities: [] });

    // bad rows are errors, and the stream goes on past them
    expect(recs[3]!.error).toBeInstanceOf(SampleError);
    expect(recs[3]!.error!.kind).toBe('placeholder-count');
    expect(recs[3]!.error!.message).toBe(`${shard1}:4: 1 placeholder(s) ${PH} in the text but 0 modalities`);
    expect(recs[4]!.errors!.map((e) => e.kind)).toEqual(['missing-file']);
    expect(recs[4]!.error!.line).toBe(5);
  });

  test('int64 ids become numbers when safe, bigints otherwise', async () => {
    const recs = await collect(openDataset(FIXTURE, { checkFiles: false }));
    expect(recs.map((r) => r.sample?.['id'])).toEqual([0, 1, 2, undefined, 2n ** 53n + 1n]);
    const bad = await collect(openDataset(FIXTURE, { startIndex: 4, checkFiles: false }));
    expect(bad[0]!.sample!['id']).toBe(2n ** 53n + 1n);
  });

  test('the split option picks another split; an unknown one names the folder and the splits', async () => {
    const test = await collect(openDataset(FIXTURE, { split: 'test' }));
    expect(test.map((r) => [r.line, path.relative(FIXTURE, r.file), r.sample])).toEqual([
      [1, path.join('test', 'data-00000-of-00001.arrow'), { id: 100, text: 'The test split.', modalities: [] }],
    ]);
    const err = await thrown(collect(openDataset(FIXTURE, { split: 'validation' })));
    expect(err.file).toBe(FIXTURE);
    expect(err.message).toBe(`${FIXTURE}: DatasetDict has no split "validation" (available: train, test)`);
    expect(err.suggestions.join(' ')).toMatch(/split/);
  });

  test('a split folder, state.json or dataset_dict.json can be given directly', async () => {
    const split = path.join(FIXTURE, 'train');
    const recs = await collect(openDataset(split, { checkFiles: false }));
    expect(recs).toHaveLength(5);
    expect(recs[0]!.baseDir).toBe(split);
    expect(datasetFormat(path.join(split, 'state.json'))).toBe('hf-arrow');
    expect(await collect(openDataset(path.join(split, 'state.json'), { checkFiles: false }))).toHaveLength(5);
    expect(await collect(openDataset(path.join(FIXTURE, 'dataset_dict.json'), { split: 'test' }))).toHaveLength(1);
    const src = await resolveHfDataset(FIXTURE);
    expect(src).toMatchObject({ kind: 'dataset-dict', split: 'train', splits: ['train', 'test'], baseDir: FIXTURE, dir: split });
    expect(await countArrowRows(src.files)).toBe(5);
  });
});

// --- folders built here --------------------------------------------------------------------------------------

describe('save_to_disk folders', () => {
  test('the MultiMeditron sample shape: text/conversations, path and bytes modalities', async () => {
    const dir = await freshDir();
    await fs.mkdir(path.join(dir, 'img'));
    await fs.writeFile(path.join(dir, 'img', 'a.png'), 'png');
    await saveToDisk(dir, [[[
      { id: 1n, text: `X-ray ${PH}`, modalities: [{ type: 'image', value: { bytes: null, path: 'img/a.png' } }] },
      {
        id: 2n,
        conversations: [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: `${PH} and ${PH}?` }, { role: 'assistant', content: 'Both.' }],
        modalities: [{ type: 'image', value: { bytes: IMG, path: 'orig.png' } }, { type: 'image', value: { bytes: null, path: 'img/a.png' } }],
      },
      { id: 3n, text: 'no modalities column at all' },
    ]]]);
    expect(datasetFormat(dir)).toBe('hf-arrow');
    const recs = await collect(openDataset(dir, { modalityTypes: ['image'] }));
    expect(recs.map((r) => r.error?.message)).toEqual([undefined, undefined, undefined]);
    expect(recs[0]!.sample).toEqual({ id: 1, text: `X-ray ${PH}`, modalities: [{ type: 'image', value: { bytes: null, path: 'img/a.png' } }] });
    const s = recs[1]!.sample!;
    expect(s.conversations!.map((t) => t.role)).toEqual(['system', 'user', 'assistant']);
    const v0 = s.modalities[0]!.value as { bytes: Uint8Array; path: string };
    expect(v0.bytes).toBeInstanceOf(Uint8Array);
    expect(Array.from(v0.bytes)).toEqual(Array.from(IMG)); // bytes >= 0x80 intact, never decoded as text
    expect(v0.path).toBe('orig.png');
    expect(recs[2]!.sample).toEqual({ id: 3, text: 'no modalities column at all', modalities: [] });
    expect(recs.every((r) => r.baseDir === dir)).toBe(true);
  });

  test('shards are read in state.json order, not by name', async () => {
    const dir = await freshDir();
    const [b, a] = await saveToDisk(dir, [[[textRow(0), textRow(1)]], [[textRow(2)], [textRow(3)]]], { names: ['b.arrow', 'a.arrow'] });
    const batches: RecordBatchInfo[] = [];
    const recs = await collect(openDataset(dir, { onRecordBatch: (i) => batches.push(i) }));
    expect(recs.map((r) => [r.index, r.line, r.file, r.sample!.text])).toEqual([
      [0, 1, b, 'row 0'], [1, 2, b, 'row 1'], [2, 3, a, 'row 2'], [3, 4, a, 'row 3'],
    ]);
    expect(batches).toEqual([
      { file: b, fileIndex: 0, fileCount: 2, index: 0, rowStart: 0, rowEnd: 2 },
      { file: a, fileIndex: 1, fileCount: 2, index: 0, rowStart: 2, rowEnd: 3 },
      { file: a, fileIndex: 1, fileCount: 2, index: 1, rowStart: 3, rowEnd: 4 },
    ]);
  });

  test('a DatasetDict: train by default, split selectable, unknown split listed', async () => {
    const root = await freshDir('dict');
    await saveDictToDisk(root, {
      train: [[[textRow(0), textRow(1)]], [[textRow(2)]]],
      validation: [[[{ id: 9n, text: 'val' }]]],
    });
    expect(datasetFormat(root)).toBe('hf-arrow');
    expect((await collect(openDataset(root))).map((r) => r.sample!.text)).toEqual(['row 0', 'row 1', 'row 2']);
    const val = await collect(openDataset(root, { split: 'validation' }));
    expect(val.map((r) => [r.file, r.sample!.text])).toEqual([[path.join(root, 'validation', 'data-00000-of-00001.arrow'), 'val']]);
    const err = await thrown(collect(openDataset(root, { split: 'test' })));
    expect(err.file).toBe(root);
    expect(err.message).toMatch(/no split "test" \(available: train, validation\)/);

    // no train split at all: the default fails the same way
    const noTrain = await freshDir('dict');
    await saveDictToDisk(noTrain, { test: [[[textRow(0)]]] });
    expect((await thrown(collect(openDataset(noTrain)))).message).toMatch(/no split "train" \(available: test\)/);

    // a split folder that dataset_dict.json lists but that is not there
    await fs.rm(path.join(root, 'validation'), { recursive: true });
    const gone = await thrown(collect(openDataset(root, { split: 'validation' })));
    expect(gone.file).toBe(path.join(root, 'validation'));

    // a plain Dataset saved from a split refuses another split name
    const saved = await freshDir();
    await saveToDisk(saved, [[[textRow(0)]]], { split: 'train' });
    expect(await collect(openDataset(saved, { split: 'train' }))).toHaveLength(1);
    expect((await thrown(collect(openDataset(saved, { split: 'test' })))).message).toMatch(/saved Dataset of split "train", not "test"/);
  });

  test('startIndex skips whole record batches without reading them; limit stops early', async () => {
    const dir = await freshDir();
    // 3 files; record batches of 3 rows: [0-2][3-5] | [6-8] | [9-11]
    const files = await saveToDisk(dir, [
      [[0, 1, 2].map(textRow), [3, 4, 5].map(textRow)],
      [[6, 7, 8].map(textRow)],
      [[9, 10, 11].map(textRow)],
    ]);
    const all = await collect(openDataset(dir));
    expect(all.map((r) => r.sample!.text)).toEqual(Array.from({ length: 12 }, (_, i) => `row ${i}`));

    const batches: RecordBatchInfo[] = [];
    const opts: DatasetOptions = { startIndex: 4, limit: 4, onRecordBatch: (i) => batches.push(i) };
    const some = await collect(openDataset(dir, opts));
    expect(some.map((r) => [r.index, r.line, r.sample!.text])).toEqual([[4, 5, 'row 4'], [5, 6, 'row 5'], [6, 7, 'row 6'], [7, 8, 'row 7']]);
    expect(batches.map((b) => [b.fileIndex, b.index, b.rowStart, b.rowEnd])).toEqual([[0, 1, 3, 6], [1, 0, 6, 9]]);

    // the first batch's body is never read when skipped: overwrite its bytes (keeping the framing intact)
    const buf = Buffer.from(await fs.readFile(files[0]!));
    const text0 = buf.indexOf('row 0row 1row 2');
    expect(text0).toBeGreaterThan(0);
    buf.write('XXXXXXXXXXXXXXX', text0, 'latin1');
    await fs.writeFile(files[0]!, buf);
    expect((await collect(openDataset(dir, { limit: 1 })))[0]!.sample!.text).toBe('XXXXX');
    expect((await collect(openDataset(dir, { startIndex: 3, limit: 1 })))[0]!.sample!.text).toBe('row 3');

    // a later file is not even opened once the limit is reached
    await fs.writeFile(files[2]!, 'not arrow at all');
    expect(await collect(openDataset(dir, { startIndex: 2, limit: 5 }))).toHaveLength(5);
    await expect(collect(openDataset(dir, { startIndex: 2 }))).rejects.toThrow(/not an Arrow IPC stream/);

    // past the end: nothing, no error
    await fs.writeFile(files[2]!, arrowStream([[9, 10, 11].map(textRow)]));
    expect(await collect(openDataset(dir, { startIndex: 12 }))).toEqual([]);
    expect(await collect(openDataset(dir, { startIndex: 0, limit: 0 }))).toEqual([]);
  });

  test('one bad row does not stop the stream', async () => {
    const dir = await freshDir();
    await saveToDisk(dir, [[[
      { id: 0n, text: 'a', conversations: [{ role: 'user', content: 'b' }] }, // both
      { id: 1n }, // neither
      { id: 2n, text: `${PH}`, modalities: [{ type: 'volume', value: { bytes: IMG, path: null } }] }, // unknown type
      { id: 3n, text: `${PH}`, modalities: [{ type: 'image', value: { bytes: null, path: null } }] }, // bad value
      { id: 4n, text: `${PH}`, modalities: [{ type: 'image', value: { bytes: null, path: '../outside.png' } }] },
      { id: 5n, text: 'fine' },
    ]]]);
    const recs = await collect(openDataset(dir, { modalityTypes: ['image'] }));
    expect(recs.map((r) => r.error?.kind ?? 'ok')).toEqual(['format', 'format', 'unknown-type', 'bad-value', 'outside-base', 'ok']);
    expect(recs.map((r) => r.line)).toEqual([1, 2, 3, 4, 5, 6]);
    expect(recs[2]!.error!.modalityIndex).toBe(0);
  });
});

// --- bad files -----------------------------------------------------------------------------------------------

describe('bad files are InputErrors naming the file', () => {
  test('a truncated .arrow file', async () => {
    const dir = await freshDir();
    const [f0, f1] = await saveToDisk(dir, [[[textRow(0), textRow(1)]], [[textRow(2), textRow(3)], [textRow(4)]]]);
    const full = await fs.readFile(f1!);
    const cuts = [full.length - 4, full.length - 8, full.length - 40, Math.floor(full.length / 2), 12, 3];
    for (const cut of cuts) {
      await fs.writeFile(f1!, full.subarray(0, cut));
      const seen: DatasetRecord[] = [];
      const err = await thrown((async () => {
        for await (const r of openDataset(dir)) seen.push(r);
      })());
      expect(err.file).toBe(f1);
      expect(err.message).toMatch(/truncated Arrow stream|not an Arrow IPC stream/);
      // the rows of the intact first file came out before the error, all valid
      expect(seen.slice(0, 2).map((r) => [r.file, r.sample?.text])).toEqual([[f0, 'row 0'], [f0, 'row 1']]);
      expect(seen.every((r) => r.sample)).toBe(true);
    }
    // cut in the middle of the second record batch: the first batch's rows come out, then the error
    await fs.writeFile(f1!, full.subarray(0, full.length - 40));
    const seen: DatasetRecord[] = [];
    await expect((async () => {
      for await (const r of openDataset(dir)) seen.push(r);
    })()).rejects.toThrow(`${f1}: truncated Arrow stream`);
    expect(seen.map((r) => r.sample!.text)).toEqual(['row 0', 'row 1', 'row 2', 'row 3']);
  });

  test('a data file listed in state.json that is missing', async () => {
    const dir = await freshDir();
    const [, f1] = await saveToDisk(dir, [[[textRow(0)]], [[textRow(1)]]]);
    await fs.rm(f1!);
    const err = await thrown(collect(openDataset(dir)));
    expect(err.file).toBe(f1);
    expect(err.message).toBe(`${f1}: data file listed in ${path.join(dir, 'state.json')} not found`);
  });

  test('a file that is not Arrow, a bad state.json, a folder of another kind', async () => {
    const dir = await freshDir();
    const [f0] = await saveToDisk(dir, [[[textRow(0)]]]);
    await fs.writeFile(f0!, '{"text": "I am JSON"}\n');
    const err = await thrown(collect(openDataset(dir)));
    expect(err.file).toBe(f0);
    expect(err.message).toMatch(/not an Arrow IPC stream or file/);
    await fs.writeFile(f0!, '');
    expect((await thrown(collect(openDataset(dir)))).message).toMatch(/not an Arrow IPC stream or file \(the file is empty\)/);

    const state = path.join(dir, 'state.json');
    await fs.writeFile(state, '{"_data_files": [');
    expect((await thrown(collect(openDataset(dir)))).file).toBe(state);
    await fs.writeFile(state, JSON.stringify({ _data_files: [{ filename: '../elsewhere.arrow' }] }));
    expect((await thrown(collect(openDataset(dir)))).message).toMatch(/not a file name inside the dataset folder/);
    await fs.writeFile(state, JSON.stringify({ _data_files: [{ name: 'x' }] }));
    expect((await thrown(collect(openDataset(dir)))).message).toMatch(/"_data_files"\[0\] must be/);
    await fs.writeFile(state, JSON.stringify({ _data_files: [{ filename: 'data-00000-of-00001.arrow' }], _indices_data_files: [{ filename: 'indices.arrow' }] }));
    expect((await thrown(collect(openDataset(dir)))).message).toMatch(/indices mapping/);

    const plain = await freshDir('plain');
    expect(() => datasetFormat(plain)).toThrow(InputError);
    expect(() => datasetFormat(plain)).toThrow(/not a Hugging Face datasets folder/);
    await expect(collect(openDataset(plain, { format: 'hf-arrow' }))).rejects.toThrow(/neither state.json nor dataset_dict.json/);
    await expect(collect(openDataset(path.join(tmp, 'nothing-here')))).rejects.toThrow(InputError);
    await expect(collect(openDataset(path.join(tmp, 'nothing-here'), { format: 'hf-arrow' }))).rejects.toThrow(/dataset not found/);
  });

  test('corrupting any byte of a file gives an InputError or per-row errors, never another error or a hang', async () => {
    const dir = await freshDir();
    // without the huggingface schema metadata, to keep the file (and the test) small
    const [f0] = await saveToDisk(dir, [[[
      { id: 1n, text: `X ${PH}`, modalities: [{ type: 'image', value: { bytes: IMG, path: null } }] },
      { id: 2n, conversations: [{ role: 'user', content: 'q' }, { role: 'assistant', content: 'a' }] },
    ], [textRow(3)]]], { schema: new Schema(FIELDS) });
    const good = await fs.readFile(f0!);
    const started = Date.now();
    let inputErrors = 0;
    for (let i = 0; i < good.length; i++) {
      const bad = Buffer.from(good);
      bad[i] = bad[i]! ^ 0xff;
      await fs.writeFile(f0!, bad);
      try {
        // the Arrow layer: rows, or per-row errors (openDataset turns them into `read` SampleErrors)
        for await (const r of readArrowRows([f0!])) {
          if (!r.row && !(r.error instanceof Error)) throw new Error(`byte ${i}: a row with neither row nor error`);
        }
      } catch (e) {
        if (!(e instanceof InputError)) throw new Error(`byte ${i}: ${(e as Error).constructor.name}: ${(e as Error).message}`);
        expect(e.file).toBe(f0);
        inputErrors++;
      }
    }
    expect(inputErrors).toBeGreaterThan(0);
    expect(Date.now() - started).toBeLessThan(60_000);
  });

  test('a record batch that cannot be decoded is a `read` error for each of its rows; the stream goes on', async () => {
    // a stand-in ZSTD codec (the magic number, then the bytes as they are) to write a compressed shard
    const codec = {
      encode: (d: Uint8Array) => Uint8Array.from([0x28, 0xb5, 0x2f, 0xfd, 0, 0, ...d]),
      decode: (d: Uint8Array) => d.slice(6),
    };
    const dir = await freshDir();
    const [f0, f1] = await saveToDisk(dir, [[[textRow(0), textRow(1)]], [[textRow(2)]]]);
    compressionRegistry.set(CompressionType.ZSTD, codec);
    try {
      const writer = new RecordBatchStreamWriter({ compressionType: CompressionType.ZSTD });
      await fs.writeFile(f0!, writer.writeAll(new Table([batchOf(hfSchema(), [textRow(0), textRow(1)])])).toUint8Array(true));
      // with the codec registered, apache-arrow decompresses
      expect((await collect(openDataset(dir))).map((r) => r.sample?.text)).toEqual(['row 0', 'row 1', 'row 2']);
    } finally {
      compressionRegistry.set(CompressionType.ZSTD, null as unknown as typeof codec);
    }
    const recs = await collect(openDataset(dir));
    expect(recs.map((r) => [r.line, r.file, r.error?.kind ?? r.sample!.text])).toEqual([[1, f0, 'read'], [2, f0, 'read'], [3, f1, 'row 2']]);
    expect(recs[0]!.error!.message).toMatch(new RegExp(`^${f0}:1: record batch 0 cannot be read: .*codec not found`));
  });
});

// --- single files and value conversion -----------------------------------------------------------------------

describe('single .arrow files and Arrow types', () => {
  test('a single .arrow file, in the streaming or the random-access file format', async () => {
    const dir = await freshDir();
    await fs.writeFile(path.join(dir, 'img.png'), 'png');
    const rows = [[{ id: 1n, text: `see ${PH}`, modalities: [{ type: 'image', value: { bytes: null, path: 'img.png' } }] }], [textRow(2)]];
    for (const format of ['stream', 'file'] as const) {
      const file = path.join(dir, `one-${format}.arrow`);
      await fs.writeFile(file, arrowStream(rows, hfSchema(), format));
      expect(datasetFormat(file)).toBe('hf-arrow');
      const recs = await collect(openDataset(file));
      expect(recs.map((r) => [r.line, r.file, r.baseDir, r.sample?.text])).toEqual([[1, file, dir, `see ${PH}`], [2, file, dir, 'row 2']]);
      expect(recs[0]!.errors).toBeUndefined();
    }
    // another extension, forced
    const other = path.join(dir, 'data.bin');
    await fs.writeFile(other, arrowStream(rows));
    expect(await collect(openDataset(other, { format: 'hf-arrow' }))).toHaveLength(2);
    expect(() => datasetFormat(other)).toThrow(/unsupported dataset extension/);
  });

  test('a Sequence of dicts (struct of lists), dictionary-encoded strings, lists of int64, maps', async () => {
    const seq = new Struct([new Field('role', new List(new Field('item', str(), true)), true), new Field('content', new List(new Field('item', str(), true)), true)]);
    const fields = [
      new Field('conversations', seq, true),
      new Field('source', new Dictionary(str(), new Int32()), true),
      new Field('scores', new List(new Field('item', new Int64(), true)), true),
      new Field('meta', new Map_(new Field('entries', new Struct<{ key: Utf8; value: Int32 }>([new Field('key', str(), false), new Field('value', new Int32(), true)]), false)), true),
    ];
    const features = {
      conversations: { feature: { role: { dtype: 'string', _type: 'Value' }, content: { dtype: 'string', _type: 'Value' } }, _type: 'Sequence' },
      source: { dtype: 'string', _type: 'Value' },
      scores: { feature: { dtype: 'int64', _type: 'Value' }, _type: 'List' },
    };
    const schema = hfSchema(fields, features);
    const dir = await freshDir();
    await saveToDisk(dir, [[
      [{ conversations: { role: ['user', 'assistant'], content: ['hi', 'hello'] }, source: 'mimic', scores: [1n, -2n], meta: new Map([['age', 61], ['bed', 3]]) }],
      [{ conversations: { role: ['user'], content: ['again'] }, source: 'pmc', scores: [2n ** 60n] }, { conversations: { role: [], content: [] }, source: 'mimic' }],
    ]], { schema, features });
    const recs = await collect(openDataset(dir));
    expect(recs[0]!.sample).toEqual({
      conversations: [{ role: 'user', content: 'hi' }, { role: 'assistant', content: 'hello' }], source: 'mimic', scores: [1, -2],
      meta: { age: 61, bed: 3 }, modalities: [],
    });
    expect(recs[1]!.sample).toEqual({ conversations: [{ role: 'user', content: 'again' }], source: 'pmc', scores: [2n ** 60n], meta: null, modalities: [] });
    expect(recs[2]!.error!.kind).toBe('format'); // empty conversations
  });
});
